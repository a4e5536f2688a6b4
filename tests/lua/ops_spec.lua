-- ops_spec: every differentiable op, in one table. For each case: the value and every
-- gradient match PyTorch (fixtures from tests/fixtures/make_op_fixtures.py), and the
-- gradients pass a finite-difference check. A differentiable op of xt.h with no case here
-- fails the completeness test at the end.
local xt = require 'xt'
local F = xt.nn.functional
local gradcheck = xt.autograd.gradcheck

local FIXTURES = 'tests/fixtures/ops/'

local function max_abs_diff(a, b)
    return (a - b):abs():amax():item()
end

-- name -> function of the inputs (same order as the fixture script), and which C ops it covers
local CASES = {}
local covered = {}
local function case(name, ops, fn, opts)
    CASES[#CASES + 1] = {name = name, fn = fn, opts = opts or {}}
    for op in ops:gmatch('%S+') do covered[op] = true end
end

for _, op in ipairs{'neg', 'abs', 'exp', 'log', 'sqrt', 'rsqrt', 'tanh', 'sigmoid', 'relu', 'gelu',
                    'silu', 'sin', 'cos', 'elu', 'log1p', 'expm1', 'square', 'reciprocal'} do
    case('unary_' .. op, 'unary:' .. op, function(x) return x[op](x) end)
end
case('add_bcast', 'binary:add', function(a, b) return a + b end)
case('sub_bcast', 'binary:sub', function(a, b) return a - b end)
case('mul_bcast', 'binary:mul', function(a, b) return a * b end)
case('div_bcast', 'binary:div', function(a, b) return a / b end)
case('pow', 'binary:pow', function(a, b) return a ^ b end)
case('maximum', 'binary:maximum', function(a, b) return a:maximum(b) end)
case('minimum', 'binary:minimum', function(a, b) return a:minimum(b) end)
case('scalar_ops', 'binary_scalar', function(x) return (2 - x) * 3 / 4 + 1 end)
case('rdiv_scalar', 'binary_scalar', function(x) return 2 / x end)
case('pow_scalar', 'binary_scalar', function(x) return x ^ 2.5 end)
case('clamp', 'clamp', function(x) return x:clamp(-1, 1) end)
case('leaky_relu', 'leaky_relu', function(x) return x:leaky_relu(0.1) end)
case('where', 'where', function(a, b) return xt.where(a:gt(0), a, b) end)
case('masked_fill', 'masked_fill', function(x) return x:masked_fill(x:gt(0.5), -1) end)

case('sum_all', 'reduce:sum', function(x) return x:sum() end)
case('sum_dim', 'reduce:sum', function(x) return x:sum(2) end)
case('sum_dims_keep', 'reduce:sum', function(x) return x:sum({1, 3}, true) end)
case('mean_dim', 'reduce:mean', function(x) return x:mean(3) end)
case('amax_dim', 'reduce:max', function(x) return x:amax(2) end)
case('amin_dim', 'reduce:min', function(x) return x:amin(1) end)
case('prod_dim', 'reduce:prod', function(x) return x:prod(2) end)
case('logsumexp', 'reduce:logsumexp', function(x) return x:logsumexp(2) end)
case('var_dim', 'var', function(x) return x:var(2) end)
case('std_all', 'var', function(x) return x:std() end)
case('max_dim', 'max_dim', function(x) return (x:max(2)) end)
case('min_dim', 'min_dim', function(x) return (x:min(1)) end)
case('cumsum', 'cumsum', function(x) return x:cumsum(2) end)
case('softmax', 'softmax', function(x) return x:softmax(2) end)
case('softmax_dim0', 'softmax', function(x) return x:softmax(1) end)
case('log_softmax', 'log_softmax', function(x) return x:log_softmax(2) end)

case('view', 'view', function(x) return x:view(2, 6) * xt.arange(6):float() end)
case('reshape_t', 'reshape transpose', function(x) return x:t():reshape(12) * xt.arange(12):float() end)
case('permute', 'permute contiguous', function(x) return x:permute(3, 1, 2):contiguous() end)
case('transpose', 'transpose', function(x) return x:transpose(1, 3) end)
case('narrow', 'narrow', function(x) return x:narrow(2, 2, 3) end)
case('select', 'select', function(x) return x:select(1, 3) end)
case('squeeze_unsqueeze', 'squeeze unsqueeze', function(x) return x:squeeze(2):unsqueeze(1) end)
case('expand', 'expand', function(x) return x:expand(3, 4) * xt.arange(4):float() end)
case('flatten', 'flatten', function(x) return x:flatten(2) end)
case('clone', 'clone', function(x) return x:clone() end)
case('cat', 'cat', function(a, b) return xt.cat({a, b}, 1) end)
case('stack', 'stack', function(a, b) return xt.stack({a, b}, 2) end)
case('index_select', 'index_select', function(x, i) return x:index_select(1, i) end)
case('gather', 'gather', function(x, i) return x:gather(2, i) end)
case('scatter_add', 'scatter_add', function(x, s, i) return x:scatter_add(2, i, s) end)

case('matmul_2d', 'matmul', function(a, b) return a:matmul(b) end)
case('matmul_batch_bcast', 'matmul', function(a, b) return a:matmul(b) end)
case('matmul_vec', 'matmul', function(a, b) return a:matmul(b) end)
case('bmm', 'bmm', function(a, b) return a:bmm(b) end)
case('linear', 'linear', function(x, w, b) return F.linear(x, w, b) end)

case('conv2d', 'conv2d', function(x, w, b) return F.conv2d(x, w, b, {padding = 1}) end)
case('conv2d_stride_groups', 'conv2d', function(x, w) return F.conv2d(x, w, nil, {stride = 2, groups = 2}) end)
case('max_pool2d', 'max_pool2d', function(x) return F.max_pool2d(x, 2) end)
case('avg_pool2d', 'avg_pool2d', function(x) return F.avg_pool2d(x, 3, {stride = 2, padding = 1}) end)
case('adaptive_avg_pool2d', 'adaptive_avg_pool2d', function(x) return F.adaptive_avg_pool2d(x, 3) end)
case('batch_norm_train', 'batch_norm', function(x, w, b)
    return F.batch_norm(x, nil, nil, {weight = w, bias = b, training = true})
end)
case('layer_norm', 'layer_norm', function(x, w, b) return F.layer_norm(x, 5, w, b) end)
case('group_norm', 'group_norm', function(x, w, b) return F.group_norm(x, 2, w, b) end)
case('embedding', 'embedding', function(w, i) return F.embedding(i, w) end)
case('cross_entropy', 'cross_entropy', function(x, t) return F.cross_entropy(x, t) end)
case('cross_entropy_smooth', 'cross_entropy', function(x, t) return F.cross_entropy(x, t, {label_smoothing = 0.1}) end)
case('nll_loss', 'nll_loss', function(x, t) return F.nll_loss(x, t) end)
case('bce_with_logits', 'bce_with_logits', function(x, t) return F.binary_cross_entropy_with_logits(x, t) end)
case('mse_loss', '', function(a, b) return F.mse_loss(a, b) end)

-- ops covered elsewhere, with the reason
covered.dropout = true          -- random: checked in nn_spec (mask reuse, scaling, gradcheck with a fixed generator)
covered.sum_to = true           -- the engine's un-broadcasting: every *_bcast case runs it
covered.to_dtype = true         -- float32 -> float32 is the identity; other dtypes carry no gradient
covered.contiguous = true
covered.reshape = true
-- tiled attention: test_sdpa.c (plain composition, gradchecks incl. dropout, PyTorch fixtures)
-- and attention_spec (the matmul/softmax composition, gradcheck)
covered.scaled_dot_product_attention = true
covered.scaled_dot_product_attention_dropout = true
-- kernel attention: test_attn_linear.c (dense composition, gradchecks, PyTorch fixtures) and
-- efficient_attention_spec (composition, gradcheck)
covered.linear_attention = true
covered.favor_features = true
-- the AFT family: test_aft.c (plain compositions, gradchecks of every option, PyTorch fixtures)
covered.aft_full, covered.aft_simple, covered.aft_local, covered.aft_conv = true, true, true, true
-- DeLighT's group linear: test_group_linear.c (per-group loop composition, gradchecks)
covered.group_linear, covered.group_linear_ex = true, true
-- linear attention and the FAVOR+ features: test_attn_linear.c (dense reference, gradchecks)
covered.linear_attention, covered.favor_features = true, true
-- block-sparse attention: test_attn_patterns.c (dense masked reference for values and all
-- gradients, gradchecks of every pattern, causality) and sparse_attention_spec
covered.local_attention, covered.sparse_attention, covered.global_local_attention = true, true, true

local function load_inputs(name)
    local inputs, i = {}, 1
    while true do
        local path = FIXTURES .. name .. '.in' .. i .. '.npy'
        local f = io.open(path)
        if not f then break end
        f:close()
        local t = xt.load_npy(path)
        if t.dtype == 'float32' then t:requires_grad() end
        inputs[i] = t
        i = i + 1
    end
    return inputs
end

describe('every differentiable op', function()
    for _, c in ipairs(CASES) do
        it(c.name .. ' matches PyTorch and finite differences', function()
            local inputs = load_inputs(c.name)
            assert.is_true(#inputs > 0, 'no fixture for ' .. c.name)
            local out = c.fn(unpack(inputs))
            local expected = xt.load_npy(FIXTURES .. c.name .. '.out.npy')
            assert.are.same(expected.shape, out.shape)
            assert.is_true(max_abs_diff(out, expected) < 1e-4, 'value differs by ' .. max_abs_diff(out, expected))
            out:backward(xt.load_npy(FIXTURES .. c.name .. '.dout.npy'))
            for i, x in ipairs(inputs) do
                if x.dtype == 'float32' then
                    local want = xt.load_npy(FIXTURES .. c.name .. '.grad' .. i .. '.npy')
                    local got = x.grad
                    assert.is_truthy(got, 'no gradient for input ' .. i)
                    local d = max_abs_diff(got, want)
                    assert.is_true(d < 1e-4 * math.max(1, want:abs():amax():item()),
                                   'gradient ' .. i .. ' differs by ' .. d)
                end
            end
            assert.is_true(gradcheck(c.fn, inputs, {eps = 1e-3, atol = 2e-3, rtol = 2e-2}))
        end)
    end
end)

describe('the op table', function()
    it('covers every differentiable op of xt.h', function()
        local f = assert(io.open('core/include/xt.h'))
        local header = f:read('*a')
        f:close()
        local api = assert(header:match('/%* XT_API_BEGIN %*/(.-)/%* XT_API_END %*/'))
        local not_differentiable = {
            empty = 1, zeros = 1, full = 1, from_data = 1, arange = 1, linspace = 1, eye = 1,
            rand = 1, randn = 1, randint = 1, randperm = 1, detach = 1, argmax = 1, argmin = 1,
            get_grad = 1, load_npy = 1, unary = 1, binary = 1, reduce = 1, backward_waiting_dout = 1,
            squeeze_all = 1,   -- the same kernel as squeeze
            image_decode = 1, image_load = 1, read_idx = 1, read_cifar = 1, transform_apply = 1,
        }
        local missing = {}
        for name in api:gmatch('xt_tensor %*xt_([%w_]+)%(') do
            if not not_differentiable[name] and not covered[name] then missing[#missing + 1] = name end
        end
        -- every element-wise and reduction op by name
        local enums = {
            {api:match('typedef enum xt_unary_op {(.-)}'), 'unary', {sign = 1, floor = 1, ceil = 1, round = 1}},
            {api:match('typedef enum xt_binary_op {(.-)}'), 'binary', {eq = 1, ne = 1, lt = 1, le = 1, gt = 1, ge = 1}},
            {api:match('typedef enum xt_reduce_op {(.-)}'), 'reduce', {}},
        }
        for _, e in ipairs(enums) do
            for name in e[1]:gmatch('XT_([%u%d_]+)') do
                local op = name:lower()
                if not op:find('_count$') and not op:find('_op$') and not e[3][op] and not covered[e[2] .. ':' .. op] then
                    missing[#missing + 1] = e[2] .. ':' .. op
                end
            end
        end
        assert.are.same({}, missing)
    end)
end)
