-- efficient_attention: the kernel and low-rank attentions and the attention registry.
-- F.linear_attention and F.favor_features against dense compositions written here (the
-- T x T weights formed, masked, normalised), gradchecks, Performer's error against exact
-- softmax attention shrinking with the feature count, each module against a plain
-- composition of its parameters (Linformer: matmul, softmax, matmul; axial: dense masked
-- softmax over rows, then over columns), incremental decoding equal to the full forward, and
-- the registry's names and errors.
local xt = require 'xt'
local nn, F = xt.nn, xt.nn.functional
local gradcheck = xt.autograd.gradcheck

local function max_diff(a, b) return (a - b):abs():amax():item() end

local function error_of(fn, ...)
    local ok, err = pcall(fn, ...)
    assert.is_false(ok, 'expected an error')
    return tostring(err)
end

local function assert_close(got, want, tol, what)
    assert.are.same(want.shape, got.shape)
    local d = max_diff(got, want)
    assert.is_true(d < tol, string.format('%s differs by %g (tolerance %g)', what or 'value', d, tol))
end

local function leaves(...)
    local out = {}
    for i, shape in ipairs{...} do out[i] = xt.randn(shape):requires_grad() end
    return out
end

local function copies(list)
    local out = {}
    for i, t in ipairs(list) do out[i] = t:detach():clone():requires_grad() end
    return out
end

-- [T,T] (or [T,S]) uint8 mask of the key positions j > i (hidden from query i when causal)
local function future(T, S)
    local i = xt.arange(T):float():view(T, 1)
    local j = xt.arange(S or T):float():view(1, S or T)
    return (j - i):gt(0)
end

-- elu(x) + 1, composed
local function phi(x) return F.elu(x) + 1 end

-- linear attention with the weights formed: A = phi(q) phi(k)^T (masked), A v / (A 1 + eps)
local function dense_linear(q, k, v, causal, eps, identity)
    local fq, fk = q, k
    if not identity then fq, fk = phi(q), phi(k) end
    local a = fq:matmul(fk:transpose(-2, -1))
    if causal then a = a:masked_fill(future(q:size(-2)), 0) end
    return a:matmul(v) / (a:sum(-1, true) + (eps or 1e-6))
end

-- softmax attention with the weights formed, an optional [T,S] mask of hidden keys
local function dense_softmax(q, k, v, hidden)
    local s = q:matmul(k:transpose(-2, -1)) / math.sqrt(q:size(-1))
    if hidden then s = s:masked_fill(hidden, -math.huge) end
    return s:softmax(-1):matmul(v)
end

-- the projections of a module with nn.MultiheadAttention's parameters, composed
local function heads_of(m, x)
    local B, T = x:size(1), x:size(2)
    local qkv = F.linear(x, m.in_proj_weight, m.in_proj_bias):view(B, T, 3, m.heads, m.head_dim)
    local function part(i) return qkv:select(3, i):permute(1, 3, 2, 4) end
    return part(1), part(2), part(3)
end
local function merged(m, out)
    local B, T = out:size(1), out:size(3)
    return m.out_proj(out:permute(1, 3, 2, 4):reshape(B, T, m.dim))
end

