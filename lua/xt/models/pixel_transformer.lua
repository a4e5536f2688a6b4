-- xt.models.pixel_transformer: an autoregressive model of images as sequences of byte values
-- (pixels, or sub-pixels for colour images, in raster order).
--
--   tokens [B,T] int64 in 1..256 (byte value + 1)
--   input  = [start, tokens[1..T-1]]  embedded (257 ids) + a learned position embedding
--   blocks = pre-norm: x = x + attn(LN(x)); x = x + MLP(LN(x))   (MLP: dim -> 4 dim -> dim, GELU)
--   output = Linear(LN(x)) -> logits [B,T,256] over the next value
--
-- The attention is chosen by name: any causal one of nn.attention_by_name ('aft_full',
-- 'aft_local', 'aft_simple', 'softmax', 'linear', 'performer', ...) or 'delight' (the block is
-- then nn.DeLighTBlock with causal softmax attention). All are causal, and all support
-- incremental decoding, so model:sample() runs one position at a time without recomputing
-- the prefix.
local xt = require 'xt'
local nn = xt.nn

local START = 257   -- the start token's id

local Block = nn.class('PixelBlock', nn.Module)
function Block:__init(opts)
    nn.Module.__init(self)
    local dim, T = opts.dim, opts.seq_len
    self.norm1 = nn.LayerNorm(dim)
    -- any causal attention of the registry (nn.attention_by_name) that decodes step by step
    self.attn = nn.attention_by_name(opts.attention, {dim = dim, seq_len = T, causal = true,
                                                      heads = opts.heads, window = opts.window})
    self.norm2 = nn.LayerNorm(dim)
    self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
end
function Block:forward(x)
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))
end
function Block:step(x, cache)
    x = x + self.attn:step(self.norm1(x), cache)
    return x + self.mlp(self.norm2(x))
end

local Net = nn.class('PixelTransformer', nn.Module)

-- opts: seq_len (T), attention, dim (64), depth (2), heads (4, softmax), window (64,
-- aft_local), delight = {...} (options for nn.DeLighTBlock)
function Net:__init(opts)
    nn.Module.__init(self)
    self.seq_len, self.attention = opts.seq_len, opts.attention
    local dim = opts.dim or 64
    self.embed = nn.Embedding(START, dim)
    self.pos = nn.Embedding(opts.seq_len, dim)
    local blocks = {}
    local delight_plan = require('xt.nn.delight').block_scaling(opts.depth or 2, 4, 8, 2)
    for i = 1, opts.depth or 2 do
        if opts.attention == 'delight' then
            local o = {d_m = dim, causal = true, attention = 'softmax'}
            -- DeLighT's block-wise scaling (depth 4 -> 8, width x2 -> x4 over the stack)
            o.depth, o.width_mult = delight_plan[i].depth, delight_plan[i].width_mult
            for k, v in pairs(opts.delight or {}) do o[k] = v end
            blocks[i] = nn.DeLighTBlock(o)
        else
            blocks[i] = Block{dim = dim, seq_len = opts.seq_len, attention = opts.attention,
                              heads = opts.heads or 4, window = opts.window or 64}
        end
    end
    self.blocks = nn.ModuleList(blocks)
    self.norm = nn.LayerNorm(dim)
    self.head = nn.Linear(dim, 256)
end

-- tokens [B,T] (1..256) -> logits [B,T,256] predicting each token from those before it
function Net:forward(tokens)
    local B, T = tokens:size(1), tokens:size(2)
    local input = xt.cat({xt.full({B, 1}, START, {dtype = 'int64'}), tokens:narrow(2, 1, T - 1)}, 2)
    local x = self.embed(input) + self.pos(xt.arange(1, T + 1, {dtype = 'int64'}))
    for _, block in ipairs(self.blocks:children()) do x = block(x) end
    return self.head(self.norm(x))
end

-- Mean negative log-likelihood per token in bits (bits per dimension) and the loss in nats.
function Net:loss(tokens)
    local logits = self:forward(tokens)
    local B, T = tokens:size(1), tokens:size(2)
    local nats = xt.nn.functional.cross_entropy(logits:view(B * T, 256), tokens:reshape(B * T))
    return nats, nats:item() / math.log(2)
end

-- Sample n sequences of length seq_len, one position at a time with the blocks' caches;
-- temperature scales the logits. Returns int64 [n,T] in 1..256.
function Net:sample(n, opts)
    opts = opts or {}
    local temperature = opts.temperature or 1
    local T = self.seq_len
    local out = xt.zeros({n, T}, {dtype = 'int64'})
    xt.no_grad(function()
        local caches = {}
        for i = 1, #self.blocks:children() do caches[i] = {} end
        local token = xt.full({n, 1}, START, {dtype = 'int64'})
        for t = 1, T do
            local x = self.embed(token) + self.pos(xt.full({1}, t, {dtype = 'int64'}))
            for i, block in ipairs(self.blocks:children()) do x = block:step(x, caches[i]) end
            local logits = self.head(self.norm(x)):view(n, 256)
            local probs = (logits / temperature):softmax(2)
            token = xt.multinomial(probs, 1, {generator = opts.generator})   -- [n,1] in 1..256
            out:narrow(2, t, 1):copy_(token)
        end
    end)
    return out
end

Net.Block = Block
Net.START = START
return Net
