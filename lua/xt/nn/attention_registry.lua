-- xt.nn.attention_registry: every attention of xt by name, so that a model, an experiment or a
-- block that "takes an attention" takes a name (a command-line flag) and builds the module
-- with the options it has.
--
--   nn.attention_by_name(name, opts) -> a module mapping x [B,T,dim] -> [B,T,dim]
--   nn.attention_names()             -> the names that build now, sorted
--   nn.register_attention(name, spec) adds (or replaces) an entry
--
-- opts is one table of whatever the caller knows (dim, heads, causal, seq_len, window, ...);
-- each attention takes the options it understands and ignores the rest, so one table serves
-- every name. An option no attention understands is an error (a typo, most likely). Asking
-- for causal attention from one that cannot be causal is an error, not a silent non-causal
-- module.
--
-- An entry (spec): class = the nn class name, looked up in xt.nn when the module is built (so
-- modules other files add, e.g. the AFT family, are found); options = the option names it
-- takes; causal = false when it cannot be causal; or build = function(opts) -> module instead
-- of class. planned = a message for names that are reserved but not built yet.
local M = {}

local function nn() return require 'xt.nn' end

local registry = {}

function M.register_attention(name, spec)
    if type(name) ~= 'string' or name == '' then error('register_attention: name must be a non-empty string', 2) end
    if type(spec) ~= 'table' or not (spec.class or spec.build or spec.planned) then
        error("register_attention: spec must be a table with class=, build= or planned=", 2)
    end
    if (spec.class or spec.build) and type(spec.options) ~= 'table' then
        error("register_attention: spec.options must list the option names the attention takes", 2)
    end
    registry[name] = spec
end
local register = M.register_attention

-- softmax attention, tiled (xt.nn.attention)
register('softmax', {class = 'MultiheadAttention', options = {'dim', 'heads', 'causal', 'bias', 'dropout'}})
-- the Attention Free Transformer family (xt.nn.aft)
register('aft_full', {class = 'AFTFull', options = {'dim', 'seq_len', 'causal', 'hidden_dim', 'rank'}})
register('aft_local', {class = 'AFTLocal', options = {'dim', 'seq_len', 'window', 'causal', 'hidden_dim', 'rank'}})
register('aft_simple', {class = 'AFTSimple', options = {'dim', 'causal', 'hidden_dim'}})
-- kernel and low-rank attention (xt.nn.efficient_attention)
register('linear', {class = 'LinearAttention', options = {'dim', 'heads', 'causal', 'bias', 'chunk', 'eps'}})
register('performer', {class = 'Performer', options = {'dim', 'heads', 'causal', 'features', 'redraw',
                                                       'scaling', 'bias', 'chunk', 'eps'}})
register('linformer', {class = 'Linformer', causal = false,
                       options = {'dim', 'heads', 'seq_len', 'k', 'share', 'projection', 'bias'}})
-- rows then columns of an image: a sequence of image_size[1] * image_size[2] positions
register('axial', {class = 'AxialAttention', causal = false, options = {'dim', 'heads', 'image_size', 'bias'}})

-- block-sparse attention on the tiled softmax kernel (xt.nn.sparse_attention)
register('local', {class = 'LocalAttention', options = {'dim', 'heads', 'window', 'causal', 'bias'}})
local function sparse(pattern)
    return {options = {'dim', 'heads', 'stride', 'summary', 'causal', 'bias'}, build = function(o)
        o.pattern = pattern
        return nn().SparseAttention(o)
    end}
end
register('sparse_strided', sparse('strided'))
register('sparse_fixed', sparse('fixed'))
register('longformer', {options = {'dim', 'heads', 'window', 'global', 'causal', 'bias'}, build = function(o)
    o.global = o.global or {1}
    o.global_projections = true
    return nn().GlobalLocalAttention(o)
end})
register('bigbird', {options = {'dim', 'heads', 'window', 'global', 'random_blocks', 'block', 'causal', 'bias'},
                     build = function(o)
    o.global = o.global or {1}
    o.random_blocks, o.block = o.random_blocks or 3, o.block or 64
    return nn().GlobalLocalAttention(o)
end})

-- Option names some attention understands (typos are caught against this).
local function known_options()
    local known = {}
    for _, spec in pairs(registry) do
        for _, o in ipairs(spec.options or {}) do known[o] = true end
    end
    return known
end

local function sorted_names(filter)
    local names = {}
    for name, spec in pairs(registry) do
        if filter(spec) then names[#names + 1] = name end
    end
    table.sort(names)
    return names
end

function M.attention_names()
    return sorted_names(function(spec)
        return spec.build ~= nil or (spec.class ~= nil and nn()[spec.class] ~= nil)
    end)
end

function M.attention_by_name(name, opts)
    local op = 'attention_by_name'
    opts = opts or {}
    if type(opts) ~= 'table' then error(op .. ': expected an options table, got ' .. type(opts), 2) end
    local spec = registry[name]
    if not spec then
        local known = sorted_names(function(s) return not s.planned end)
        local planned = sorted_names(function(s) return s.planned ~= nil end)
        local later = #planned > 0 and ('; planned: ' .. table.concat(planned, ', ')) or ''
        error(string.format("%s: unknown attention '%s' (known: %s%s)", op, tostring(name),
                            table.concat(known, ', '), later), 2)
    end
    if spec.planned then
        error(string.format("%s: attention '%s' is planned (%s)", op, name, spec.planned), 2)
    end
    local known = known_options()
    local unknown = {}
    for key in pairs(opts) do
        if not known[key] then unknown[#unknown + 1] = tostring(key) end
    end
    if #unknown > 0 then
        table.sort(unknown)
        error(string.format("%s: unknown option%s %s for attention '%s'", op, #unknown > 1 and 's' or '',
                            table.concat(unknown, ', '), name), 2)
    end
    if opts.causal and spec.causal == false then
        error(string.format("%s: attention '%s' cannot be causal", op, name), 2)
    end
    local taken = {}
    for _, o in ipairs(spec.options) do taken[o] = opts[o] end
    if spec.build then return spec.build(taken) end
    local cls = nn()[spec.class]
    if not cls then
        error(string.format("%s: attention '%s' needs nn.%s, which is not available", op, name, spec.class), 2)
    end
    return cls(taken)
end

return {modules = {attention_by_name = M.attention_by_name, attention_names = M.attention_names,
                   register_attention = M.register_attention}}
