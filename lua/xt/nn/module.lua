-- xt.nn.Module: the base of every layer.
--
-- A module keeps its parameters, buffers and children as plain fields
-- (self.weight = ..., self.conv1 = nn.Conv2d(...)); the order in which fields are first
-- assigned is remembered, so parameters(), state_dict() and printing follow it, as in
-- PyTorch. A tensor field is a parameter when it requires grad or was made by
-- nn.Parameter / register_parameter; buffers (running statistics, ...) are registered with
-- register_buffer and saved in the state dict; other tensors are ignored.
local xt = require 'xt.tensor'
local classlib = require 'xt.class'
local class, is_instance = classlib.class, classlib.is_instance

local Module = class('Module')

local parameter_set = setmetatable({}, {__mode = 'k'})   -- tensors made as parameters

-- nn.Parameter(t): t as a trainable parameter (requires grad).
local function Parameter(t, requires_grad)
    t:requires_grad(requires_grad ~= false)
    parameter_set[t] = true
    return t
end
Module.Parameter = Parameter

local function is_module(x) return is_instance(x, Module) end
Module.is_module = is_module

local function is_parameter(t) return parameter_set[t] or t._c.requires_grad ~= 0 end

Module.__newindex = function(self, k, v)
    if (xt.is_tensor(v) or is_module(v)) then
        local order = rawget(self, '_order')
        if not order then order = {}; rawset(self, '_order', order) end
        order[#order + 1] = k
    end
    rawset(self, k, v)
end

Module.__call = function(self, ...) return self:forward(...) end

function Module:__init()
    rawset(self, 'training', true)
end

function Module:forward()
    error(self.__name .. ': forward is not implemented', 2)
end

function Module:register_parameter(name, t)
    self[name] = t and Parameter(t) or nil
end

function Module:register_buffer(name, t)
    local buffers = rawget(self, '_buffers')
    if not buffers then buffers = {}; rawset(self, '_buffers', buffers) end
    buffers[name] = true
    self[name] = t
end

-- Fields in assignment order that are still set, with what they hold.
local function entries(self)
    local out, seen = {}, {}
    for _, k in ipairs(rawget(self, '_order') or {}) do
        local v = rawget(self, k)
        if v ~= nil and not seen[k] then
            seen[k] = true
            out[#out + 1] = {k, v}
        end
    end
    return out
end

function Module:named_children()
    local out = {}
    for _, e in ipairs(entries(self)) do
        if is_module(e[2]) then out[#out + 1] = {tostring(e[1]), e[2]} end
    end
    return out
end

function Module:children()
    local out = {}
    for _, e in ipairs(self:named_children()) do out[#out + 1] = e[2] end
    return out
end

-- {{'name', module}, ...} for self and every descendant, depth first.
function Module:named_modules(prefix, out)
    out = out or {}
    prefix = prefix or ''
    out[#out + 1] = {prefix, self}
    for _, c in ipairs(self:named_children()) do
        c[2]:named_modules(prefix == '' and c[1] or prefix .. '.' .. c[1], out)
    end
    return out
end

function Module:modules()
    local out = {}
    for _, e in ipairs(self:named_modules()) do out[#out + 1] = e[2] end
    return out
end

local function collect(self, prefix, out, want, seen)
    local buffers = rawget(self, '_buffers') or {}
    for _, e in ipairs(entries(self)) do
        local k, v = tostring(e[1]), e[2]
        local name = prefix == '' and k or prefix .. '.' .. k
        if xt.is_tensor(v) then
            local kind = buffers[e[1]] and 'buffer' or (is_parameter(v) and 'parameter' or nil)
            if kind == want and not seen[v] then
                seen[v] = true
                out[#out + 1] = {name, v}
            end
        elseif is_module(v) then
            collect(v, name, out, want, seen)
        end
    end
    return out
end

-- {{'layer.weight', tensor}, ...}; a tensor shared by two modules is listed once.
function Module:named_parameters() return collect(self, '', {}, 'parameter', {}) end
function Module:named_buffers() return collect(self, '', {}, 'buffer', {}) end

function Module:parameters()
    local out = {}
    for _, e in ipairs(self:named_parameters()) do out[#out + 1] = e[2] end
    return out
end

-- The usual AdamW split (as timm's param_groups_weight_decay): weights with weight decay;
-- biases, norm scales and other 1-D parameters without, since decaying them only shrinks
-- what normalisation puts back.
function Module:param_groups(weight_decay)
    local decay, no_decay = {}, {}
    for _, p in ipairs(self:parameters()) do
        if p:dim() <= 1 then no_decay[#no_decay + 1] = p else decay[#decay + 1] = p end
    end
    return {{params = decay, weight_decay = weight_decay}, {params = no_decay, weight_decay = 0}}
end

function Module:buffers()
    local out = {}
    for _, e in ipairs(self:named_buffers()) do out[#out + 1] = e[2] end
    return out
end

function Module:num_parameters()
    local n = 0
    for _, p in ipairs(self:parameters()) do n = n + p:numel() end
    return n
end

function Module:train(mode)
    mode = mode ~= false
    for _, m in ipairs(self:modules()) do rawset(m, 'training', mode) end
    return self
end

function Module:eval() return self:train(false) end

function Module:zero_grad()
    for _, p in ipairs(self:parameters()) do p.grad = nil end
end

-- fn(module) on every module, children first (as PyTorch's apply).
function Module:apply(fn)
    for _, c in ipairs(self:children()) do c:apply(fn) end
    fn(self)
    return self
end

-- {['layer.weight'] = tensor, ...}: parameters and buffers, detached (sharing storage).
function Module:state_dict()
    local sd = {}
    for _, e in ipairs(self:named_parameters()) do sd[e[1]] = e[2]:detach() end
    for _, e in ipairs(self:named_buffers()) do sd[e[1]] = e[2]:detach() end
    return sd
end

-- Copy a state dict in. strict (default true): missing or unexpected entries are an
-- error; a shape mismatch is always an error. Returns the missing and unexpected names.
function Module:load_state_dict(sd, strict)
    strict = strict ~= false
    local targets = {}
    for _, e in ipairs(self:named_parameters()) do targets[e[1]] = e[2] end
    for _, e in ipairs(self:named_buffers()) do targets[e[1]] = e[2] end
    local missing, unexpected = {}, {}
    for name in pairs(targets) do if sd[name] == nil then missing[#missing + 1] = name end end
    for name in pairs(sd) do if targets[name] == nil then unexpected[#unexpected + 1] = name end end
    table.sort(missing)
    table.sort(unexpected)
    if strict and (#missing > 0 or #unexpected > 0) then
        local parts = {}
        if #missing > 0 then parts[#parts + 1] = 'missing: ' .. table.concat(missing, ', ') end
        if #unexpected > 0 then parts[#parts + 1] = 'unexpected: ' .. table.concat(unexpected, ', ') end
        xt._raise('load_state_dict: ' .. table.concat(parts, '; '))
    end
    for name, target in pairs(targets) do
        local src = sd[name]
        if src ~= nil then
            if not xt.is_tensor(src) then
                xt._raise(string.format("load_state_dict: '%s' is a %s, expected a tensor", name, type(src)))
            end
            if src.shape ~= target.shape then
                xt._raise(string.format("load_state_dict: '%s' has shape %s in the state dict, %s in the model",
                                        name, tostring(src.shape), tostring(target.shape)))
            end
            xt.no_grad(function() target:copy_(src) end)
        end
    end
    return missing, unexpected
end

-- One line of the printed tree; layers override extra_repr to show their arguments.
function Module:extra_repr() return '' end

local function count_string(n)
    if n >= 1e6 then return string.format('%.2fM', n / 1e6) end
    if n >= 1e3 then return string.format('%.1fK', n / 1e3) end
    return tostring(n)
end

function Module:repr(indent)
    indent = indent or ''
    local head = self.__name .. '(' .. self:extra_repr()
    local children = self:named_children()
    if #children == 0 then return head .. ')' end
    local lines = {head}
    for _, c in ipairs(children) do
        local n = c[2]:num_parameters()
        local count = n > 0 and ('  -- ' .. count_string(n) .. ' params') or ''
        lines[#lines + 1] = indent .. '  (' .. c[1] .. '): ' .. c[2]:repr(indent .. '  ') .. count
    end
    lines[#lines + 1] = indent .. ')'
    return table.concat(lines, '\n')
end

Module.__tostring = function(self)
    return self:repr() .. '\n' .. count_string(self:num_parameters()) .. ' parameters'
end

return Module
