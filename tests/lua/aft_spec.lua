-- aft: F.aft_full/aft_simple/aft_local/aft_conv against the compositions of simple ops they
-- replace (values and every gradient, causal and not); the modules nn.AFTFull, AFTLocal,
-- AFTSimple, AFTConv (projections, position bias, reparameterisation, shorter sequences,
-- incremental decoding equal to the full causal forward); clear errors.
local xt = require 'xt'
local nn, F = xt.nn, xt.nn.functional
local gradcheck = xt.autograd.gradcheck

local function max_diff(a, b) return (a - b):abs():amax():item() end

-- An op run on a part of its inputs (channels, batch items) against the same part of the
-- whole run: its values, and the gradients of its first n inputs (none where not needs[i]).
local function check_part(y, x, ys, xs, part, needs, n, where)
    assert.is_true(max_diff(part(y), ys) < 1e-6, 'values differ ' .. where)
    for i = 1, n do
        if needs[i] then
            local d = max_diff(part(x[i].grad), xs[i].grad)
            assert.is_true(d < 1e-5, 'gradient ' .. i .. ' differs by ' .. d)
        else
            assert.is_nil(x[i].grad)
        end
    end
end

local function error_of(fn, ...)
    local ok, err = pcall(fn, ...)
    assert.is_false(ok, 'expected an error')
    return tostring(err)
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

