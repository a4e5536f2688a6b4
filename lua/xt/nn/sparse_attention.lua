-- xt.nn.sparse_attention: block-sparse self-attention (research/efficient_attention.md
-- § 2.2-2.4), fused C ops on the tiled kernel of scaled_dot_product_attention that visit only
-- the key tiles a pattern touches.
--
--   F.local_attention(q, k, v, {window=, causal=, before=, after=, block=, scale=})
--   F.sparse_attention(q, k, v, {pattern='strided'|'fixed', stride=, summary=, causal=, scale=})
--   F.global_local_attention(q, k, v, {window=, before=, after=, global=, random_blocks=,
--                                      block=, seed=, causal=, scale=})
--   nn.LocalAttention{dim=, heads=, window=, causal=false, bias=true}
--   nn.SparseAttention{dim=, heads=, pattern='fixed', stride=, summary=, causal=false, bias=true}
--   nn.GlobalLocalAttention{dim=, heads=, window=, global=, random_blocks=0, block=64,
--                           seed=, causal=false, bias=true}
-- q, k, v are [...,T,d] (k, v with the same T: self-attention). Positions count from 1.
--
-- This file returns {functional = {...}, modules = {...}}; xt.nn.functional and xt.nn merge
-- them.
local C = require 'xt.lib'
local xt = require 'xt.tensor'
local class = require('xt.class').class
local Module = require 'xt.nn.module'
local init = require 'xt.nn.initializers'

local raise, wrap = xt._raise, xt._wrap
local functional, modules = {}, {}

