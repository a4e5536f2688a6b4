-- xt.nn.delight: DeLighT (Mehta et al., "DeLighT: Deep and Light-weight Transformer",
-- ICLR 2021). The maths, layer schedules and parameter counts follow the official code;
-- research/delight.md has them with the paper's differences.
--
--   F.group_linear(x, w, b, {groups=, shuffle=, mix=, norm=, norm_weight=, norm_bias=,
--                            eps=, activation=})             the GLT, one fused C op
--   nn.GroupLinear{in_features=, out_features=, groups=, ...}
--   nn.DExTra{d_m=, d_o=, depth=, width_mult=, max_groups=, ...}
--   nn.DeLighTBlock{d_m=, depth=, width_mult=, attention='softmax', ...}
--   nn.DeLighT{blocks=, d_m=, min_depth=, max_depth=, width_mult=, ...}
--
-- The file returns the module classes by name (xt.nn finds them there when first asked)
-- and `functional`, which xt.nn.functional merges. It requires neither of those at load
-- time (functional requires this file), only when a module is built or run.
local C = require 'xt.lib'
local xt = require 'xt.tensor'
local class = require('xt.class').class
local Module = require 'xt.nn.module'
local init = require 'xt.nn.initializers'

local raise, wrap = xt._raise, xt._wrap
local Parameter = Module.Parameter
local M = {functional = {}}

local function nn() return require 'xt.nn' end
local function F() return require 'xt.nn.functional' end
local function opt_c(t) return t and t._c or nil end

local check_options = xt._check_options

local function set_of(list)
    local s = {}
    for _, k in ipairs(list) do s[k] = true end
    return s
end

local function is_int(v) return type(v) == 'number' and v == math.floor(v) end
local function positive_int(v) return is_int(v) and v >= 1 end

local function need_int(v, name, op, min)
    if not is_int(v) or v < (min or 1) then
        raise(string.format('%s: %s must be an integer >= %d, got %s', op, name, min or 1, tostring(v)))
    end
    return v
end

local function need_prob(v, name, op)
    if v == nil then return 0 end
    if type(v) ~= 'number' or v < 0 or v >= 1 then
        raise(string.format('%s: %s must be in [0, 1), got %s', op, name, tostring(v)))
    end
    return v
end

