-- xt.tensor: the Tensor type and the Lua side of every tensor op.
--
-- A Tensor is a Lua table {_c = <xt_tensor* cdata>}; `wrap` is the one place that attaches
-- the finalizer (ffi.gc), so a C reference is released exactly once. This file is also
-- the one place where Lua's 1-based conventions meet C's 0-based ones: dims and indices
-- are converted here (index tensors are passed to C with base 1).
local ffi = require 'ffi'
local C = require 'xt.lib'
local memory = require 'xt.memory'

local Tensor = {}            -- the metatable of every tensor
local methods = {}           -- what t:name(...) finds
Tensor.methods = methods
local xt = {}                -- the functions of the xt namespace defined here

local floor, type, select, tonumber = math.floor, type, select, tonumber

---------------------------------------------------------------------------------------------
-- errors: a Lua error naming the op; positioned at the first caller outside the xt package

local package_dir = debug.getinfo(1, 'S').source:match('^@(.*[/\\])') or ''

local function raise(msg)
    local level = 2
    while true do
        local info = debug.getinfo(level, 'Sl')
        if not info then break end
        local src = info.source
        if src:sub(1, 1) == '@' and info.currentline > 0 and
            (package_dir == '' or not src:find(package_dir, 2, true)) then
            msg = info.short_src .. ':' .. info.currentline .. ': ' .. msg
            break
        end
        level = level + 1
    end
    error(msg, 0)
end
xt._raise = raise

