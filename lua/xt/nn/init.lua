-- xt.nn: modules (nn.Linear, nn.Conv2d, ...), nn.functional, nn.init, nn.utils.
local Module = require 'xt.nn.module'
local layers = require 'xt.nn.layers'

local nn = {
    Module = Module,
    Parameter = Module.Parameter,
    functional = require 'xt.nn.functional',
    init = require 'xt.nn.initializers',
    utils = require 'xt.nn.utils',
    class = require('xt.class').class,
}
for name, cls in pairs(layers) do nn[name] = cls end
for name, cls in pairs(require('xt.nn.attention').modules) do nn[name] = cls end
for name, cls in pairs(require('xt.nn.aft').modules) do nn[name] = cls end
for _, m in ipairs{'xt.nn.efficient_attention', 'xt.nn.attention_registry'} do for name, v in pairs(require(m).modules) do nn[name] = v end end
for name, cls in pairs(require('xt.nn.sparse_attention').modules) do nn[name] = cls end

-- Modules that later issues add (attention, DeLighT) register here when loaded.
setmetatable(nn, {__index = function(t, k)
    for _, mod in ipairs{'xt.nn.attention', 'xt.nn.delight'} do
        local ok, m = pcall(require, mod)
        if ok and type(m) == 'table' and m[k] then rawset(t, k, m[k]); return m[k] end
    end
    return nil
end})

return nn
