-- tensor_spec: creation, properties, element access, printing, errors, dtype conversion,
-- the RNG and memory pacing of the Lua Tensor type.
local xt = require 'xt'

describe('tensor creation', function()
    it('makes tensors from shapes in every spelling', function()
        assert.are.same({2, 3}, xt.zeros(2, 3).shape)
        assert.are.same({2, 3}, xt.ones({2, 3}).shape)
        assert.are.same({4}, xt.empty(xt.zeros(4).shape).shape)
        assert.are.equal('int64', xt.zeros(2, 'int64').dtype)
        assert.are.equal('uint8', xt.zeros(2, {dtype = 'uint8'}).dtype)
        assert.are.same({{7, 7}, {7, 7}}, xt.full({2, 2}, 7):totable())
        assert.are.same({}, xt.zeros().shape)
    end)

    it('reads nested tables', function()
        local t = xt.tensor{{1, 2, 3}, {4, 5, 6}}
        assert.are.same({2, 3}, t.shape)
        assert.are.equal('float32', t.dtype)
        assert.are.same({{1, 2, 3}, {4, 5, 6}}, t:totable())
        assert.are.equal(6, t[2][3])
        assert.are.equal(5, xt.tensor(5):item())
        assert.are.same({1, 2}, xt.tensor({1, 2}, 'int64'):totable())
        assert.has_error(function() xt.tensor{{1, 2}, {3}} end)
    end)

    it('makes ranges like PyTorch', function()
        assert.are.same({0, 1, 2, 3}, xt.arange(4):totable())
        assert.are.equal('int64', xt.arange(4).dtype)
        assert.are.same({2, 4}, xt.arange(2, 6, 2):totable())
        assert.are.equal('float32', xt.arange(0, 1, 0.25).dtype)
        assert.are.same({0, 0.5, 1}, xt.linspace(0, 1, 3):totable())
        assert.are.same({{1, 0}, {0, 1}}, xt.eye(2):totable())
    end)
end)

describe('random numbers', function()
    it('repeat under the same seed and do not depend on threads', function()
        xt.manual_seed(7)
        xt.set_num_threads(1)
        local a = xt.randn(100000)
        xt.manual_seed(7)
        xt.set_num_threads(2)
        local b = xt.randn(100000)
        assert.are.equal(a[1], b[1])
        assert.are.equal(a[99999], b[99999])
        local state = xt.get_rng_state()
        local c = xt.rand(5)
        xt.set_rng_state(state)
        assert.are.same(c:totable(), xt.rand(5):totable())
    end)

    it('gives 1-based permutations and integers in range', function()
        local p = xt.randperm(10):totable()
        table.sort(p)
        assert.are.same({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, p)
        local r = xt.randint(3, 5, 1000)
        for _, v in ipairs(r:totable()) do assert.is_true(v == 3 or v == 4) end
    end)
end)

describe('element access', function()
    it('indexes from 1 and writes through', function()
        local t = xt.zeros(3)
        t[1] = 5
        t[-1] = 7
        assert.are.same({5, 0, 7}, t:totable())
        assert.has_error(function() return t[4] end)
        assert.has_error(function() return t[0] end)
        local m = xt.zeros(2, 2)
        m[2] = 3
        assert.are.same({{0, 0}, {3, 3}}, m:totable())
    end)

    it('converts dtypes', function()
        local f = xt.tensor{1.5, -2.5, 300}
        assert.are.same({1, -2, 300}, f:long():totable())
        assert.are.equal('uint8', f:byte().dtype)
        assert.are.same({1, 2}, xt.tensor({1, 2}, 'int64'):float():totable())
    end)
end)

describe('printing', function()
    it('shows values, shape and dtype', function()
        local s = tostring(xt.tensor{{1, 2}, {3, 4}})
        assert.truthy(s:find('tensor%(%[%[1%., 2%.%]'))
        assert.truthy(s:find('shape=%[2,2%]'))
        assert.truthy(s:find('dtype=float32'))
        local big = tostring(xt.zeros(100, 100))
        assert.truthy(big:find('...', 1, true))
        assert.is_true(#big < 2000)
    end)
end)

describe('errors', function()
    it('name the op and what was wrong, at the caller', function()
        local ok, err = pcall(xt.zeros, 2, -3)
        assert.is_false(ok)
        assert.truthy(err:find('empty: negative size %-3 in dim 2'))
        assert.truthy(err:find('tensor_spec.lua'))
        assert.has_error(function() xt.zeros(2, 'float16') end,
                         "zeros: unknown dtype 'float16' (expected float32, int64 or uint8)")
        assert.has_error(function() xt.zeros(2):item() end)
        assert.has_error(function() xt.zeros(2):size(0) end)
    end)
end)

describe('memory', function()
    it('stays flat over ten thousand 4 MB temporaries', function()
        collectgarbage()
        local before = xt.memory.live_bytes()
        local peak = 0
        for _ = 1, 10000 do
            local t = xt.empty(1024 * 1024)
            peak = math.max(peak, xt.memory.live_bytes())
            t = nil
        end
        -- budget: at most 64 MB of garbage plus what was live before
        assert.is_true(peak - before < 200 * 1024 * 1024, 'peak grew by ' .. (peak - before))
        collectgarbage()
        assert.are.equal(before, xt.memory.live_bytes())
    end)

    it('refuses shapes too large to address, even with a zero-size dim', function()
        local ok, err = pcall(xt.empty, 0, 2 ^ 40, 2 ^ 40)
        assert.is_false(ok)
        assert.truthy(tostring(err):find('too large', 1, true))
        assert.are.equal(0, xt.empty(0, 3):numel())
    end)
end)
