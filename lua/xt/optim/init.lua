-- xt.optim: SGD, Adam, AdamW with parameter groups, and learning-rate schedulers.
-- Each update is one fused C pass per parameter (core/optim.c).
--
--   opt = optim.AdamW(model:parameters(), {lr = 3e-3, weight_decay = 0.1})
--   opt = optim.SGD({{params = decay, weight_decay = 5e-4}, {params = no_decay, weight_decay = 0}},
--                   {lr = 0.1, momentum = 0.9})
local C = require 'xt.lib'
local xt = require 'xt.tensor'
local class = require('xt.class').class

local optim = {}

local Optimizer = class('Optimizer')
optim.Optimizer = Optimizer

function Optimizer:__init(params, defaults)
    if type(params) == 'table' and params.parameters then params = params:parameters() end
    if type(params) ~= 'table' or #params == 0 then
        xt._raise(self.__name .. ': expected a non-empty list of parameters or parameter groups')
    end
    self.defaults = defaults
    self.param_groups = {}
    self.state = {}          -- per parameter tensor: {step = n, buffers...}
    local groups = xt.is_tensor(params[1]) and {{params = params}} or params
    for _, g in ipairs(groups) do self:add_param_group(g) end
end

function Optimizer:add_param_group(group)
    local g = {}
    for k, v in pairs(self.defaults) do g[k] = v end
    for k, v in pairs(group) do g[k] = v end
    if type(g.params) ~= 'table' then xt._raise(self.__name .. ': a parameter group needs params') end
    for i, p in ipairs(g.params) do
        if not xt.is_tensor(p) then xt._raise(string.format('%s: parameter %d is not a tensor', self.__name, i)) end
        if p.dtype ~= 'float32' then xt._raise(string.format('%s: parameter %d is %s, expected float32', self.__name, i, p.dtype)) end
    end
    self:_check_group(g)
    g.initial_lr = g.initial_lr or g.lr
    self.param_groups[#self.param_groups + 1] = g
end

-- The hyper-parameters a group may hold and their ranges, checked when the optimizer (or a
-- group) is made rather than at the first step, as PyTorch does. (NaN fails every range.)
local function non_negative(v) return v >= 0 end
local function unit(v) return v >= 0 and v < 1 end
local RANGES = {
    lr = {non_negative, '>= 0'}, weight_decay = {non_negative, '>= 0'},
    momentum = {non_negative, '>= 0'}, eps = {non_negative, '>= 0'},
    beta1 = {unit, 'in [0, 1)', 'betas[1]'}, beta2 = {unit, 'in [0, 1)', 'betas[2]'},
}

function Optimizer:_check_group(g)
    for key, r in pairs(RANGES) do
        local v = g[key]
        if v ~= nil and not (type(v) == 'number' and r[1](v)) then
            xt._raise(string.format('%s: %s must be a number %s, got %s', self.__name,
                                    r[3] or key, r[2], tostring(v)))
        end
    end
end

function Optimizer:zero_grad()
    for _, g in ipairs(self.param_groups) do
        for _, p in ipairs(g.params) do p.grad = nil end
    end
end

-- Run update(p, grad, state, group) for every parameter that has a gradient.
function Optimizer:_each(update)
    for _, g in ipairs(self.param_groups) do
        for _, p in ipairs(g.params) do
            local grad = p.grad
            if grad then
                local st = self.state[p]
                if not st then st = {step = 0}; self.state[p] = st end
                st.step = st.step + 1
                update(p, grad:contiguous(), st, g)
            end
        end
    end
end

-- {state = {[i] = {...}}, param_groups = {{lr=..., params = {i, ...}}}}, parameters
-- numbered in group order from 1, as PyTorch numbers them from 0.
function Optimizer:state_dict()
    local sd = {state = {}, param_groups = {}}
    local index = 0
    for _, g in ipairs(self.param_groups) do
        local group = {params = {}}
        for k, v in pairs(g) do if k ~= 'params' then group[k] = v end end
        for _, p in ipairs(g.params) do
            index = index + 1
            group.params[#group.params + 1] = index
            local st = self.state[p]
            if st then
                local copy = {}
                for k, v in pairs(st) do copy[k] = xt.is_tensor(v) and v:clone() or v end
                sd.state[index] = copy
            end
        end
        sd.param_groups[#sd.param_groups + 1] = group
    end
    return sd
end

function Optimizer:load_state_dict(sd)
    if #sd.param_groups ~= #self.param_groups then
        xt._raise(string.format('%s: load_state_dict: %d parameter groups in the state dict, %d here',
                                self.__name, #sd.param_groups, #self.param_groups))
    end
    local params = {}
    for gi, g in ipairs(self.param_groups) do
        local saved = sd.param_groups[gi]
        if #saved.params ~= #g.params then
            xt._raise(string.format('%s: load_state_dict: group %d has %d parameters in the state dict, %d here',
                                    self.__name, gi, #saved.params, #g.params))
        end
        for k, v in pairs(saved) do if k ~= 'params' then g[k] = v end end
        for i, p in ipairs(g.params) do params[saved.params[i]] = p end
    end
    self.state = {}
    for index, st in pairs(sd.state) do
        local p = params[index]
        if p then
            local copy = {}
            for k, v in pairs(st) do
                if xt.is_tensor(v) then
                    if v.shape ~= p.shape then
                        xt._raise(string.format('%s: load_state_dict: state %s of parameter %d has shape %s, parameter %s',
                                                self.__name, k, index, tostring(v.shape), tostring(p.shape)))
                    end
                    copy[k] = v:clone()
                else
                    copy[k] = v
                end
            end
            self.state[p] = copy
        end
    end
end

---------------------------------------------------------------------------------------------
-- SGD{lr, momentum=0, dampening=0, weight_decay=0, nesterov=false}
optim.SGD = class('SGD', Optimizer)
function optim.SGD:__init(params, opts)
    opts = opts or {}
    if not opts.lr then xt._raise('SGD: lr is required') end
    if opts.nesterov and ((opts.momentum or 0) <= 0 or (opts.dampening or 0) ~= 0) then
        xt._raise('SGD: nesterov needs momentum > 0 and dampening 0')
    end
    Optimizer.__init(self, params, {lr = opts.lr, momentum = opts.momentum or 0,
        dampening = opts.dampening or 0, weight_decay = opts.weight_decay or 0,
        nesterov = opts.nesterov or false})
end
function optim.SGD:step()
    self:_each(function(p, grad, st, g)
        if g.momentum ~= 0 and not st.momentum_buffer then st.momentum_buffer = xt.zeros_like(p) end
        xt._check(C.xt_sgd_step(p._c, grad._c, st.momentum_buffer and st.momentum_buffer._c or nil,
                                g.lr, g.momentum, g.dampening, g.weight_decay, g.nesterov and 1 or 0, st.step))
    end)
end

-- Adam{lr=1e-3, betas={0.9, 0.999}, eps=1e-8, weight_decay=0}; AdamW has weight_decay=0.01
local function adam_class(name, decoupled, default_wd)
    local cls = class(name, Optimizer)
    function cls:__init(params, opts)
        opts = opts or {}
        local betas = opts.betas or {0.9, 0.999}
        Optimizer.__init(self, params, {lr = opts.lr or 1e-3, beta1 = betas[1], beta2 = betas[2],
            eps = opts.eps or 1e-8, weight_decay = opts.weight_decay or default_wd})
    end
    function cls:step()
        self:_each(function(p, grad, st, g)
            if not st.exp_avg then
                st.exp_avg, st.exp_avg_sq = xt.zeros_like(p), xt.zeros_like(p)
            end
            xt._check(C.xt_adam_step(p._c, grad._c, st.exp_avg._c, st.exp_avg_sq._c, g.lr, g.beta1,
                                     g.beta2, g.eps, g.weight_decay, decoupled and 1 or 0, st.step))
        end)
    end
    return cls
end
optim.Adam = adam_class('Adam', false, 0)
optim.AdamW = adam_class('AdamW', true, 0.01)

optim.lr_scheduler = require 'xt.optim.lr_scheduler'
-- short names, as experiments use them
optim.StepLR = optim.lr_scheduler.StepLR
optim.CosineAnnealingLR = optim.lr_scheduler.CosineAnnealingLR
optim.WarmupCosine = optim.lr_scheduler.WarmupCosine

return optim