-- The definition from simple ops: logits k[b,t',c] + w'[t,t'] as [B,T,T,D] (w' = w in the
-- window, 0 outside; -inf above the diagonal when causal), softmax over t', weighted sum
-- of v, sigmoid gate. window nil: w everywhere; w nil: no bias.
local function composed(q, k, v, w, window, causal)
    local T = q:size(2)
    local i = xt.arange(T):float():view(T, 1)
    local j = xt.arange(T):float():view(1, T)
    local bias = w or xt.zeros(T, T)
    if window then
        local diff = i - j
        local outside = causal and diff:ge(window) or diff:abs():ge(window)
        bias = bias:masked_fill(outside, 0)
    end
    if causal then bias = bias:masked_fill((j - i):gt(0), -math.huge) end
    local logits = k:unsqueeze(2) + bias:view(1, T, T, 1)
    local a = logits:softmax(3)
    return q:sigmoid() * (a * v:unsqueeze(2)):sum(3)
end

-- AFT-conv from simple ops, in the paper's form: depth-wise conv2d of exp(k) v and exp(k)
-- with exp(w) - 1 (the head's filter for each of its channels), plus the global sums.
local function composed_conv(q, k, v, w)
    local C, heads, kh, kw = q:size(2), w:size(1), w:size(2), w:size(3)
    local cg = C / heads
    local head_of = xt.tensor((function()
        local t = {}
        for c = 1, C do t[c] = math.floor((c - 1) / cg) + 1 end
        return t
    end)(), {dtype = 'int64'})
    local e = (k - k:amax({3, 4}, true):detach()):exp()
    local ec = e:index_select(2, head_of)
    local ev = ec * v
    local f = w:exp() - 1
    local pad = {math.floor(kh / 2), math.floor(kw / 2)}
    local num = F.conv2d(ev, f:index_select(1, head_of):unsqueeze(2), nil, {padding = pad, groups = C})
        + ev:sum({3, 4}, true)
    local den = F.conv2d(e, f:unsqueeze(2), nil, {padding = pad, groups = heads})
        + e:sum({3, 4}, true)
    return q:sigmoid() * num / den:index_select(2, head_of)
end

local function check_same(got, want, a, b, vtol, gtol)
    assert.are.same(want.shape, got.shape)
    local d = max_diff(got, want)
    assert.is_true(d < vtol, 'values differ by ' .. d)
    local dout = xt.randn(got.shape)
    got:backward(dout)
    want:backward(dout)
    for i = 1, #a do
        local g = max_diff(a[i].grad, b[i].grad)
        assert.is_true(g < gtol, 'gradient ' .. i .. ' differs by ' .. g)
    end
end

describe('F.aft_full, F.aft_local, F.aft_simple', function()
    local cases = {
        {'aft_full', 'aft_full', {}, nil, true},
        {'aft_full causal', 'aft_full', {causal = true}, nil, true},
        {'aft_simple', 'aft_simple', {}, nil, false},
        {'aft_simple causal', 'aft_simple', {causal = true}, nil, false},
        {'aft_local window 3', 'aft_local', {window = 3}, 3, true},
        {'aft_local causal window 3', 'aft_local', {window = 3, causal = true}, 3, true},
        {'aft_local causal window 0', 'aft_local', {window = 0, causal = true}, 0, true},
        {'aft_local window 40 > T', 'aft_local', {window = 40}, 40, true},
    }
    for _, c in ipairs(cases) do
        it('equal their composition with the same gradients: ' .. c[1], function()
            xt.manual_seed(1)
            local B, T, D = 2, 13, 5
            local a = leaves({B, T, D}, {B, T, D}, {B, T, D}, {T, T})
            if not c[5] then a[4] = nil end
            local b = copies(a)
            local fn = F[c[2]]
            local got = c[5] and fn(a[1], a[2], a[3], a[4], c[3]) or fn(a[1], a[2], a[3], c[3])
            local want = composed(b[1], b[2], b[3], b[4], c[4], c[3].causal)
            check_same(got, want, a, b, 1e-5, 1e-4)
        end)
    end

    it('stay finite and exact for keys up to |100|', function()
        xt.manual_seed(2)
        local T = 12
        local a = leaves({2, T, 3}, {2, T, 3}, {2, T, 3}, {T, T})
        xt.no_grad(function() a[2]:copy_((a[2] * 2):tanh() * 100) end)
        local b = copies(a)
        local got = F.aft_full(a[1], a[2], a[3], a[4], {causal = true})
        local biggest = got:abs():amax():item()
        assert.is_true(biggest == biggest and biggest < math.huge, 'non-finite output')
        check_same(got, composed(b[1], b[2], b[3], b[4], nil, true), a, b, 1e-5, 1e-3)
    end)

    -- Past 32 MiB touched, aft_simple writes its outputs around the caches and its backward
    -- runs in blocks; channels are independent, so slices of 256 channels (below that size)
    -- must give the same numbers. Some inputs without grad: their gradients go nowhere.
    it('aft_simple causal agrees with itself above and below the streaming size', function()
        xt.manual_seed(4)
        local B, T, D, width = 1, 2048, 1024, 256
        local q, k, v = xt.randn(B, T, D), xt.randn(B, T, D) * 3, xt.randn(B, T, D)
        local dout = xt.randn(B, T, D)
        for _, needs in ipairs{{true, true, true}, {false, true, false}} do
            local function run(a, b, c, g)
                local x = {a:clone(), b:clone(), c:clone()}
                for i = 1, 3 do if needs[i] then x[i]:requires_grad() end end
                local y = F.aft_simple(x[1], x[2], x[3], {causal = true})
                y:backward(g)
                return y, x
            end
            local y, x = run(q, k, v, dout)
            for c0 = 1, D, width do
                local function part(t) return t:narrow(3, c0, width):contiguous() end
                local ys, xs = run(part(q), part(k), part(v), part(dout))
                check_part(y, x, ys, xs, part, needs, 3, 'at channel ' .. c0)
            end
        end
    end)

    it('pass a finite-difference check', function()
        xt.manual_seed(3)
        local x = leaves({1, 6, 2}, {1, 6, 2}, {1, 6, 2}, {6, 6})
        local tol = {eps = 1e-3, atol = 3e-3, rtol = 2e-2}
        for _, causal in ipairs{true, false} do
            assert.is_true(gradcheck(function(q, k, v, w)
                return F.aft_local(q, k, v, w, {window = 2, causal = causal})
            end, x, tol))
            assert.is_true(gradcheck(function(q, k, v, w)
                return F.aft_full(q, k, v, w, {causal = causal})
            end, x, tol))
            assert.is_true(gradcheck(function(q, k, v)
                return F.aft_simple(q, k, v, {causal = causal})
            end, {x[1], x[2], x[3]}, tol))
        end
    end)

    it('explain bad arguments', function()
        local q, w = xt.randn(2, 5, 3), xt.randn(5, 5)
        assert.matches('aft_full: expected w of shape %[5,5%]', error_of(F.aft_full, q, q, q, xt.randn(4, 4)))
        assert.matches('aft_full: w must be a tensor', error_of(F.aft_full, q, q, q, nil))
        assert.matches("aft_full: unknown option 'window'", error_of(F.aft_full, q, q, q, w, {window = 2}))
        assert.matches('aft_local: opts.window must be an integer >= 0', error_of(F.aft_local, q, q, q, w, {causal = true}))
        assert.matches('aft_local: opts.window must be an integer >= 0', error_of(F.aft_local, q, q, q, w, {window = -1}))
        assert.matches('aft_simple: expected k of shape %[2,5,3%]', error_of(F.aft_simple, q, xt.randn(2, 4, 3), q))
    end)
end)

describe('F.aft_conv', function()
    local cases = {
        {'2 heads, 3x3 kernel', {2, 4, 5, 4}, 2, {3, 3}},
        {'one channel per head, 5x3 kernel on a 4x6 grid', {1, 4, 4, 6}, 4, {5, 3}},
        {'kernel larger than the image', {2, 2, 3, 3}, 1, {7, 7}},
    }
    for _, c in ipairs(cases) do
        it('equals the paper form from conv2d, with the same gradients: ' .. c[1], function()
            xt.manual_seed(4)
            local s = c[2]
            local a = leaves(s, {s[1], c[3], s[3], s[4]}, s, {c[3], c[4][1], c[4][2]})
            local b = copies(a)
            check_same(F.aft_conv(a[1], a[2], a[3], a[4]), composed_conv(b[1], b[2], b[3], b[4]),
                       a, b, 1e-5, 1e-4)
        end)
    end

    -- Past 32 MiB touched in one call, aft_conv writes y (forward) and dq, dv (backward)
    -- around the caches. Batch items are independent, and one item alone stays below that
    -- size, so each must give the numbers it gives alone. w and q without grad in the
    -- second round: dq goes nowhere.
    it('agrees with itself above and below the streaming size', function()
        xt.manual_seed(6)
        local B, C, heads, side = 3, 256, 8, 64
        local q, v = xt.randn(B, C, side, side), xt.randn(B, C, side, side)
        local k, w = xt.randn(B, heads, side, side) * 2, xt.randn(heads, 3, 3) * 0.5
        local dout = xt.randn(B, C, side, side)
        for _, needs in ipairs{{true, true, true, true}, {false, true, true, false}} do
            local function run(...)
                local x = {}
                for i, t in ipairs{...} do
                    x[i] = t:clone()
                    if needs[i] then x[i]:requires_grad() end
                end
                local y = F.aft_conv(x[1], x[2], x[3], x[4])
                y:backward(select(5, ...))
                return y, x
            end
            local y, x = run(q, k, v, w, dout)
            local dw = xt.zeros(heads, 3, 3)
            for b = 1, B do
                local function item(t) return t:narrow(1, b, 1):contiguous() end
                local yb, xb = run(item(q), item(k), item(v), w, item(dout))
                check_part(y, x, yb, xb, item, needs, 3, 'for item ' .. b)
                if needs[4] then dw = dw + xb[4].grad end
            end
            if needs[4] then
                local d = max_diff(x[4].grad, dw)
                assert.is_true(d < 1e-3 * dw:abs():amax():item(), 'dw differs by ' .. d)
            end
        end
    end)

    it('passes a finite-difference check', function()
        xt.manual_seed(5)
        local x = leaves({1, 4, 3, 4}, {1, 2, 3, 4}, {1, 4, 3, 4}, {2, 3, 3})
        assert.is_true(gradcheck(F.aft_conv, x, {eps = 1e-3, atol = 3e-3, rtol = 2e-2}))
    end)

    it('explains bad arguments', function()
        local q, k = xt.randn(2, 4, 3, 3), xt.randn(2, 2, 3, 3)
        assert.matches('aft_conv: expected an odd kernel size', error_of(F.aft_conv, q, k, q, xt.randn(2, 2, 3)))
        assert.matches('aft_conv: the 4 channels of q must split evenly into the 3 heads',
                       error_of(F.aft_conv, q, xt.randn(2, 3, 3, 3), q, xt.randn(3, 3, 3)))
    end)
end)

-- step through x one position at a time (or in chunks) and compare with the forward
local function decode(m, x, chunk)
    local cache, ys = {}, {}
    local T = x:size(2)
    local t = 1
    while t <= T do
        local n = math.min(chunk or 1, T - t + 1)
        ys[#ys + 1] = chunk and m:step(x:narrow(2, t, n), cache) or m:step(x:select(2, t), cache):unsqueeze(2)
        t = t + n
    end
    return xt.cat(ys, 2), cache
end

describe('AFT sequence modules', function()
    it('AFTFull: projections around F.aft_full with w = pos_u pos_v^T (leading block)', function()
        xt.manual_seed(6)
        local m = nn.AFTFull{dim = 6, seq_len = 20, causal = true, hidden_dim = 8, rank = 3}
        local names = {}
        for _, e in ipairs(m:named_parameters()) do names[#names + 1] = e[1] .. ' ' .. tostring(e[2].shape) end
        assert.are.same({'q_proj.weight [8,6]', 'q_proj.bias [8]', 'k_proj.weight [8,6]', 'k_proj.bias [8]',
                         'v_proj.weight [8,6]', 'v_proj.bias [8]', 'out_proj.weight [6,8]', 'out_proj.bias [6]',
                         'pos_u [20,3]', 'pos_v [20,3]'}, names)
        local x = xt.randn(2, 11, 6)
        local w = m.pos_u:narrow(1, 1, 11):matmul(m.pos_v:narrow(1, 1, 11):t())
        local want = m.out_proj(F.aft_full(m.q_proj(x), m.k_proj(x), m.v_proj(x), w, {causal = true}))
        assert.is_true(max_diff(m(x), want) < 1e-6)
        -- unbatched input
        assert.is_true(max_diff(m(x[1]), want[1]) < 1e-6)
    end)

    it('AFTLocal with rank 0 slices its full pos_w', function()
        xt.manual_seed(7)
        local m = nn.AFTLocal{dim = 4, seq_len = 12, window = 3, rank = 0}
        assert.are.same({12, 12}, m.pos_w.shape:totable())
        local x = xt.randn(1, 7, 4)
        local w = m.pos_w:narrow(1, 1, 7):narrow(2, 1, 7)
        local want = m.out_proj(F.aft_local(m.q_proj(x), m.k_proj(x), m.v_proj(x), w, {window = 3}))
        assert.is_true(max_diff(m(x), want) < 1e-6)
    end)

    it('train: gradients reach every parameter', function()
        xt.manual_seed(8)
        for _, m in ipairs{nn.AFTFull{dim = 4, seq_len = 9}, nn.AFTLocal{dim = 4, seq_len = 9, window = 2, causal = true},
                           nn.AFTSimple{dim = 4}} do
            m(xt.randn(3, 9, 4)):square():sum():backward()
            for _, e in ipairs(m:named_parameters()) do
                assert.is_not_nil(e[2].grad, e[1])
                assert.is_true(e[2].grad:abs():sum():item() > 0, e[1])
            end
        end
    end)

    local decoders = {
        {'AFTFull', function() return nn.AFTFull{dim = 6, seq_len = 40, causal = true, rank = 4} end},
        {'AFTFull rank 0', function() return nn.AFTFull{dim = 6, seq_len = 40, causal = true, rank = 0} end},
        {'AFTLocal window 5', function() return nn.AFTLocal{dim = 6, seq_len = 40, window = 5, causal = true} end},
        {'AFTLocal window 1', function() return nn.AFTLocal{dim = 6, seq_len = 40, window = 1, causal = true} end},
        {'AFTLocal window 0', function() return nn.AFTLocal{dim = 6, seq_len = 40, window = 0, causal = true} end},
        {'AFTSimple', function() return nn.AFTSimple{dim = 6, causal = true, hidden_dim = 10} end},
    }
    for _, c in ipairs(decoders) do
        it('decoding step by step equals the causal forward: ' .. c[1], function()
            xt.manual_seed(9)
            local m = c[2]()
            -- larger position biases than at init, so the window matters
            xt.no_grad(function()
                for _, e in ipairs(m:named_parameters()) do
                    if e[1]:match('^pos_') then e[2]:mul_(8) end
                end
            end)
            local x = xt.randn(3, 23, 6) * 2
            local full = m(x)
            local one = decode(m, x)
            assert.is_true(max_diff(one, full) < 2e-5, 'one at a time: ' .. max_diff(one, full))
            local chunks = decode(m, x, 4)
            assert.is_true(max_diff(chunks, full) < 2e-5, 'in chunks: ' .. max_diff(chunks, full))
        end)
    end

    it('AFTSimple keeps O(dim) state while decoding', function()
        local m = nn.AFTSimple{dim = 4, causal = true, hidden_dim = 7}
        local _, cache = decode(m, xt.randn(2, 50, 4))
        local floats = 0
        for _, v in pairs(cache) do
            if xt.is_tensor(v) then floats = floats + v:numel() end
        end
        assert.are.equal(3 * 2 * 7, floats)
        local l = nn.AFTLocal{dim = 4, seq_len = 60, window = 5, causal = true, hidden_dim = 7}
        local _, lc = decode(l, xt.randn(2, 50, 4))
        assert.are.same({2, 5, 7}, lc.kw.shape:totable())
    end)

    it('explain bad arguments', function()
        local m = nn.AFTFull{dim = 4, seq_len = 8, causal = true}
        assert.matches('AFTFull: the sequence has 9 positions, more than seq_len = 8', error_of(m, xt.randn(1, 9, 4)))
        assert.matches('AFTFull: expected x of shape %[B,T,4%]', error_of(m, xt.randn(1, 3, 5)))
        local cache = {}
        for _ = 1, 8 do m:step(xt.randn(2, 4), cache) end
        assert.matches('AFTFull:step: the sequence has 9 positions, more than seq_len = 8',
                       error_of(m.step, m, xt.randn(2, 4), cache))
        assert.matches('AFTFull:step: the cache holds a batch of 2, x has 3',
                       error_of(m.step, m, xt.randn(3, 4), {len = 1, batch = 2}))
        local nc = nn.AFTSimple{dim = 4}
        assert.matches('AFTSimple:step: incremental decoding needs a causal module', error_of(nc.step, nc, xt.randn(2, 4), {}))
        assert.matches('AFTFull: seq_len', error_of(nn.AFTFull, {dim = 4}))
        assert.matches("AFTLocal: window must be an integer >= 0", error_of(nn.AFTLocal, {dim = 4, seq_len = 5}))
        assert.matches("AFTSimple: unknown option 'window'", error_of(nn.AFTSimple, {dim = 4, window = 3}))
        assert.matches('AFTFull: rank must be an integer >= 0', error_of(nn.AFTFull, {dim = 4, seq_len = 5, rank = -1}))
    end)
end)

describe('nn.AFTConv', function()
    it('starts as per-head AFT-simple (gamma = beta = 0) and its raw kernel gets no gradient then', function()
        xt.manual_seed(10)
        local m = nn.AFTConv{dim = 8, heads = 2, kernel = 3}
        local names = {}
        for _, e in ipairs(m:named_parameters()) do names[#names + 1] = e[1] .. ' ' .. tostring(e[2].shape) end
        assert.are.same({'q_proj.weight [8,8,1,1]', 'q_proj.bias [8]', 'k_proj.weight [2,8,1,1]',
                         'k_proj.bias [2]', 'v_proj.weight [8,8,1,1]', 'v_proj.bias [8]',
                         'out_proj.weight [8,8,1,1]', 'out_proj.bias [8]', 'pos_weight [2,3,3]',
                         'pos_gamma [2]', 'pos_beta [2]'}, names)
        local x = xt.randn(2, 8, 5, 6)
        local y = m(x)
        local q, k, v = m.q_proj(x), m.k_proj(x), m.v_proj(x)
        local want = m.out_proj(F.aft_conv(q, k, v, xt.zeros(2, 3, 3)))
        assert.is_true(max_diff(y, want) < 1e-6)
        y:sum():backward()
        assert.are.equal(0, m.pos_weight.grad:abs():sum():item())
        assert.is_true(m.pos_gamma.grad:abs():sum():item() > 0)
        assert.is_true(m.pos_beta.grad:abs():sum():item() > 0)
    end)

    it('normalises the kernel per head, as the paper eq. 8', function()
        xt.manual_seed(11)
        local m = nn.AFTConv{dim = 4, heads = 2, kernel = {3, 5}}
        xt.no_grad(function()
            m.pos_gamma:copy_(xt.tensor{1.5, -0.5})
            m.pos_beta:copy_(xt.tensor{0.25, 2})
        end)
        local w = m:position_bias()
        for h = 1, 2 do
            local raw = m.pos_weight[h]
            local mean = raw:mean():item()
            local var = ((raw - mean):square()):mean():item()
            local want = (raw - mean) / math.sqrt(var + 1e-5) * m.pos_gamma[h] + m.pos_beta[h]
            assert.is_true(max_diff(w[h], want) < 1e-5)
        end
        local x = xt.randn(1, 4, 6, 7)
        m(x):square():sum():backward()
        assert.is_true(m.pos_weight.grad:abs():sum():item() > 0)
    end)

    it('explains bad arguments', function()
        assert.matches('AFTConv: kernel must be an odd positive integer', error_of(nn.AFTConv, {dim = 4, heads = 2, kernel = 4}))
        assert.matches('AFTConv: heads %(3%) must divide dim %(4%)', error_of(nn.AFTConv, {dim = 4, heads = 3, kernel = 3}))
        local m = nn.AFTConv{dim = 4, heads = 2, kernel = 3}
        assert.matches('AFTConv: expected x of shape %[B,4,H,W%]', error_of(m, xt.randn(1, 3, 5, 5)))
    end)
end)

describe('models.aft_conv_net', function()
    local AFTConvNet = require 'xt.models.aft_conv_net'

    it('takes one head count for every stage, or one per stage', function()
        local same = AFTConvNet{in_channels = 1, classes = 3, dim = 8, depth = {1, 1}, heads = 4, kernel = 3}
        local per = AFTConvNet{in_channels = 1, classes = 3, dim = 8, depth = {1, 1}, heads = {8, 16}, kernel = 3}
        assert.are.equal(4, same.stages[1].attn.heads)
        assert.are.equal(4, same.stages[4].attn.heads)
        assert.are.equal(8, per.stages[1].attn.heads)
        assert.are.equal(16, per.stages[4].attn.heads)
        local y = per(xt.randn(2, 1, 8, 8))
        assert.are.same({2, 3}, {y:size(1), y:size(2)})
        assert.matches('heads lists 3 stages, depth has 2',
                       error_of(AFTConvNet, {in_channels = 1, dim = 8, depth = {1, 1}, heads = {4, 4, 4}}))
    end)
end)
