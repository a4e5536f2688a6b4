-- xt.models.resnet: a small ResNet (basic blocks, as He et al. 2016) for ImageNet-style
-- classification at low resolution: a 3×3 stem, stages of two basic blocks whose width
-- doubles while the resolution halves, global average pooling, a linear head.
local xt = require 'xt'
local nn = xt.nn

local Basic = nn.class('BasicBlock', nn.Module)
function Basic:__init(cin, cout, stride)
    nn.Module.__init(self)
    self.conv1 = nn.Conv2d(cin, cout, 3, {padding = 1, stride = stride, bias = false})
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, {padding = 1, bias = false})
    self.bn2 = nn.BatchNorm2d(cout)
    if stride ~= 1 or cin ~= cout then
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, {stride = stride, bias = false}),
                                      nn.BatchNorm2d(cout))
    end
end
function Basic:forward(x)
    local y = self.bn1(self.conv1(x)):relu()
    y = self.bn2(self.conv2(y))
    return (y + (self.shortcut and self.shortcut(x) or x)):relu()
end

local ResNet = nn.class('ResNet', nn.Module)
-- opts: in_channels (3), classes, width (32), blocks ({2, 2, 2})
function ResNet:__init(opts)
    nn.Module.__init(self)
    local width, blocks = opts.width or 32, opts.blocks or {2, 2, 2}
    self.stem = nn.Sequential(nn.Conv2d(opts.in_channels or 3, width, 3, {padding = 1, bias = false}),
                              nn.BatchNorm2d(width), nn.ReLU())
    local layers, cin = {}, width
    for s, n in ipairs(blocks) do
        local cout = width * 2 ^ (s - 1)
        for b = 1, n do
            layers[#layers + 1] = Basic(cin, cout, (b == 1 and s > 1) and 2 or 1)
            cin = cout
        end
    end
    self.stages = nn.Sequential(layers)
    self.pool = nn.AdaptiveAvgPool2d(1)
    self.head = nn.Linear(cin, opts.classes)
end
function ResNet:forward(x)
    return self.head(self.pool(self.stages(self.stem(x))):flatten(2))
end

return ResNet
