-- attention: F.scaled_dot_product_attention against the composition it replaces (matmul,
-- mask, softmax, matmul), values and gradients; nn.MultiheadAttention against PyTorch's
-- module (fixtures from tests/fixtures/make_sdpa_fixtures.py) and against its own
-- composition; incremental decoding equals the full causal forward; clear errors.
local xt = require 'xt'
local nn, F = xt.nn, xt.nn.functional
local gradcheck = xt.autograd.gradcheck

local FIXTURES = 'tests/fixtures/sdpa/'

local function max_diff(a, b) return (a - b):abs():amax():item() end

local function error_of(fn, ...)
    local ok, err = pcall(fn, ...)
    assert.is_false(ok, 'expected an error')
    return tostring(err)
end

-- softmax(scale * q k^T + causal mask) v, from simple ops: [..,T,S] scores are formed
local function composed(q, k, v, causal, scale)
    local T, S = q:size(-2), k:size(-2)
    local scores = q:matmul(k:transpose(-2, -1)) * (scale or 1 / math.sqrt(q:size(-1)))
    if causal then
        -- key j is hidden from query i when j > i + S - T
        local i = xt.arange(T):float():view(T, 1)
        local j = xt.arange(S):float():view(1, S)
        scores = scores:masked_fill((j - i):gt(S - T), -math.huge)
    end
    return scores:softmax(-1):matmul(v)
end

local function leaves(...)
    local out = {}
    for i, shape in ipairs{...} do out[i] = xt.randn(shape):requires_grad() end
    return out
end

describe('F.scaled_dot_product_attention', function()
    local cases = {
        {'causal, T = S = 70 (two tiles)', {2, 3, 70, 8}, {2, 3, 70, 8}, {2, 3, 70, 8}, true},
        {'full, T = 33, S = 90, dv = 5', {1, 2, 33, 8}, {1, 2, 90, 8}, {1, 2, 90, 5}, false},
        {'causal, queries are the last 20 of 75', {2, 1, 20, 4}, {2, 1, 75, 4}, {2, 1, 75, 4}, true},
        {'3-D [B,T,d], scale 0.3', {3, 17, 6}, {3, 17, 6}, {3, 17, 6}, true, 0.3},
    }
    for _, c in ipairs(cases) do
        it('equals matmul, softmax, matmul with the same gradients: ' .. c[1], function()
            xt.manual_seed(3)
            local a = leaves(c[2], c[3], c[4])
            local b = {}
            for i = 1, 3 do b[i] = a[i]:detach():clone():requires_grad() end
            local got = F.scaled_dot_product_attention(a[1], a[2], a[3], {causal = c[5], scale = c[6]})
            local want = composed(b[1], b[2], b[3], c[5], c[6])
            assert.are.same(want.shape, got.shape)
            assert.is_true(max_diff(got, want) < 1e-5, 'values differ by ' .. max_diff(got, want))
            local dout = xt.randn(got.shape)
            got:backward(dout)
            want:backward(dout)
            for i = 1, 3 do
                local d = max_diff(a[i].grad, b[i].grad)
                assert.is_true(d < 1e-4, 'gradient ' .. i .. ' differs by ' .. d)
            end
        end)
    end

    it('passes a finite-difference check, causal and not', function()
        xt.manual_seed(4)
        for _, causal in ipairs{true, false} do
            local x = leaves({1, 2, 9, 3}, {1, 2, 11, 3}, {1, 2, 11, 2})
            assert.is_true(gradcheck(function(q, k, v)
                return F.scaled_dot_product_attention(q, k, v, {causal = causal})
            end, x, {eps = 1e-3, atol = 2e-3, rtol = 2e-2}))
        end
    end)

    it('reads heads permuted out of [B,T,H,d] and gives the same result', function()
        xt.manual_seed(5)
        local x = xt.randn(2, 30, 4, 8)
        local heads = x:permute(1, 3, 2, 4)
        assert.is_false(heads:is_contiguous())
        local a = F.scaled_dot_product_attention(heads, heads, heads, {causal = true})
        local c = heads:contiguous()
        local b = F.scaled_dot_product_attention(c, c, c, {causal = true})
        assert.is_true(max_diff(a, b) < 1e-6)
    end)

    it('drops attention weights reproducibly from a generator', function()
        local q, k, v = xt.randn(1, 2, 40, 8), xt.randn(1, 2, 40, 8), xt.randn(1, 2, 40, 8)
        local function run(seed, p)
            return F.scaled_dot_product_attention(q, k, v, {causal = true, dropout_p = p,
                                                            generator = xt.Generator(seed)})
        end
        assert.is_true(max_diff(run(1, 0.3), run(1, 0.3)) == 0)
        assert.is_true(max_diff(run(1, 0.3), run(2, 0.3)) > 1e-3)
        assert.is_true(max_diff(run(1, 0), F.scaled_dot_product_attention(q, k, v, {causal = true})) == 0)
    end)

    it('explains bad arguments', function()
        local q, k, v = xt.randn(2, 5, 4), xt.randn(2, 7, 4), xt.randn(2, 7, 3)
        assert.matches('unknown option \'casual\'', error_of(F.scaled_dot_product_attention, q, k, v, {casual = true}))
        assert.matches('expected tensors q, k, v', error_of(F.scaled_dot_product_attention, q, k))
        assert.matches('scale must be a positive number', error_of(F.scaled_dot_product_attention, q, k, v, {scale = -1}))
        assert.matches('scaled_dot_product_attention: q and k must have the same last dim',
                       error_of(F.scaled_dot_product_attention, q, xt.randn(2, 7, 5), v))
        assert.matches('causal attention needs at least as many keys as queries',
                       error_of(F.scaled_dot_product_attention, q, k:narrow(2, 1, 4), v:narrow(2, 1, 4), {causal = true}))
        assert.matches('dropout probability must be in %[0, 1%)',
                       error_of(F.scaled_dot_product_attention, q, k, v, {dropout_p = 1}))
        assert.matches('expected float32 k', error_of(F.scaled_dot_product_attention, q, k:long(), v))
    end)
end)

