-- serialize_spec: checkpoints round-trip exactly and bad files are clear errors.
local xt = require 'xt'

local dir = os.tmpname()
os.remove(dir)
os.execute('mkdir -p ' .. dir)

describe('checkpoints', function()
    it('round-trip nested tables of tensors, numbers, strings, booleans and rng states', function()
        xt.manual_seed(3)
        local value = {
            weights = {w = xt.randn(3, 4), idx = xt.arange(5), img = xt.zeros(2, 2, 'uint8')},
            name = 'run 1', lr = 3e-3, done = false, list = {1, 'two', true},
            rng = xt.get_rng_state(), scalar = xt.tensor(2.5),
        }
        local path = dir .. '/ckpt.xt'
        xt.save(path, value)
        local back = xt.load(path)
        assert.are.same(value.weights.w:totable(), back.weights.w:totable())
        assert.are.equal('int64', back.weights.idx.dtype)
        assert.are.equal('uint8', back.weights.img.dtype)
        assert.are.same({}, back.scalar.shape)
        assert.are.equal('run 1', back.name)
        assert.are.equal(3e-3, back.lr)
        assert.are.equal(false, back.done)
        assert.are.same({1, 'two', true}, back.list)
        assert.is_true(back.rng.seed == value.rng.seed and back.rng.offset == value.rng.offset)
        xt.set_rng_state(back.rng)
        local a = xt.rand(3):totable()
        xt.set_rng_state(value.rng)
        assert.are.same(a, xt.rand(3):totable())
    end)

    it('saves non-contiguous tensors by value', function()
        local t = xt.arange(6):view(2, 3):t()
        xt.save(dir .. '/t.xt', {t = t})
        assert.are.same(t:totable(), xt.load(dir .. '/t.xt').t:totable())
    end)

    it('reports truncated, corrupt and foreign files by name', function()
        local path = dir .. '/good.xt'
        xt.save(path, {w = xt.ones(100)})
        local f = io.open(path, 'rb'); local bytes = f:read('*a'); f:close()
        local function write(name, data)
            local h = io.open(dir .. '/' .. name, 'wb'); h:write(data); h:close()
            return dir .. '/' .. name
        end
        local cases = {
            {write('trunc.xt', bytes:sub(1, #bytes - 100)), 'truncated'},
            {write('flip.xt', bytes:sub(1, 200) .. string.char((bytes:byte(201) + 1) % 256) .. bytes:sub(202)), 'checksum'},
            {write('foreign.xt', 'PK\3\4 this is a zip file, not a checkpoint'), 'not an xt checkpoint'},
            {write('empty.xt', ''), 'not an xt checkpoint'},
            {dir .. '/missing.xt', 'cannot open'},
        }
        for _, c in ipairs(cases) do
            local ok, err = pcall(xt.load, c[1])
            assert.is_false(ok)
            assert.truthy(err:find(c[2], 1, true), err)
            assert.truthy(err:find(c[1], 1, true) or c[2] == 'cannot open', err)
        end
    end)

    it('refuses values it cannot save, leaving no file behind', function()
        local path = dir .. '/bad.xt'
        assert.has_error(function() xt.save(path, {f = function() end}) end)
        assert.is_nil(io.open(path))
        assert.is_nil(io.open(path .. '.tmp'))
        local loop = {}
        loop.self = loop
        assert.has_error(function() xt.save(path, loop) end)
    end)
end)