describe('F.linear_attention', function()
    local cases = {
        {'causal, T = 37, chunk 8 (does not divide T)', {2, 3, 37, 8}, {2, 3, 37, 8}, {2, 3, 37, 8}, true, 8},
        {'causal, default chunk, T = 130', {1, 2, 130, 8}, {1, 2, 130, 8}, {1, 2, 130, 5}, true},
        {'bidirectional, T = 20, S = 45, dv = 6', {2, 1, 20, 4}, {2, 1, 45, 4}, {2, 1, 45, 6}, false, 16},
        {'3-D [B,T,d], causal, chunk 1', {3, 11, 6}, {3, 11, 6}, {3, 11, 6}, true, 1},
    }
    for _, c in ipairs(cases) do
        it('equals the dense masked composition, values and gradients: ' .. c[1], function()
            xt.manual_seed(1)
            local a = leaves(c[2], c[3], c[4])
            local b = copies(a)
            local got = F.linear_attention(a[1], a[2], a[3], {causal = c[5], chunk = c[6]})
            local want = dense_linear(b[1], b[2], b[3], c[5])
            assert_close(got, want, 1e-5)
            local dout = xt.randn(got.shape)
            got:backward(dout)
            want:backward(dout)
            for i = 1, 3 do assert_close(a[i].grad, b[i].grad, 1e-4, 'gradient ' .. i) end
        end)
    end

    it('takes given positive features (identity map) with eps', function()
        xt.manual_seed(2)
        local q, k = (xt.randn(2, 2, 15, 6) * 0.5):exp(), (xt.randn(2, 2, 15, 6) * 0.5):exp()
        local v = xt.randn(2, 2, 15, 3)
        for _, causal in ipairs{true, false} do
            local got = F.linear_attention(q, k, v, {causal = causal, feature_map = 'identity', eps = 0.1, chunk = 4})
            assert_close(got, dense_linear(q, k, v, causal, 0.1, true), 1e-5)
        end
    end)

    it('passes a finite-difference check, causal and not', function()
        xt.manual_seed(3)
        for _, causal in ipairs{true, false} do
            local x = leaves({1, 2, 9, 3}, {1, 2, 9, 3}, {1, 2, 9, 2})
            assert.is_true(gradcheck(function(q, k, v)
                return F.linear_attention(q, k, v, {causal = causal, chunk = 4})
            end, x, {eps = 1e-3, atol = 2e-3, rtol = 2e-2}))
        end
    end)

    it('explains bad arguments', function()
        local q = xt.randn(1, 2, 5, 4)
        assert.matches("unknown option 'window'", error_of(F.linear_attention, q, q, q, {window = 3}))
        assert.matches("feature_map must be 'elu' or 'identity'", error_of(F.linear_attention, q, q, q, {feature_map = 'relu'}))
        assert.matches('chunk must be a positive integer', error_of(F.linear_attention, q, q, q, {chunk = 2.5}))
        assert.matches('expected tensors q, k, v', error_of(F.linear_attention, q, 3, q))
        assert.matches('S == T', error_of(F.linear_attention, q, xt.randn(1, 2, 6, 4), xt.randn(1, 2, 6, 4), {causal = true}))
        assert.matches('same last dim', error_of(F.linear_attention, q, xt.randn(1, 2, 5, 3), q))
    end)
end)

