-- autograd_spec: the engine's behaviour seen from Lua: accumulation, broadcasting, graph
-- lifetime, in-place detection, grad modes, and functions written in Lua.
local xt = require 'xt'

describe('backward', function()
    it('accumulates into leaves across uses and calls', function()
        local x = xt.tensor{1, 2, 3}:requires_grad()
        local y = (x * x + x * 3):sum()      -- dy/dx = 2x + 3
        y:backward()
        assert.are.same({5, 7, 9}, x.grad:totable())
        local z = (x * 2):sum()
        z:backward()                          -- accumulates: + 2
        assert.are.same({7, 9, 11}, x.grad:totable())
        x.grad = nil
        assert.is_nil(x.grad)
    end)

    it('sums gradients over broadcast dims', function()
        local a = xt.ones(2, 3):requires_grad()
        local b = xt.ones(3):requires_grad()
        local c = xt.ones(2, 1):requires_grad()
        local loss = ((a + b) * c):sum()
        loss:backward()
        assert.are.same({2, 2, 2}, b.grad:totable())
        assert.are.same({{6}, {6}}, c.grad:totable())
    end)

    it('needs a gradient for a non-scalar root', function()
        local x = xt.ones(2, 2):requires_grad()
        local y = x * 2
        assert.has_error(function() y:backward() end)
        y:backward(xt.ones(2, 2))
        assert.are.same({{2, 2}, {2, 2}}, x.grad:totable())
    end)

    it('refuses a second backward through a freed graph, unless retained', function()
        local x = xt.tensor{1, 2}:requires_grad()
        local y = (x:exp()):sum()
        y:backward({retain_graph = true})
        y:backward()
        local ok, err = pcall(function() y:backward() end)
        assert.is_false(ok)
        assert.truthy(err:find('second time'))
    end)

    it('detects in-place changes to saved tensors', function()
        local x = xt.tensor{1, 2}:requires_grad()
        local e = x:exp()
        local y = (e:exp()):sum()             -- exp saves its output e... and exp(e) saves its own output
        local h = x * 1
        local z = (h * h):sum()               -- mul saves h
        xt.no_grad(function() h:add_(1) end)
        local ok, err = pcall(function() z:backward() end)
        assert.is_false(ok)
        assert.truthy(err:find('modified in place'))
        y:backward()
    end)

    it('respects no_grad and detach', function()
        local x = xt.ones(3):requires_grad()
        local y = xt.no_grad(function() return x * 2 end)
        assert.is_false(y.needs_grad)
        assert.is_nil(y.grad_fn)
        local d = (x * 2):detach()
        assert.is_false(d.needs_grad)
        assert.is_true(xt.is_grad_enabled())
        local inner = xt.no_grad(function() return xt.enable_grad(function() return (x * 2).needs_grad end) end)
        assert.is_true(inner)
        assert.has_error(function() xt.no_grad(function() error('boom') end) end)
        assert.is_true(xt.is_grad_enabled())   -- restored after the error
    end)

    it('refuses in-place changes of leaves that require grad', function()
        local w = xt.zeros(3):requires_grad()
        assert.has_error(function() w:fill_(1) end)
        xt.no_grad(function() w:fill_(1) end)
        assert.are.same({1, 1, 1}, w:totable())
        assert.has_error(function() xt.zeros(2, 'int64'):requires_grad() end)
    end)

    it('handles deep graphs without recursion', function()
        local x = xt.tensor{1}:requires_grad()
        local y = x
        for _ = 1, 20000 do y = y * 1 end
        y:sum():backward()
        assert.are.same({1}, x.grad:totable())
    end)

    it('names the op that made a tensor', function()
        local x = xt.ones(2):requires_grad()
        assert.are.equal('mul', (x * x).grad_fn)
        assert.is_true(x.is_leaf)
        assert.is_false((x * x).is_leaf)
    end)
end)

describe('functions written in Lua', function()
    local Cube = xt.autograd.Function{
        name = 'cube',
        forward = function(ctx, x) ctx.x = x; return x * x * x end,
        backward = function(ctx, dout) return dout * ctx.x * ctx.x * 3 end,
    }
    local ScaledAdd = xt.autograd.Function{
        name = 'scaled_add',
        forward = function(ctx, a, s, b) ctx.s = s; return a * s + b end,
        backward = function(ctx, dout) return dout * ctx.s, dout end,
    }

    it('take part in backward without a C change', function()
        local x = xt.tensor{1, 2, 3}:requires_grad()
        local y = (Cube(x) * 2):sum()
        assert.are.equal('cube', Cube(x).grad_fn)
        y:backward()
        assert.are.same({6, 24, 54}, x.grad:totable())
    end)

    it('pass gradcheck and mix tensor and number arguments', function()
        xt.manual_seed(0)
        local a, b = xt.randn(3, 2):requires_grad(), xt.randn(2):requires_grad()
        assert.is_true(xt.autograd.gradcheck(function(p, q) return ScaledAdd(p, 1.5, q):tanh() end, {a, b}))
    end)

    it('report bad gradients clearly', function()
        local Bad = xt.autograd.Function{
            forward = function(ctx, x) return x * 2 end,
            backward = function(ctx, dout) return xt.ones(7) end,
        }
        local x = xt.ones(3):requires_grad()
        local ok, err = pcall(function() Bad(x):sum():backward() end)
        assert.is_false(ok)
        assert.truthy(err:find('shape'))
        assert.is_true(xt.is_grad_enabled())
    end)
end)