-- opts (a table or nil) holds only keys of `known` (a set); else an error naming op, the
-- unknown key and the known ones. Returns opts, or {} for nil.
function xt._check_options(opts, known, op)
    if opts == nil then return {} end
    if type(opts) ~= 'table' then raise(op .. ': expected an options table, got ' .. type(opts)) end
    for key in pairs(opts) do
        if known[key] == nil then
            local names = {}
            for name in pairs(known) do names[#names + 1] = name end
            table.sort(names)
            raise(string.format("%s: unknown option '%s' (known: %s)", op, tostring(key),
                                table.concat(names, ', ')))
        end
    end
    return opts
end

local function fail()
    raise(ffi.string(C.xt_last_error()))
end

local function check(status)
    if status ~= 0 then fail() end
end

local release = C.xt_tensor_release

local function wrap(ptr)
    if ptr == nil then fail() end
    memory.after_alloc()
    return setmetatable({_c = ffi.gc(ptr, release)}, Tensor)
end
xt._wrap, xt._check = wrap, check

local function is_tensor(x) return getmetatable(x) == Tensor end
xt.is_tensor = is_tensor

---------------------------------------------------------------------------------------------
-- dtypes, dims, shapes

local DTYPE_ID = {float32 = 0, float = 0, int64 = 1, long = 1, uint8 = 2, byte = 2}
local DTYPE_NAME = {[0] = 'float32', [1] = 'int64', [2] = 'uint8'}
local PTR_TYPE = {[0] = ffi.typeof('float*'), [1] = ffi.typeof('int64_t*'),
                  [2] = ffi.typeof('uint8_t*')}
xt.float32, xt.int64, xt.uint8 = 'float32', 'int64', 'uint8'

local function dtype_id(name, op)
    if name == nil then return 0 end
    local id = DTYPE_ID[name]
    if not id then
        raise(string.format("%s: unknown dtype '%s' (expected float32, int64 or uint8)",
                            op or 'dtype', tostring(name)))
    end
    return id
end
xt._dtype_id = dtype_id

-- 1-based (negative from the end) to C's 0-based (negative kept).
local function cdim(d, op)
    if type(d) ~= 'number' or d ~= floor(d) or d == 0 then
        raise(string.format('%s: invalid dim %s (dims count from 1; negative dims count from ' ..
                            'the end)', op or 'dim', tostring(d)))
    end
    return d > 0 and d - 1 or d
end
xt._cdim = cdim

local Size = {}
Size.__index = Size
Size.__tostring = function(s) return '[' .. table.concat(s, ',') .. ']' end
Size.__eq = function(a, b)
    if #a ~= #b then return false end
    for i = 1, #a do if a[i] ~= b[i] then return false end end
    return true
end
function Size.numel(s)
    local n = 1
    for i = 1, #s do n = n * s[i] end
    return n
end
function Size.totable(s) return {unpack(s)} end
xt.Size = function(t) return setmetatable({unpack(t)}, Size) end

-- Shape arguments: (2, 3), ({2, 3}) or (t.shape), optionally followed by an options
-- table ({dtype=...}) or a dtype string. Returns ndim, int64_t[8], options.
local function parse_shape(op, ...)
    local n = select('#', ...)
    local opts = nil
    local last = n > 0 and select(n, ...) or nil
    if n > 0 and (type(last) == 'string' or (type(last) == 'table' and last[1] == nil and
        getmetatable(last) ~= Size)) then
        opts = type(last) == 'string' and {dtype = last} or last
        n = n - 1
    end
    local dims = {...}
    if n == 1 and type(dims[1]) == 'table' then dims = dims[1]; n = #dims end
    if n > 8 then raise(op .. ': at most 8 dims are supported, got ' .. n) end
    local shape = ffi.new('int64_t[8]')
    for i = 1, n do
        local s = dims[i]
        if type(s) ~= 'number' or s ~= floor(s) then
            raise(string.format('%s: size %d must be an integer, got %s', op, i, tostring(s)))
        end
        shape[i - 1] = s
    end
    return n, shape, opts or {}
end
xt._parse_shape = parse_shape

local function dims_array(op, list)
    local arr = ffi.new('int32_t[8]')
    if #list > 8 then raise(op .. ': too many dims') end
    for i = 1, #list do arr[i - 1] = cdim(list[i], op) end
    return #list, arr
end

---------------------------------------------------------------------------------------------
-- properties

local properties = {}
function properties.shape(t)
    local c = t._c
    local s = {}
    for i = 0, c.ndim - 1 do s[i + 1] = tonumber(c.shape[i]) end
    return setmetatable(s, Size)
end
function properties.dtype(t) return DTYPE_NAME[t._c.dtype] end
function properties.ndim(t) return t._c.ndim end
function properties.grad(t)
    local g = C.xt_get_grad(t._c)
    if g == nil then return nil end
    return wrap(g)
end
function properties.grad_fn(t)
    local name = C.xt_grad_fn_name(t._c)
    return name ~= nil and ffi.string(name) or nil
end
function properties.is_leaf(t) return C.xt_is_leaf(t._c) ~= 0 end
function properties.needs_grad(t) return t._c.requires_grad ~= 0 end

Tensor.__index = function(t, k)
    local m = methods[k]
    if m then return m end
    if type(k) == 'number' then return methods.__getitem(t, k) end
    local p = properties[k]
    if p then return p(t) end
    return nil
end

Tensor.__newindex = function(t, k, v)
    if type(k) == 'number' then return methods.__setitem(t, k, v) end
    if k == 'grad' then
        if v ~= nil and not is_tensor(v) then raise('grad: expected a tensor or nil') end
        return check(C.xt_set_grad(t._c, v and v._c or nil))
    end
    raise(string.format("tensor: cannot set field '%s'", tostring(k)))
end

---------------------------------------------------------------------------------------------
-- creation

local function make(cfun, op)
    return function(...)
        local n, shape, opts = parse_shape(op, ...)
        local t = wrap(cfun(n, shape, dtype_id(opts.dtype, op)))
        if opts.requires_grad then t:requires_grad(true) end
        return t
    end
end
xt.empty = make(C.xt_empty, 'empty')
xt.zeros = make(C.xt_zeros, 'zeros')
function xt.ones(...)
    local n, shape, opts = parse_shape('ones', ...)
    local t = wrap(C.xt_full(n, shape, dtype_id(opts.dtype, 'ones'), 1))
    if opts.requires_grad then t:requires_grad(true) end
    return t
end
-- xt.full(shape, value [, opts]): xt.full({2, 3}, 7) or xt.full(5, 0.5)
function xt.full(shape, value, opts)
    if type(shape) == 'number' then shape = {shape} end
    if type(value) ~= 'number' then raise('full: the fill value must be a number') end
    opts = type(opts) == 'string' and {dtype = opts} or opts or {}
    local n, cshape = parse_shape('full', shape)
    return wrap(C.xt_full(n, cshape, dtype_id(opts.dtype, 'full'), value))
end

local default_rng = C.xt_default_rng()
local function rng_of(opts) return opts.generator or default_rng end

function xt.rand(...)
    local n, shape, opts = parse_shape('rand', ...)
    return wrap(C.xt_rand(rng_of(opts), n, shape))
end
function xt.randn(...)
    local n, shape, opts = parse_shape('randn', ...)
    return wrap(C.xt_randn(rng_of(opts), n, shape))
end
-- xt.randint(low, high, shape...) draws from [low, high); xt.randint(high, shape...) from [0, high)
function xt.randint(a, b, ...)
    local low, high
    if type(b) == 'number' then low, high = a, b
    else low, high = 0, a; return xt.randint(low, high, b, ...) end
    local n, shape, opts = parse_shape('randint', ...)
    return wrap(C.xt_randint(rng_of(opts), low, high, n, shape))
end
-- A random permutation of 1..n (1-based, like every index in xt).
function xt.randperm(n, opts)
    return wrap(C.xt_randperm(rng_of(opts or {}), n, 1))
end
-- xt.arange(end), xt.arange(start, end [, step]): end excluded, as in PyTorch.
function xt.arange(a, b, c, opts)
    if type(b) ~= 'number' then a, b, opts = 0, a, b
    elseif type(c) ~= 'number' then c, opts = 1, c end
    opts = type(opts) == 'string' and {dtype = opts} or opts or {}
    local integral = a == floor(a) and b == floor(b) and (c or 1) == floor(c or 1)
    local dt = opts.dtype or (integral and 'int64' or 'float32')
    return wrap(C.xt_arange(a, b, c or 1, dtype_id(dt, 'arange')))
end
function xt.linspace(a, b, steps, opts)
    opts = type(opts) == 'string' and {dtype = opts} or opts or {}
    return wrap(C.xt_linspace(a, b, steps, dtype_id(opts.dtype, 'linspace')))
end
function xt.eye(n, m, opts)
    if type(m) ~= 'number' then opts, m = m, n end
    opts = type(opts) == 'string' and {dtype = opts} or opts or {}
    return wrap(C.xt_eye(n, m, dtype_id(opts.dtype, 'eye')))
end

-- Nested Lua tables (or a number) to a tensor; float32 unless a dtype is given.
local function infer_shape(data, shape, depth)
    if type(data) == 'table' and not is_tensor(data) then
        shape[depth] = #data
        if #data > 0 then infer_shape(data[1], shape, depth + 1) end
    end
    return shape
end
function xt.tensor(data, opts)
    opts = type(opts) == 'string' and {dtype = opts} or opts or {}
    if is_tensor(data) then return data:clone() end
    local dt = dtype_id(opts.dtype, 'tensor')
    if type(data) == 'number' then
        local t = wrap(C.xt_full(0, nil, dt, data))
        if opts.requires_grad then t:requires_grad(true) end
        return t
    end
    if type(data) ~= 'table' then raise('tensor: expected a number or a nested table, got ' .. type(data)) end
    local shape = infer_shape(data, {}, 1)
    local numel = 1
    for i = 1, #shape do numel = numel * shape[i] end
    local buf = ffi.new(({[0] = 'float[?]', 'int64_t[?]', 'uint8_t[?]'})[dt], math.max(numel, 1))
    local pos = 0
    local function fill(x, depth)
        if depth > #shape then
            if type(x) ~= 'number' then
                raise('tensor: expected a number at depth ' .. depth .. ', got ' .. type(x))
            end
            buf[pos] = x
            pos = pos + 1
            return
        end
        if type(x) ~= 'table' or #x ~= shape[depth] then
            raise(string.format('tensor: ragged nested table: expected %d elements at depth %d',
                                shape[depth], depth))
        end
        for i = 1, #x do fill(x[i], depth + 1) end
    end
    fill(data, 1)
    local nd, cshape = parse_shape('tensor', shape)
    local t = wrap(C.xt_from_data(nd, cshape, dt, buf))
    if opts.requires_grad then t:requires_grad(true) end
    return t
end

local function like(maker)
    return function(t, opts)
        opts = type(opts) == 'string' and {dtype = opts} or opts or {}
        return maker(t.shape, {dtype = opts.dtype or t.dtype, generator = opts.generator})
    end
end
xt.zeros_like, xt.ones_like, xt.empty_like = like(xt.zeros), like(xt.ones), like(xt.empty)
xt.rand_like, xt.randn_like = like(xt.rand), like(xt.randn)
function xt.full_like(t, value, opts)
    opts = type(opts) == 'string' and {dtype = opts} or opts or {}
    return xt.full(t.shape, value, {dtype = opts.dtype or t.dtype})
end

function xt.manual_seed(seed) C.xt_rng_seed(default_rng, seed) end
function xt.get_rng_state() return {seed = default_rng.seed, offset = default_rng.offset} end
function xt.set_rng_state(state)
    default_rng.seed = state.seed
    default_rng.offset = state.offset
end
-- A generator of one's own: xt.rand(3, {generator = g})
function xt.Generator(seed)
    local g = ffi.new('xt_rng')
    C.xt_rng_seed(g, seed or 0)
    return g
end

---------------------------------------------------------------------------------------------
-- basic queries and element access

function methods.dim(t) return t._c.ndim end
function methods.numel(t) return tonumber(C.xt_numel(t._c)) end
methods.nelement = methods.numel
function methods.size(t, d)
    if d == nil then return properties.shape(t) end
    local c = t._c
    local i = cdim(d, 'size')
    if i < 0 then i = i + c.ndim end
    if i < 0 or i >= c.ndim then
        raise(string.format('size: dim %d out of range for a %d-d tensor', d, c.ndim))
    end
    return tonumber(c.shape[i])
end
function methods.stride(t, d)
    local c = t._c
    if d == nil then
        local s = {}
        for i = 0, c.ndim - 1 do s[i + 1] = tonumber(c.strides[i]) end
        return s
    end
    local i = cdim(d, 'stride')
    if i < 0 then i = i + c.ndim end
    return tonumber(c.strides[i])
end
function methods.is_contiguous(t) return C.xt_is_contiguous(t._c) ~= 0 end
function methods.type(t) return DTYPE_NAME[t._c.dtype] end
local function element_pointer(t)
    local c = t._c
    return ffi.cast(PTR_TYPE[c.dtype], c.data)
end

function methods.item(t)
    local c = t._c
    local n = tonumber(C.xt_numel(c))
    if n ~= 1 then
        raise(string.format('item: only a one-element tensor converts to a number, this one ' ..
                            'has %d elements', n))
    end
    return tonumber(element_pointer(t)[0])
end

function methods.totable(t)
    local c = t._c
    local p = element_pointer(t)
    if c.ndim == 0 then return tonumber(p[0]) end
    local function build(dim, offset)
        local out = {}
        local size, stride = tonumber(c.shape[dim]), tonumber(c.strides[dim])
        if dim == c.ndim - 1 then
            for i = 0, size - 1 do out[i + 1] = tonumber(p[offset + i * stride]) end
        else
            for i = 0, size - 1 do out[i + 1] = build(dim + 1, offset + i * stride) end
        end
        return out
    end
    return build(0, 0)
end
methods.tolist = methods.totable

---------------------------------------------------------------------------------------------
-- views and movement

local function shape_method(cfun, op)
    return function(t, ...)
        local n, shape = parse_shape(op, ...)
        return wrap(cfun(t._c, n, shape))
    end
end
methods.view = shape_method(C.xt_view, 'view')
methods.reshape = shape_method(C.xt_reshape, 'reshape')
methods.expand = shape_method(C.xt_expand, 'expand')
function methods.view_as(t, o) return t:view(o.shape) end
function methods.reshape_as(t, o) return t:reshape(o.shape) end
function methods.expand_as(t, o) return t:expand(o.shape) end

function methods.permute(t, ...)
    local dims = {...}
    if type(dims[1]) == 'table' then dims = dims[1] end
    local n, arr = dims_array('permute', dims)
    return wrap(C.xt_permute(t._c, n, arr))
end
function methods.transpose(t, d0, d1)
    return wrap(C.xt_transpose(t._c, cdim(d0, 'transpose'), cdim(d1, 'transpose')))
end
function methods.t(t)
    if t._c.ndim ~= 2 then raise('t: expects a 2-d tensor, got ' .. t._c.ndim .. '-d') end
    return wrap(C.xt_transpose(t._c, 0, 1))
end
-- narrow(dim, start, length): start counts from 1
function methods.narrow(t, dim, start, length)
    local d = cdim(dim, 'narrow')
    if start < 0 then start = start + t:size(dim) + 1 end
    return wrap(C.xt_narrow(t._c, d, start - 1, length))
end
-- select(dim, index): index counts from 1; negative from the end
function methods.select(t, dim, index)
    if type(index) ~= 'number' or index ~= floor(index) or index == 0 then
        raise('select: index ' .. tostring(index) .. ' is invalid (indices count from 1)')
    end
    return wrap(C.xt_select(t._c, cdim(dim, 'select'), index > 0 and index - 1 or index))
end
function methods.squeeze(t, dim)
    if dim == nil then return wrap(C.xt_squeeze_all(t._c)) end
    return wrap(C.xt_squeeze(t._c, cdim(dim, 'squeeze')))
end
function methods.unsqueeze(t, dim) return wrap(C.xt_unsqueeze(t._c, cdim(dim, 'unsqueeze'))) end
function methods.flatten(t, start_dim, end_dim)
    return wrap(C.xt_flatten(t._c, cdim(start_dim or 1, 'flatten'), cdim(end_dim or -1, 'flatten')))
end
function methods.contiguous(t)
    if C.xt_is_contiguous(t._c) ~= 0 then return t end
    return wrap(C.xt_contiguous(t._c))
end
function methods.clone(t) return wrap(C.xt_clone(t._c)) end
function methods.detach(t) return wrap(C.xt_detach(t._c)) end
function methods.to(t, dtype)
    local id = dtype_id(dtype, 'to')
    if id == t._c.dtype then return t end
    return wrap(C.xt_to_dtype(t._c, id))
end
function methods.float(t) return t:to('float32') end
function methods.long(t) return t:to('int64') end
function methods.byte(t) return t:to('uint8') end

-- split(size, dim): pieces of `size` along dim (the last may be smaller)
function methods.split(t, size, dim)
    dim = dim or 1
    local n = t:size(dim)
    local parts = {}
    local start = 1
    while start <= n do
        local len = math.min(size, n - start + 1)
        parts[#parts + 1] = t:narrow(dim, start, len)
        start = start + len
    end
    return parts
end
-- chunk(n, dim): n pieces of (nearly) equal size
function methods.chunk(t, n, dim)
    dim = dim or 1
    return t:split(math.ceil(t:size(dim) / n), dim)
end

local function tensor_array(op, list)
    if type(list) ~= 'table' or #list == 0 then raise(op .. ': expected a non-empty list of tensors') end
    local arr = ffi.new('xt_tensor*[?]', #list)
    for i = 1, #list do
        if not is_tensor(list[i]) then raise(string.format('%s: element %d is not a tensor', op, i)) end
        arr[i - 1] = list[i]._c
    end
    return #list, arr
end
function xt.cat(list, dim)
    local n, arr = tensor_array('cat', list)
    return wrap(C.xt_cat(n, arr, cdim(dim or 1, 'cat')))
end
function xt.stack(list, dim)
    local n, arr = tensor_array('stack', list)
    return wrap(C.xt_stack(n, arr, cdim(dim or 1, 'stack')))
end

local function as_tensor(x, like_t)
    if is_tensor(x) then return x end
    if type(x) == 'number' then return wrap(C.xt_full(0, nil, like_t and like_t._c.dtype or 0, x)) end
    if type(x) == 'table' then return xt.tensor(x) end
    raise('expected a tensor or a number, got ' .. type(x))
end
xt._as_tensor = as_tensor

function methods.index_select(t, dim, index)
    return wrap(C.xt_index_select(t._c, cdim(dim, 'index_select'), as_tensor(index)._c, 1))
end
function methods.gather(t, dim, index)
    return wrap(C.xt_gather(t._c, cdim(dim, 'gather'), index._c, 1))
end
function methods.scatter_add(t, dim, index, src)
    return wrap(C.xt_scatter_add(t._c, cdim(dim, 'scatter_add'), index._c, src._c, 1))
end
function methods.masked_fill(t, mask, value)
    return wrap(C.xt_masked_fill(t._c, mask._c, value))
end
-- xt.multinomial(probs, k [, {generator=}]): k draws with replacement from each row of probs
-- [n,C] (non-negative weights, need not sum to 1) -> int64 [n,k] category ids from 1, by
-- inverting the rows' cumulative sums at uniform draws.
function xt.multinomial(probs, k, opts)
    opts = opts or {}
    if not is_tensor(probs) or probs:dim() ~= 2 then raise('multinomial: expected probs [n,C]') end
    if type(k) ~= 'number' or k < 1 then raise('multinomial: the number of samples must be >= 1') end
    local n, c = probs:size(1), probs:size(2)
    local cdf = probs:float():cumsum(2)
    local total = cdf:narrow(2, c, 1)                                   -- [n,1]
    if total:min():item() <= 0 then raise('multinomial: every row needs a positive weight') end
    local u = xt.rand(n, k, {generator = opts.generator}) * total       -- [n,k]
    local below = cdf:view(n, 1, c):le(u:view(n, k, 1)):long():sum(3)   -- [n,k] in 0..C
    return below:clamp(0, c - 1) + 1
end

function xt.where(cond, a, b)
    local ta = as_tensor(a, is_tensor(b) and b or nil)
    local tb = as_tensor(b, ta)
    return wrap(C.xt_where(cond._c, ta._c, tb._c))
end
methods.where = function(cond, a, b) return xt.where(cond, a, b) end

-- t[i]: a view of the i-th slice along the first dim, or a number for a 1-d tensor.
function methods.__getitem(t, i)
    if t._c.ndim == 1 then
        local n = tonumber(t._c.shape[0])
        local j = i < 0 and i + n or i - 1
        if i == 0 or j < 0 or j >= n or j ~= floor(j) then
            raise(string.format('index %s out of range for a tensor of size %d', tostring(i), n))
        end
        return tonumber(element_pointer(t)[j * tonumber(t._c.strides[0])])
    end
    return t:select(1, i)
end
function methods.__setitem(t, i, v)
    if t._c.ndim == 1 and type(v) == 'number' then
        C.xt_clear_error()
        local n = tonumber(t._c.shape[0])
        local j = i < 0 and i + n or i - 1
        if i == 0 or j < 0 or j >= n or j ~= floor(j) then
            raise(string.format('index %s out of range for a tensor of size %d', tostring(i), n))
        end
        if t._c.requires_grad ~= 0 and C.xt_is_grad_enabled() ~= 0 then
            raise('setitem: a tensor that requires grad cannot be modified in place')
        end
        element_pointer(t)[j * tonumber(t._c.strides[0])] = v
        return
    end
    local slice = t:select(1, i)
    if type(v) == 'number' then slice:fill_(v) else slice:copy_(v) end
end

---------------------------------------------------------------------------------------------
-- element-wise

local UNARY = {neg = 0, abs = 1, exp = 2, log = 3, sqrt = 4, rsqrt = 5, tanh = 6, sigmoid = 7,
               relu = 8, gelu = 9, silu = 10, sin = 11, cos = 12, elu = 13, log1p = 14,
               expm1 = 15, sign = 16, floor = 17, ceil = 18, round = 19, square = 20,
               reciprocal = 21}
for name, op in pairs(UNARY) do
    methods[name] = function(t) return wrap(C.xt_unary(op, t._c)) end
    xt[name] = methods[name]
end

local BINARY = {add = 0, sub = 1, mul = 2, div = 3, pow = 4, maximum = 5, minimum = 6,
                eq = 7, ne = 8, lt = 9, le = 10, gt = 11, ge = 12}
local function binary(op, a, b)
    if is_tensor(a) then
        if is_tensor(b) then return wrap(C.xt_binary(op, a._c, b._c)) end
        if type(b) == 'number' then return wrap(C.xt_binary_scalar(op, a._c, b, 0)) end
    elseif type(a) == 'number' and is_tensor(b) then
        return wrap(C.xt_binary_scalar(op, b._c, a, 1))
    end
    raise(string.format('expected tensors or numbers as operands, got %s and %s', type(a), type(b)))
end
for name, op in pairs(BINARY) do
    methods[name] = function(a, b) return binary(op, a, b) end
    xt[name] = methods[name]
    methods[name .. '_'] = function(a, b)
        if is_tensor(b) then check(C.xt_binary_(op, a._c, b._c))
        else check(C.xt_binary_scalar_(op, a._c, b)) end
        return a
    end
end
xt.binary = binary
Tensor.__add = function(a, b) return binary(0, a, b) end
Tensor.__sub = function(a, b) return binary(1, a, b) end
Tensor.__mul = function(a, b) return binary(2, a, b) end
Tensor.__div = function(a, b) return binary(3, a, b) end
Tensor.__pow = function(a, b) return binary(4, a, b) end
Tensor.__unm = function(a) return wrap(C.xt_unary(0, a._c)) end

function methods.clamp(t, low, high)
    return wrap(C.xt_clamp(t._c, low or -math.huge, high or math.huge))
end
methods.clip = methods.clamp
function methods.leaky_relu(t, slope) return wrap(C.xt_leaky_relu(t._c, slope or 0.01)) end

-- in place, returning the tensor itself
function methods.fill_(t, v) check(C.xt_fill_(t._c, v)); return t end
function methods.zero_(t) check(C.xt_fill_(t._c, 0)); return t end
function methods.copy_(t, src) check(C.xt_copy_(t._c, as_tensor(src)._c)); return t end
function methods.uniform_(t, low, high, opts)
    check(C.xt_uniform_(t._c, rng_of(opts or {}), low or 0, high or 1)); return t
end
function methods.normal_(t, mean, std, opts)
    check(C.xt_normal_(t._c, rng_of(opts or {}), mean or 0, std or 1)); return t
end
function methods.bernoulli_(t, p, opts)
    check(C.xt_bernoulli_(t._c, rng_of(opts or {}), p or 0.5)); return t
end

---------------------------------------------------------------------------------------------
-- reductions: x:sum(), x:sum(2), x:sum({1, 2}), x:sum(2, true), x:sum(2, {keepdim=true})

local REDUCE = {sum = 0, mean = 1, prod = 4, logsumexp = 5, amax = 2, amin = 3}
local function reduce_args(op, dims, keepdim)
    if type(keepdim) == 'table' then keepdim = keepdim.keepdim end
    if type(dims) == 'table' and dims[1] == nil and getmetatable(dims) == nil then
        keepdim, dims = dims.keepdim, dims.dim
    end
    if dims == nil then return 0, nil, keepdim and 1 or 0 end
    if type(dims) == 'number' then dims = {dims} end
    local n, arr = dims_array(op, dims)
    return n, arr, keepdim and 1 or 0
end
for name, op in pairs(REDUCE) do
    methods[name] = function(t, dims, keepdim)
        local n, arr, kd = reduce_args(name, dims, keepdim)
        return wrap(C.xt_reduce(op, t._c, n, arr, kd))
    end
    xt[name] = methods[name]
end

-- x:max() is the largest element; x:max(dim [, keepdim]) returns values and 1-based indices.
local function extreme(cfun, op, reduce_op)
    return function(t, dim, keepdim)
        if is_tensor(dim) then return binary(reduce_op == 2 and 5 or 6, t, dim) end
        if dim == nil then return wrap(C.xt_reduce(reduce_op, t._c, 0, nil, 0)) end
        if type(keepdim) == 'table' then keepdim = keepdim.keepdim end
        local idx = ffi.new('xt_tensor*[1]')
        local values = wrap(cfun(t._c, cdim(dim, op), keepdim and 1 or 0, 1, idx))
        return values, wrap(idx[0])
    end
end
methods.max = extreme(C.xt_max_dim, 'max', 2)
methods.min = extreme(C.xt_min_dim, 'min', 3)
xt.max, xt.min = methods.max, methods.min
function methods.argmax(t, dim, keepdim)
    if dim == nil then return wrap(C.xt_argmax(t:reshape(-1)._c, 0, 0, 1)) end
    return wrap(C.xt_argmax(t._c, cdim(dim, 'argmax'), keepdim and 1 or 0, 1))
end
function methods.argmin(t, dim, keepdim)
    if dim == nil then return wrap(C.xt_argmin(t:reshape(-1)._c, 0, 0, 1)) end
    return wrap(C.xt_argmin(t._c, cdim(dim, 'argmin'), keepdim and 1 or 0, 1))
end
-- var/std(dims, {correction=1, keepdim=false}); unbiased by default as in PyTorch
function methods.var(t, dims, opts)
    if type(dims) == 'table' and dims[1] == nil and getmetatable(dims) == nil then
        opts, dims = dims, dims.dim
    end
    opts = type(opts) == 'boolean' and {keepdim = opts} or opts or {}
    local n, arr, kd = reduce_args('var', dims, opts.keepdim)
    local correction = opts.correction or (opts.unbiased == false and 0 or 1)
    return wrap(C.xt_var(t._c, n, arr, correction, kd))
end
function methods.std(t, dims, opts) return t:var(dims, opts):sqrt() end
function methods.cumsum(t, dim) return wrap(C.xt_cumsum(t._c, cdim(dim, 'cumsum'))) end
function methods.softmax(t, dim) return wrap(C.xt_softmax(t._c, cdim(dim or -1, 'softmax'))) end
function methods.log_softmax(t, dim)
    return wrap(C.xt_log_softmax(t._c, cdim(dim or -1, 'log_softmax')))
end
function methods.sum_to(t, ...)
    local n, shape = parse_shape('sum_to', ...)
    return wrap(C.xt_sum_to(t._c, n, shape))
end
for _, name in ipairs{'var', 'std', 'cumsum', 'softmax', 'log_softmax', 'argmax', 'argmin'} do
    xt[name] = methods[name]
end

---------------------------------------------------------------------------------------------
-- linear algebra

function methods.matmul(a, b) return wrap(C.xt_matmul(a._c, b._c)) end
function methods.bmm(a, b) return wrap(C.xt_bmm(a._c, b._c)) end
function methods.mm(a, b)
    if a._c.ndim ~= 2 or b._c.ndim ~= 2 then raise('mm: expects 2-d tensors') end
    return wrap(C.xt_matmul(a._c, b._c))
end
xt.matmul, xt.bmm, xt.mm = methods.matmul, methods.bmm, methods.mm

---------------------------------------------------------------------------------------------
-- autograd

-- t:requires_grad([flag]) sets the flag (default true) and returns t.
function methods.requires_grad(t, flag)
    check(C.xt_set_requires_grad(t._c, flag == false and 0 or 1))
    return t
end
methods.requires_grad_ = methods.requires_grad
-- t:backward([grad] [, {retain_graph=true}]). The engine runs in C; when it reaches a
-- function written in Lua (xt.autograd.Function) it pauses, we run that function's
-- backward here and hand the gradients back.
function methods.backward(t, grad, opts)
    if type(grad) == 'table' and not is_tensor(grad) then grad, opts = nil, grad end
    if grad ~= nil and not is_tensor(grad) then grad = as_tensor(grad) end
    opts = opts or {}
    local run = C.xt_backward_begin(t._c, grad and grad._c or nil, opts.retain_graph and 1 or 0)
    if run == nil then fail() end
    local ok, err = pcall(function()
        while true do
            local id = tonumber(C.xt_backward_step(run))
            if id == 0 then return end
            if id < 0 then fail() end
            require('xt.autograd')._run_lua_node(id, run)
        end
    end)
    C.xt_backward_end(run)
    if not ok then error(err, 0) end
end

---------------------------------------------------------------------------------------------

Tensor.__tostring = function(t) return require('xt.format').tensor(t) end
Tensor.__name = 'xt.Tensor'

xt.Tensor = Tensor
return xt
