-- xt.nn.attention: softmax attention.
--
--   F.scaled_dot_product_attention(q, k, v, {causal=, scale=, dropout_p=, generator=})
--       the fused, tiled C kernel (core/ops/sdpa.c): memory linear in the sequence length
--   nn.MultiheadAttention{dim=, heads=, causal=false, bias=true, dropout=0}
--       PyTorch's module (same parameter names and shapes), batch first: [B,T,D]
--
-- This file returns {functional = {...}, modules = {...}}; xt.nn.functional and xt.nn merge
-- them. It requires neither of them at load time (they require it), only when a module is
-- built or run.
local C = require 'xt.lib'
local xt = require 'xt.tensor'
local class = require('xt.class').class
local Module = require 'xt.nn.module'
local init = require 'xt.nn.initializers'

local raise, wrap = xt._raise, xt._wrap
local functional, modules = {}, {}

local check_options = xt._check_options

---------------------------------------------------------------------------------------------
-- F.scaled_dot_product_attention(q, k, v, opts): softmax(scale * q k^T) v
--   q [...,T,d], k [...,S,d], v [...,S,dv] (same leading dims, e.g. [B,H]) -> [...,T,dv]
--   opts.causal     query i sees keys j <= i + S - T (the queries are the last T positions;
--                   with S == T the usual lower-triangular mask)
--   opts.scale      default 1/sqrt(d)
--   opts.dropout_p  dropout on the attention weights (default 0), drawn from opts.generator
--                   or the default generator
-- The T x S weights are never formed; q, k, v that are views with a contiguous last dim
-- (heads permuted out of [B,T,H,d]) are read without a copy.
local SDPA_OPTIONS = {causal = true, scale = true, dropout_p = true, generator = true}

function functional.scaled_dot_product_attention(q, k, v, opts)
    local op = 'scaled_dot_product_attention'
    if not (xt.is_tensor(q) and xt.is_tensor(k) and xt.is_tensor(v)) then
        raise(op .. ': expected tensors q, k, v')
    end
    opts = check_options(opts, SDPA_OPTIONS, op)
    local scale = opts.scale or 0
    if type(scale) ~= 'number' or scale <= 0 and opts.scale ~= nil then
        raise(op .. ': scale must be a positive number, got ' .. tostring(opts.scale))
    end
    local causal = opts.causal and 1 or 0
    local p = opts.dropout_p or 0
    if type(p) ~= 'number' then raise(op .. ': dropout_p must be a number, got ' .. type(p)) end
    if p == 0 then
        return wrap(C.xt_scaled_dot_product_attention(q._c, k._c, v._c, causal, scale))
    end
    local rng = opts.generator or C.xt_default_rng()
    return wrap(C.xt_scaled_dot_product_attention_dropout(q._c, k._c, v._c, causal, scale, p, rng))
end
local sdpa = functional.scaled_dot_product_attention

---------------------------------------------------------------------------------------------
-- nn.MultiheadAttention{dim=, heads=, causal=false, bias=true, dropout=0}
--
-- Parameters as PyTorch's nn.MultiheadAttention (so a state dict converts one to one):
--   in_proj_weight [3*dim, dim] (q, k, v projections stacked), in_proj_bias [3*dim],
--   out_proj.weight [dim, dim], out_proj.bias [dim].
-- Differences from PyTorch: inputs are batch first, [B,T,dim] (or [T,dim] unbatched); the
-- forward returns the output only, since the attention weights are never formed; dropout
-- acts on the attention weights in training mode, as PyTorch's.
--
--   m(x)             self-attention of x [B,T,dim]
--   m(query, key, value)   query [B,T,dim], key and value [B,S,dim]
--   m:step(x, cache) incremental decoding (causal only): x [B,t,dim] holds the next t
--                    positions ([B,dim]: one); cache is a table, empty at the start, where
--                    step keeps the keys and values seen so far (cache.len of them). The
--                    prefix is never recomputed, and the outputs equal those of the full
--                    causal forward. It runs without autograd.
local MultiheadAttention = class('MultiheadAttention', Module)
modules.MultiheadAttention = MultiheadAttention