---------------------------------------------------------------------------------------------
-- F.group_linear(x, w, b, opts): the group linear transformation (notes § 1).
--   x [..., din], w [g, din/g, dout/g], b [g, dout/g] or nil -> [..., dout]
--   opts.groups       optional check: must equal w:size(1)
--   opts.shuffle      interleave the groups' outputs, element j of each group side by side
--                     (y[t, j*g + k] = A[t,k,j]); default false
--   opts.mix          a tensor [..., dm] (x's leading dims): group k reads [mix_k | x_k],
--                     w [g, (dm + din)/g, dout/g] (DExTra's input mixer, never concatenated)
--   opts.norm         LayerNorm of each chunk y[..., c*co+1 .. (c+1)*co] on its own, with the
--                     affine opts.norm_weight, opts.norm_bias [co] shared by the chunks
--   opts.eps          the LayerNorm's eps (1e-5)
--   opts.activation   'swish' (= 'silu'), after the norm, or nil
-- One C op does all of it, forward and backward.
local GL_OPTIONS = set_of{'groups', 'shuffle', 'mix', 'norm', 'norm_weight', 'norm_bias', 'eps',
                          'activation'}

function M.functional.group_linear(x, w, b, opts)
    local op = 'group_linear'
    opts = check_options(opts, GL_OPTIONS, op)
    if not xt.is_tensor(x) or not xt.is_tensor(w) then raise(op .. ': expected tensors x and w') end
    if b ~= nil and not xt.is_tensor(b) then raise(op .. ': b must be a tensor or nil') end
    if opts.groups ~= nil and (w:dim() ~= 3 or w:size(1) ~= opts.groups) then
        raise(string.format('%s: groups = %s, but w has shape %s (expected [groups, in/groups, out/groups])',
                            op, tostring(opts.groups), tostring(w.shape)))
    end
    local act = opts.activation
    if act ~= nil and act ~= 'swish' and act ~= 'silu' then
        raise(op .. ": activation must be 'swish' or nil, got " .. tostring(act))
    end
    if opts.mix ~= nil and not xt.is_tensor(opts.mix) then raise(op .. ': mix must be a tensor') end
    if not opts.norm and (opts.norm_weight or opts.norm_bias) then
        raise(op .. ': norm_weight/norm_bias need norm = true')
    end
    return wrap(C.xt_group_linear_ex(x._c, opt_c(opts.mix), w._c, opt_c(b), opts.shuffle and 1 or 0,
                                     opts.norm and 1 or 0, opt_c(opts.norm_weight),
                                     opt_c(opts.norm_bias), opts.eps or 1e-5, act and 1 or 0))
end
local group_linear = M.functional.group_linear

---------------------------------------------------------------------------------------------
-- nn.GroupLinear{in_features=, out_features=, groups=, bias=true, shuffle=false, norm=false,
--                activation=nil, dropout=0, mix_features=0}
--
-- One layer of DExTra: the GLT, then (norm) the chunk LayerNorm, (activation) swish and
-- dropout. forward(x [..., in_features], mix [..., mix_features]): with mix_features > 0
-- group k reads [mix_k | x_k] (the input mixer).
-- Parameters: weight [g, (mix + in)/g, out/g] (y = x w per group, as the official code
-- stores it), bias [g, out/g], norm.weight / norm.bias [out/g]. With groups = 1 the layer
-- is the official code's Linear: weight [out, mix + in] and bias [out] as nn.Linear.
-- Initialisation as the official code: xavier-uniform weight (on the 3-d tensor, so
-- fan_in = ci*co and fan_out = out), zero bias, LayerNorm 1 and 0.
local GroupLinear = class('GroupLinear', Module)
M.GroupLinear = GroupLinear

local GROUP_LINEAR_OPTIONS = set_of{'in_features', 'out_features', 'groups', 'bias', 'shuffle',
                                    'norm', 'activation', 'dropout', 'mix_features', 'eps'}

function GroupLinear:__init(opts)
    Module.__init(self)
    local op = 'GroupLinear'
    if type(opts) ~= 'table' then
        raise(op .. ': expected an options table {in_features=, out_features=, groups=, ...}')
    end
    check_options(opts, GROUP_LINEAR_OPTIONS, op)
    local nin = need_int(opts.in_features, 'in_features', op)
    local nout = need_int(opts.out_features, 'out_features', op)
    local g = need_int(opts.groups or 1, 'groups', op)
    local nmix = need_int(opts.mix_features or 0, 'mix_features', op, 0)
    for _, e in ipairs{{'in_features', nin}, {'out_features', nout}, {'mix_features', nmix}} do
        if e[2] % g ~= 0 then
            raise(string.format('%s: %d groups do not divide %s (%d)', op, g, e[1], e[2]))
        end
    end
    if opts.activation ~= nil and opts.activation ~= 'swish' and opts.activation ~= 'silu' then
        raise(op .. ": activation must be 'swish' or nil, got " .. tostring(opts.activation))
    end
    self.in_features, self.out_features, self.groups, self.mix_features = nin, nout, g, nmix
    self.shuffle = opts.shuffle == true
    self.activation = opts.activation and 'swish' or nil
    self.dropout = need_prob(opts.dropout, 'dropout', op)
    self.eps = opts.eps or 1e-5
    local width = nin + nmix
    if g == 1 then
        self.weight = Parameter(init.xavier_uniform_(xt.empty(nout, width)))
        if opts.bias ~= false then self.bias = Parameter(xt.zeros(nout)) end
    else
        self.weight = Parameter(init.xavier_uniform_(xt.empty(g, width / g, nout / g)))
        if opts.bias ~= false then self.bias = Parameter(xt.zeros(g, nout / g)) end
    end
    if opts.norm then self.norm = nn().LayerNorm(nout / g, {eps = self.eps}) end
end

function GroupLinear:extra_repr()
    local s = string.format('%d -> %d, groups=%d', self.in_features + self.mix_features,
                            self.out_features, self.groups)
    if self.mix_features > 0 then s = s .. ', mix=' .. self.mix_features end
    if self.shuffle and self.groups > 1 then s = s .. ', shuffle' end
    if self.norm then s = s .. ', norm' end
    if self.activation then s = s .. ', ' .. self.activation end
    if self.dropout > 0 then s = s .. ', dropout=' .. self.dropout end
    if not self.bias then s = s .. ', bias=false' end
    return s
end

-- w and b as the C op takes them: [g, ci, co] and [g, co] (views for groups = 1)
function GroupLinear:group_weights()
    if self.groups > 1 then return self.weight, self.bias end
    local w = self.weight:t():unsqueeze(1)
    return w, self.bias and self.bias:view(1, self.out_features)
end

function GroupLinear:forward(x, mix)
    local op = 'GroupLinear'
    if (self.mix_features > 0) ~= (mix ~= nil) then
        raise(string.format('%s: this layer %s', op, self.mix_features > 0
            and string.format('mixes in a second input of %d features: call it as m(x, mix)', self.mix_features)
            or 'has no mix input (mix_features = 0)'))
    end
    local w, b = self:group_weights()
    local norm = self.norm
    local y = group_linear(x, w, b, {shuffle = self.shuffle, mix = mix, norm = norm ~= nil,
                                     norm_weight = norm and norm.weight, norm_bias = norm and norm.bias,
                                     eps = self.eps, activation = self.activation})
    if self.dropout > 0 and self.training then y = F().dropout(y, self.dropout, true) end
    return y
end

---------------------------------------------------------------------------------------------
-- Layer schedules (notes § 2.3 and § 2.2). Each returns {{in=, out=, groups=}, ...} for the
-- GLT layers, where `in` counts every feature a layer reads (mixed-in ones included).

-- numpy.linspace(a, b, num) truncated to integers, as the official code computes it
local function linspace_int(a, b, num)
    if num == 1 then return {math.floor(a)} end
    local out, step = {}, (b - a) / (num - 1)
    for i = 0, num - 1 do out[#out + 1] = (i == num - 1) and b or (i * step + a) end
    for i, v in ipairs(out) do out[i] = v >= 0 and math.floor(v) or math.ceil(v) end
    return out
end

local function reversed(list, from)
    local out = {}
    for i = #list - (from or 0), 1, -1 do out[#out + 1] = list[i] end
    return out
end

local function append(a, b)
    local out = {}
    for _, v in ipairs(a) do out[#out + 1] = v end
    for _, v in ipairs(b) do out[#out + 1] = v end
    return out
end

-- The official dextra_config: d_p the projected input, d_out the output, d_max the widest
-- (a float, d_in * m_w), N layers, g_max the largest group count.
function M.dextra_config(d_p, d_out, d_max, N, g_max)
    local mid = math.ceil(N / 2)
    local groups = {}
    for i = 1, mid do groups[i] = math.min(2 ^ i, g_max) end
    local sizes = linspace_int(d_p, d_max, mid)
    if N % 2 == 0 then
        groups, sizes = append(groups, reversed(groups)), append(sizes, reversed(sizes))
    else
        groups, sizes = append(groups, reversed(groups, 1)), append(sizes, reversed(sizes, 1))
    end
    local layers = {{['in'] = d_p}}
    for l = 1, N - 1 do
        local q = math.max(groups[l], groups[l + 1], 8)
        local out = math.ceil(sizes[l] / q) * q
        layers[l].out = out
        layers[l + 1] = {['in'] = out + d_p}
    end
    layers[N].out = d_out
    for l = 1, N do layers[l].groups = groups[l] end
    return layers
end

-- The paper's formulation (§ 2.2): widths d_m -> d_max linearly over ceil(N/2) layers, then
-- down to d_o; g^l = min(2^(l-1), g_max), mirrored; every layer after the first mixes in
-- the block input x (d_m). Widths are rounded up to a multiple of the groups on both
-- sides (the paper does not say how it rounds).
function M.paper_config(d_m, d_o, d_max, N, g_max)
    local mid = math.ceil(N / 2)
    local groups = {}
    for l = 1, N do
        local e = l <= mid and l or N - l + 1
        groups[l] = math.min(2 ^ (e - 1), g_max)
    end
    local layers = {}
    for l = 1, N do
        local width
        if l == N then width = d_o
        elseif l <= mid then width = d_m + (d_max - d_m) * l / mid
        else width = d_max - (d_max - d_o) * (l - mid) / (N - mid) end
        if l < N then
            local q = math.max(groups[l], groups[l + 1])
            width = math.ceil(math.floor(width + 0.5) / q) * q
        end
        layers[l] = {['in'] = l == 1 and d_m or layers[l - 1].out + d_m, out = width, groups = groups[l]}
    end
    return layers
end

-- The official code's g_max: the next power of two of d_m / 32 (notes § 2.3); the paper's
-- is ceil(d_m / 32).
function M.default_max_groups(d_m, mode)
    if mode == 'paper' then return math.max(1, math.ceil(d_m / 32)) end
    local g = 1
    while g < d_m / 32 do g = g * 2 end
    return g
end

---------------------------------------------------------------------------------------------
-- nn.DExTra{d_m=, d_o=, depth=, width_mult=, max_groups=, d_p=d_o, dropout=0, shuffle=true,
--           mode='code'}
--
-- mode 'code' (the official DExTraUnit, notes § 2.1): an input layer (Linear d_m -> d_p,
-- LayerNorm, swish, dropout), `depth` GLT layers with the § 2.3 schedule, each after the
-- first reading [xp_c | z_c] group by group (xp: the input layer's output), and an output
-- layer (Linear on [xp | z], LayerNorm, swish, dropout) to d_o. The widest layer is about
-- width_mult * d_m. mode 'paper' (§ 2.2): no input or output layer; the GLTs map d_m up to
-- width_mult * d_m and down to d_o, mixing in the input x.
-- forward(x [..., d_m]) -> [..., d_o]. m.layers lists {in=, out=, groups=} per GLT.
-- Parameter names follow the official module: input_layer, dextra_layers.<l>, output_layer.
local DExTra = class('DExTra', Module)
M.DExTra = DExTra

local DEXTRA_OPTIONS = set_of{'d_m', 'd_o', 'd_p', 'depth', 'width_mult', 'max_groups', 'dropout',
                              'shuffle', 'mode'}

function DExTra:__init(opts)
    Module.__init(self)
    local op = 'DExTra'
    if type(opts) ~= 'table' then
        raise(op .. ': expected an options table {d_m=, d_o=, depth=, width_mult=, max_groups=}')
    end
    check_options(opts, DEXTRA_OPTIONS, op)
    local d_m = need_int(opts.d_m, 'd_m', op)
    local d_o = need_int(opts.d_o or d_m / 2, 'd_o', op)
    local N = need_int(opts.depth, 'depth', op, 2)
    local m_w = opts.width_mult or 2
    if type(m_w) ~= 'number' or m_w <= 0 then raise(op .. ': width_mult must be a positive number, got ' .. tostring(m_w)) end
    local mode = opts.mode or 'code'
    if mode ~= 'code' and mode ~= 'paper' then raise(op .. ": mode must be 'code' or 'paper', got " .. tostring(mode)) end
    local g_max = need_int(opts.max_groups or M.default_max_groups(d_m, mode), 'max_groups', op)
    local p = need_prob(opts.dropout, 'dropout', op)
    local shuffle = opts.shuffle ~= false
    self.d_m, self.d_o, self.depth, self.width_mult, self.max_groups = d_m, d_o, N, m_w, g_max
    self.mode, self.dropout, self.shuffle = mode, p, shuffle
    local function layer(nin, nout, g, nmix)
        return GroupLinear{in_features = nin, out_features = nout, groups = g, mix_features = nmix,
                           shuffle = shuffle, norm = true, activation = 'swish', dropout = p}
    end
    local function check_groups(layers, mixed, what)
        for l, e in ipairs(layers) do
            for _, v in ipairs{{'its input', l == 1 and e['in'] or e['in'] - mixed},
                               {'its output', e.out}, {what, l == 1 and 0 or mixed}} do
                if v[2] % e.groups ~= 0 then
                    raise(string.format('%s: GLT layer %d has %d groups, which do not divide %s (%d); '
                                        .. 'choose d_m, d_o or max_groups to fit', op, l, e.groups, v[1], v[2]))
                end
            end
        end
    end
    if mode == 'code' then
        local d_p = need_int(opts.d_p or d_o, 'd_p', op)
        self.d_p = d_p
        self.layers = M.dextra_config(d_p, d_o, d_m * m_w, N, g_max)
        check_groups(self.layers, d_p, 'the projected input d_p')
        self.input_layer = layer(d_m, d_p, 1, 0)
    else
        if opts.d_p then raise(op .. ": d_p has no meaning in mode 'paper'") end
        self.layers = M.paper_config(d_m, d_o, d_m * m_w, N, g_max)
        check_groups(self.layers, d_m, 'the input d_m')
    end
    local mixed = mode == 'code' and self.d_p or d_m
    self.dextra_layers = nn().ModuleList()
    for l, e in ipairs(self.layers) do
        local nmix = l == 1 and 0 or mixed
        self.dextra_layers:append(layer(e['in'] - nmix, e.out, e.groups, nmix))
    end
    if mode == 'code' then self.output_layer = layer(d_o, d_o, 1, self.d_p) end
end

function DExTra:extra_repr()
    local parts = {}
    for _, e in ipairs(self.layers) do parts[#parts + 1] = string.format('%d->%d g%d', e['in'], e.out, e.groups) end
    return string.format('%d -> %d, depth=%d, width_mult=%g, max_groups=%d, %s mode: %s', self.d_m,
                         self.d_o, self.depth, self.width_mult, self.max_groups, self.mode,
                         table.concat(parts, ', '))
end

-- The widest layer output.
function DExTra:max_width()
    local w = 0
    for _, e in ipairs(self.layers) do w = math.max(w, e.out) end
    return w
end

function DExTra:forward(x)
    if not xt.is_tensor(x) or x:dim() < 1 or x:size(-1) ~= self.d_m then
        raise(string.format('DExTra: expected x of shape [..., %d], got %s', self.d_m,
                            xt.is_tensor(x) and tostring(x.shape) or type(x)))
    end
    local layers = self.dextra_layers:children()
    local mixed = self.input_layer and self.input_layer(x) or x
    local z = layers[1](mixed)
    for l = 2, #layers do z = layers[l](z, mixed) end
    if self.output_layer then z = self.output_layer(z, mixed) end
    return z
end

---------------------------------------------------------------------------------------------
-- Attention inside the block, found by name in xt.nn when the block is built, so modules
-- that other files add are picked up without a change here. Each maps [B,T,d_o] -> [B,T,d_o];
-- the block's own out_proj then maps d_o -> d_m.
local ATTENTION = {
    softmax = {class = 'MultiheadAttention', options = function(c)
        return {dim = c.d_o, heads = 1, causal = c.causal, dropout = c.attention_dropout}
    end},
    aft_full = {class = 'AFTFull', options = function(c)
        return {dim = c.d_o, seq_len = c.seq_len, causal = c.causal}
    end},
    aft_simple = {class = 'AFTSimple', options = function(c)
        return {dim = c.d_o, causal = c.causal}
    end},
    aft_local = {class = 'AFTLocal', options = function(c)
        return {dim = c.d_o, seq_len = c.seq_len, window = c.window, causal = c.causal}
    end},
}
M.attention_kinds = ATTENTION

local function build_attention(cfg, op)
    local spec = cfg.attention or 'softmax'
    if type(spec) == 'function' then
        local m = spec(cfg)
        if not Module.is_module(m) then raise(op .. ': the attention function must return a module') end
        return m
    end
    local entry = ATTENTION[spec]
    if not entry then
        local names = {}
        for name in pairs(ATTENTION) do names[#names + 1] = name end
        table.sort(names)
        raise(string.format("%s: unknown attention '%s' (known: %s, or a function(cfg) returning a module)",
                            op, tostring(spec), table.concat(names, ', ')))
    end
    local cls = nn()[entry.class]
    if not cls then
        raise(string.format("%s: attention '%s' needs nn.%s, which is not available", op, spec, entry.class))
    end
    local o = entry.options(cfg)
    for k, v in pairs(cfg.attention_opts or {}) do o[k] = v end
    local m = cls(o)
    if spec == 'softmax' then
        -- DeLighT's single head projects q, k, v at width d_o and has one output projection,
        -- d_o -> d_m: the block's out_proj. The module's own d_o -> d_o projection would be
        -- a second linear map in a row, so it is the identity here (parameter counts then
        -- equal the official ones, notes § 3).
        m.out_proj = nn().Identity()
    end
    return m
end

-- The block's linear layers, as the official code makes them (its Linear: xavier-uniform
-- weight, zero bias): a GroupLinear with one group, whose weight [out, in] and bias [out]
-- are nn.Linear's, run by the fused kernel (an activation fused in when given).
local function linear(nin, nout, activation)
    return GroupLinear{in_features = nin, out_features = nout, activation = activation}
end

---------------------------------------------------------------------------------------------
-- nn.DeLighTBlock{d_m=, depth=, width_mult=, d_o=d_m/2, max_groups=, ffn_reduction=4,
--                 norm='post', attention='softmax', attention_opts=, causal=false, seq_len=,
--                 window=, dropout=0, attention_dropout=0, dextra_dropout=0, shuffle=true,
--                 dextra_mode='code', cross_attention=false}
--
-- The DeLighT block (notes § 4.1), on [B,T,d_m] (or [T,d_m]):
--   r = x;  (pre) x = LN(x)
--   x = r + Drop(out_proj(attention(DExTra(x))))     DExTra d_m -> d_o, attention at width d_o
--   (post) x = LN(x)
--   [cross_attention: the decoder's sublayer on memory [B,S,d_m], § 4.2: no DExTra,
--    q = Linear(d_m -> d_o), [k|v] = Linear(d_m -> 2 d_o), one head, out d_o -> d_m]
--   r = x;  (pre) x = LN(x)
--   x = r + Drop(fc2(swish(fc1(x))))                 light FFN d_m -> d_m/r -> d_m
--   (post) x = LN(x)
-- attention: 'softmax' (nn.MultiheadAttention with one head: the official single-head
-- attention), 'aft_full', 'aft_simple', 'aft_local' (the AFT modules; seq_len and window
-- as they need them), or a function(cfg) returning any module [B,T,d_o] -> [B,T,d_o].
-- attention_opts are merged into the module's options.
local DeLighTBlock = class('DeLighTBlock', Module)
M.DeLighTBlock = DeLighTBlock

local BLOCK_OPTIONS = set_of{'d_m', 'd_o', 'depth', 'width_mult', 'max_groups', 'ffn_reduction',
                             'norm', 'attention', 'attention_opts', 'causal', 'seq_len', 'window',
                             'dropout', 'attention_dropout', 'dextra_dropout', 'shuffle',
                             'dextra_mode', 'cross_attention'}

function DeLighTBlock:__init(opts)
    Module.__init(self)
    local op = 'DeLighTBlock'
    if type(opts) ~= 'table' then raise(op .. ': expected an options table {d_m=, depth=, width_mult=, ...}') end
    check_options(opts, BLOCK_OPTIONS, op)
    local d_m = need_int(opts.d_m, 'd_m', op)
    local d_o = need_int(opts.d_o or d_m / 2, 'd_o', op)
    local r = need_int(opts.ffn_reduction or 4, 'ffn_reduction', op)
    if d_m % r ~= 0 then raise(string.format('%s: ffn_reduction (%d) must divide d_m (%d)', op, r, d_m)) end
    local norm = opts.norm or 'post'
    if norm ~= 'post' and norm ~= 'pre' then raise(op .. ": norm must be 'post' or 'pre', got " .. tostring(norm)) end
    self.d_m, self.d_o, self.norm, self.causal = d_m, d_o, norm, opts.causal == true
    self.dropout = need_prob(opts.dropout, 'dropout', op)
    local cfg = {d_m = d_m, d_o = d_o, causal = self.causal, seq_len = opts.seq_len, window = opts.window,
                 attention = opts.attention, attention_opts = opts.attention_opts,
                 attention_dropout = need_prob(opts.attention_dropout, 'attention_dropout', op)}
    self.attention_kind = type(cfg.attention) == 'string' and cfg.attention or
                          (cfg.attention and 'custom' or 'softmax')
    self.attention_dropout = cfg.attention_dropout
    local LayerNorm = nn().LayerNorm
    self.dextra = DExTra{d_m = d_m, d_o = d_o, depth = opts.depth, width_mult = opts.width_mult,
                         max_groups = opts.max_groups, dropout = opts.dextra_dropout,
                         shuffle = opts.shuffle, mode = opts.dextra_mode}
    self.attn = build_attention(cfg, op)
    self.out_proj = linear(d_o, d_m)
    self.attn_norm = LayerNorm(d_m)
    if opts.cross_attention then
        self.cross_q = linear(d_m, d_o)
        self.cross_kv = linear(d_m, 2 * d_o)
        self.cross_out_proj = linear(d_o, d_m)
        self.cross_norm = LayerNorm(d_m)
    end
    self.fc1 = linear(d_m, d_m / r, 'swish')
    self.fc2 = linear(d_m / r, d_m)
    self.ffn_norm = LayerNorm(d_m)
end

function DeLighTBlock:extra_repr()
    return string.format('d_m=%d, d_o=%d, %s-norm, attention=%s%s', self.d_m, self.d_o, self.norm,
                         self.attention_kind, self.causal and ', causal' or '')
end

-- x + Drop(f(norm_pre(x))), then norm_post
function DeLighTBlock:residual(x, norm, f)
    local y = f(self.norm == 'pre' and norm(x) or x)
    if self.dropout > 0 and self.training then y = F().dropout(y, self.dropout, true) end
    y = x + y
    return self.norm == 'post' and norm(y) or y
end

-- one head over [B,T,d] tensors: [B,1,T,d] views for the fused kernel
local function single_head(q, k, v, p)
    local out = F().scaled_dot_product_attention(q:unsqueeze(-3), k:unsqueeze(-3), v:unsqueeze(-3),
                                                 {dropout_p = p})
    return out:squeeze(-3)
end

function DeLighTBlock:forward(x, memory)
    local op = 'DeLighTBlock'
    if not xt.is_tensor(x) or (x:dim() ~= 2 and x:dim() ~= 3) or x:size(-1) ~= self.d_m then
        raise(string.format('%s: expected x of shape [B,T,%d] (or [T,%d]), got %s', op, self.d_m, self.d_m,
                            xt.is_tensor(x) and tostring(x.shape) or type(x)))
    end
    if (memory ~= nil) ~= (self.cross_q ~= nil) then
        raise(op .. (self.cross_q and ': this block has cross-attention: call it as m(x, memory)'
                                  or ': this block has no cross-attention (cross_attention = true), so no memory'))
    end
    x = self:residual(x, self.attn_norm, function(h)
        return self.out_proj(self.attn(self.dextra(h)))
    end)
    if memory ~= nil then
        if not xt.is_tensor(memory) or memory:dim() ~= x:dim() or memory:size(-1) ~= self.d_m or
           (x:dim() == 3 and memory:size(1) ~= x:size(1)) then
            raise(string.format('%s: memory must be [B,S,%d] with x\'s batch size, got %s', op, self.d_m,
                                xt.is_tensor(memory) and tostring(memory.shape) or type(memory)))
        end
        x = self:residual(x, self.cross_norm, function(h)
            local kv = self.cross_kv(memory)
            local k, v = kv:narrow(-1, 1, self.d_o), kv:narrow(-1, self.d_o + 1, self.d_o)
            local p = self.training and self.attention_dropout or 0
            return self.cross_out_proj(single_head(self.cross_q(h), k, v, p))
        end)
    end
    return self:residual(x, self.ffn_norm, function(h) return self.fc2(self.fc1(h)) end)
end

-- Incremental decoding: x [B,t,d_m] (or [B,d_m]), the next t positions, and a cache table
-- ({} at the start) that the attention keeps its past in; the output equals forward's at
-- those positions. DExTra and the FFN act per position, so only the attention needs the
-- past. Needs a causal block whose attention has a step (softmax, the AFT family, linear,
-- performer).
function DeLighTBlock:step(x, cache)
    local op = 'DeLighTBlock:step'
    if not self.causal then raise(op .. ': incremental decoding needs a causal block (causal = true)') end
    if self.cross_q then raise(op .. ': a block with cross-attention has no incremental decoding') end
    if type(self.attn.step) ~= 'function' then
        raise(string.format('%s: the attention (%s) has no step function', op, self.attention_kind))
    end
    if type(cache) ~= 'table' then raise(op .. ': expected a cache table ({} at the start)') end
    if not xt.is_tensor(x) or (x:dim() ~= 2 and x:dim() ~= 3) or x:size(-1) ~= self.d_m then
        raise(string.format('%s: expected x of shape [B,t,%d] or [B,%d], got %s', op, self.d_m, self.d_m,
                            xt.is_tensor(x) and tostring(x.shape) or type(x)))
    end
    x = self:residual(x, self.attn_norm, function(h)
        return self.out_proj(self.attn:step(self.dextra(h), cache))
    end)
    return self:residual(x, self.ffn_norm, function(h) return self.fc2(self.fc1(h)) end)
end

---------------------------------------------------------------------------------------------
-- nn.DeLighT{blocks=, d_m=, min_depth=4, max_depth=8, width_mult=2, scaling='block',
--            final_norm=false, verbose=true, <any DeLighTBlock option>}
--
-- A stack of DeLighT blocks with block-wise scaling (notes § 5): block b (0-based) of B has
--   depth N^b = trunc(N_min + (N_max - N_min) b / (B - 1))
--   width  m_w^b = round(m_w + (N_max / N_min - 1) b / (B - 1), 3)
-- (scaling = 'uniform': every block (N_min, m_w)). Built, it prints each block's depth, width
-- multiplier, widest DExTra layer and parameter count (verbose = false: quiet; the same table
-- is m:scaling_table()). forward(x [B,T,d_m] [, memory]) -> [B,T,d_m].
local DeLighT = class('DeLighT', Module)
M.DeLighT = DeLighT

-- {{depth=, width_mult=}, ...} for B blocks, as the official encoder and decoder build them
function M.block_scaling(B, N_min, N_max, m_w, uniform)
    local out = {}
    for b = 0, B - 1 do
        if uniform or N_min == N_max or B == 1 then
            out[#out + 1] = {depth = N_min, width_mult = m_w}
        else
            local depth = math.floor(N_min + (N_max - N_min) * b / (B - 1))
            local mw = tonumber(string.format('%.3f', m_w + (N_max / N_min - 1) * b / (B - 1)))
            out[#out + 1] = {depth = depth, width_mult = mw}
        end
    end
    return out
end

local STACK_OPTIONS = set_of{'blocks', 'min_depth', 'max_depth', 'scaling', 'final_norm', 'verbose'}

function DeLighT:__init(opts)
    Module.__init(self)
    local op = 'DeLighT'
    if type(opts) ~= 'table' then raise(op .. ': expected an options table {blocks=, d_m=, min_depth=, max_depth=, width_mult=}') end
    local known, block_opts = {}, {}
    for k in pairs(STACK_OPTIONS) do known[k] = true end
    for k in pairs(BLOCK_OPTIONS) do if k ~= 'depth' then known[k] = true end end
    check_options(opts, known, op)
    for k, v in pairs(opts) do
        if not STACK_OPTIONS[k] then block_opts[k] = v end
    end
    local N_min = need_int(opts.min_depth or 4, 'min_depth', op, 2)
    local N_max = need_int(opts.max_depth or 8, 'max_depth', op, 2)
    if N_max < N_min then raise(string.format('%s: max_depth (%d) < min_depth (%d)', op, N_max, N_min)) end
    local B = need_int(opts.blocks or N_max, 'blocks', op)
    local scaling = opts.scaling or 'block'
    if scaling ~= 'block' and scaling ~= 'uniform' then
        raise(op .. ": scaling must be 'block' or 'uniform', got " .. tostring(scaling))
    end
    local m_w = opts.width_mult or 2
    self.d_m, self.min_depth, self.max_depth, self.width_mult, self.scaling = opts.d_m, N_min, N_max, m_w, scaling
    self.plan = M.block_scaling(B, N_min, N_max, m_w, scaling == 'uniform')
    self.blocks = nn().ModuleList()
    for _, s in ipairs(self.plan) do
        local o = {}
        for k, v in pairs(block_opts) do o[k] = v end
        o.depth, o.width_mult = s.depth, s.width_mult
        self.blocks:append(DeLighTBlock(o))
    end
    if opts.final_norm then self.final_norm = nn().LayerNorm(opts.d_m) end
    if opts.verbose ~= false then print(self:scaling_table()) end
end

function DeLighT:extra_repr()
    return string.format('%d blocks, d_m=%d, depth %d..%d, width_mult=%g, %s scaling', #self.plan, self.d_m,
                         self.min_depth, self.max_depth, self.width_mult, self.scaling)
end

function DeLighT:scaling_table()
    local lines = {string.format('DeLighT: %d blocks, d_m=%d, %s-wise scaling', #self.plan, self.d_m, self.scaling),
                   string.format('%5s %6s %10s %9s %12s', 'block', 'depth', 'width_mult', 'max width', 'params')}
    local total = 0
    for b, blk in ipairs(self.blocks:children()) do
        local n = blk:num_parameters()
        total = total + n
        lines[#lines + 1] = string.format('%5d %6d %10.3f %9d %12d', b, self.plan[b].depth,
                                          self.plan[b].width_mult, blk.dextra:max_width(), n)
    end
    lines[#lines + 1] = string.format('%5s %6s %10s %9s %12d', 'total', '', '', '', self:num_parameters())
    return table.concat(lines, '\n')
end

function DeLighT:forward(x, memory)
    for _, blk in ipairs(self.blocks:children()) do x = blk(x, memory) end
    if self.final_norm then x = self.final_norm(x) end
    return x
end

return M