---------------------------------------------------------------------------------------------
local function load(case, part) return xt.load_npy(FIXTURES .. case .. '.' .. part .. '.npy') end

local function mha_from_fixture(case, causal)
    local w = load(case, 'in_proj_weight')
    local dim = w:size(2)
    local heads = ({[16] = 4, [12] = 3})[dim]
    local m = nn.MultiheadAttention{dim = dim, heads = heads, causal = causal}
    m:load_state_dict{in_proj_weight = w, in_proj_bias = load(case, 'in_proj_bias'),
                      ['out_proj.weight'] = load(case, 'out_proj.weight'),
                      ['out_proj.bias'] = load(case, 'out_proj.bias')}
    return m
end

describe('nn.MultiheadAttention', function()
    it('has PyTorch\'s parameters, names and shapes', function()
        local m = nn.MultiheadAttention{dim = 32, heads = 4}
        local shapes = {}
        for _, e in ipairs(m:named_parameters()) do shapes[e[1]] = tostring(e[2].shape) end
        assert.are.same({in_proj_weight = '[96,32]', in_proj_bias = '[96]',
                         ['out_proj.weight'] = '[32,32]', ['out_proj.bias'] = '[32]'}, shapes)
        assert.are.equal(0, m.in_proj_bias:abs():sum():item())
        local bound = math.sqrt(6 / (96 + 32))   -- xavier-uniform over [3*dim, dim]
        assert.is_true(m.in_proj_weight:abs():amax():item() <= bound)
        local nb = nn.MultiheadAttention{dim = 32, heads = 4, bias = false}
        assert.are.equal(2, #nb:parameters())
    end)

    for _, c in ipairs{{'mha_causal_self', true}, {'mha_cross', false}} do
        it('matches torch.nn.MultiheadAttention, values and gradients: ' .. c[1], function()
            local case = c[1]
            local m = mha_from_fixture(case, c[2])
            local query = load(case, 'query'):requires_grad()
            local inputs = {query}
            local f = io.open(FIXTURES .. case .. '.key.npy')
            if f then
                f:close()
                inputs[2] = load(case, 'key'):requires_grad()
                inputs[3] = load(case, 'value'):requires_grad()
            end
            local out = m(unpack(inputs))
            local want = load(case, 'out')
            assert.is_true(max_diff(out, want) < 1e-5, 'output differs by ' .. max_diff(out, want))
            out:backward(load(case, 'dout'))
            local grads = {query = inputs[1].grad, key = inputs[2] and inputs[2].grad,
                           value = inputs[3] and inputs[3].grad}
            for _, e in ipairs(m:named_parameters()) do grads[e[1]] = e[2].grad end
            for name, g in pairs(grads) do
                local d = max_diff(g, load(case, 'd' .. name))
                assert.is_true(d < 1e-4, name .. ' gradient differs by ' .. d)
            end
        end)
    end

    it('takes unbatched [T,dim] input as a batch of one', function()
        local m = nn.MultiheadAttention{dim = 8, heads = 2, causal = true}
        local x = xt.randn(6, 8)
        assert.are.same({6, 8}, {unpack(m(x).shape)})
        assert.is_true(max_diff(m(x), m(x:unsqueeze(1)):squeeze(1)) == 0)
    end)

    it('passes a finite-difference check through the projections', function()
        xt.manual_seed(6)
        local m = nn.MultiheadAttention{dim = 6, heads = 2, causal = true}
        local x = xt.randn(1, 5, 6):requires_grad()
        assert.is_true(gradcheck(function(t) return m(t) end, {x}, {eps = 1e-3, atol = 2e-3, rtol = 2e-2}))
    end)

    it('drops attention weights in training only', function()
        xt.manual_seed(7)
        local m = nn.MultiheadAttention{dim = 16, heads = 2, dropout = 0.5}
        local x = xt.randn(2, 12, 16)
        m:eval()
        local a, b = m(x), m(x)
        assert.is_true(max_diff(a, b) == 0)
        m:train()
        assert.is_true(max_diff(m(x), a) > 1e-3)
    end)

    describe('step (incremental decoding)', function()
        local function full_and_steps(chunks, B, T)
            xt.manual_seed(8)
            local m = nn.MultiheadAttention{dim = 16, heads = 4, causal = true}
            m:eval()
            local x = xt.randn(B, T, 16)
            local full = m(x)
            local cache, pos, outs = {}, 1, {}
            for _, t in ipairs(chunks) do
                outs[#outs + 1] = m:step(x:narrow(2, pos, t), cache)
                pos = pos + t
            end
            assert.are.equal(T, cache.len)
            return full, xt.cat(outs, 2)
        end

        it('equals the full causal forward, one position at a time', function()
            local chunks = {}
            for i = 1, 40 do chunks[i] = 1 end   -- past the first cache capacity (16)
            local full, steps = full_and_steps(chunks, 2, 40)
            assert.is_true(max_diff(full, steps) < 1e-5, 'differs by ' .. max_diff(full, steps))
        end)

        it('equals the full causal forward in chunks of any size (a prompt, then tokens)', function()
            local full, steps = full_and_steps({7, 1, 1, 20, 3, 1}, 3, 33)
            assert.is_true(max_diff(full, steps) < 1e-5, 'differs by ' .. max_diff(full, steps))
        end)

        it('takes [B,dim] as one position and records no graph', function()
            local m = nn.MultiheadAttention{dim = 8, heads = 2, causal = true}
            local cache = {}
            local y = m:step(xt.randn(3, 8):requires_grad(), cache)
            assert.are.same({3, 8}, {unpack(y.shape)})
            assert.is_false(y.needs_grad)
            assert.are.equal(1, cache.len)
        end)

        it('explains misuse', function()
            local m = nn.MultiheadAttention{dim = 8, heads = 2, causal = true}
            local cache = {}
            m:step(xt.randn(2, 1, 8), cache)
            assert.matches('the cache holds a batch of 2, x has 3', error_of(m.step, m, xt.randn(3, 1, 8), cache))
            assert.matches('expected x of shape %[B,t,8%]', error_of(m.step, m, xt.randn(2, 1, 5), cache))
            assert.matches('expected a cache table', error_of(m.step, m, xt.randn(2, 1, 8)))
            local free = nn.MultiheadAttention{dim = 8, heads = 2}
            assert.matches('needs a causal module', error_of(free.step, free, xt.randn(2, 1, 8), {}))
        end)
    end)

    it('explains bad construction and inputs', function()
        assert.matches('heads %(3%) must divide dim %(8%)', error_of(nn.MultiheadAttention, {dim = 8, heads = 3}))
        assert.matches('unknown option \'head\'', error_of(nn.MultiheadAttention, {dim = 8, head = 2}))
        assert.matches('dim must be a positive integer', error_of(nn.MultiheadAttention, {heads = 2}))
        assert.matches('dropout must be in %[0, 1%)', error_of(nn.MultiheadAttention, {dim = 8, heads = 2, dropout = 1}))
        local m = nn.MultiheadAttention{dim = 8, heads = 2}
        assert.matches('expected query of shape %[B,T,8%]', error_of(m.forward, m, xt.randn(2, 3, 7)))
        assert.matches('give key and value together', error_of(m.forward, m, xt.randn(2, 3, 8), xt.randn(2, 3, 8)))
        assert.matches('same batch size', error_of(m.forward, m, xt.randn(2, 3, 8), xt.randn(1, 4, 8), xt.randn(1, 4, 8)))
        assert.matches('key and value must have the same length',
                       error_of(m.forward, m, xt.randn(2, 3, 8), xt.randn(2, 4, 8), xt.randn(2, 5, 8)))
    end)
end)
