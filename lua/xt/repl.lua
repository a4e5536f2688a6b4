-- xt.repl: the Lua half of xlua's REPL. The loop in core/xlua/repl.c reads lines and
-- calls these functions through the Lua stack:
--   compile(source)      -> fn | nil, message, incomplete   (expressions first, so `x + 1` prints)
--   show(...)            prints the results of a line
--   complete(word)       -> sorted list of completions of a word such as `xt.nn.Lin` or `t:si`
--   install_globals(G)   makes xt, nn, F, optim globals that load on first use
-- Nothing here needs libxt, so the REPL starts even when the xt package cannot load.
local repl = {}

local KEYWORDS = {'and', 'break', 'do', 'else', 'elseif', 'end', 'false', 'for', 'function',
                  'goto', 'if', 'in', 'local', 'nil', 'not', 'or', 'repeat', 'return', 'then',
                  'true', 'until', 'while'}
local IS_KEYWORD = {}
for _, k in ipairs(KEYWORDS) do IS_KEYWORD[k] = true end

local function is_identifier(s)
    return type(s) == 'string' and s:match('^[%a_][%w_]*$') ~= nil and not IS_KEYWORD[s]
end

---------------------------------------------------------------------------------------------
-- globals loaded on first use

-- name -> how to get it; each is looked up once, when the name is first read.
local LAZY = {
    xt = function() return require 'xt' end,
    nn = function() return require('xt').nn end,
    F = function() return require('xt').nn.functional end,
    optim = function() return require('xt').optim end,
}
local LAZY_SOURCE = {xt = "require 'xt'", nn = 'xt.nn', F = 'xt.nn.functional', optim = 'xt.optim'}

-- Reading an unset global xt/nn/F/optim loads it and stores it as an ordinary global.
-- Any other unset global reads as nil as usual. A load failure is an error at the read.
function repl.install_globals(G)
    G = G or _G
    if getmetatable(G) ~= nil then return end   -- someone else manages the globals
    setmetatable(G, {__index = function(t, name)
        local load = LAZY[name]
        if load == nil then return nil end
        local ok, value = pcall(load)
        if not ok or value == nil then
            error(string.format("global '%s' (%s) could not be loaded: %s", name,
                                LAZY_SOURCE[name], ok and 'it does not exist' or tostring(value)), 2)
        end
        rawset(t, name, value)
        return value
    end})
end

---------------------------------------------------------------------------------------------
-- compiling a chunk

-- An unfinished chunk fails to compile with an error at the end of the input. A quoted
-- string cannot continue on the next line, so an unfinished one is a plain error.
local function at_eof(message)
    return message:sub(-7) == "'<eof>'" and not message:find(': unfinished string', 1, true)
end

-- Code typed at the prompt (and the functions it defines) runs in LuaJIT's interpreter:
-- machine code compiled from a loop never runs debug hooks, so Ctrl-C could not stop it.
-- The heavy work happens in libxt's kernels and in modules loaded from files, which the
-- JIT compiles as usual.
local function interpreted(fn)
    if jit then jit.off(fn, true) end
    return fn
end

function repl.compile(source)
    source = source:gsub('^%s*=', '', 1)   -- Lua 5.1's `=expr` still works
    -- Not `return <expr>`: a call there would be a tail call, and an error raised in it
    -- would lose its position (stdin:1:) and the main chunk's line in the traceback. The
    -- newline keeps a trailing comment from swallowing the parenthesis.
    local fn = loadstring('return select(1, ' .. source .. '\n)', '=stdin')
    if fn then return interpreted(fn) end
    local message
    fn, message = loadstring(source, '=stdin')
    if fn then return interpreted(fn) end
    return nil, message, at_eof(message)
end

---------------------------------------------------------------------------------------------
-- printing results

local MAX_ITEMS = 20   -- entries of a table shown before "..."
local MAX_DEPTH = 2    -- nested tables deeper than this show as {...}

local function quote(s)
    return (string.format('%q', s):gsub('\\\n', '\\n'))
end

local function has_tostring(v)
    local mt = getmetatable(v)
    return type(mt) == 'table' and rawget(mt, '__tostring') ~= nil
end

