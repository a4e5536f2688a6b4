-- xt.models.token_classifier: a DeiT-style classifier over a sequence of tokens.
--
--   patches: Conv p×p stride p over the image [B,C,H,W] -> tokens [B, T=(H/p)(W/p), dim]
--            or, with patch = 0, a sequence [B,T,dim_in] (e.g. pixels [B,784,1]) -> Linear
--   + a learned position embedding, then depth pre-norm blocks
--       x = x + attn(LN(x)); x = x + MLP(LN(x))
--   or, with attention = 'delight', nn.DeLighTBlock blocks; then LN, mean over tokens, Linear.
--
-- The attention is any name nn.attention_by_name knows ('aft_full', 'softmax', 'linear',
-- 'axial', 'bigbird', ...; nn.attention_names() lists them), built with dim, seq_len = T,
-- heads, window, image_size = the token grid, and opts.attention_options on top.
local xt = require 'xt'
local nn = xt.nn

-- grid: {rows, cols} of the tokens in raster order, or nil when unknown
local function make_attention(dim, T, grid, opts)
    local o = {dim = dim, seq_len = T, heads = opts.heads or 4, window = opts.window or 8, image_size = grid}
    for k, v in pairs(opts.attention_options or {}) do o[k] = v end
    return nn.attention_by_name(opts.attention, o)
end

local Block = nn.class('TokenBlock', nn.Module)
function Block:__init(dim, T, grid, opts)
    nn.Module.__init(self)
    self.norm1 = nn.LayerNorm(dim)
    self.attn = make_attention(dim, T, grid, opts)
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
-- attention ('aft_full'), heads (4), window (8), mlp_ratio (2), attention_options ({...} more
-- options for nn.attention_by_name, e.g. {k = 128} for linformer), delight ({...} for
-- nn.DeLighTBlock), pos_std (0.02: the position embedding's initial scale).
-- patch = 0: the input is a sequence x [B, seq_len, dim_in] (opts.seq_len, opts.dim_in = 1);
-- image_size, when given, is the grid it lists in raster order (axial attention needs it).
function Net:__init(opts)
    nn.Module.__init(self)
    local dim, patch = opts.dim or 64, opts.patch or 4
    local T, grid
    if patch == 0 then
        T = opts.seq_len
        if type(T) ~= 'number' or T < 1 or T ~= math.floor(T) then
            error('token_classifier: patch = 0 needs seq_len, a positive integer, got ' .. tostring(T), 2)
        end
        grid = opts.image_size
        self.embed = nn.Linear(opts.dim_in or 1, dim)
    else
        local H, W = opts.image_size[1], opts.image_size[2]
        if H % patch ~= 0 or W % patch ~= 0 then
            error(string.format('token_classifier: image %dx%d is not a multiple of the patch %d', H, W, patch), 2)
        end
        grid = {math.floor(H / patch), math.floor(W / patch)}
        T = grid[1] * grid[2]
        self.patch = nn.Conv2d(opts.in_channels or 3, dim, patch, {stride = patch})
    end
    self.seq_len = T
    self.pos = nn.Parameter(xt.randn(1, T, dim) * (opts.pos_std or 0.02))
    local blocks = {}
    local delight_plan = require('xt.nn.delight').block_scaling(opts.depth or 4, 4, 8, 2)
    for i = 1, opts.depth or 4 do
        if opts.attention == 'delight' then
            local o = {d_m = dim, attention = 'softmax'}
            -- DeLighT's block-wise scaling (depth 4 -> 8, width x2 -> x4 over the stack)
            o.depth, o.width_mult = delight_plan[i].depth, delight_plan[i].width_mult
            for k, v in pairs(opts.delight or {}) do o[k] = v end
            blocks[i] = nn.DeLighTBlock(o)
        else
            blocks[i] = Block(dim, T, grid, opts)
        end
    end
    self.blocks = nn.Sequential(blocks)
    self.norm = nn.LayerNorm(dim)
    self.head = nn.Linear(dim, opts.classes)
end

function Net:forward(x)
    local t
    if self.embed then                                       -- x [B,T,dim_in]
        if x:dim() ~= 3 or x:size(2) ~= self.seq_len then
            error(string.format('TokenClassifier: expected a sequence [B,%d,dim_in], got %s', self.seq_len,
                                tostring(x.shape)), 2)
        end
        t = self.embed(x)
    else
        t = self.patch(x):flatten(3):transpose(2, 3)         -- [B,dim,h,w] -> [B,T,dim]
    end
    t = t + self.pos
    t = self.norm(self.blocks(t))
    return self.head(t:mean(2))
end


return Net
