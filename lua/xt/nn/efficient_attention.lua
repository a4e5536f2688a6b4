-- xt.nn.efficient_attention: the kernel and low-rank attentions of the efficient-attention
-- library (research/efficient_attention.md § 2.5-2.8), beside softmax attention
-- (xt.nn.attention) and the AFT family.
--
--   F.linear_attention(q, k, v, {causal=, chunk=64, eps=1e-6, feature_map='elu'})
--       phi(x) = elu(x) + 1 kernel attention, the fused C op (core/ops/attn_linear.c)
--   F.favor_features(x, w, {shift='row', eps=1e-6})      FAVOR+ positive random features
--   F.orthogonal_random_features(m, d, {generator=, scaling=0})   w for the above
--   F.favor_attention(q, k, v, w, {causal=, chunk=, eps=1e-6})    Performer attention
--   F.linformer_attention(q, k, v, e, f, {scale=})        softmax over k projected keys
--   F.axial_attention(q, k, v, dim, {scale=})             softmax along one axis of a grid
--
--   nn.LinearAttention{dim=, heads=, causal=false}             (m:step for decoding)
--   nn.Performer{dim=, heads=, features=256, causal=false, redraw=} (m:step, m:redraw_features)
--   nn.Linformer{dim=, heads=, seq_len=, k=, share='kv'}
--   nn.AxialAttention{dim=, heads=, layout='BHWD', image_size=}
--
-- The sequence modules take x [B,T,dim] (or [T,dim]) like nn.MultiheadAttention and have its
-- parameters (in_proj_weight [3*dim,dim], in_proj_bias, out_proj), so they swap for it one for
-- one. This file returns {functional = {...}, modules = {...}}, merged into xt.nn.functional
-- and xt.nn; it requires neither at load time.
local C = require 'xt.lib'
local xt = require 'xt.tensor'
local class = require('xt.class').class
local Module = require 'xt.nn.module'
local init = require 'xt.nn.initializers'

local raise, wrap = xt._raise, xt._wrap
local functional, modules = {}, {}

local check_options = xt._check_options

local function positive_int(v) return type(v) == 'number' and v >= 1 and v == math.floor(v) end

local function check_tensors(op, ...)
    for i = 1, select('#', ...) do
        if not xt.is_tensor((select(i, ...))) then
            raise(string.format('%s: expected tensors q, k, v (argument %d is %s)', op, i,
                                type((select(i, ...)))))
        end
    end
end

---------------------------------------------------------------------------------------------
-- F.linear_attention(q, k, v, opts): phi(q_i) S / (phi(q_i) . z + eps)
--   q [...,T,m], k [...,S,m], v [...,S,dv] (same leading dims, e.g. [B,H]) -> [...,T,dv]
--   opts.causal       position i sees keys j <= i (needs S == T)
--   opts.chunk        rows per chunk of the causal scan (default 64)
--   opts.eps          added to the normaliser (default 1e-6)
--   opts.feature_map  'elu' (phi = elu + 1, default) or 'identity' (q and k are positive
--                     features already)
-- Time O(T m dv), no T x T buffer; the backward keeps only the output and its normaliser.
local LINEAR_OPTIONS = {causal = true, chunk = true, eps = true, feature_map = true}
local FEATURE_MAPS = {elu = 0, identity = 1}

function functional.linear_attention(q, k, v, opts)
    local op = 'linear_attention'
    check_tensors(op, q, k, v)
    opts = check_options(opts, LINEAR_OPTIONS, op)
    local fmap = FEATURE_MAPS[opts.feature_map or 'elu']
    if not fmap then
        raise(op .. ": feature_map must be 'elu' or 'identity', got " .. tostring(opts.feature_map))
    end
    local chunk = opts.chunk or 0
    if chunk ~= 0 and not positive_int(chunk) then
        raise(op .. ': chunk must be a positive integer, got ' .. tostring(opts.chunk))
    end
    local eps = opts.eps or 1e-6
    if type(eps) ~= 'number' then raise(op .. ': eps must be a number, got ' .. type(eps)) end
    return wrap(C.xt_linear_attention(q._c, k._c, v._c, opts.causal and 1 or 0, chunk, fmap, eps))