local MHA_OPTIONS = {dim = true, heads = true, causal = true, bias = true, dropout = true}

local function positive_int(v) return type(v) == 'number' and v >= 1 and v == math.floor(v) end

function MultiheadAttention:__init(opts)
    Module.__init(self)
    local op = 'MultiheadAttention'
    if type(opts) ~= 'table' then
        raise(op .. ': expected an options table {dim=, heads=, causal=, bias=, dropout=}')
    end
    check_options(opts, MHA_OPTIONS, op)
    local dim, heads = opts.dim, opts.heads
    if not positive_int(dim) then raise(op .. ': dim must be a positive integer, got ' .. tostring(dim)) end
    if not positive_int(heads) then raise(op .. ': heads must be a positive integer, got ' .. tostring(heads)) end
    if dim % heads ~= 0 then
        raise(string.format('%s: heads (%d) must divide dim (%d)', op, heads, dim))
    end
    local p = opts.dropout or 0
    if type(p) ~= 'number' or p < 0 or p >= 1 then
        raise(op .. ': dropout must be in [0, 1), got ' .. tostring(opts.dropout))
    end
    self.dim, self.heads, self.head_dim = dim, heads, dim / heads
    self.causal, self.dropout = opts.causal == true, p
    local Linear = require('xt.nn.layers').Linear
    -- PyTorch's initialisation: xavier-uniform in-projection, zero biases, and the out
    -- projection's weight as nn.Linear's
    self.in_proj_weight = Module.Parameter(init.xavier_uniform_(xt.empty(3 * dim, dim)))
    if opts.bias ~= false then self.in_proj_bias = Module.Parameter(xt.zeros(3 * dim)) end
    self.out_proj = Linear(dim, dim, {bias = opts.bias ~= false})
    if self.out_proj.bias then init.zeros_(self.out_proj.bias) end
end

function MultiheadAttention:extra_repr()
    local s = string.format('dim=%d, heads=%d', self.dim, self.heads)
    if self.causal then s = s .. ', causal' end
    if self.dropout > 0 then s = s .. ', dropout=' .. self.dropout end
    if not self.in_proj_bias then s = s .. ', bias=false' end
    return s
end

-- x [B,T,dim] (or [T,dim]) as [B,T,dim] and whether it was unbatched.
local function batched(self, x, name, op)
    if not xt.is_tensor(x) then raise(string.format('%s: %s must be a tensor', op, name)) end
    local nd = x:dim()
    if (nd ~= 2 and nd ~= 3) or x:size(-1) ~= self.dim then
        raise(string.format('%s: expected %s of shape [B,T,%d] (or [T,%d]), got %s', op, name,
                            self.dim, self.dim, tostring(x.shape)))
    end
    if nd == 2 then return x:unsqueeze(1), true end
    return x, false
end

-- rows first..first+dim-1 of the stacked projection (first counts from 1)
local function projection(self, x, which)
    local F = require 'xt.nn.functional'
    local first = (which - 1) * self.dim + 1
    local w = self.in_proj_weight:narrow(1, first, self.dim)
    local b = self.in_proj_bias and self.in_proj_bias:narrow(1, first, self.dim)
    return F.linear(x, w, b)
end

-- [B,T,dim] -> [B,H,T,head_dim], a view (the last dim stays contiguous)
local function split_heads(self, t)
    local B, T = t:size(1), t:size(2)
    return t:view(B, T, self.heads, self.head_dim):permute(1, 3, 2, 4)
end

-- q, k, v [B,T,dim] projected from x in one GEMM, as views
local function self_projections(self, x)
    local F = require 'xt.nn.functional'
    local B, T = x:size(1), x:size(2)
    local qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        :view(B, T, 3, self.heads, self.head_dim)
    local function part(i) return qkv:select(3, i):permute(1, 3, 2, 4) end
    return part(1), part(2), part(3)
end