describe('FAVOR+', function()
    it('computes the positive random features as the composition does, in every shift mode', function()
        xt.manual_seed(4)
        local x, w = xt.randn(2, 3, 7, 8) * 0.7, xt.randn(12, 8)
        local xs = x * 8 ^ -0.25
        local u = xs:matmul(w:t()) - (xs * xs):sum(-1, true) / 2
        local shifted = {row = u - u:amax(-1, true), unit = u - u:amax({-2, -1}, true), none = u}
        for mode, s in pairs(shifted) do
            local want = (s:exp() + 1e-6) / math.sqrt(12)
            assert_close(F.favor_features(x, w, {shift = mode}), want, 1e-5, 'features, shift ' .. mode)
        end
    end)

    it('draws orthogonal features: blocks of orthogonal rows, norms sqrt(d) or Gaussian', function()
        local g = xt.Generator(5)
        local w = F.orthogonal_random_features(20, 8, {scaling = 1, generator = g})
        assert.are.same({20, 8}, w.shape)
        for _, rows in ipairs{{1, 8}, {9, 8}, {17, 4}} do
            local b = w:narrow(1, rows[1], rows[2])
            assert_close(b:matmul(b:t()), xt.eye(rows[2]) * 8, 1e-4, 'Gram matrix of a block')
        end
        local w0 = F.orthogonal_random_features(20, 8, {generator = g})
        local norms = w0:square():sum(2):sqrt()
        assert.is_true(max_diff(norms, xt.full({20}, math.sqrt(8))) > 0.1, 'scaling 0 gives Gaussian norms')
        -- the same generator state gives the same features
        local a = F.orthogonal_random_features(10, 4, {generator = xt.Generator(9)})
        local b = F.orthogonal_random_features(10, 4, {generator = xt.Generator(9)})
        assert.are.equal(0, max_diff(a, b))
    end)

    it('approximates softmax attention with an error that shrinks like m^-1/2', function()
        -- notes § 2.8: small-norm q, k (entries N(0, 0.35^2)), T = 128, d = 16; the relative
        -- error of the output is about 1 / sqrt(m) for orthogonal features
        xt.manual_seed(6)
        local T, d, draws = 128, 16, 8
        local errors = {}
        for _, m in ipairs{16, 64, 256} do
            local total = 0
            for r = 1, draws do
                local g = xt.Generator(100 * m + r)
                local q, k = xt.randn(1, 1, T, d, {generator = g}) * 0.35, xt.randn(1, 1, T, d, {generator = g}) * 0.35
                local v = xt.randn(1, 1, T, d, {generator = g})
                local exact = F.scaled_dot_product_attention(q, k, v)
                local w = F.orthogonal_random_features(m, d, {generator = g})
                local approx = F.favor_attention(q, k, v, w)
                total = total + ((approx - exact):square():sum():sqrt() / exact:square():sum():sqrt()):item()
            end
            errors[m] = total / draws
            assert.is_true(errors[m] < 2 / math.sqrt(m),
                           string.format('m = %d: relative error %.4f above 2/sqrt(m)', m, errors[m]))
        end
        assert.is_true(errors[64] < errors[16] and errors[256] < errors[64],
                       string.format('errors %.4f, %.4f, %.4f do not fall', errors[16], errors[64], errors[256]))
        assert.is_true(errors[256] < 0.5 * errors[16], 'sixteen times the features should at least halve the error')
    end)

    it('is causal: later positions do not change earlier outputs', function()
        xt.manual_seed(7)
        local q, k, v = xt.randn(1, 2, 30, 8), xt.randn(1, 2, 30, 8), xt.randn(1, 2, 30, 4)
        local w = F.orthogonal_random_features(32, 8)
        local before = F.favor_attention(q, k, v, w, {causal = true, chunk = 8})
        -- a huge later key would dominate a sequence-wide shift of the keys
        k:narrow(3, 21, 10):mul_(6)
        v:narrow(3, 21, 10):add_(50)
        local after = F.favor_attention(q, k, v, w, {causal = true, chunk = 8})
        assert.are.equal(0, max_diff(before:narrow(3, 1, 20), after:narrow(3, 1, 20)))
    end)

    it('passes a finite-difference check, causal and not', function()
        xt.manual_seed(8)
        local w = F.orthogonal_random_features(6, 3)
        for _, causal in ipairs{true, false} do
            local x = leaves({1, 2, 7, 3}, {1, 2, 7, 3}, {1, 2, 7, 2})
            for i = 1, 2 do x[i]:detach():mul_(0.5) end
            assert.is_true(gradcheck(function(q, k, v)
                return F.favor_attention(q, k, v, w, {causal = causal, chunk = 3})
            end, x, {eps = 1e-3, atol = 2e-3, rtol = 2e-2}))
        end
    end)
end)

-- full causal forward vs decoding one position at a time, in chunks of 3, and as [B,dim]
local function check_decoding(m)
    xt.manual_seed(9)
    local x = xt.randn(2, 10, m.dim)
    local full = m(x)
    local cache = {}
    for t = 1, 10 do
        assert_close(m:step(x:narrow(2, t, 1), cache), full:narrow(2, t, 1), 1e-5, 'position ' .. t)
    end
    assert.are.equal(10, cache.len)
    cache = {}
    for t = 1, 10, 3 do
        local n = math.min(3, 11 - t)
        assert_close(m:step(x:narrow(2, t, n), cache), full:narrow(2, t, n), 1e-5, 'chunk at ' .. t)
    end
    cache = {}
    m:step(x:narrow(2, 1, 4), cache)
    local y = m:step(x:select(2, 5), cache)
    assert.are.same({2, m.dim}, y.shape)
    assert_close(y, full:select(2, 5), 1e-5)
    assert.is_true(y.is_leaf)
end