end

---------------------------------------------------------------------------------------------
-- FAVOR+ (Performer).
--
-- F.favor_features(x, w, {shift='row'|'unit'|'none', eps=1e-6}): x [...,T,d], w [m,d] ->
--   [...,T,m], m^(-1/2) (exp(w_r . x' - |x'|^2/2 - s) + eps) with x' = d^(-1/4) x. The shift s
--   is each row's max ('row': queries), one max per [T,m] slice ('unit': keys of
--   bidirectional attention) or 0 ('none': keys of causal attention, so that no later key
--   changes an earlier output). Shifts cancel in the attention.
local FAVOR_SHIFTS = {row = 0, unit = 1, none = 2}
local FAVOR_FEATURE_OPTIONS = {shift = true, eps = true}

function functional.favor_features(x, w, opts)
    local op = 'favor_features'
    if not (xt.is_tensor(x) and xt.is_tensor(w)) then raise(op .. ': expected tensors x and w') end
    opts = check_options(opts, FAVOR_FEATURE_OPTIONS, op)
    local shift = FAVOR_SHIFTS[opts.shift or 'row']
    if not shift then
        raise(op .. ": shift must be 'row', 'unit' or 'none', got " .. tostring(opts.shift))
    end
    local eps = opts.eps or 1e-6
    if type(eps) ~= 'number' then raise(op .. ': eps must be a number, got ' .. type(eps)) end
    return wrap(C.xt_favor_features(x._c, w._c, shift, eps))
end

-- The rows of a d x d standard Gaussian matrix made orthonormal (Gram-Schmidt, twice per row
-- for float32 accuracy): a Haar-random orthogonal matrix, as QR of a Gaussian gives.
local function orthogonal_block(d, generator)
    local g = xt.randn(d, d, {generator = generator})
    local q = xt.empty(d, d)
    for i = 1, d do
        local row = g:narrow(1, i, 1)               -- [1,d]
        if i > 1 then
            local done = q:narrow(1, 1, i - 1)       -- [i-1,d], orthonormal rows
            for _ = 1, 2 do row = row - row:matmul(done:t()):matmul(done) end
        end
        q:narrow(1, i, 1):copy_(row / row:square():sum():sqrt())
    end
    return q
end

