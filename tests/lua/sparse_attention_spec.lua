-- sparse_attention: F.local_attention, F.sparse_attention, F.global_local_attention against
-- the composition they replace (matmul, the pattern's mask, softmax, matmul), values and
-- gradients; the window= convention; the modules run forward and backward; clear errors.
-- (The C ops themselves: tests/c/test_attn_patterns.c.)
local xt = require 'xt'
local nn, F = xt.nn, xt.nn.functional

local function max_diff(a, b) return (a - b):abs():amax():item() end

local function error_of(fn, ...)
    local ok, err = pcall(fn, ...)
    assert.is_false(ok, 'expected an error')
    return tostring(err)
end

-- softmax(scale q k^T, -inf where not sees(i, j)) v; i, j count from 1
local function composed(q, k, v, sees)
    local T = q:size(-2)
    local hidden = {}
    for i = 1, T do
        hidden[i] = {}
        for j = 1, T do hidden[i][j] = sees(i, j) and 0 or 1 end
    end
    local mask = xt.tensor(hidden):gt(0.5)
    local scores = q:matmul(k:transpose(-2, -1)) * (1 / math.sqrt(q:size(-1)))
    return scores:masked_fill(mask, -math.huge):softmax(-1):matmul(v)
end

local function compare(run, sees)
    xt.manual_seed(11)
    local a, b = {}, {}
    for i = 1, 3 do
        a[i] = xt.randn(2, 2, 75, 8):requires_grad()
        b[i] = a[i]:detach():clone():requires_grad()
    end
    local got, want = run(a[1], a[2], a[3]), composed(b[1], b[2], b[3], sees)
    assert.is_true(max_diff(got, want) < 1e-5, 'values differ by ' .. max_diff(got, want))
    local dout = xt.randn(got.shape)
    got:backward(dout)
    want:backward(dout)
    for i = 1, 3 do
        local d = max_diff(a[i].grad, b[i].grad)
        assert.is_true(d < 1e-4, 'gradient ' .. i .. ' differs by ' .. d)
    end
end

describe('F.local_attention', function()
    it('window = 5 sees 2 keys before and 2 after', function()
        compare(function(q, k, v) return F.local_attention(q, k, v, {window = 5}) end,
                function(i, j) return j >= i - 2 and j <= i + 2 end)
    end)
    it('window = 4 sees 2 before and 2 after, with the query (left = w - floor(w/2))', function()
        compare(function(q, k, v) return F.local_attention(q, k, v, {window = 4}) end,
                function(i, j) return j >= i - 1 and j <= i + 2 end)
    end)
    it('causal window = 10 sees the query and the 9 keys before it', function()
        compare(function(q, k, v) return F.local_attention(q, k, v, {window = 10, causal = true}) end,
                function(i, j) return j <= i and j >= i - 9 end)
    end)
    it('block = 16 sees its own block of 16 positions (blocked local), causal', function()
        compare(function(q, k, v) return F.local_attention(q, k, v, {block = 16, causal = true}) end,
                function(i, j) return j <= i and math.floor((i - 1) / 16) == math.floor((j - 1) / 16) end)
    end)
    it('before= and after= give the sides directly', function()
        compare(function(q, k, v) return F.local_attention(q, k, v, {before = 20, after = 3}) end,
                function(i, j) return j >= i - 20 and j <= i + 3 end)
    end)
end)

describe('F.sparse_attention', function()
    it('strided, causal', function()
        compare(function(q, k, v)
            return F.sparse_attention(q, k, v, {pattern = 'strided', stride = 7, causal = true})
        end, function(i, j) return j <= i and (i - j <= 7 or (i - j) % 7 == 0) end)
    end)
    it('fixed, summary 3', function()
        compare(function(q, k, v)
            return F.sparse_attention(q, k, v, {pattern = 'fixed', stride = 10, summary = 3})
        end, function(i, j)
            return math.floor((i - 1) / 10) == math.floor((j - 1) / 10) or (j - 1) % 10 >= 7
        end)
    end)
end)

describe('F.global_local_attention', function()
    it('window plus global positions (from 1)', function()
        compare(function(q, k, v)
            return F.global_local_attention(q, k, v, {window = 3, global = {1, 40}})
        end, function(i, j)
            return math.abs(i - j) <= 1 or i == 1 or j == 1 or i == 40 or j == 40
        end)
    end)
    it('random blocks add keys and depend on the seed only', function()
        xt.manual_seed(2)
        local q, k, v = xt.randn(1, 1, 200, 8), xt.randn(1, 1, 200, 8), xt.randn(1, 1, 200, 8)
        local plain = F.global_local_attention(q, k, v, {window = 3})
        local r1 = F.global_local_attention(q, k, v, {window = 3, random_blocks = 2, block = 16, seed = 5})
        local r2 = F.global_local_attention(q, k, v, {window = 3, random_blocks = 2, block = 16, seed = 5})
        assert.are.equal(0, max_diff(r1, r2))
        assert.is_true(max_diff(plain, r1) > 1e-3)
    end)
end)

describe('block-sparse attention modules', function()
    local function check_module(m, T)
        xt.manual_seed(4)
        local x = xt.randn(2, T, 16):requires_grad()
        local y = m(x)
        assert.are.same({2, T, 16}, {y:size(1), y:size(2), y:size(3)})
        y:sum():backward()
        assert.is_true(x.grad ~= nil)
        for _, p in ipairs(m:parameters()) do assert.is_true(p.grad ~= nil) end
        local y1 = m(x:detach()[1])
        assert.is_true(max_diff(y1, y:detach()[1]) < 1e-5)
    end
    it('nn.LocalAttention', function()
        check_module(nn.LocalAttention{dim = 16, heads = 2, window = 9, causal = true}, 100)
    end)
    it('nn.SparseAttention', function()
        check_module(nn.SparseAttention{dim = 16, heads = 4, pattern = 'strided', stride = 10}, 100)
    end)
    it('nn.GlobalLocalAttention', function()
        check_module(nn.GlobalLocalAttention{dim = 16, heads = 2, window = 5, global = {1},
                                             random_blocks = 1, block = 16}, 100)
    end)
    it('nn.GlobalLocalAttention with Longformer global projections', function()
        local m = nn.GlobalLocalAttention{dim = 16, heads = 2, window = 5, global = {1, 30, 30},
                                          global_projections = true}
        check_module(m, 40)
        -- the global rows are dense attention with the global projections, the rest windowed
        xt.manual_seed(6)
        local x = xt.randn(1, 40, 16)
        local y = m(x)
        local function heads(w, b, i)
            local p = F.linear(x, w:narrow(1, (i - 1) * 16 + 1, 16), b:narrow(1, (i - 1) * 16 + 1, 16))
            return p:view(1, 40, 2, 8):permute(1, 3, 2, 4)
        end
        local gw, gb = m.in_proj_global_weight, m.in_proj_global_bias
        local sw, sb = m.in_proj_weight, m.in_proj_bias
        local dense = F.scaled_dot_product_attention(heads(gw, gb, 1), heads(gw, gb, 2), heads(gw, gb, 3))
        local windowed = F.global_local_attention(heads(sw, sb, 1), heads(sw, sb, 2), heads(sw, sb, 3),
                                                  {window = 5, global = {1, 30}})
        local rows = xt.tensor({1, 30}, 'int64')
        local want_g = m.out_proj(dense:permute(1, 3, 2, 4):reshape(1, 40, 16)):index_select(2, rows)
        local want_w = m.out_proj(windowed:permute(1, 3, 2, 4):reshape(1, 40, 16))
        assert.is_true(max_diff(y:index_select(2, rows), want_g) < 1e-5)
        assert.is_true(max_diff(y:narrow(2, 2, 28), want_w:narrow(2, 2, 28)) < 1e-5)
    end)
end)

describe('errors', function()
    local q = xt.randn(1, 2, 10, 4)
    it('name the op and what was expected', function()
        assert.matches('local_attention: expected window=', error_of(F.local_attention, q, q, q, {}))
        assert.matches("unknown option 'widow'", error_of(F.local_attention, q, q, q, {widow = 3}))
        assert.matches("pattern must be 'strided' or 'fixed'",
                       error_of(F.sparse_attention, q, q, q, {pattern = 'axial'}))
        assert.matches('global token index 11 out of range',
                       error_of(F.global_local_attention, q, q, q, {window = 3, global = {11}}))
        assert.matches('S == T', error_of(F.local_attention, q, xt.randn(1, 2, 12, 4),
                                          xt.randn(1, 2, 12, 4), {window = 3}))
        assert.matches('heads %(3%) must divide dim %(16%)',
                       error_of(nn.LocalAttention, {dim = 16, heads = 3, window = 3}))
    end)
end)
