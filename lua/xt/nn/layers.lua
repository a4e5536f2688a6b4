-- xt.nn layers: each a Module that holds its parameters and calls xt.nn.functional.
-- Constructors take PyTorch's positional arguments and an options table for the rest:
-- nn.Linear(784, 128, {bias = false}), nn.Conv2d(3, 64, 3, {padding = 1}).
local xt = require 'xt.tensor'
local class = require('xt.class').class
local Module = require 'xt.nn.module'
local F = require 'xt.nn.functional'
local init = require 'xt.nn.initializers'

local Parameter = Module.Parameter
local L = {}

local function fmt_pair(v) return type(v) == 'table' and ('(' .. v[1] .. ', ' .. v[2] .. ')') or tostring(v) end

---------------------------------------------------------------------------------------------
L.Linear = class('Linear', Module)
function L.Linear:__init(in_features, out_features, opts)
    Module.__init(self)
    opts = opts or {}
    self.in_features, self.out_features = in_features, out_features
    -- PyTorch's default: kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)), bias alike
    local bound = 1 / math.sqrt(in_features)
    self.weight = Parameter(init.uniform_(xt.empty(out_features, in_features), -bound, bound))
    if opts.bias ~= false then
        self.bias = Parameter(init.uniform_(xt.empty(out_features), -bound, bound))
    end
end
function L.Linear:forward(x) return F.linear(x, self.weight, self.bias) end
function L.Linear:extra_repr()
    return string.format('%d -> %d%s', self.in_features, self.out_features, self.bias and '' or ', bias=false')
end

---------------------------------------------------------------------------------------------
L.Conv2d = class('Conv2d', Module)
function L.Conv2d:__init(in_channels, out_channels, kernel_size, opts)
    Module.__init(self)
    opts = opts or {}
    local groups = opts.groups or 1
    if in_channels % groups ~= 0 or out_channels % groups ~= 0 then
        xt._raise(string.format('Conv2d: groups (%d) must divide in_channels (%d) and out_channels (%d)',
                                groups, in_channels, out_channels))
    end
    local kh, kw = kernel_size, kernel_size
    if type(kernel_size) == 'table' then kh, kw = kernel_size[1], kernel_size[2] end
    self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
    self.stride, self.padding, self.dilation, self.groups = opts.stride or 1, opts.padding or 0,
        opts.dilation or 1, groups
    local fan_in = in_channels / groups * kh * kw
    local bound = 1 / math.sqrt(fan_in)
    self.weight = Parameter(init.uniform_(xt.empty(out_channels, in_channels / groups, kh, kw), -bound, bound))
    if opts.bias ~= false then
        self.bias = Parameter(init.uniform_(xt.empty(out_channels), -bound, bound))
    end
end
function L.Conv2d:forward(x)
    return F.conv2d(x, self.weight, self.bias, {stride = self.stride, padding = self.padding,
                                               dilation = self.dilation, groups = self.groups})
end
function L.Conv2d:extra_repr()
    local s = string.format('%d -> %d, kernel=%s', self.in_channels, self.out_channels, fmt_pair(self.kernel_size))
    if self.stride ~= 1 then s = s .. ', stride=' .. fmt_pair(self.stride) end
    if self.padding ~= 0 then s = s .. ', padding=' .. fmt_pair(self.padding) end
    if self.dilation ~= 1 then s = s .. ', dilation=' .. fmt_pair(self.dilation) end
    if self.groups ~= 1 then s = s .. ', groups=' .. self.groups end
    if not self.bias then s = s .. ', bias=false' end
    return s
end

---------------------------------------------------------------------------------------------
L.MaxPool2d = class('MaxPool2d', Module)
function L.MaxPool2d:__init(kernel_size, opts)
    Module.__init(self)
    opts = opts or {}
    self.kernel_size, self.stride, self.padding = kernel_size, opts.stride or kernel_size, opts.padding or 0
end
function L.MaxPool2d:forward(x)
    return F.max_pool2d(x, self.kernel_size, {stride = self.stride, padding = self.padding})