-- F.orthogonal_random_features(m, d, {generator=, scaling=0}) -> w [m,d]: ceil(m/d) independent
-- orthogonal d x d blocks stacked and cut to m rows; each row then has the norm of a
-- d-dimensional Gaussian vector (scaling 0, so that rows are marginally N(0, I)) or sqrt(d)
-- (scaling 1). Drawn from the generator (default: xt's). No gradient.
function functional.orthogonal_random_features(m, d, opts)
    local op = 'orthogonal_random_features'
    opts = check_options(opts, {generator = true, scaling = true}, op)
    if not positive_int(m) or not positive_int(d) then
        raise(string.format('%s: m and d must be positive integers, got %s and %s', op,
                            tostring(m), tostring(d)))
    end
    local scaling = opts.scaling or 0
    if scaling ~= 0 and scaling ~= 1 then
        raise(op .. ': scaling must be 0 (Gaussian row norms) or 1 (sqrt(d)), got ' .. tostring(scaling))
    end
    return xt.no_grad(function()
        local blocks = {}
        for b = 1, math.ceil(m / d) do blocks[b] = orthogonal_block(d, opts.generator) end
        local w = (#blocks == 1 and blocks[1] or xt.cat(blocks, 1)):narrow(1, 1, m):contiguous()
        if scaling == 1 then return w * math.sqrt(d) end
        local norms = xt.randn(m, d, {generator = opts.generator}):square():sum(2, true):sqrt()
        return w * norms
    end)
end

-- F.favor_attention(q, k, v, w, opts): Performer attention, the softmax kernel exp(q.k/sqrt d)
-- estimated with the random features w [m,d]: linear attention of favor_features(q) and
-- favor_features(k).
--   q [...,T,d], k [...,S,d], v [...,S,dv] -> [...,T,dv]
--   opts.causal, opts.chunk   as F.linear_attention
--   opts.eps                  the features' floor (default 1e-6; it keeps the normaliser > 0)
local FAVOR_OPTIONS = {causal = true, chunk = true, eps = true}

function functional.favor_attention(q, k, v, w, opts)
    local op = 'favor_attention'
    check_tensors(op, q, k, v)
    if not xt.is_tensor(w) then raise(op .. ': expected the random features w [m,d] as a tensor') end
    opts = check_options(opts, FAVOR_OPTIONS, op)
    local eps = opts.eps or 1e-6
    local fq = functional.favor_features(q, w, {shift = 'row', eps = eps})
    local fk = functional.favor_features(k, w, {shift = opts.causal and 'none' or 'unit', eps = eps})
    return functional.linear_attention(fq, fk, v, {causal = opts.causal, chunk = opts.chunk,
                                                   eps = 0, feature_map = 'identity'})
end

---------------------------------------------------------------------------------------------
-- F.linformer_attention(q, k, v, e, f, {scale=}): softmax(scale * q (E k)^T) (F v)
--   q [B,H,T,d], k, v [B,H,T,d]; e, f [kp,n] (shared by the heads) or [H,kp,n] (per head),
--   n >= T (only the first T columns are used, as LRA slices its kernel); f = nil: f = e.
--   -> [B,H,T,d]. The k x T projections are two matmuls; the attention over kp keys is sdpa.
function functional.linformer_attention(q, k, v, e, f, opts)
    local op = 'linformer_attention'
    check_tensors(op, q, k, v)
    opts = check_options(opts, {scale = true}, op)
    f = f or e
    local T = k:size(-2)
    local function project(p, x, name)
        if not xt.is_tensor(p) or (p:dim() ~= 2 and p:dim() ~= 3) then
            raise(string.format('%s: %s must be a tensor [kp,n] or [heads,kp,n]', op, name))
        end
        if p:size(-1) < T then
            raise(string.format('%s: %s covers %d positions (shape %s), the sequence has %d', op,
                                name, p:size(-1), tostring(p.shape), T))
        end
        local used = p:narrow(-1, 1, T)
        if p:dim() == 3 then
            if x:dim() < 3 or x:size(-3) ~= p:size(1) then
                raise(string.format('%s: %s has %d heads, the keys %s', op, name, p:size(1),
                                    tostring(x.shape)))
            end
            used = used:view(1, p:size(1), p:size(2), T)
        end
        return used:matmul(x)
    end
    return require('xt.nn.attention').functional.scaled_dot_product_attention(
        q, project(e, k, 'e'), project(f, v, 'f'), {scale = opts.scale})
end

---------------------------------------------------------------------------------------------
-- F.axial_attention(q, k, v, dim, {scale=}): softmax attention along dimension dim of q, k, v
-- [..., d] (a grid of positions, e.g. [B,H,rows,cols,d]: dim = -2 attends within each row,
-- dim = -3 within each column), every other position dim acting as a batch dim. The axis is
-- moved next to the features by a view, which sdpa reads in place; the output is a view back.
function functional.axial_attention(q, k, v, dim, opts)
    local op = 'axial_attention'
    check_tensors(op, q, k, v)
    opts = check_options(opts, {scale = true}, op)
    local nd = q:dim()
    if type(dim) ~= 'number' or dim == 0 or dim ~= math.floor(dim) then
        raise(op .. ': dim must be a non-zero integer, got ' .. tostring(dim))
    end
    local axis = dim < 0 and nd + dim + 1 or dim
    if nd < 2 or axis < 1 or axis >= nd then
        raise(string.format('%s: dim %d is not a position dim of %s (the last dim holds the features)',
                            op, dim, tostring(q.shape)))
    end
    local sdpa = require('xt.nn.attention').functional.scaled_dot_product_attention
    if axis == nd - 1 then return sdpa(q, k, v, {scale = opts.scale}) end
    local function move(t) return t:transpose(axis, nd - 1) end
    return move(sdpa(move(q), move(k), move(v), {scale = opts.scale}))
end

---------------------------------------------------------------------------------------------
-- The projections the sequence modules share with nn.MultiheadAttention:
-- in_proj_weight [3*dim,dim], in_proj_bias [3*dim], out_proj (Linear dim -> dim).

local function init_projections(self, opts, op)
    local dim, heads = opts.dim, opts.heads
    if not positive_int(dim) then raise(op .. ': dim must be a positive integer, got ' .. tostring(dim)) end
    if not positive_int(heads) then raise(op .. ': heads must be a positive integer, got ' .. tostring(heads)) end
    if dim % heads ~= 0 then raise(string.format('%s: heads (%d) must divide dim (%d)', op, heads, dim)) end
    self.dim, self.heads, self.head_dim = dim, heads, dim / heads
    self.in_proj_weight = Module.Parameter(init.xavier_uniform_(xt.empty(3 * dim, dim)))
    if opts.bias ~= false then self.in_proj_bias = Module.Parameter(xt.zeros(3 * dim)) end
    local Linear = require('xt.nn.layers').Linear
    self.out_proj = Linear(dim, dim, {bias = opts.bias ~= false})
    if self.out_proj.bias then init.zeros_(self.out_proj.bias) end
end

-- x [B,T,dim] or [T,dim] -> [B,T,dim] and whether it was unbatched
local function batched(self, x, op)
    if not xt.is_tensor(x) or (x:dim() ~= 2 and x:dim() ~= 3) or x:size(-1) ~= self.dim then
        raise(string.format('%s: expected x of shape [B,T,%d] (or [T,%d]), got %s', op, self.dim,
                            self.dim, xt.is_tensor(x) and tostring(x.shape) or type(x)))
    end
    if x:dim() == 2 then return x:unsqueeze(1), true end
    return x, false
end

-- q, k, v [B,H,T,head_dim] from x [B,T,dim]: one GEMM, then views
local function project_qkv(self, x)
    local F = require 'xt.nn.functional'
    local B, T = x:size(1), x:size(2)
    local qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias):view(B, T, 3, self.heads, self.head_dim)
    local function part(i) return qkv:select(3, i):permute(1, 3, 2, 4) end
    return part(1), part(2), part(3)
end

-- [B,H,T,head_dim] -> out_proj of [B,T,dim]
local function merge_heads(self, out)
    local B, T = out:size(1), out:size(3)
    return self.out_proj(out:permute(1, 3, 2, 4):reshape(B, T, self.dim))
end

local function sequence_forward(self, x, op, attend)
    local xb, unbatched = batched(self, x, op)
    local y = merge_heads(self, attend(project_qkv(self, xb)))
    return unbatched and y:squeeze(1) or y
end

-- Incremental decoding of kernel attention with feature maps fq_of, fk_of: the state
-- cache.S [B,H,m,hd] = sum phi(k_j) v_j^T and cache.z [B,H,1,m] = sum phi(k_j) over the
-- positions seen (cache.len of them). A step of t positions is the chunk formula of
-- attn_linear.c: num = tril(FQ FK^T) V + FQ S, den = tril(FQ FK^T) 1 + FQ z + eps.
local function kernel_step(self, x, cache, op, fq_of, fk_of, eps)
    if not self.causal then raise(op .. ': incremental decoding needs a causal module (causal=true)') end
    if type(cache) ~= 'table' then raise(op .. ': expected a cache table ({} at the start)') end
    if not xt.is_tensor(x) or (x:dim() ~= 2 and x:dim() ~= 3) or x:size(-1) ~= self.dim then
        raise(string.format('%s: expected x of shape [B,t,%d] or [B,%d], got %s', op, self.dim,
                            self.dim, xt.is_tensor(x) and tostring(x.shape) or type(x)))
    end
    local one = x:dim() == 2
    if one then x = x:unsqueeze(2) end
    if cache.S and cache.S:size(1) ~= x:size(1) then
        raise(string.format('%s: the cache holds a batch of %d, x has %d', op, cache.S:size(1), x:size(1)))
    end
    local y = xt.no_grad(function()
        local q, k, v = project_qkv(self, x)
        local fq, fk = fq_of(q), fk_of(k)
        local t = x:size(2)
        local a = fq:matmul(fk:transpose(3, 4))                      -- [B,H,t,t]
        if t > 1 then
            local i = xt.arange(t):float():view(t, 1)
            local j = xt.arange(t):float():view(1, t)
            a = a:masked_fill((j - i):gt(0), 0)
        end
        local num, den = a:matmul(v), a:sum(4, true) + eps
        if cache.S then
            num = num + fq:matmul(cache.S)
            den = den + fq:matmul(cache.z:transpose(3, 4))
        end
        local S, z = fk:transpose(3, 4):matmul(v), fk:sum(3, true)
        if cache.S then S, z = cache.S + S, cache.z + z end
        cache.S, cache.z, cache.len = S, z, (cache.len or 0) + t
        return merge_heads(self, num / den)
    end)
    return one and y:squeeze(2) or y
end

---------------------------------------------------------------------------------------------
-- nn.LinearAttention{dim=, heads=, causal=false, bias=true, chunk=64, eps=1e-6}
-- Multi-head linear attention (elu + 1 features, Katharopoulos et al.), parameters as
-- nn.MultiheadAttention's.
--   m(x)              x [B,T,dim] -> [B,T,dim]
--   m:step(x, cache)  causal decoding of the next positions x [B,t,dim] ([B,dim]: one) with an
--                     O(heads * head_dim^2) state in cache ({} at the start); outputs equal
--                     the full causal forward. Runs without autograd.
local LinearAttention = class('LinearAttention', Module)
modules.LinearAttention = LinearAttention

local LINEAR_MODULE_OPTIONS = {dim = true, heads = true, causal = true, bias = true, chunk = true, eps = true}

function LinearAttention:__init(opts)
    Module.__init(self)
    local op = 'LinearAttention'
    if type(opts) ~= 'table' then raise(op .. ': expected an options table {dim=, heads=, causal=}') end
    check_options(opts, LINEAR_MODULE_OPTIONS, op)
    init_projections(self, opts, op)
    self.causal, self.chunk, self.eps = opts.causal == true, opts.chunk, opts.eps or 1e-6
end

function LinearAttention:extra_repr()
    return string.format('dim=%d, heads=%d%s', self.dim, self.heads, self.causal and ', causal' or '')
end

function LinearAttention:forward(x)
    return sequence_forward(self, x, 'LinearAttention', function(q, k, v)
        return functional.linear_attention(q, k, v, {causal = self.causal, chunk = self.chunk, eps = self.eps})
    end)
end

-- phi(x) = elu(x) + 1 = relu(x) + exp(min(x, 0)), exact for very negative x too
local function elu_plus_one(x) return x:relu() + x:clamp(nil, 0):exp() end

function LinearAttention:step(x, cache)
    return kernel_step(self, x, cache, 'LinearAttention:step', elu_plus_one, elu_plus_one, self.eps)
end

---------------------------------------------------------------------------------------------
-- nn.Performer{dim=, heads=, features=256, causal=false, redraw=nil, scaling=0, bias=true,
--              chunk=64, eps=1e-6}
-- Multi-head FAVOR+ attention (Choromanski et al.): softmax attention estimated with
-- `features` positive orthogonal random features per head dimension, one projection matrix
-- shared by the heads, kept in the buffer projection_matrix [features, head_dim] (saved in
-- the state dict, never trained).
--   m:redraw_features([generator])  draw a new projection matrix (xt's generator by default)
--   redraw = N                      redraw by itself every N forward calls in training mode
--                                   (N = 1: every call, as LRA); nil: only when asked
--   m:step(x, cache)                causal decoding as nn.LinearAttention's
local Performer = class('Performer', Module)
modules.Performer = Performer

local PERFORMER_OPTIONS = {dim = true, heads = true, features = true, causal = true, redraw = true,
                           scaling = true, bias = true, chunk = true, eps = true}

function Performer:__init(opts)
    Module.__init(self)
    local op = 'Performer'
    if type(opts) ~= 'table' then raise(op .. ': expected an options table {dim=, heads=, features=, causal=}') end
    check_options(opts, PERFORMER_OPTIONS, op)
    init_projections(self, opts, op)
    local m = opts.features or 256
    if not positive_int(m) then raise(op .. ': features must be a positive integer, got ' .. tostring(opts.features)) end
    if opts.redraw ~= nil and not positive_int(opts.redraw) then
        raise(op .. ': redraw must be a positive number of calls (or nil), got ' .. tostring(opts.redraw))
    end
    self.features, self.redraw, self.scaling = m, opts.redraw, opts.scaling or 0
    self.causal, self.chunk, self.eps = opts.causal == true, opts.chunk, opts.eps or 1e-6
    self.calls_since_redraw = 0
    self:register_buffer('projection_matrix',
                         functional.orthogonal_random_features(m, self.head_dim, {scaling = self.scaling}))
end

function Performer:extra_repr()
    local s = string.format('dim=%d, heads=%d, features=%d', self.dim, self.heads, self.features)
    if self.causal then s = s .. ', causal' end
    if self.redraw then s = s .. ', redraw=' .. self.redraw end
    return s
end

function Performer:redraw_features(generator)
    local w = functional.orthogonal_random_features(self.features, self.head_dim,
                                                    {scaling = self.scaling, generator = generator})
    xt.no_grad(function() self.projection_matrix:copy_(w) end)
    self.calls_since_redraw = 0
    return self
end

function Performer:forward(x)
    if self.training and self.redraw then
        self.calls_since_redraw = self.calls_since_redraw + 1
        if self.calls_since_redraw >= self.redraw then self:redraw_features() end
    end
    return sequence_forward(self, x, 'Performer', function(q, k, v)
        return functional.favor_attention(q, k, v, self.projection_matrix,
                                          {causal = self.causal, chunk = self.chunk, eps = self.eps})
    end)
end

function Performer:step(x, cache)
    local w, eps = self.projection_matrix, self.eps
    return kernel_step(self, x, cache, 'Performer:step',
                       function(q) return functional.favor_features(q, w, {shift = 'row', eps = eps}) end,
                       function(k) return functional.favor_features(k, w, {shift = 'none', eps = eps}) end,
                       0)
end

---------------------------------------------------------------------------------------------
-- nn.Linformer{dim=, heads=, seq_len=, k=, share='kv', projection=, bias=true}
-- Multi-head softmax attention over k learned projections of the keys and values along
-- time (Wang et al.): head_i = softmax(q_i (E k_i)^T / sqrt(d)) (F v_i), E, F [k, seq_len].
-- Sequences up to seq_len long (shorter ones use the first columns, as LRA). Not causal:
-- projecting over time mixes the future into the past.
--   share = 'none'       E, F [heads, k, seq_len] per head
--           'headwise'   E, F [k, seq_len] shared by the heads
--           'kv'         one E [k, seq_len] for keys and values (LRA's choice; the default)
--           'layerwise'  one E for keys, values, heads and every layer built with the same
--                        opts.projection (a tensor [k, seq_len]; made here when not given,
--                        then pass m.E to the next layers)
local Linformer = class('Linformer', Module)
modules.Linformer = Linformer

local LINFORMER_OPTIONS = {dim = true, heads = true, seq_len = true, k = true, share = true,
                           projection = true, bias = true}
local LINFORMER_SHARING = {none = true, headwise = true, kv = true, layerwise = true}

function Linformer:__init(opts)
    Module.__init(self)
    local op = 'Linformer'
    if type(opts) ~= 'table' then raise(op .. ': expected an options table {dim=, heads=, seq_len=, k=, share=}') end
    check_options(opts, LINFORMER_OPTIONS, op)
    init_projections(self, opts, op)
    local n, kp, share = opts.seq_len, opts.k, opts.share or 'kv'
    if not positive_int(n) then raise(op .. ': seq_len must be a positive integer, got ' .. tostring(n)) end
    if not positive_int(kp) then raise(op .. ': k must be a positive integer, got ' .. tostring(kp)) end
    if not LINFORMER_SHARING[share] then
        raise(op .. ": share must be 'none', 'headwise', 'kv' or 'layerwise', got " .. tostring(share))
    end
    if opts.projection ~= nil and share ~= 'layerwise' then
        raise(op .. ": projection= is for share='layerwise'")
    end
    self.seq_len, self.k, self.share = n, kp, share
    -- Xavier-uniform over (k, seq_len): k_proj = E k keeps the scale of k for k << seq_len
    local bound = math.sqrt(6 / (kp + n))
    local function new(...) return Module.Parameter(init.uniform_(xt.empty(...), -bound, bound)) end
    if share == 'none' then
        self.E, self.F = new(self.heads, kp, n), new(self.heads, kp, n)
    elseif share == 'headwise' then
        self.E, self.F = new(kp, n), new(kp, n)
    elseif opts.projection ~= nil then
        local p = opts.projection
        if not xt.is_tensor(p) or p:dim() ~= 2 or p:size(1) ~= kp or p:size(2) ~= n then
            raise(string.format('%s: projection must be a tensor [k, seq_len] = [%d, %d], got %s', op,
                                kp, n, xt.is_tensor(p) and tostring(p.shape) or type(p)))
        end
        self.E = Module.Parameter(p)
    else
        self.E = new(kp, n)
    end
end

function Linformer:extra_repr()
    return string.format('dim=%d, heads=%d, seq_len=%d, k=%d, share=%s', self.dim, self.heads,
                         self.seq_len, self.k, self.share)
end

function Linformer:forward(x)
    local op = 'Linformer'
    local T = x and xt.is_tensor(x) and x:size(-2)
    if T and T > self.seq_len then
        raise(string.format('%s: the sequence has %d positions, more than seq_len = %d', op, T, self.seq_len))
    end
    return sequence_forward(self, x, op, function(q, k, v)
        return functional.linformer_attention(q, k, v, self.E, self.F or self.E)
    end)
end

---------------------------------------------------------------------------------------------
-- nn.AxialAttention{dim=, heads=, layout='BHWD', image_size=, bias=true}
-- Multi-head softmax attention within each row of an image, then within each column (Ho et
-- al.); each has its own projections (rows.*, columns.*, as nn.MultiheadAttention's).
-- Cost O(H W (H + W) dim) instead of O((H W)^2 dim).
--   layout 'BHWD'  x [B,H,W,dim] (channels last, the default), 'BCHW'  x [B,dim,H,W]
--   image_size {H, W}: x may also be a sequence [B, H*W, dim] in raster order
-- The output has the input's shape. Not causal.
local AxisAttention = class('AxisAttention', Module)

function AxisAttention:__init(dim, heads, bias)
    Module.__init(self)
    init_projections(self, {dim = dim, heads = heads, bias = bias}, 'AxialAttention')
end

-- x [B,H,W,dim] -> attention along dim `axis` (2: rows of W positions, 1: columns of H)
function AxisAttention:forward(x, axis)
    local F = require 'xt.nn.functional'
    local B, H, W = x:size(1), x:size(2), x:size(3)
    local qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias):view(B, H, W, 3, self.heads, self.head_dim)
    -- [B,heads,H,W,hd] views with contiguous features
    local function part(i) return qkv:select(4, i):permute(1, 4, 2, 3, 5) end
    local out = functional.axial_attention(part(1), part(2), part(3), axis == 2 and -2 or -3)
    return self.out_proj(out:permute(1, 3, 4, 2, 5):reshape(B, H, W, self.dim))
end

local AxialAttention = class('AxialAttention', Module)
modules.AxialAttention = AxialAttention

local AXIAL_OPTIONS = {dim = true, heads = true, layout = true, image_size = true, bias = true}

function AxialAttention:__init(opts)
    Module.__init(self)
    local op = 'AxialAttention'
    if type(opts) ~= 'table' then raise(op .. ': expected an options table {dim=, heads=, layout=}') end
    check_options(opts, AXIAL_OPTIONS, op)
    local layout = opts.layout or 'BHWD'
    if layout ~= 'BHWD' and layout ~= 'BCHW' then
        raise(op .. ": layout must be 'BHWD' ([B,H,W,dim]) or 'BCHW' ([B,dim,H,W]), got " .. tostring(layout))
    end
    local size = opts.image_size
    if size ~= nil and not (type(size) == 'table' and positive_int(size[1]) and positive_int(size[2])) then
        raise(op .. ': image_size must be {H, W}, got ' .. tostring(size))
    end
    self.rows = AxisAttention(opts.dim, opts.heads, opts.bias)
    self.columns = AxisAttention(opts.dim, opts.heads, opts.bias)
    self.dim, self.heads, self.layout, self.image_size = opts.dim, opts.heads, layout, size
end

function AxialAttention:extra_repr()
    local s = string.format('dim=%d, heads=%d, layout=%s', self.dim, self.heads, self.layout)
    if self.image_size then s = s .. string.format(', image_size={%d, %d}', self.image_size[1], self.image_size[2]) end
    return s
end

function AxialAttention:forward(x)
    local op = 'AxialAttention'
    local D = self.dim
    if not xt.is_tensor(x) then raise(op .. ': expected a tensor, got ' .. type(x)) end
    local size = self.image_size
    if x:dim() == 3 and size then
        if x:size(2) ~= size[1] * size[2] or x:size(3) ~= D then
            raise(string.format('%s: expected a sequence [B,%d,%d] (image_size {%d, %d}), got %s', op,
                                size[1] * size[2], D, size[1], size[2], tostring(x.shape)))
        end
        local B = x:size(1)
        local img = x:view(B, size[1], size[2], D)
        return self.columns(self.rows(img, 2), 1):view(B, size[1] * size[2], D)
    end
    local channels_first = self.layout == 'BCHW'
    if x:dim() ~= 4 or x:size(channels_first and 2 or 4) ~= D then
        raise(string.format('%s: expected x of shape %s, got %s%s', op,
                            channels_first and ('[B,' .. D .. ',H,W]') or ('[B,H,W,' .. D .. ']'),
                            tostring(x.shape), size and ' (or a sequence [B,H*W,dim])' or ''))
    end
    local img = channels_first and x:permute(1, 3, 4, 2) or x
    local y = self.columns(self.rows(img, 2), 1)
    return channels_first and y:permute(1, 4, 2, 3) or y
end

return {functional = functional, modules = modules}
