-- xt.nn.aft: the Attention Free Transformer family (Zhai et al. 2021; maths and choices in
-- shared/research/aft.md).
--
--   F.aft_full(q, k, v, w, {causal=})            q, k, v [B,T,D], w [T,T]       -> [B,T,D]
--   F.aft_simple(q, k, v, {causal=})             no position bias
--   F.aft_local(q, k, v, w, {window=, causal=})  w used where |t - t'| < window (t - t' <
--                                                window when causal); 0 outside, not -inf
--   F.aft_conv(q, k, v, w)                       q, v [B,C,H,W], k [B,heads,H,W], w [heads,kh,kw]
-- each y = sigmoid(q) * (sum_t' exp(k_t' + w_tt') v_t') / (sum_t' exp(k_t' + w_tt')), per
-- channel: fused C kernels (core/ops/aft_*.c), stable for any range of k and w, memory
-- linear in T besides w.
--
--   nn.AFTFull{dim=, seq_len=, causal=false, hidden_dim=dim, rank=64}
--   nn.AFTLocal{dim=, seq_len=, window=, causal=false, hidden_dim=dim, rank=64}
--   nn.AFTSimple{dim=, causal=false, hidden_dim=dim}
--       x [B,T,dim] (or [T,dim]) -> [B,T,dim]: q, k, v = Linear(dim -> hidden_dim) of x, the
--       AFT op, then Linear(hidden_dim -> dim). The position bias of AFTFull/AFTLocal is
--       factorised, w = pos_u pos_v^T with pos_u, pos_v [seq_len, rank] (paper eq. 7);
--       rank = 0 gives a full pos_w [seq_len, seq_len]. Both start as N(0, 1e-2) entries
--       (variance 1e-2, the paper's notation), so w is near 0 and the layer starts near
--       AFT-simple. A sequence shorter than seq_len uses the leading block of w; a longer
--       one is an error.
--   nn.AFTConv{dim=, heads=, kernel=}
--       x [B,dim,H,W] -> [B,dim,H,W]: 1x1 convolutions for q, v (dim channels), k (heads
--       channels) and the output, and a per-head kernel reparameterised as in the paper's
--       eq. 8: w = gamma (pos_weight - mean) / sqrt(var + 1e-5) + beta per head (population
--       variance over the kernel), gamma and beta [heads] starting at 0 (so the layer starts
--       as per-head AFT-simple) and pos_weight [heads,kh,kw] ~ U[0,1) (it must not be
--       constant). Any image size works.
--
-- Incremental decoding (causal AFTFull, AFTLocal, AFTSimple): y = m:step(x, cache) with x
-- [B,t,dim] (or [B,dim]) the next t positions and cache a table, {} at the start. The
-- outputs equal the full causal forward's. Without autograd. The cache holds:
--   AFTSimple  the running max, weighted sum and normaliser per channel: O(dim) state,
--              O(dim) work per position;
--   AFTFull    the keys and values so far: O(T dim) work per position, the prefix is
--              never recomputed;
--   AFTLocal   the last `window` keys and values plus the running sums of the keys that
--              left the window: O(window dim) state and work per position.
--
-- This file returns {functional = {...}, modules = {...}}, merged into xt.nn.functional
-- and xt.nn; it requires neither of them at load time (they require it).
local C = require 'xt.lib'
local xt = require 'xt.tensor'
local class = require('xt.class').class
local Module = require 'xt.nn.module'
local init = require 'xt.nn.initializers'

local raise, wrap = xt._raise, xt._wrap
local functional, modules = {}, {}

local options = xt._check_options

local function tensors(op, names, ...)
    local args = {...}
    for i, name in ipairs(names) do
        if not xt.is_tensor(args[i]) then
            raise(string.format('%s: %s must be a tensor, got %s', op, name, type(args[i])))
        end
    end
end

local function nonneg_int(v) return type(v) == 'number' and v >= 0 and v == math.floor(v) end
local function positive_int(v) return nonneg_int(v) and v >= 1 end

---------------------------------------------------------------------------------------------
-- functional

function functional.aft_full(q, k, v, w, opts)
    tensors('aft_full', {'q', 'k', 'v', 'w'}, q, k, v, w)
    opts = options(opts, {causal = true}, 'aft_full')
    return wrap(C.xt_aft_full(q._c, k._c, v._c, w._c, opts.causal and 1 or 0))
end

function functional.aft_simple(q, k, v, opts)
    tensors('aft_simple', {'q', 'k', 'v'}, q, k, v)
    opts = options(opts, {causal = true}, 'aft_simple')
    return wrap(C.xt_aft_simple(q._c, k._c, v._c, opts.causal and 1 or 0))
end

function functional.aft_local(q, k, v, w, opts)
    tensors('aft_local', {'q', 'k', 'v', 'w'}, q, k, v, w)
    opts = options(opts, {causal = true, window = true}, 'aft_local')
    if not nonneg_int(opts.window) then
        raise('aft_local: opts.window must be an integer >= 0, got ' .. tostring(opts.window))
    end
    return wrap(C.xt_aft_local(q._c, k._c, v._c, w._c, opts.window, opts.causal and 1 or 0))
end

function functional.aft_conv(q, k, v, w)
    tensors('aft_conv', {'q', 'k', 'v', 'w'}, q, k, v, w)
    return wrap(C.xt_aft_conv(q._c, k._c, v._c, w._c))
end

---------------------------------------------------------------------------------------------
-- shared by the sequence modules

local INIT_STD = 0.1   -- N(0, 1e-2): variance 1e-2

-- q, k, v and output projections
local function init_projections(self, dim, hidden)
    local Linear = require('xt.nn.layers').Linear
    self.dim, self.hidden_dim = dim, hidden
    self.q_proj = Linear(dim, hidden)
    self.k_proj = Linear(dim, hidden)
    self.v_proj = Linear(dim, hidden)
    self.out_proj = Linear(hidden, dim)
end

local function init_position_bias(self, seq_len, rank)
    self.seq_len, self.rank = seq_len, rank
    if rank > 0 then
        self.pos_u = Module.Parameter(init.normal_(xt.empty(seq_len, rank), 0, INIT_STD))
        self.pos_v = Module.Parameter(init.normal_(xt.empty(seq_len, rank), 0, INIT_STD))
    else
        self.pos_w = Module.Parameter(init.normal_(xt.empty(seq_len, seq_len), 0, INIT_STD))
    end
end

local function check_length(self, T, op)
    if T > self.seq_len then
        raise(string.format('%s: the sequence has %d positions, more than seq_len = %d', op, T,
                            self.seq_len))
    end
end

-- w [T,T]: the leading block of the position bias
local function position_bias(self, T, op)
    check_length(self, T, op)
    if self.pos_u then
        return self.pos_u:narrow(1, 1, T):matmul(self.pos_v:narrow(1, 1, T):t())
    end
    return self.pos_w:narrow(1, 1, T):narrow(2, 1, T)
end

-- w[p, first .. first + n - 1] as [n] (positions count from 1)
local function bias_row(self, p, first, n)
    if self.pos_u then return self.pos_v:narrow(1, first, n):matmul(self.pos_u[p]) end
    return self.pos_w[p]:narrow(1, first, n)
end

local function parse_opts(opts, known, op, needs)
    if type(opts) ~= 'table' then
        raise(op .. ': expected an options table {' .. needs .. '}')
    end
    options(opts, known, op)
    if not positive_int(opts.dim) then
        raise(op .. ': dim must be a positive integer, got ' .. tostring(opts.dim))
    end
    local hidden = opts.hidden_dim or opts.dim
    if not positive_int(hidden) then
        raise(op .. ': hidden_dim must be a positive integer, got ' .. tostring(opts.hidden_dim))
    end
    return hidden
end

local function parse_position_opts(opts, op)
    if not positive_int(opts.seq_len) then
        raise(op .. ': seq_len (the longest sequence) must be a positive integer, got ' ..
              tostring(opts.seq_len))
    end
    local rank = opts.rank == nil and 64 or opts.rank
    if not nonneg_int(rank) then
        raise(op .. ': rank must be an integer >= 0 (0: an unfactorised w), got ' .. tostring(rank))
    end
    return rank
end

-- x [B,T,dim] (or [T,dim]) as [B,T,dim], and whether it was unbatched
local function batched(self, x, op)
    if not xt.is_tensor(x) or (x:dim() ~= 2 and x:dim() ~= 3) or x:size(-1) ~= self.dim then
        raise(string.format('%s: expected x of shape [B,T,%d] (or [T,%d]), got %s', op, self.dim,
                            self.dim, xt.is_tensor(x) and tostring(x.shape) or type(x)))
    end
    if x:dim() == 2 then return x:unsqueeze(1), true end
    return x, false
end

-- the sequence modules' forward around the op: fn(q, k, v, T) -> [B,T,hidden]
local function sequence_forward(self, x, op, fn)
    local xb, unbatched = batched(self, x, op)
    local q, k, v = self.q_proj(xb), self.k_proj(xb), self.v_proj(xb)
    local y = self.out_proj(fn(q, k, v, xb:size(2)))
    return unbatched and y:squeeze(1) or y
end

-- step(x, cache): checks, projections without autograd, then advance(q_t, k_t, v_t, p) per
-- new position p (counting from 1) -> [B,hidden]; the outputs of the t positions projected
local function sequence_step(self, x, cache, op, advance)
    if not self.causal then raise(op .. ': incremental decoding needs a causal module (causal=true)') end
    if type(cache) ~= 'table' then raise(op .. ': expected a cache table ({} at the start)') end
    if not xt.is_tensor(x) or (x:dim() ~= 2 and x:dim() ~= 3) or x:size(-1) ~= self.dim then
        raise(string.format('%s: expected x of shape [B,t,%d] or [B,%d], got %s', op, self.dim,
                            self.dim, xt.is_tensor(x) and tostring(x.shape) or type(x)))
    end
    local one = x:dim() == 2
    if one then x = x:unsqueeze(2) end
    if cache.batch and cache.batch ~= x:size(1) then
        raise(string.format('%s: the cache holds a batch of %d, x has %d', op, cache.batch, x:size(1)))
    end
    local y = xt.no_grad(function()
        local q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        local out = {}
        for i = 1, x:size(2) do
            local p = (cache.len or 0) + 1
            if self.seq_len then check_length(self, p, op) end
            out[i] = advance(q:select(2, i), k:select(2, i), v:select(2, i), p):unsqueeze(2)
            cache.len, cache.batch = p, x:size(1)
        end
        return self.out_proj(#out == 1 and out[1] or xt.cat(out, 2))
    end)
    return one and y:squeeze(2) or y
end

local function sequence_repr(self)
    local s = string.format('dim=%d, hidden_dim=%d', self.dim, self.hidden_dim)
    if self.seq_len then s = s .. ', seq_len=' .. self.seq_len .. ', rank=' .. self.rank end
    if self.window then s = s .. ', window=' .. self.window end
    if self.causal then s = s .. ', causal' end
    return s
end

---------------------------------------------------------------------------------------------
-- nn.AFTFull

local AFTFull = class('AFTFull', Module)
modules.AFTFull = AFTFull

function AFTFull:__init(opts)
    Module.__init(self)
    local op = 'AFTFull'
    local hidden = parse_opts(opts, {dim = true, seq_len = true, causal = true, hidden_dim = true,
                                     rank = true}, op, 'dim=, seq_len=, causal=, hidden_dim=, rank=')
    local rank = parse_position_opts(opts, op)
    self.causal = opts.causal == true
    init_projections(self, opts.dim, hidden)
    init_position_bias(self, opts.seq_len, rank)
end

function AFTFull:forward(x)
    local op = 'AFTFull'
    return sequence_forward(self, x, op, function(q, k, v, T)
        return functional.aft_full(q, k, v, position_bias(self, T, op), {causal = self.causal})
    end)
end

-- cache.k, cache.v [B, capacity, hidden]: every key and value so far (grown by doubling)
local function append_kv(cache, k, v)
    local B, H, len = k:size(1), k:size(2), cache.len or 0
    local capacity = cache.k and cache.k:size(2) or 0
    if len + 1 > capacity then
        local kb, vb = xt.empty(B, math.max(2 * capacity, 16), H), xt.empty(B, math.max(2 * capacity, 16), H)
        if len > 0 then
            kb:narrow(2, 1, len):copy_(cache.k:narrow(2, 1, len))
            vb:narrow(2, 1, len):copy_(cache.v:narrow(2, 1, len))
        end
        cache.k, cache.v = kb, vb
    end
    cache.k:select(2, len + 1):copy_(k)
    cache.v:select(2, len + 1):copy_(v)
end

function AFTFull:step(x, cache)
    return sequence_step(self, x, cache, 'AFTFull:step', function(q, k, v, p)
        append_kv(cache, k, v)
        local logits = cache.k:narrow(2, 1, p) + bias_row(self, p, 1, p):view(1, p, 1)
        local a = logits:softmax(2)
        return q:sigmoid() * (a * cache.v:narrow(2, 1, p)):sum(2)
    end)
end

AFTFull.extra_repr = sequence_repr

---------------------------------------------------------------------------------------------
-- nn.AFTLocal

local AFTLocal = class('AFTLocal', Module)
modules.AFTLocal = AFTLocal

function AFTLocal:__init(opts)
    Module.__init(self)
    local op = 'AFTLocal'
    local hidden = parse_opts(opts, {dim = true, seq_len = true, window = true, causal = true,
                                     hidden_dim = true, rank = true}, op,
                              'dim=, seq_len=, window=, causal=, hidden_dim=, rank=')
    local rank = parse_position_opts(opts, op)
    if not nonneg_int(opts.window) then
        raise(op .. ': window must be an integer >= 0, got ' .. tostring(opts.window))
    end
    self.causal, self.window = opts.causal == true, opts.window
    init_projections(self, opts.dim, hidden)
    init_position_bias(self, opts.seq_len, rank)
end

function AFTLocal:forward(x)
    local op = 'AFTLocal'
    return sequence_forward(self, x, op, function(q, k, v, T)
        return functional.aft_local(q, k, v, position_bias(self, T, op),
                                    {window = self.window, causal = self.causal})
    end)
end

-- Folds key k and value v [B,H] into the running outside-window sums (max m, weighted sum
-- n, normaliser s, all relative to m).
local function fold_outside(cache, k, v)
    if not cache.om then
        cache.om, cache.on, cache.os = k:clone(), v:clone(), xt.full_like(k, 1)
        return
    end
    local m = cache.om:max(k)
    local decay, e = (cache.om - m):exp(), (k - m):exp()
    cache.om, cache.on, cache.os = m, cache.on * decay + e * v, cache.os * decay + e
end

function AFTLocal:step(x, cache)
    local s = self.window
    return sequence_step(self, x, cache, 'AFTLocal:step', function(q, k, v, p)
        -- cache.kw, cache.vw [B,n,H]: the window's keys and values, positions p-n+1 .. p
        if s == 0 then
            fold_outside(cache, k, v)
        else
            local kw, vw = k:unsqueeze(2), v:unsqueeze(2)
            if cache.kw then
                local n = cache.kw:size(2)
                if n == s then
                    fold_outside(cache, cache.kw:select(2, 1), cache.vw:select(2, 1))
                    cache.kw, cache.vw = cache.kw:narrow(2, 2, n - 1), cache.vw:narrow(2, 2, n - 1)
                end
                kw, vw = xt.cat({cache.kw, kw}, 2), xt.cat({cache.vw, vw}, 2)
            end
            cache.kw, cache.vw = kw, vw
        end
        local num, den, m
        if cache.kw then
            local n = cache.kw:size(2)
            local logits = cache.kw + bias_row(self, p, p - n + 1, n):view(1, n, 1)
            m = logits:amax(2)
            if cache.om then m = m:max(cache.om) end
            local e = (logits - m:unsqueeze(2)):exp()
            num, den = (e * cache.vw):sum(2), e:sum(2)
        end
        if cache.om then
            local decay = m and (cache.om - m):exp() or 1
            num = num and num + cache.on * decay or cache.on
            den = den and den + cache.os * decay or cache.os
        end
        return q:sigmoid() * num / den
    end)
end

AFTLocal.extra_repr = sequence_repr

---------------------------------------------------------------------------------------------
-- nn.AFTSimple

local AFTSimple = class('AFTSimple', Module)
modules.AFTSimple = AFTSimple

function AFTSimple:__init(opts)
    Module.__init(self)
    local hidden = parse_opts(opts, {dim = true, causal = true, hidden_dim = true}, 'AFTSimple',
                              'dim=, causal=, hidden_dim=')
    self.causal = opts.causal == true
    init_projections(self, opts.dim, hidden)
end

function AFTSimple:forward(x)
    return sequence_forward(self, x, 'AFTSimple', function(q, k, v)
        return functional.aft_simple(q, k, v, {causal = self.causal})
    end)
end

-- cache.om, cache.on, cache.os [B,hidden]: the online softmax state of every key so far
function AFTSimple:step(x, cache)
    return sequence_step(self, x, cache, 'AFTSimple:step', function(q, k, v)
        fold_outside(cache, k, v)
        return q:sigmoid() * cache.on / cache.os
    end)
end

AFTSimple.extra_repr = sequence_repr

---------------------------------------------------------------------------------------------
-- nn.AFTConv

local AFTConv = class('AFTConv', Module)
modules.AFTConv = AFTConv

local REPARAM_EPS = 1e-5

function AFTConv:__init(opts)
    Module.__init(self)
    local op = 'AFTConv'
    if type(opts) ~= 'table' then raise(op .. ': expected an options table {dim=, heads=, kernel=}') end
    options(opts, {dim = true, heads = true, kernel = true}, op)
    local dim, heads, kernel = opts.dim, opts.heads, opts.kernel
    if not positive_int(dim) then raise(op .. ': dim must be a positive integer, got ' .. tostring(dim)) end
    if not positive_int(heads) then raise(op .. ': heads must be a positive integer, got ' .. tostring(heads)) end
    if dim % heads ~= 0 then raise(string.format('%s: heads (%d) must divide dim (%d)', op, heads, dim)) end
    local kh, kw = kernel, kernel
    if type(kernel) == 'table' then kh, kw = kernel[1], kernel[2] end
    if not (positive_int(kh) and positive_int(kw) and kh % 2 == 1 and kw % 2 == 1) then
        raise(op .. ': kernel must be an odd positive integer or a pair of them, got ' ..
              (type(kernel) == 'table' and '{' .. tostring(kh) .. ', ' .. tostring(kw) .. '}' or tostring(kernel)))
    end
    local Conv2d = require('xt.nn.layers').Conv2d
    self.dim, self.heads, self.kernel = dim, heads, {kh, kw}
    self.q_proj = Conv2d(dim, dim, 1)
    self.k_proj = Conv2d(dim, heads, 1)
    self.v_proj = Conv2d(dim, dim, 1)
    self.out_proj = Conv2d(dim, dim, 1)
    self.pos_weight = Module.Parameter(init.uniform_(xt.empty(heads, kh, kw), 0, 1))
    self.pos_gamma = Module.Parameter(xt.zeros(heads))
    self.pos_beta = Module.Parameter(xt.zeros(heads))
end

-- w [heads,kh,kw] = gamma (pos_weight - mean) / sqrt(var + eps) + beta, per head
function AFTConv:position_bias()
    local h = self.heads
    local wr = self.pos_weight
    local centred = wr - wr:mean({2, 3}, true)
    local var = wr:var({2, 3}, {correction = 0, keepdim = true})
    return self.pos_gamma:view(h, 1, 1) * centred / (var + REPARAM_EPS):sqrt() + self.pos_beta:view(h, 1, 1)
end

function AFTConv:forward(x)
    if not xt.is_tensor(x) or x:dim() ~= 4 or x:size(2) ~= self.dim then
        raise(string.format('AFTConv: expected x of shape [B,%d,H,W], got %s', self.dim,
                            xt.is_tensor(x) and tostring(x.shape) or type(x)))
    end
    local y = functional.aft_conv(self.q_proj(x), self.k_proj(x), self.v_proj(x), self:position_bias())
    return self.out_proj(y)
end

function AFTConv:extra_repr()
    return string.format('dim=%d, heads=%d, kernel=%dx%d', self.dim, self.heads, self.kernel[1],
                         self.kernel[2])
end

return {functional = functional, modules = modules}
