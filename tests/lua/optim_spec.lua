-- optim: the update rules against hand-computed steps, parameter groups, state dicts that
-- continue a run identically, and the learning-rate schedules.
local xt = require 'xt'
local optim = xt.optim

local function near(a, b, tol) return math.abs(a - b) <= (tol or 1e-6) * (1 + math.abs(b)) end

-- one parameter with a fixed gradient sequence: loss_k = g_k · p
local function run_steps(opt_ctor, grads, p0)
    local p = xt.tensor(p0):requires_grad()
    local opt = opt_ctor({p})
    for _, g in ipairs(grads) do
        opt:zero_grad()
        local loss = (p * xt.tensor(g)):sum()
        loss:backward()
        opt:step()
    end
    return p, opt
end

describe('SGD', function()
    it('follows PyTorch momentum, dampening, nesterov and weight decay rules', function()
        -- momentum 0.9, weight decay 0.1, lr 0.5, p0 = 1, grads 1, 2
        -- step 1: d = 1 + 0.1*1 = 1.1; buf = 1.1; p = 1 - 0.55 = 0.45
        -- step 2: d = 2 + 0.045 = 2.045; buf = 0.99 + 2.045 = 3.035; p = 0.45 - 1.5175 = -1.0675
        local p = run_steps(function(ps)
            return optim.SGD(ps, {lr = 0.5, momentum = 0.9, weight_decay = 0.1})
        end, {{1}, {2}}, {1})
        assert.is_true(near(p[1], -1.0675, 1e-5))
        -- nesterov: step 1: buf = 1; update = g + 0.9 buf = 1.9; p = 1 - 0.1*1.9 = 0.81
        p = run_steps(function(ps) return optim.SGD(ps, {lr = 0.1, momentum = 0.9, nesterov = true}) end,
                      {{1}}, {1})
        assert.is_true(near(p[1], 0.81, 1e-5))
        -- dampening 0.5: step 2 buf = 0.9*1 + 0.5*1 = 1.4; p = 1 - 0.1 - 0.14 = 0.76
        p = run_steps(function(ps) return optim.SGD(ps, {lr = 0.1, momentum = 0.9, dampening = 0.5}) end,
                      {{1}, {1}}, {1})
        assert.is_true(near(p[1], 0.76, 1e-5))
    end)

    it('refuses nesterov without momentum', function()
        assert.has_error(function()
            optim.SGD({xt.zeros(1):requires_grad()}, {lr = 0.1, nesterov = true})
        end)
    end)
end)

describe('Adam and AdamW', function()
    it('take a first step of lr in the direction of -sign(grad)', function()
        local p = run_steps(function(ps) return optim.Adam(ps, {lr = 0.01}) end, {{3, -0.5}}, {0, 0})
        assert.is_true(near(p[1], -0.01, 1e-5))
        assert.is_true(near(p[2], 0.01, 1e-5))
    end)

    it('apply weight decay as L2 (Adam) or decoupled (AdamW)', function()
        -- AdamW: p = p (1 - lr wd) - lr * sign step; with grad 0 only the decay acts
        local p = run_steps(function(ps) return optim.AdamW(ps, {lr = 0.1, weight_decay = 0.5}) end,
                            {{0}}, {2})
        assert.is_true(near(p[1], 2 * (1 - 0.05), 1e-5))
        -- Adam with L2: the decay enters the gradient (0.5 * 2 = 1), so the first step is lr
        p = run_steps(function(ps) return optim.Adam(ps, {lr = 0.1, weight_decay = 0.5}) end,
                      {{0}}, {2})
        assert.is_true(near(p[1], 1.9, 1e-5))
    end)

    it('match a hand-computed second step', function()
        local b1, b2, lr, eps = 0.9, 0.999, 0.1, 1e-8
        local g1, g2 = 1.0, -2.0
        local m, v = (1 - b1) * g1, (1 - b2) * g1 ^ 2
        local p = -lr * (m / (1 - b1)) / (math.sqrt(v / (1 - b2)) + eps)
        m, v = b1 * m + (1 - b1) * g2, b2 * v + (1 - b2) * g2 ^ 2
        p = p - lr * (m / (1 - b1 ^ 2)) / (math.sqrt(v / (1 - b2 ^ 2)) + eps)
        local got = run_steps(function(ps) return optim.Adam(ps, {lr = lr}) end, {{g1}, {g2}}, {0})
        assert.is_true(near(got[1], p, 1e-5))
    end)
end)

