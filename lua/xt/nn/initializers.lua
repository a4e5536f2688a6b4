-- xt.nn.init: parameter initialisers, as torch.nn.init defines them. Each fills a tensor
-- in place (without recording a graph) and returns it.
local xt = require 'xt.tensor'

local init = {}

local function fans(t)
    local shape = t.shape
    if #shape < 2 then xt._raise('init: fan in and fan out need a tensor with at least 2 dims') end
    local receptive = 1
    for i = 3, #shape do receptive = receptive * shape[i] end
    return shape[2] * receptive, shape[1] * receptive
end
init.fans = fans

function init.calculate_gain(nonlinearity, param)
    if nonlinearity == 'relu' then return math.sqrt(2) end
    if nonlinearity == 'tanh' then return 5 / 3 end
    if nonlinearity == 'leaky_relu' then
        local slope = param or 0.01
        return math.sqrt(2 / (1 + slope * slope))
    end
    if nonlinearity == 'selu' then return 3 / 4 end
    return 1   -- linear, conv, sigmoid
end

local function fill(t, fn) xt.no_grad(fn); return t end

function init.uniform_(t, a, b) return fill(t, function() t:uniform_(a or 0, b or 1) end) end
function init.normal_(t, mean, std) return fill(t, function() t:normal_(mean or 0, std or 1) end) end
function init.constant_(t, v) return fill(t, function() t:fill_(v) end) end
function init.zeros_(t) return init.constant_(t, 0) end
function init.ones_(t) return init.constant_(t, 1) end

function init.xavier_uniform_(t, gain)
    local fan_in, fan_out = fans(t)
    local a = (gain or 1) * math.sqrt(6 / (fan_in + fan_out))
    return init.uniform_(t, -a, a)
end

function init.xavier_normal_(t, gain)
    local fan_in, fan_out = fans(t)
    return init.normal_(t, 0, (gain or 1) * math.sqrt(2 / (fan_in + fan_out)))
end

-- opts: a (negative slope, 0), mode ('fan_in' or 'fan_out'), nonlinearity ('leaky_relu')
local function kaiming_std(t, opts)
    opts = opts or {}
    local fan_in, fan_out = fans(t)
    local fan = (opts.mode == 'fan_out') and fan_out or fan_in
    local gain = init.calculate_gain(opts.nonlinearity or 'leaky_relu', opts.a or 0)
    return gain / math.sqrt(fan)
end

function init.kaiming_uniform_(t, opts)
    local bound = math.sqrt(3) * kaiming_std(t, opts)
    return init.uniform_(t, -bound, bound)
end

function init.kaiming_normal_(t, opts) return init.normal_(t, 0, kaiming_std(t, opts)) end

-- Normal(mean, std) restricted to [a, b] (default +-2 std): redraw what falls outside.
function init.trunc_normal_(t, mean, std, a, b)
    mean, std = mean or 0, std or 1
    a, b = a or mean - 2 * std, b or mean + 2 * std
    return fill(t, function()
        t:normal_(mean, std)
        for _ = 1, 100 do
            local outside = t:lt(a):add(t:gt(b))
            if outside:sum():item() == 0 then return end
            t:copy_(xt.where(outside, xt.randn(t.shape) * std + mean, t))
        end
        t:copy_(t:clamp(a, b))
    end)
end

return init