end
function L.MaxPool2d:extra_repr() return 'kernel=' .. fmt_pair(self.kernel_size) .. ', stride=' .. fmt_pair(self.stride) end

L.AvgPool2d = class('AvgPool2d', Module)
function L.AvgPool2d:__init(kernel_size, opts)
    Module.__init(self)
    opts = opts or {}
    self.kernel_size, self.stride, self.padding = kernel_size, opts.stride or kernel_size, opts.padding or 0
    self.count_include_pad = opts.count_include_pad ~= false
end
function L.AvgPool2d:forward(x)
    return F.avg_pool2d(x, self.kernel_size, {stride = self.stride, padding = self.padding,
                                              count_include_pad = self.count_include_pad})
end
function L.AvgPool2d:extra_repr() return 'kernel=' .. fmt_pair(self.kernel_size) .. ', stride=' .. fmt_pair(self.stride) end

L.AdaptiveAvgPool2d = class('AdaptiveAvgPool2d', Module)
function L.AdaptiveAvgPool2d:__init(size) Module.__init(self); self.output_size = size end
function L.AdaptiveAvgPool2d:forward(x) return F.adaptive_avg_pool2d(x, self.output_size) end
function L.AdaptiveAvgPool2d:extra_repr() return fmt_pair(self.output_size) end

---------------------------------------------------------------------------------------------
-- BatchNorm over dim 2 of [N,C] or [N,C,...]; BatchNorm1d/2d are the same module.
L.BatchNorm2d = class('BatchNorm2d', Module)
function L.BatchNorm2d:__init(num_features, opts)
    Module.__init(self)
    opts = opts or {}
    self.num_features, self.eps, self.momentum = num_features, opts.eps or 1e-5, opts.momentum or 0.1
    if opts.affine ~= false then
        self.weight = Parameter(xt.ones(num_features))
        self.bias = Parameter(xt.zeros(num_features))
    end
    self.track_running_stats = opts.track_running_stats ~= false
    if self.track_running_stats then
        self:register_buffer('running_mean', xt.zeros(num_features))
        self:register_buffer('running_var', xt.ones(num_features))
    end
end
function L.BatchNorm2d:forward(x)
    local use_batch = self.training or not self.track_running_stats
    return F.batch_norm(x, self.running_mean, self.running_var, {
        weight = self.weight, bias = self.bias, training = use_batch,
        momentum = self.momentum, eps = self.eps})
end
function L.BatchNorm2d:extra_repr() return tostring(self.num_features) end
L.BatchNorm1d = class('BatchNorm1d', L.BatchNorm2d)

L.LayerNorm = class('LayerNorm', Module)
function L.LayerNorm:__init(normalized_shape, opts)
    Module.__init(self)
    opts = opts or {}
    if type(normalized_shape) == 'number' then normalized_shape = {normalized_shape} end
    self.normalized_shape, self.eps = normalized_shape, opts.eps or 1e-5
    if opts.elementwise_affine ~= false then
        self.weight = Parameter(xt.ones(normalized_shape))
        if opts.bias ~= false then self.bias = Parameter(xt.zeros(normalized_shape)) end
    end
end
function L.LayerNorm:forward(x)
    return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
end
function L.LayerNorm:extra_repr() return '[' .. table.concat(self.normalized_shape, ',') .. ']' end

L.GroupNorm = class('GroupNorm', Module)
function L.GroupNorm:__init(num_groups, num_channels, opts)
    Module.__init(self)
    opts = opts or {}
    if num_channels % num_groups ~= 0 then
        xt._raise(string.format('GroupNorm: %d groups do not divide %d channels', num_groups, num_channels))
    end
    self.num_groups, self.num_channels, self.eps = num_groups, num_channels, opts.eps or 1e-5
    if opts.affine ~= false then
        self.weight = Parameter(xt.ones(num_channels))
        self.bias = Parameter(xt.zeros(num_channels))
    end
