-- xt.models.aft_conv_net: an image classifier built from AFT-conv blocks.
--
--   stem:   Conv 3×3 (in -> dim/2), BatchNorm, GELU, Conv 2×2 stride 2 (-> dim)   [H/2, W/2]
--   stage s (s = 1..#depth, width dim·2^(s-1)): depth[s] pre-norm blocks
--           x = x + AFTConv(BN(x));  x = x + MLP(BN(x))   (MLP: 1×1 conv, GELU, 1×1 conv)
--           and between stages BatchNorm + Conv 2×2 stride 2 doubling the width
--   head:   BatchNorm, global average pool, Linear(-> classes)
--
-- A convolutional stem gives the attention local features to mix; AFT-conv then mixes over a
-- kernel×kernel window per head with the per-head learned position bias.
local xt = require 'xt'
local nn = xt.nn

local Block = nn.class('AFTConvBlock', nn.Module)
function Block:__init(dim, heads, kernel, mlp_ratio)
    nn.Module.__init(self)
    self.norm1 = nn.BatchNorm2d(dim)
    self.attn = nn.AFTConv{dim = dim, heads = heads, kernel = kernel}
    self.norm2 = nn.BatchNorm2d(dim)
    local hidden = math.floor(dim * mlp_ratio + 0.5)
    self.mlp = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.Conv2d(hidden, dim, 1))
end
function Block:forward(x)
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))
end

local Net = nn.class('AFTConvNet', nn.Module)

-- opts: in_channels (3), classes (10), dim (64), depth ({2, 2}), heads (8: every stage; or a
-- list, one per stage), kernel (7), mlp_ratio (2)
function Net:__init(opts)
    nn.Module.__init(self)
    opts = opts or {}
    local in_ch, dim = opts.in_channels or 3, opts.dim or 64
    local depth = opts.depth or {2, 2}
    local heads, kernel, ratio = opts.heads or 8, opts.kernel or 7, opts.mlp_ratio or 2
    if type(heads) == 'table' and #heads ~= #depth then
        error(string.format('AFTConvNet: heads lists %d stages, depth has %d', #heads, #depth), 2)
    end
    self.stem = nn.Sequential(nn.Conv2d(in_ch, math.floor(dim / 2), 3, {padding = 1}),
                              nn.BatchNorm2d(math.floor(dim / 2)), nn.GELU(),
                              nn.Conv2d(math.floor(dim / 2), dim, 2, {stride = 2}))
    local layers, width = {}, dim
    for s, n in ipairs(depth) do
        if s > 1 then
            layers[#layers + 1] = nn.BatchNorm2d(width)
            layers[#layers + 1] = nn.Conv2d(width, width * 2, 2, {stride = 2})
            width = width * 2
        end
        local h = type(heads) == 'table' and heads[s] or heads
        for _ = 1, n do layers[#layers + 1] = Block(width, h, kernel, ratio) end
    end
    self.stages = nn.Sequential(layers)
    self.norm = nn.BatchNorm2d(width)
    self.pool = nn.AdaptiveAvgPool2d(1)
    self.head = nn.Linear(width, opts.classes or 10)
end

function Net:forward(x)
    x = self.norm(self.stages(self.stem(x)))
    return self.head(self.pool(x):flatten(2))
end


Net.Block = Block
return Net