local function key_order(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return ta < tb end
    if ta == 'number' or ta == 'string' then return a < b end
    return tostring(a) < tostring(b)
end

local repr

local function table_repr(t, depth, seen)
    if seen[t] then return '<cycle>' end
    if depth > MAX_DEPTH then return '{...}' end
    seen[t] = true
    local items, shown, total = {}, 0, 0
    local n = 0
    while rawget(t, n + 1) ~= nil do n = n + 1 end
    local keys = {}
    for k in next, t do
        total = total + 1
        if not (type(k) == 'number' and k >= 1 and k <= n and k % 1 == 0) then
            keys[#keys + 1] = k
        end
    end
    table.sort(keys, key_order)
    for i = 1, n do
        if shown == MAX_ITEMS then break end
        items[#items + 1] = repr(rawget(t, i), depth + 1, seen)
        shown = shown + 1
    end
    for _, k in ipairs(keys) do
        if shown == MAX_ITEMS then break end
        local key = is_identifier(k) and k or '[' .. repr(k, MAX_DEPTH + 1, seen) .. ']'
        items[#items + 1] = key .. ' = ' .. repr(rawget(t, k), depth + 1, seen)
        shown = shown + 1
    end
    if total > shown then items[#items + 1] = string.format('... (%d entries)', total) end
    seen[t] = nil
    return '{' .. table.concat(items, ', ') .. '}'
end

function repr(v, depth, seen)
    if type(v) == 'string' then return quote(v) end
    if type(v) == 'table' and not has_tostring(v) then return table_repr(v, depth, seen) end
    return tostring(v)
end

-- How the REPL shows one value: strings as they are, tables by their contents (a few
-- levels deep), everything else (tensors, modules, ...) through tostring / __tostring.
function repl.format(v)
    if type(v) == 'string' then return v end
    return repr(v, 1, {})
end

function repl.show(...)
    local parts, multiline = {}, false
    for i = 1, select('#', ...) do
        parts[i] = repl.format((select(i, ...)))
        multiline = multiline or parts[i]:find('\n', 1, true) ~= nil
    end
    io.stdout:write(table.concat(parts, multiline and '\n' or '\t'), '\n')
    io.stdout:flush()
end

---------------------------------------------------------------------------------------------
-- completion

local function is_callable(x)
    if type(x) == 'function' then return true end
    local mt = getmetatable(x)
    return type(mt) == 'table' and rawget(mt, '__call') ~= nil
end

-- The names `v.` offers (or `v:` with methods_only): its own string keys, then what its
-- metatable's __index serves: an __index table (followed up a class chain), or for an
-- __index function the tables the metatable publishes as `methods` and `properties`
-- (xt.Tensor does this).
local function collect(v, methods_only, names, seen)
    if type(v) == 'table' then
        if seen[v] then return end
        seen[v] = true
        for k, x in next, v do
            if is_identifier(k) and (not methods_only or is_callable(x)) then
                names[k] = true
            end
        end
    end
    local ok, mt = pcall(getmetatable, v)
    if not ok or type(mt) ~= 'table' then return end
    local index = rawget(mt, '__index')
    if type(index) == 'table' then
        collect(index, methods_only, names, seen)
    elseif type(index) == 'function' then
        for _, field in ipairs{'methods', 'properties'} do
            local published = rawget(mt, field)
            if type(published) == 'table' and not (methods_only and field == 'properties') then
                for k in next, published do
                    if is_identifier(k) then names[k] = true end
                end
            end
        end
    end
end

-- The value of a dotted path like `xt.nn`, or nil. Indexing may run __index code (a
-- lazy module loads), so each step is protected.
local function resolve(path)
    local v = _G
    for part in (path .. '.'):gmatch('([^.]*)%.') do
        if not is_identifier(part) then return nil end
        local ok, x = pcall(function() return v[part] end)
        if not ok or x == nil then return nil end
        v = x
    end
    return v
end

-- Names starting with _ (private) or __ (metamethods) only when the prefix asks for them.
local function sorted_matches(names, prefix, decorate)
    local hidden = prefix:sub(1, 2) == '__' and '' or prefix:sub(1, 1) == '_' and '__' or '_'
    local out = {}
    for name in pairs(names) do
        if name:sub(1, #prefix) == prefix and (hidden == '' or name:sub(1, #hidden) ~= hidden) then
            out[#out + 1] = decorate .. name
        end
    end
    table.sort(out)
    return out
end

function repl.complete(word)
    local base, sep, partial = word:match('^(.-)([.:])([%w_]*)$')
    if base == nil then
        if not word:match('^[%w_]*$') then return {} end
        local names = {}
        collect(_G, false, names, {})
        for name in pairs(LAZY) do names[name] = true end
        for _, k in ipairs(KEYWORDS) do names[k] = true end
        return sorted_matches(names, word, '')
    end
    if base == '' or base:find(':', 1, true) then return {} end
    local v = resolve(base)
    if v == nil then return {} end
    local names = {}
    collect(v, sep == ':', names, {})
    return sorted_matches(names, partial, base .. sep)
end

return repl