end
function L.GroupNorm:forward(x) return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps) end
function L.GroupNorm:extra_repr() return self.num_groups .. ', ' .. self.num_channels end

---------------------------------------------------------------------------------------------
L.Dropout = class('Dropout', Module)
function L.Dropout:__init(p)
    Module.__init(self)
    self.p = p or 0.5
    if self.p < 0 or self.p > 1 then xt._raise('Dropout: p must be in [0, 1], got ' .. self.p) end
end
function L.Dropout:forward(x) return F.dropout(x, self.p, self.training) end
function L.Dropout:extra_repr() return 'p=' .. self.p end

L.Embedding = class('Embedding', Module)
function L.Embedding:__init(num_embeddings, embedding_dim, opts)
    Module.__init(self)
    opts = opts or {}
    self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
    self.weight = Parameter(init.normal_(xt.empty(num_embeddings, embedding_dim), 0, 1))
    self.padding_idx = opts.padding_idx
    if self.padding_idx then
        xt.no_grad(function() self.weight[self.padding_idx]:fill_(0) end)
    end
end
function L.Embedding:forward(index) return F.embedding(index, self.weight) end
function L.Embedding:extra_repr() return self.num_embeddings .. ', ' .. self.embedding_dim end

---------------------------------------------------------------------------------------------
-- activations and shape layers
local function activation(name, fn)
    local cls = class(name, Module)
    function cls:forward(x) return fn(x) end
    L[name] = cls
end
activation('ReLU', F.relu)
activation('GELU', F.gelu)
activation('SiLU', F.silu)
activation('Sigmoid', F.sigmoid)
activation('Tanh', F.tanh)
activation('Identity', function(x) return x end)

L.Softmax = class('Softmax', Module)
function L.Softmax:__init(dim) Module.__init(self); self.dim = dim or -1 end
function L.Softmax:forward(x) return x:softmax(self.dim) end
function L.Softmax:extra_repr() return 'dim=' .. self.dim end

L.LogSoftmax = class('LogSoftmax', Module)
function L.LogSoftmax:__init(dim) Module.__init(self); self.dim = dim or -1 end
function L.LogSoftmax:forward(x) return x:log_softmax(self.dim) end

-- Flatten dims start..end (default 2..-1: everything but the batch dim)
L.Flatten = class('Flatten', Module)
function L.Flatten:__init(start_dim, end_dim)
    Module.__init(self)
    self.start_dim, self.end_dim = start_dim or 2, end_dim or -1
end
function L.Flatten:forward(x) return x:flatten(self.start_dim, self.end_dim) end

---------------------------------------------------------------------------------------------
-- containers

-- nn.Sequential(m1, m2, ...) or nn.Sequential{m1, m2, ...}; children are named 1, 2, ...
L.Sequential = class('Sequential', Module)
function L.Sequential:__init(...)
    Module.__init(self)
    local list = {...}
    if #list == 1 and not Module.is_module(list[1]) and type(list[1]) == 'table' then list = list[1] end
    for _, m in ipairs(list) do self:add(m) end
end
function L.Sequential:add(m)
    if not Module.is_module(m) then xt._raise('Sequential: expected a module, got ' .. type(m)) end
    self[#self:children() + 1] = m
    return self
end
function L.Sequential:forward(x)
    for i, m in ipairs(self:children()) do
        local ok, out = pcall(m.forward, m, x)
        if not ok then
            -- name the failing layer, as Torch7's containers did
            error(string.format('%s\n  (in layer %d of Sequential: %s)', tostring(out), i, m.__name), 0)
        end
        x = out
    end
    return x
end

L.ModuleList = class('ModuleList', Module)
function L.ModuleList:__init(list)
    Module.__init(self)
    for _, m in ipairs(list or {}) do self:append(m) end
end
function L.ModuleList:append(m)
    if not Module.is_module(m) then xt._raise('ModuleList: expected a module, got ' .. type(m)) end
    self[#self:children() + 1] = m
    return self
end
function L.ModuleList:forward() xt._raise('ModuleList: has no forward; iterate over its children') end

return L