describe('nn.LinearAttention', function()
    it('has nn.MultiheadAttention\'s parameters and takes [B,T,dim] or [T,dim]', function()
        local m = nn.LinearAttention{dim = 12, heads = 3}
        local names = {}
        for _, e in ipairs(m:named_parameters()) do names[#names + 1] = e[1] .. tostring(e[2].shape) end
        assert.are.same({'in_proj_weight[36,12]', 'in_proj_bias[36]', 'out_proj.weight[12,12]', 'out_proj.bias[12]'}, names)
        assert.are.same({2, 7, 12}, m(xt.randn(2, 7, 12)).shape)
        assert.are.same({7, 12}, m(xt.randn(7, 12)).shape)
    end)

    it('equals its projections around the dense composition, causal and not', function()
        xt.manual_seed(10)
        for _, causal in ipairs{true, false} do
            local m = nn.LinearAttention{dim = 16, heads = 4, causal = causal, chunk = 5}
            local x = xt.randn(2, 13, 16)
            local q, k, v = heads_of(m, x)
            assert_close(m(x), merged(m, dense_linear(q, k, v, causal)), 1e-5)
        end
    end)

    it('passes a finite-difference check through the projections', function()
        xt.manual_seed(11)
        local m = nn.LinearAttention{dim = 4, heads = 2, causal = true, chunk = 3}
        local x = xt.randn(1, 7, 4):requires_grad()
        assert.is_true(gradcheck(function(input) return m(input) end, {x, m.in_proj_weight},
                                 {eps = 1e-3, atol = 2e-3, rtol = 2e-2}))
    end)

    it('decodes step by step exactly as the full causal forward', function()
        check_decoding(nn.LinearAttention{dim = 16, heads = 4, causal = true, chunk = 4})
    end)

    it('explains misuse', function()
        assert.matches('heads %(3%) must divide dim %(8%)', error_of(nn.LinearAttention, {dim = 8, heads = 3}))
        assert.matches("unknown option 'window'", error_of(nn.LinearAttention, {dim = 8, heads = 2, window = 3}))
        local m = nn.LinearAttention{dim = 8, heads = 2}
        assert.matches('needs a causal module', error_of(m.step, m, xt.randn(1, 8), {}))
        assert.matches('expected x of shape %[B,T,8%]', error_of(m.forward, m, xt.randn(2, 3, 5)))
        local c = nn.LinearAttention{dim = 8, heads = 2, causal = true}
        local cache = {}
        c:step(xt.randn(2, 1, 8), cache)
        assert.matches('the cache holds a batch of 2', error_of(c.step, c, xt.randn(3, 1, 8), cache))
    end)
end)

describe('nn.Performer', function()
    it('keeps its random features in a buffer of the state dict, shared by the heads', function()
        local m = nn.Performer{dim = 16, heads = 2, features = 24}
        assert.are.same({24, 8}, m.projection_matrix.shape)
        assert.is_false(m.projection_matrix.needs_grad)
        assert.is_truthy(m:state_dict().projection_matrix)
        for _, p in ipairs(m:parameters()) do assert.are_not.equal(m.projection_matrix, p) end
        assert.are.same({3, 5, 16}, m(xt.randn(3, 5, 16)).shape)
    end)

    it('equals its projections around FAVOR+ attention with its features', function()
        xt.manual_seed(12)
        for _, causal in ipairs{true, false} do
            local m = nn.Performer{dim = 16, heads = 4, features = 32, causal = causal, chunk = 4}
            local x = xt.randn(2, 9, 16)
            local q, k, v = heads_of(m, x)
            local fq = F.favor_features(q, m.projection_matrix, {shift = 'none'})
            local fk = F.favor_features(k, m.projection_matrix, {shift = 'none'})
            assert_close(m(x), merged(m, dense_linear(fq, fk, v, causal, 0, true)), 1e-5)
        end
    end)

    it('redraws its features when asked, and by itself every N training calls', function()
        xt.manual_seed(13)
        local m = nn.Performer{dim = 8, heads = 2, features = 8}
        local x = xt.randn(1, 6, 8)
        local w0, y0 = m.projection_matrix:clone(), m(x)
        assert.are.equal(0, max_diff(m(x), y0))   -- no redraw by default
        m:redraw_features()
        assert.is_true(max_diff(m.projection_matrix, w0) > 0.1)
        assert.is_true(max_diff(m(x), y0) > 1e-4)
        local r = nn.Performer{dim = 8, heads = 2, features = 8, redraw = 2}
        local w = r.projection_matrix:clone()
        r(x)
        assert.are.equal(0, max_diff(r.projection_matrix, w))
        r(x)
        assert.is_true(max_diff(r.projection_matrix, w) > 0.1)
        w = r.projection_matrix:clone()
        r:eval()
        r(x); r(x); r(x)
        assert.are.equal(0, max_diff(r.projection_matrix, w))   -- never in evaluation mode
        assert.matches('redraw must be a positive number', error_of(nn.Performer, {dim = 8, heads = 2, redraw = 0}))
    end)

    it('passes a finite-difference check through the projections', function()
        xt.manual_seed(14)
        local m = nn.Performer{dim = 4, heads = 2, features = 6, causal = true, chunk = 3}
        local x = (xt.randn(1, 6, 4) * 0.5):requires_grad()
        assert.is_true(gradcheck(function(input) return m(input) end, {x, m.in_proj_weight},
                                 {eps = 1e-3, atol = 2e-3, rtol = 2e-2}))
    end)

    it('decodes step by step exactly as the full causal forward', function()
        check_decoding(nn.Performer{dim = 16, heads = 2, features = 32, causal = true, chunk = 4})
    end)
end)

describe('nn.Linformer', function()
    -- the plain composition: E k and F v by matmul, then softmax attention with its weights
    local function composed(m, x)
        local q, k, v = heads_of(m, x)
        local T = x:size(2)
        local function project(p, t)
            local used = p:narrow(-1, 1, T)
            if p:dim() == 3 then used = used:view(1, p:size(1), p:size(2), T) end
            return used:matmul(t)
        end
        return merged(m, dense_softmax(q, project(m.E, k), project(m.F or m.E, v)))
    end

    local shapes = {none = {{3, 5, 20}, {3, 5, 20}}, headwise = {{5, 20}, {5, 20}}, kv = {{5, 20}}, layerwise = {{5, 20}}}
    for share, want in pairs(shapes) do
        it('equals matmul, softmax, matmul with its projections: share = ' .. share, function()
            xt.manual_seed(15)
            local m = nn.Linformer{dim = 12, heads = 3, seq_len = 20, k = 5, share = share}
            assert.are.same(want[1], m.E.shape)
            if want[2] then assert.are.same(want[2], m.F.shape) else assert.is_nil(m.F) end
            for _, T in ipairs{20, 13} do   -- shorter sequences use the first columns
                local x = xt.randn(2, T, 12):requires_grad()
                local x2 = x:detach():clone():requires_grad()
                local got, exp = m(x), composed(m, x2)
                assert_close(got, exp, 1e-5)
                local dout = xt.randn(got.shape)
                got:backward(dout)
                exp:backward(dout)
                assert_close(x.grad, x2.grad, 1e-4, 'dx')
            end
        end)
    end

    it('shares one projection across layers with share = layerwise', function()
        local first = nn.Linformer{dim = 8, heads = 2, seq_len = 10, k = 3, share = 'layerwise'}
        local second = nn.Linformer{dim = 8, heads = 2, seq_len = 10, k = 3, share = 'layerwise', projection = first.E}
        assert.are.equal(first.E, second.E)
        local model = nn.Sequential(first, second)
        local count = 0
        for _, p in ipairs(model:parameters()) do if p == first.E then count = count + 1 end end
        assert.are.equal(1, count)
        local y = model(xt.randn(1, 10, 8))
        y:sum():backward()
        assert.is_truthy(first.E.grad)
    end)

    it('passes a finite-difference check through the projections and E, F', function()
        xt.manual_seed(16)
        local m = nn.Linformer{dim = 4, heads = 2, seq_len = 6, k = 3, share = 'none'}
        local x = xt.randn(1, 6, 4):requires_grad()
        assert.is_true(gradcheck(function(input) return m(input) end, {x, m.E, m.F, m.in_proj_weight},
                                 {eps = 1e-3, atol = 2e-3, rtol = 2e-2}))
    end)

    it('explains misuse', function()
        local m = nn.Linformer{dim = 8, heads = 2, seq_len = 10, k = 3}
        assert.matches('16 positions, more than seq_len = 10', error_of(m.forward, m, xt.randn(1, 16, 8)))
        assert.matches("share must be 'none', 'headwise', 'kv' or 'layerwise'",
                       error_of(nn.Linformer, {dim = 8, heads = 2, seq_len = 10, k = 3, share = 'all'}))
        assert.matches('seq_len must be a positive integer', error_of(nn.Linformer, {dim = 8, heads = 2, k = 3}))
        assert.matches("unknown option 'causal'", error_of(nn.Linformer, {dim = 8, heads = 2, seq_len = 4, k = 2, causal = true}))
        assert.matches('projection must be a tensor %[k, seq_len%] = %[3, 10%]',
                       error_of(nn.Linformer, {dim = 8, heads = 2, seq_len = 10, k = 3, share = 'layerwise',
                                               projection = xt.randn(4, 10)}))
    end)
end)

describe('nn.AxialAttention', function()
    -- softmax over rows then columns, as dense attention over the H*W positions with masks
    local function axis_dense(a, x, hidden)
        local B, H, W, D = x:size(1), x:size(2), x:size(3), x:size(4)
        local seq = x:reshape(B, H * W, D)
        local q, k, v = heads_of(a, seq)
        return merged(a, dense_softmax(q, k, v, hidden)):view(B, H, W, D)
    end
    local function masks(H, W)
        local p = xt.arange(H * W):float()
        local row, col = (p / W):floor(), p - (p / W):floor() * W
        local function differ(t) return (t:view(H * W, 1) - t:view(1, H * W)):abs():gt(0) end
        return differ(row), differ(col)
    end

    it('equals dense masked softmax over rows, then over columns (values and gradients)', function()
        xt.manual_seed(17)
        local m = nn.AxialAttention{dim = 12, heads = 3}
        local x = xt.randn(2, 5, 7, 12):requires_grad()
        local x2 = x:detach():clone():requires_grad()
        local other_row, other_col = masks(5, 7)
        local want = axis_dense(m.columns, axis_dense(m.rows, x2, other_row), other_col)
        local got = m(x)
        assert_close(got, want, 1e-5)
        local dout = xt.randn(got.shape)
        got:backward(dout)
        want:backward(dout)
        assert_close(x.grad, x2.grad, 1e-4, 'dx')
    end)

    it('takes [B,C,H,W] with layout BCHW, and sequences with image_size', function()
        xt.manual_seed(18)
        local m = nn.AxialAttention{dim = 8, heads = 2, layout = 'BCHW'}
        local x = xt.randn(2, 8, 4, 6)
        local y = m(x)
        assert.are.same({2, 8, 4, 6}, y.shape)
        local channels_last = nn.AxialAttention{dim = 8, heads = 2, image_size = {4, 6}}
        channels_last:load_state_dict(m:state_dict())
        local xl = x:permute(1, 3, 4, 2):contiguous()
        assert_close(channels_last(xl):permute(1, 4, 2, 3), y, 1e-6)
        local ys = channels_last(xl:view(2, 24, 8))
        assert_close(ys, channels_last(xl):reshape(2, 24, 8), 1e-6)
    end)

    it('passes a finite-difference check', function()
        xt.manual_seed(19)
        local m = nn.AxialAttention{dim = 4, heads = 2}
        local x = xt.randn(1, 3, 4, 4):requires_grad()
        assert.is_true(gradcheck(function(input) return m(input) end, {x, m.rows.in_proj_weight, m.columns.in_proj_weight},
                                 {eps = 1e-3, atol = 2e-3, rtol = 2e-2}))
    end)

    it('F.axial_attention attends along one dim of any grid', function()
        xt.manual_seed(20)
        local q, k, v = xt.randn(2, 3, 4, 5, 6), xt.randn(2, 3, 4, 5, 6), xt.randn(2, 3, 4, 5, 6)
        -- along dim 3 (size 4): the same as moving it next to the features by hand
        local want = dense_softmax(q:transpose(3, 4), k:transpose(3, 4), v:transpose(3, 4)):transpose(3, 4)
        assert_close(F.axial_attention(q, k, v, 3), want, 1e-5)
        assert_close(F.axial_attention(q, k, v, -2), dense_softmax(q, k, v), 1e-5)
        assert.matches('dim 5 is not a position dim', error_of(F.axial_attention, q, k, v, 5))
    end)

    it('explains misuse', function()
        assert.matches("layout must be 'BHWD'", error_of(nn.AxialAttention, {dim = 8, heads = 2, layout = 'NHWC'}))
        local m = nn.AxialAttention{dim = 8, heads = 2}
        assert.matches('expected x of shape %[B,H,W,8%]', error_of(m.forward, m, xt.randn(1, 8, 3, 3)))
        local s = nn.AxialAttention{dim = 8, heads = 2, image_size = {3, 3}}
        assert.matches('expected a sequence %[B,9,8%]', error_of(s.forward, s, xt.randn(1, 10, 8)))
    end)
end)

describe('nn.attention_by_name', function()
    local common = {dim = 16, heads = 4, seq_len = 12, k = 4, window = 3, features = 16, image_size = {3, 4}}
    local classes = {softmax = 'MultiheadAttention', linear = 'LinearAttention', performer = 'Performer',
                     linformer = 'Linformer', axial = 'AxialAttention', aft_full = 'AFTFull',
                     aft_local = 'AFTLocal', aft_simple = 'AFTSimple'}

    for name, cls in pairs(classes) do
        it('builds ' .. name .. ' from one table of options (or says what is missing)', function()
            if not nn[cls] then   -- the AFT modules come from another file of xt.nn
                assert.matches("needs nn." .. cls .. ", which is not available", error_of(nn.attention_by_name, name, common))
                return
            end
            local m = nn.attention_by_name(name, common)
            assert.are.equal(cls, m.__name)
            assert.are.same({2, 12, 16}, m(xt.randn(2, 12, 16)).shape)
        end)
    end

    it('builds causal attentions that decode like their forward', function()
        for _, name in ipairs{'softmax', 'linear', 'performer'} do
            local o = {causal = true}
            for k, v in pairs(common) do o[k] = v end
            local m = nn.attention_by_name(name, o)
            assert.is_true(m.causal)
            local x = xt.randn(1, 5, 16)
            local cache = {}
            local y
            for t = 1, 5 do y = m:step(x:narrow(2, t, 1), cache) end
            assert_close(y, m(x):narrow(2, 5, 1), 1e-5, name)
        end
    end)

    it('lists the names it can build', function()
        local names = nn.attention_names()
        for _, name in ipairs{'axial', 'linear', 'linformer', 'performer', 'softmax'} do
            local found = false
            for _, n in ipairs(names) do found = found or n == name end
            assert.is_true(found, name)
        end
    end)

    it('explains unknown and planned names, impossible causality and unknown options', function()
        local err = error_of(nn.attention_by_name, 'flash', {})
        assert.matches("unknown attention 'flash' %(known: aft_full, aft_local, aft_simple, axial, bigbird, linear, linformer, local, longformer, performer, softmax, sparse_fixed, sparse_strided%)", err)
        assert.matches("attention 'linformer' cannot be causal", error_of(nn.attention_by_name, 'linformer', {causal = true, dim = 8, heads = 2, seq_len = 4, k = 2}))
        assert.matches("unknown option heds for attention 'softmax'", error_of(nn.attention_by_name, 'softmax', {dim = 8, heds = 2}))
    end)

    it('takes new entries', function()
        nn.register_attention('test_identity', {build = function() return nn.Identity() end, options = {}})
        assert.are.equal('Identity', nn.attention_by_name('test_identity', {}).__name)
        assert.matches('spec must be a table', error_of(nn.register_attention, 'x', {}))
    end)
end)