local function check_options(opts, known, op)
    if opts == nil then return {} end
    if type(opts) ~= 'table' then raise(op .. ': expected an options table, got ' .. type(opts)) end
    for key in pairs(opts) do
        if not known[key] then
            local names = {}
            for name in pairs(known) do names[#names + 1] = name end
            table.sort(names)
            raise(string.format("%s: unknown option '%s' (known: %s)", op, tostring(key),
                                table.concat(names, ', ')))
        end
    end
    return opts
end

local function nonneg_int(v) return type(v) == 'number' and v >= 0 and v == math.floor(v) end
local function positive_int(v) return nonneg_int(v) and v >= 1 end

local function check_qkv(q, k, v, op)
    if not (xt.is_tensor(q) and xt.is_tensor(k) and xt.is_tensor(v)) then
        raise(op .. ': expected tensors q, k, v')
    end
end

local function scale_of(opts, op)
    if opts.scale == nil then return 0 end
    if type(opts.scale) ~= 'number' or opts.scale <= 0 then
        raise(op .. ': scale must be a positive number, got ' .. tostring(opts.scale))
    end
    return opts.scale
end

-- The window as keys before and after the query. window = w counts the query itself:
-- causal, the w - 1 keys before it; otherwise floor(w/2) after and the rest before (the
-- Longformer convention of LRA). before= and after= give the two sides directly.
local function window_of(opts, op)
    if opts.window ~= nil then
        if opts.before ~= nil or opts.after ~= nil then
            raise(op .. ': give window= or before=/after=, not both')
        end
        local w = opts.window
        if not positive_int(w) then raise(op .. ': window must be a positive integer, got ' .. tostring(w)) end
        if opts.causal then return w - 1, 0 end
        local after = math.floor(w / 2)
        return w - after - 1, after
    end
    local before, after = opts.before, opts.after or 0
    if before == nil then raise(op .. ': expected window= (or before= and after=)') end
    if not nonneg_int(before) or not nonneg_int(after) then
        raise(string.format('%s: before and after must be integers >= 0, got %s and %s', op,
                            tostring(before), tostring(after)))
    end
    return before, after
end

---------------------------------------------------------------------------------------------
-- F.local_attention(q, k, v, opts): sliding-window attention; query i sees keys
-- i - before .. i + after (and none after i when causal). With block= b instead of a window:
-- blocked local attention, query i sees the keys of its own block of b positions (the
-- Sparse Transformer's fixed pattern without summary keys).
local LOCAL_OPTIONS = {window = true, before = true, after = true, block = true, causal = true,
                       scale = true}

function functional.local_attention(q, k, v, opts)
    local op = 'local_attention'
    check_qkv(q, k, v, op)
    opts = check_options(opts, LOCAL_OPTIONS, op)
    if opts.block ~= nil then
        if opts.window ~= nil or opts.before ~= nil or opts.after ~= nil then
            raise(op .. ': give block= or a window, not both')
        end
        if not positive_int(opts.block) then
            raise(op .. ': block must be a positive integer, got ' .. tostring(opts.block))
        end
        return wrap(C.xt_sparse_attention(q._c, k._c, v._c, C.XT_SPARSE_FIXED, opts.block, 0,
                                          opts.causal and 1 or 0, scale_of(opts, op)))
    end
    local before, after = window_of(opts, op)
    return wrap(C.xt_local_attention(q._c, k._c, v._c, before, after, opts.causal and 1 or 0,
                                     scale_of(opts, op)))
end

---------------------------------------------------------------------------------------------
-- F.sparse_attention(q, k, v, opts): the Sparse Transformer's patterns (Child et al. 2019),
-- one softmax over both halves ("merged heads"):
--   pattern='strided': |i - j| <= stride, or i - j a multiple of stride
--   pattern='fixed'  : i and j in the same block of `stride` positions, or j among the last
--                      `summary` positions of its block (default summary 1)
-- stride defaults to ~sqrt(T).
local SPARSE_OPTIONS = {pattern = true, stride = true, summary = true, causal = true, scale = true}
local PATTERNS = {strided = C.XT_SPARSE_STRIDED, fixed = C.XT_SPARSE_FIXED}

function functional.sparse_attention(q, k, v, opts)
    local op = 'sparse_attention'
    check_qkv(q, k, v, op)
    opts = check_options(opts, SPARSE_OPTIONS, op)
    local name = opts.pattern or 'fixed'
    local pattern = PATTERNS[name]
    if pattern == nil then
        raise(op .. ": pattern must be 'strided' or 'fixed', got " .. tostring(opts.pattern))
    end
    local stride = opts.stride or math.max(1, math.floor(math.sqrt(q:size(-2)) + 0.5))
    if not positive_int(stride) then raise(op .. ': stride must be a positive integer, got ' .. tostring(stride)) end
    local summary = opts.summary or 1
    if not nonneg_int(summary) then raise(op .. ': summary must be an integer >= 0, got ' .. tostring(summary)) end
    return wrap(C.xt_sparse_attention(q._c, k._c, v._c, pattern, stride, summary,
                                      opts.causal and 1 or 0, scale_of(opts, op)))
end

---------------------------------------------------------------------------------------------
-- F.global_local_attention(q, k, v, opts): Longformer / BigBird. The sliding window
-- (window= or before=/after=), plus
--   global=        positions (a table of numbers or an int64 tensor, from 1) that see every
--                  key and that every query sees
--   random_blocks= BigBird: each query block of `block` positions (default 64) also sees
--                  this many random key blocks, drawn from `seed` (default 0)
local GLOBAL_OPTIONS = {window = true, before = true, after = true, global = true,
                        random_blocks = true, block = true, seed = true, causal = true,
                        scale = true}

local function global_index(g, op)
    if g == nil then return nil end
    if xt.is_tensor(g) then return g end
    if type(g) ~= 'table' then
        raise(op .. ': global must be a table of positions or an int64 tensor, got ' .. type(g))
    end
    if #g == 0 then return nil end
    for i = 1, #g do
        if not positive_int(g[i]) then
            raise(string.format('%s: global[%d] must be a position >= 1, got %s', op, i, tostring(g[i])))
        end
    end
    return xt.tensor(g, 'int64')
end

function functional.global_local_attention(q, k, v, opts)
    local op = 'global_local_attention'
    check_qkv(q, k, v, op)
    opts = check_options(opts, GLOBAL_OPTIONS, op)
    local before, after = window_of(opts, op)
    local g = global_index(opts.global, op)
    local r, block, seed = opts.random_blocks or 0, opts.block or 64, opts.seed or 0
    if not nonneg_int(r) then raise(op .. ': random_blocks must be an integer >= 0, got ' .. tostring(r)) end
    if not positive_int(block) then raise(op .. ': block must be a positive integer, got ' .. tostring(block)) end
    if not nonneg_int(seed) then raise(op .. ': seed must be an integer >= 0, got ' .. tostring(seed)) end
    return wrap(C.xt_global_local_attention(q._c, k._c, v._c, before, after, g and g._c or nil,
                                            1, r, block, seed, opts.causal and 1 or 0,
                                            scale_of(opts, op)))
end

---------------------------------------------------------------------------------------------
-- The modules: multi-head self-attention with nn.MultiheadAttention's parameters
-- (in_proj_weight [3*dim, dim], in_proj_bias [3*dim], out_proj) around one of the ops above.
-- forward(x [B,T,dim] or [T,dim]) -> the same shape.
local SparseSelfAttention = class('SparseSelfAttention', Module)

function SparseSelfAttention:__init(opts, op, known)
    Module.__init(self)
    if type(opts) ~= 'table' then raise(op .. ': expected an options table {dim=, heads=, ...}') end
    check_options(opts, known, op)
    local dim, heads = opts.dim, opts.heads
    if not positive_int(dim) then raise(op .. ': dim must be a positive integer, got ' .. tostring(dim)) end
    if not positive_int(heads) then raise(op .. ': heads must be a positive integer, got ' .. tostring(heads)) end
    if dim % heads ~= 0 then raise(string.format('%s: heads (%d) must divide dim (%d)', op, heads, dim)) end
    self.dim, self.heads, self.head_dim, self.causal = dim, heads, dim / heads, opts.causal == true
    local Linear = require('xt.nn.layers').Linear
    self.in_proj_weight = Module.Parameter(init.xavier_uniform_(xt.empty(3 * dim, dim)))
    if opts.bias ~= false then self.in_proj_bias = Module.Parameter(xt.zeros(3 * dim)) end
    self.out_proj = Linear(dim, dim, {bias = opts.bias ~= false})
    if self.out_proj.bias then init.zeros_(self.out_proj.bias) end
end

function SparseSelfAttention:forward(x)
    local F = require 'xt.nn.functional'
    local op = self.__name or 'SparseSelfAttention'
    if not xt.is_tensor(x) or (x:dim() ~= 2 and x:dim() ~= 3) or x:size(-1) ~= self.dim then
        raise(string.format('%s: expected x of shape [B,T,%d] (or [T,%d]), got %s', op,
                            self.dim, self.dim, xt.is_tensor(x) and tostring(x.shape) or type(x)))
    end
    local unbatched = x:dim() == 2
    if unbatched then x = x:unsqueeze(1) end
    local B, T = x:size(1), x:size(2)
    local qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        :view(B, T, 3, self.heads, self.head_dim)
    local function part(i) return qkv:select(3, i):permute(1, 3, 2, 4) end
    local out = self:attend(part(1), part(2), part(3), x)
    local y = self.out_proj(out:permute(1, 3, 2, 4):reshape(B, T, self.dim))
    return unbatched and y:squeeze(1) or y
end

local function base_repr(self)
    local s = string.format('dim=%d, heads=%d', self.dim, self.heads)
    if self.causal then s = s .. ', causal' end
    return s
end

-- nn.LocalAttention{dim=, heads=, window=, causal=false, bias=true}
local LocalAttention = class('LocalAttention', SparseSelfAttention)
modules.LocalAttention = LocalAttention
local LOCAL_MODULE = {dim = true, heads = true, window = true, causal = true, bias = true}

function LocalAttention:__init(opts)
    SparseSelfAttention.__init(self, opts, 'LocalAttention', LOCAL_MODULE)
    window_of({window = opts.window, causal = opts.causal}, 'LocalAttention')
    self.window = opts.window
end
function LocalAttention:attend(q, k, v)
    return functional.local_attention(q, k, v, {window = self.window, causal = self.causal})
end
function LocalAttention:extra_repr() return base_repr(self) .. ', window=' .. self.window end

-- nn.SparseAttention{dim=, heads=, pattern='fixed', stride=, summary=1, causal=false, bias=true}
local SparseAttention = class('SparseAttention', SparseSelfAttention)
modules.SparseAttention = SparseAttention
local SPARSE_MODULE = {dim = true, heads = true, pattern = true, stride = true, summary = true,
                       causal = true, bias = true}

function SparseAttention:__init(opts)
    SparseSelfAttention.__init(self, opts, 'SparseAttention', SPARSE_MODULE)
    self.pattern, self.stride, self.summary = opts.pattern or 'fixed', opts.stride, opts.summary
    if PATTERNS[self.pattern] == nil then
        raise("SparseAttention: pattern must be 'strided' or 'fixed', got " .. tostring(opts.pattern))
    end
end
function SparseAttention:attend(q, k, v)
    return functional.sparse_attention(q, k, v, {pattern = self.pattern, stride = self.stride,
                                                 summary = self.summary, causal = self.causal})
end
function SparseAttention:extra_repr()
    return base_repr(self) .. ', pattern=' .. self.pattern ..
           (self.stride and ', stride=' .. self.stride or '')
end

-- nn.GlobalLocalAttention{dim=, heads=, window=, global=, random_blocks=0, block=64, seed=,
--                         global_projections=false, causal=false, bias=true}; the random
-- blocks' seed is drawn from the default generator when not given, and kept (so the pattern
-- is fixed per layer). global_projections=true is Longformer's second projection set
-- (in_proj_global_weight [3*dim, dim], in_proj_global_bias): the rows of the global tokens
-- are replaced by dense attention of their global queries over the global keys and values
-- of every position; the other rows are as without it.
local GlobalLocalAttention = class('GlobalLocalAttention', SparseSelfAttention)
modules.GlobalLocalAttention = GlobalLocalAttention
local GLOBAL_MODULE = {dim = true, heads = true, window = true, global = true,
                       random_blocks = true, block = true, seed = true, causal = true, bias = true,
                       global_projections = true}

function GlobalLocalAttention:__init(opts)
    SparseSelfAttention.__init(self, opts, 'GlobalLocalAttention', GLOBAL_MODULE)
    window_of({window = opts.window, causal = opts.causal}, 'GlobalLocalAttention')
    self.window, self.global = opts.window, opts.global
    self.random_blocks, self.block = opts.random_blocks or 0, opts.block or 64
    self.seed = opts.seed or xt.randint(0, 2 ^ 31, 1):item()
    if opts.global_projections then
        local op = 'GlobalLocalAttention'
        if type(opts.global) ~= 'table' or #opts.global == 0 then
            raise(op .. ': global_projections needs global= positions (a table)')
        end
        if self.causal then raise(op .. ': global_projections is for non-causal attention') end
        local seen, rows = {}, {}
        for _, g in ipairs(opts.global) do
            if not seen[g] then seen[g] = true; rows[#rows + 1] = g end
        end
        self.global_rows = rows
        self.in_proj_global_weight = Module.Parameter(init.xavier_uniform_(xt.empty(3 * self.dim, self.dim)))
        if opts.bias ~= false then self.in_proj_global_bias = Module.Parameter(xt.zeros(3 * self.dim)) end
    end
end
function GlobalLocalAttention:attend(q, k, v, x)
    local out = functional.global_local_attention(q, k, v, {
        window = self.window, global = self.global, random_blocks = self.random_blocks,
        block = self.block, seed = self.seed, causal = self.causal})
    if not self.in_proj_global_weight then return out end
    local F = require 'xt.nn.functional'
    local B, T, G = x:size(1), x:size(2), #self.global_rows
    local qkv = F.linear(x, self.in_proj_global_weight, self.in_proj_global_bias)
        :view(B, T, 3, self.heads, self.head_dim)
    local function part(i) return qkv:select(3, i):permute(1, 3, 2, 4) end
    local rows = xt.tensor(self.global_rows, 'int64')
    if rows:amax():item() > T then
        raise(string.format('GlobalLocalAttention: global position %d is past the sequence (T = %d)',
                            rows:amax():item(), T))
    end
    local global_out = F.scaled_dot_product_attention(part(1):index_select(3, rows), part(2), part(3))
    -- out with the global rows replaced: add (global - windowed) at those rows
    local index = rows:view(1, 1, G, 1):expand(B, self.heads, G, self.head_dim)
    return out:scatter_add(3, index, global_out - out:index_select(3, rows))
end
function GlobalLocalAttention:extra_repr()
    local s = base_repr(self) .. ', window=' .. self.window
    if self.random_blocks > 0 then s = s .. ', random_blocks=' .. self.random_blocks end
    return s
end

return {functional = functional, modules = modules}
