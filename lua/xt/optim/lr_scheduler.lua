-- xt.optim.lr_scheduler: learning rate as a function of the step (or epoch) count.
-- Call scheduler:step() once per step (or epoch, as you count); it sets every group's lr.
local xt = require 'xt.tensor'
local class = require('xt.class').class

local S = {}

-- A schedule's option: a number (an integer when `integer`) >= lo, else a clear error.
local function option(who, opts, key, lo, integer, default)
    local v = opts[key]
    if v == nil then v = default end
    if v == nil then xt._raise(string.format('%s: %s is required', who, key)) end
    if type(v) ~= 'number' or v ~= v or v < lo or (integer and v ~= math.floor(v)) then
        xt._raise(string.format('%s: %s must be %s >= %s, got %s', who, key,
                                integer and 'an integer' or 'a number', tostring(lo), tostring(v)))
    end
    return v
end

local Scheduler = class('Scheduler')
S.Scheduler = Scheduler
function Scheduler:__init(optimizer)
    self.optimizer = optimizer
    self.last_step = 0
    self.base_lrs = {}
    for i, g in ipairs(optimizer.param_groups) do self.base_lrs[i] = g.initial_lr or g.lr end
    self:_apply()
end
function Scheduler:_apply()
    for i, g in ipairs(self.optimizer.param_groups) do g.lr = self:lr_at(self.last_step, self.base_lrs[i]) end
end
function Scheduler:step()
    self.last_step = self.last_step + 1
    self:_apply()
end
function Scheduler:get_last_lr()
    local out = {}
    for i, g in ipairs(self.optimizer.param_groups) do out[i] = g.lr end
    return out
end
function Scheduler:state_dict() return {last_step = self.last_step, base_lrs = self.base_lrs} end
function Scheduler:load_state_dict(sd)
    self.last_step, self.base_lrs = sd.last_step, sd.base_lrs
    self:_apply()
end

-- StepLR(opt, {step_size, gamma=0.1}): lr * gamma^floor(step / step_size)
S.StepLR = class('StepLR', Scheduler)
function S.StepLR:__init(opt, opts)
    opts = opts or {}
    self.step_size = option('StepLR', opts, 'step_size', 1, true)
    self.gamma = option('StepLR', opts, 'gamma', 0, false, 0.1)
    Scheduler.__init(self, opt)
end
function S.StepLR:lr_at(t, base) return base * self.gamma ^ math.floor(t / self.step_size) end

-- CosineAnnealingLR(opt, {T_max, eta_min=0})
S.CosineAnnealingLR = class('CosineAnnealingLR', Scheduler)
function S.CosineAnnealingLR:__init(opt, opts)
    opts = opts or {}
    self.T_max = option('CosineAnnealingLR', opts, 'T_max', 1, true)
    self.eta_min = option('CosineAnnealingLR', opts, 'eta_min', 0, false, 0)
    Scheduler.__init(self, opt)
end
function S.CosineAnnealingLR:lr_at(t, base)
    t = math.min(t, self.T_max)
    return self.eta_min + (base - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2
end

-- WarmupCosine(opt, {warmup_steps, total_steps, min_lr=0}): linear from 0 to the base lr
-- over warmup_steps, then cosine down to min_lr at total_steps.
S.WarmupCosine = class('WarmupCosine', Scheduler)
function S.WarmupCosine:__init(opt, opts)
    opts = opts or {}
    self.total = option('WarmupCosine', opts, 'total_steps', 1, true)
    self.warmup = option('WarmupCosine', opts, 'warmup_steps', 0, true, 0)
    self.min_lr = option('WarmupCosine', opts, 'min_lr', 0, false, 0)
    Scheduler.__init(self, opt)
end
function S.WarmupCosine:lr_at(t, base)
    if t < self.warmup then return base * (t + 1) / self.warmup end
    local span = math.max(1, self.total - self.warmup)
    local progress = math.min(1, (t - self.warmup) / span)
    return self.min_lr + (base - self.min_lr) * (1 + math.cos(math.pi * progress)) / 2
end

return S