-- attention of the heads [B,H,T,hd] -> the output projection of [B,T,dim]
local function attend(self, q, k, v, causal)
    local out = sdpa(q, k, v, {causal = causal,
                               dropout_p = self.training and self.dropout or 0})
    local B, T = out:size(1), out:size(3)
    return self.out_proj(out:permute(1, 3, 2, 4):reshape(B, T, self.dim))
end

function MultiheadAttention:forward(query, key, value)
    local op = 'MultiheadAttention'
    local x, unbatched = batched(self, query, 'query', op)
    local q, k, v
    if key == nil and value == nil then
        q, k, v = self_projections(self, x)
    else
        if key == nil or value == nil then raise(op .. ': give key and value together, or neither') end
        local kx, ku = batched(self, key, 'key', op)
        local vx, vu = batched(self, value, 'value', op)
        if ku ~= unbatched or vu ~= unbatched or kx:size(1) ~= x:size(1) or vx:size(1) ~= x:size(1) then
            raise(string.format('%s: query, key and value must have the same batch size, got %s, %s, %s',
                                op, tostring(query.shape), tostring(key.shape), tostring(value.shape)))
        end
        if kx:size(2) ~= vx:size(2) then
            raise(string.format('%s: key and value must have the same length, got %s and %s', op,
                                tostring(key.shape), tostring(value.shape)))
        end
        if self.causal and kx:size(2) < x:size(2) then
            raise(string.format('%s: causal attention needs at least as many keys (%d) as queries (%d)',
                                op, kx:size(2), x:size(2)))
        end
        q = split_heads(self, projection(self, x, 1))
        k = split_heads(self, projection(self, kx, 2))
        v = split_heads(self, projection(self, vx, 3))
    end
    local y = attend(self, q, k, v, self.causal)
    return unbatched and y:squeeze(1) or y
end

-- Append new [B,H,t,hd] keys and values to the cache, growing its buffers by doubling so
-- that a sequence of steps copies each position O(1) times.
local function append(self, cache, k, v)
    local B, t = k:size(1), k:size(3)
    local len = cache.len or 0
    if cache.k and cache.k:size(1) ~= B then
        raise(string.format('MultiheadAttention:step: the cache holds a batch of %d, x has %d',
                            cache.k:size(1), B))
    end
    local capacity = cache.k and cache.k:size(3) or 0
    if len + t > capacity then
        local new_capacity = math.max(2 * capacity, len + t, 16)
        local kb = xt.empty(B, self.heads, new_capacity, self.head_dim)
        local vb = xt.empty(B, self.heads, new_capacity, self.head_dim)
        if len > 0 then
            kb:narrow(3, 1, len):copy_(cache.k:narrow(3, 1, len))
            vb:narrow(3, 1, len):copy_(cache.v:narrow(3, 1, len))
        end
        cache.k, cache.v = kb, vb
    end
    cache.k:narrow(3, len + 1, t):copy_(k)
    cache.v:narrow(3, len + 1, t):copy_(v)
    cache.len = len + t
end

function MultiheadAttention:step(x, cache)
    local op = 'MultiheadAttention:step'
    if not self.causal then
        raise(op .. ': incremental decoding needs a causal module (causal=true)')
    end
    if type(cache) ~= 'table' then raise(op .. ': expected a cache table ({} at the start)') end
    if not xt.is_tensor(x) or (x:dim() ~= 2 and x:dim() ~= 3) or x:size(-1) ~= self.dim then
        raise(string.format('%s: expected x of shape [B,t,%d] or [B,%d], got %s', op, self.dim,
                            self.dim, xt.is_tensor(x) and tostring(x.shape) or type(x)))
    end
    local one = x:dim() == 2
    if one then x = x:unsqueeze(2) end
    local y = xt.no_grad(function()
        local q, k, v = self_projections(self, x)
        append(self, cache, k, v)
        local keys = cache.k:narrow(3, 1, cache.len)
        local values = cache.v:narrow(3, 1, cache.len)
        -- the t queries are the last t of cache.len positions: bottom-right causal mask
        return attend(self, q, keys, values, true)
    end)
    return one and y:squeeze(2) or y
end

return {functional = functional, modules = modules}