describe('hyper-parameters', function()
    local function message(fn)
        local ok, err = pcall(fn)
        assert.is_false(ok)
        return tostring(err)
    end
    local p = {xt.zeros(2):requires_grad()}

    it('are checked when the optimizer is made, naming the bad value', function()
        assert.truthy(message(function() optim.AdamW(p, {lr = -1}) end)
                      :find('AdamW: lr must be a number >= 0, got -1', 1, true))
        assert.truthy(message(function() optim.Adam(p, {betas = {0.9, 1}}) end)
                      :find('Adam: betas[2] must be a number in [0, 1), got 1', 1, true))
        assert.truthy(message(function() optim.SGD(p, {lr = 0.1, momentum = -0.5}) end)
                      :find('SGD: momentum must be a number >= 0, got -0.5', 1, true))
        assert.truthy(message(function() optim.AdamW(p, {weight_decay = 0 / 0}) end)
                      :find('AdamW: weight_decay must be a number >= 0, got', 1, true))
        assert.truthy(message(function() optim.SGD(p, {lr = '0.1'}) end)
                      :find('SGD: lr must be a number >= 0, got 0.1', 1, true))
    end)

    it('are checked in every parameter group', function()
        local opt = optim.AdamW(p, {lr = 1e-3})
        assert.truthy(message(function()
            opt:add_param_group{params = {xt.zeros(1):requires_grad()}, eps = -1}
        end):find('AdamW: eps must be a number >= 0, got -1', 1, true))
        assert.are.equal(1, #opt.param_groups)
    end)

    it('accept the edges of their ranges', function()
        optim.SGD(p, {lr = 0, momentum = 0, weight_decay = 0})
        optim.Adam(p, {lr = 0, betas = {0, 0.999999}, eps = 0})
    end)
end)

describe('optimizer state', function()
    it('keeps per-group hyper-parameters', function()
        local a, b = xt.ones(1):requires_grad(), xt.ones(1):requires_grad()
        local opt = optim.SGD({{params = {a}}, {params = {b}, lr = 1}}, {lr = 0.1})
        ;(a + b):sum():backward()
        opt:step()
        assert.is_true(near(a[1], 0.9, 1e-6))
        assert.is_true(near(b[1], 0, 1e-6))
    end)

    it('saves and restores so a run continues identically', function()
        local grads = {{1, 2}, {-1, 0.5}, {0.3, 0.3}, {2, -1}}
        local ref = run_steps(function(ps) return optim.AdamW(ps, {lr = 0.05}) end, grads, {1, 1})
        local p, opt = run_steps(function(ps) return optim.AdamW(ps, {lr = 0.05}) end,
                                 {grads[1], grads[2]}, {1, 1})
        local path = os.tmpname()
        xt.save(path, {opt = opt:state_dict(), p = p:detach()})
        local saved = xt.load(path)
        os.remove(path)
        local q = saved.p:clone():requires_grad()
        local opt2 = optim.AdamW({q}, {lr = 0.05})
        opt2:load_state_dict(saved.opt)
        for i = 3, 4 do
            opt2:zero_grad()
            local loss = (q * xt.tensor(grads[i])):sum()
            loss:backward()
            opt2:step()
        end
        assert.are.equal(ref[1], q[1])
        assert.are.equal(ref[2], q[2])
    end)

    it('names a mismatched state dict', function()
        local opt = optim.SGD({xt.ones(1):requires_grad()}, {lr = 0.1})
        local other = optim.SGD({{params = {xt.ones(1):requires_grad()}},
                                 {params = {xt.ones(1):requires_grad()}}}, {lr = 0.1})
        local ok, err = pcall(opt.load_state_dict, opt, other:state_dict())
        assert.is_false(ok)
        assert.truthy(tostring(err):find('parameter groups', 1, true))
    end)
end)

describe('learning-rate schedules', function()
    local function lrs(make, n)
        local opt = optim.SGD({xt.ones(1):requires_grad()}, {lr = 1})
        local s = make(opt)
        local out = {s:get_last_lr()[1]}
        for _ = 1, n do s:step(); out[#out + 1] = s:get_last_lr()[1] end
        return out
    end

    it('StepLR multiplies by gamma every step_size steps', function()
        local v = lrs(function(o) return optim.StepLR(o, {step_size = 2, gamma = 0.5}) end, 4)
        assert.are.same({1, 1, 0.5, 0.5, 0.25}, v)
    end)

    it('CosineAnnealingLR reaches eta_min at T_max', function()
        local v = lrs(function(o) return optim.CosineAnnealingLR(o, {T_max = 4, eta_min = 0.1}) end, 4)
        assert.is_true(near(v[1], 1))
        assert.is_true(near(v[3], 0.55))
        assert.is_true(near(v[5], 0.1))
    end)

    it('WarmupCosine ramps up linearly, then decays by a cosine', function()
        local v = lrs(function(o) return optim.WarmupCosine(o, {warmup_steps = 4, total_steps = 8}) end, 8)
        assert.is_true(near(v[1], 0.25))
        assert.is_true(near(v[4], 1))
        assert.is_true(near(v[5], 1))     -- the peak, at the end of warmup
        assert.is_true(near(v[7], 0.5))
        assert.is_true(near(v[9], 0, 1e-12))
    end)

    it('name a bad option when made, not with a NaN learning rate at the first step', function()
        local opt = optim.SGD({xt.ones(1):requires_grad()}, {lr = 1})
        local cases = {
            {optim.StepLR, {step_size = 0}, 'StepLR: step_size must be an integer >= 1, got 0'},
            {optim.StepLR, {step_size = 2, gamma = -1}, 'StepLR: gamma must be a number >= 0, got -1'},
            {optim.CosineAnnealingLR, {T_max = 0}, 'CosineAnnealingLR: T_max must be an integer >= 1, got 0'},
            {optim.CosineAnnealingLR, {}, 'CosineAnnealingLR: T_max is required'},
            {optim.WarmupCosine, {total_steps = 2.5}, 'WarmupCosine: total_steps must be an integer >= 1, got 2.5'},
            {optim.WarmupCosine, {total_steps = 5, warmup_steps = -1},
             'WarmupCosine: warmup_steps must be an integer >= 0, got -1'},
        }
        for _, c in ipairs(cases) do
            local ok, err = pcall(c[1], opt, c[2])
            assert.is_false(ok)
            assert.truthy(tostring(err):find(c[3], 1, true), tostring(err))
        end
        assert.are.equal(1, opt.param_groups[1].lr)   -- a refused schedule left the lr alone
    end)
end)
