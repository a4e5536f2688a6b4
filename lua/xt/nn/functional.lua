-- xt.nn.functional (F): stateless layer functions. Fused C kernels where speed needs them,
-- compositions of tensor ops otherwise (their gradients come from the ops).
local ffi = require 'ffi'
local C = require 'xt.lib'
local xt = require 'xt.tensor'

local F = {}
local wrap, raise, cdim = xt._wrap, xt._raise, xt._cdim
local NULL = nil

local function opt_c(t) return t and t._c or NULL end
local function pair(v, name)
    if type(v) == 'number' then return v, v end
    if type(v) == 'table' and #v == 2 then return v[1], v[2] end
    raise(string.format('%s: expected a number or a pair of numbers', name))
end

local REDUCTION = {none = 0, mean = 1, sum = 2}
local function reduction_of(opts, op)
    local r = REDUCTION[opts.reduction or 'mean']
    if not r then raise(op .. ": reduction must be 'none', 'mean' or 'sum', got " .. tostring(opts.reduction)) end
    return r
end

-- activations
function F.relu(x) return x:relu() end
function F.gelu(x) return x:gelu() end
function F.silu(x) return x:silu() end
F.swish = F.silu
function F.sigmoid(x) return x:sigmoid() end
function F.tanh(x) return x:tanh() end
function F.elu(x) return x:elu() end
function F.leaky_relu(x, slope) return x:leaky_relu(slope) end
function F.softmax(x, dim) return x:softmax(dim or -1) end
function F.log_softmax(x, dim) return x:log_softmax(dim or -1) end

-- y = x w^T + b: x [..., in], w [out, in], b [out] or nil
function F.linear(x, w, b) return wrap(C.xt_linear(x._c, w._c, opt_c(b))) end

-- F.conv2d(x, w, b, {stride=1, padding=0, dilation=1, groups=1})
function F.conv2d(x, w, b, opts)
    opts = opts or {}
    local sh, sw = pair(opts.stride or 1, 'conv2d: stride')
    local ph, pw = pair(opts.padding or 0, 'conv2d: padding')
    local dh, dw = pair(opts.dilation or 1, 'conv2d: dilation')
    return wrap(C.xt_conv2d(x._c, w._c, opt_c(b), sh, sw, ph, pw, dh, dw, opts.groups or 1))
end

function F.max_pool2d(x, kernel, opts)
    opts = opts or {}
    local kh, kw = pair(kernel, 'max_pool2d: kernel')
    local sh, sw = pair(opts.stride or kernel, 'max_pool2d: stride')
    local ph, pw = pair(opts.padding or 0, 'max_pool2d: padding')
    return wrap(C.xt_max_pool2d(x._c, kh, kw, sh, sw, ph, pw))
end

function F.avg_pool2d(x, kernel, opts)
    opts = opts or {}
    local kh, kw = pair(kernel, 'avg_pool2d: kernel')
    local sh, sw = pair(opts.stride or kernel, 'avg_pool2d: stride')
    local ph, pw = pair(opts.padding or 0, 'avg_pool2d: padding')
    return wrap(C.xt_avg_pool2d(x._c, kh, kw, sh, sw, ph, pw,
                                opts.count_include_pad == false and 0 or 1))
end

function F.adaptive_avg_pool2d(x, size)
    local oh, ow = pair(size, 'adaptive_avg_pool2d: size')
    return wrap(C.xt_adaptive_avg_pool2d(x._c, oh, ow))
end

-- F.batch_norm(x, running_mean, running_var, {weight=, bias=, training=, momentum=0.1, eps=1e-5})
function F.batch_norm(x, running_mean, running_var, opts)
    opts = opts or {}
    return wrap(C.xt_batch_norm(x._c, opt_c(opts.weight), opt_c(opts.bias), opt_c(running_mean),
                                opt_c(running_var), opts.training and 1 or 0,
                                opts.momentum or 0.1, opts.eps or 1e-5))
end

-- F.layer_norm(x, normalized_shape, weight, bias, eps): normalized_shape a number or a list
function F.layer_norm(x, normalized_shape, weight, bias, eps)
    local nd = type(normalized_shape) == 'number' and 1 or #normalized_shape
    return wrap(C.xt_layer_norm(x._c, nd, opt_c(weight), opt_c(bias), eps or 1e-5))
end

function F.group_norm(x, groups, weight, bias, eps)
    return wrap(C.xt_group_norm(x._c, groups, opt_c(weight), opt_c(bias), eps or 1e-5))
end

-- F.dropout(x, p, training): identity when not training or p == 0
function F.dropout(x, p, training, opts)
    p = p or 0.5
    if training == false or p == 0 then return x end
    return wrap(C.xt_dropout(x._c, (opts and opts.generator) or C.xt_default_rng(), p))
end

-- index: int64 of any shape, 1-based -> [..., D]
function F.embedding(index, weight) return wrap(C.xt_embedding(weight._c, index._c, 1)) end

-- F.cross_entropy(logits, target, {weight=, ignore_index=-100, label_smoothing=0, reduction='mean'})
-- target: int64 class numbers counting from 1
function F.cross_entropy(logits, target, opts)
    opts = opts or {}
    return wrap(C.xt_cross_entropy(logits._c, target._c, opt_c(opts.weight), opts.ignore_index or -100,
                                   opts.label_smoothing or 0, reduction_of(opts, 'cross_entropy'), 1))
end

function F.nll_loss(log_probs, target, opts)
    opts = opts or {}
    return wrap(C.xt_nll_loss(log_probs._c, target._c, opt_c(opts.weight), opts.ignore_index or -100,
                              reduction_of(opts, 'nll_loss'), 1))
end

function F.binary_cross_entropy_with_logits(x, target, opts)
    opts = opts or {}
    return wrap(C.xt_bce_with_logits(x._c, target._c, opt_c(opts.pos_weight),
                                     reduction_of(opts, 'binary_cross_entropy_with_logits')))
end

local function reduce(loss, opts, op)
    local r = reduction_of(opts or {}, op)
    if r == 1 then return loss:mean() elseif r == 2 then return loss:sum() end
    return loss
end

function F.mse_loss(input, target, opts)
    if input.shape ~= target.shape then
        raise(string.format('mse_loss: input has shape %s, target %s', tostring(input.shape), tostring(target.shape)))
    end
    return reduce((input - target):square(), opts, 'mse_loss')
end

function F.l1_loss(input, target, opts)
    if input.shape ~= target.shape then
        raise(string.format('l1_loss: input has shape %s, target %s', tostring(input.shape), tostring(target.shape)))
    end
    return reduce((input - target):abs(), opts, 'l1_loss')
end

-- one_hot(target [N...] int64 from 1, classes) -> [N..., classes] float32
function F.one_hot(target, classes)
    local eye = xt.eye(classes)
    return F.embedding(target, eye)
end

for name, fn in pairs(require('xt.nn.attention').functional) do F[name] = fn end
for name, fn in pairs(require('xt.nn.aft').functional) do F[name] = fn end
for name, fn in pairs(require('xt.nn.delight').functional) do F[name] = fn end
for name, fn in pairs(require('xt.nn.efficient_attention').functional) do F[name] = fn end
for name, fn in pairs(require('xt.nn.sparse_attention').functional) do F[name] = fn end

return F
