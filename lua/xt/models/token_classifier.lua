-- xt.models.token_classifier: a DeiT-style classifier over a sequence of tokens.
--
--   patches: Conv p×p stride p over the image [B,C,H,W] -> tokens [B, T=(H/p)(W/p), dim]
--            (or, with patch = 0, input already [B,T,dim_in] projected by a Linear)
--   + a learned position embedding, then depth pre-norm blocks
--       x = x + attn(LN(x)); x = x + MLP(LN(x))
--   or, with attention = 'delight', nn.DeLighTBlock blocks; then LN, mean over tokens, Linear.
--
-- The attention is named: 'aft_full', 'aft_simple', 'aft_local', 'softmax', or any name
-- nn.attention_by_name knows (the efficient-attention library), when it is loaded.
local xt = require 'xt'
local nn = xt.nn

local function make_attention(name, dim, T, opts)
    if name == 'aft_full' then return nn.AFTFull{dim = dim, seq_len = T} end
    if name == 'aft_simple' then return nn.AFTSimple{dim = dim} end
    if name == 'aft_local' then return nn.AFTLocal{dim = dim, seq_len = T, window = opts.window or 8} end
    if name == 'softmax' then return nn.MultiheadAttention{dim = dim, heads = opts.heads or 4} end
    if nn.attention_by_name then return nn.attention_by_name(name, {dim = dim, seq_len = T, heads = opts.heads or 4}) end
    error(string.format("token_classifier: unknown attention '%s'", tostring(name)), 3)
end

local Block = nn.class('TokenBlock', nn.Module)
function Block:__init(dim, T, opts)
    nn.Module.__init(self)
    self.norm1 = nn.LayerNorm(dim)
    self.attn = make_attention(opts.attention, dim, T, opts)
    self.norm2 = nn.LayerNorm(dim)
    local hidden = math.floor(dim * (opts.mlp_ratio or 2) + 0.5)
    self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
end
function Block:forward(x)
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))
end

local Net = nn.class('TokenClassifier', nn.Module)

-- opts: in_channels, image_size ({H, W}), patch (4), classes, dim (64), depth (4),
-- attention ('aft_full'), heads, window, mlp_ratio, delight ({...} for nn.DeLighTBlock)
function Net:__init(opts)
    nn.Module.__init(self)
    local dim, patch = opts.dim or 64, opts.patch or 4
    local H, W = opts.image_size[1], opts.image_size[2]
    if H % patch ~= 0 or W % patch ~= 0 then
        error(string.format('token_classifier: image %dx%d is not a multiple of the patch %d', H, W, patch), 2)
    end
    local T = math.floor(H / patch) * math.floor(W / patch)
    self.patch = nn.Conv2d(opts.in_channels or 3, dim, patch, {stride = patch})
    self.pos = nn.Parameter(xt.randn(1, T, dim) * 0.02)
    local blocks = {}
    for i = 1, opts.depth or 4 do
        if opts.attention == 'delight' then
            local o = {d_m = dim, attention = 'softmax'}
            for k, v in pairs(opts.delight or {}) do o[k] = v end
            blocks[i] = nn.DeLighTBlock(o)
        else
            blocks[i] = Block(dim, T, opts)
        end
    end
    self.blocks = nn.Sequential(blocks)
    self.norm = nn.LayerNorm(dim)
    self.head = nn.Linear(dim, opts.classes)
end

function Net:forward(x)
    local t = self.patch(x)                                  -- [B,dim,h,w]
    t = t:flatten(3):transpose(2, 3) + self.pos              -- [B,T,dim]
    t = self.norm(self.blocks(t))
    return self.head(t:mean(2))
end


return Net
