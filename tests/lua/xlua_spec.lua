-- xlua_spec: the xlua executable driven as a user would (through the shell, stdin piped),
-- and the REPL's Lua half (xt.repl: compile, format, complete) tested directly.
local ffi = require 'ffi'
local repl = require 'xt.repl'

ffi.cdef [[ intptr_t readlink(const char *path, char *buf, size_t size); ]]

-- The xlua running this spec (busted runs under it), so the sanitizer build tests itself.
local XLUA = (function()
    local buf = ffi.new('char[4096]')
    local n = ffi.C.readlink('/proc/self/exe', buf, 4096)
    assert(n > 0, 'cannot read /proc/self/exe')
    return ffi.string(buf, n)
end)()

local dir = os.tmpname()
os.remove(dir)
os.execute('mkdir -p ' .. dir)

local function quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function write(path, text)
    local f = assert(io.open(path, 'wb'))
    f:write(text)
    f:close()
    return path
end

local function read(path)
    local f = io.open(path, 'rb')
    if not f then return '' end
    local s = f:read('*a')
    f:close()
    return s
end

-- Run xlua with a shell-quoted argument string; stdin is `input` (or empty); the command
-- runs in `dir` unless opts.cwd. Returns {out=, err=, rc=}.
local function xlua(args, input, opts)
    opts = opts or {}
    local stdin = write(dir .. '/stdin', input or '')
    local out, err, rc = dir .. '/stdout', dir .. '/stderr', dir .. '/rc'
    local cmd = string.format('cd %s && %s %s %s <%s >%s 2>%s; echo $? >%s', quote(opts.cwd or dir),
                              opts.env or '', quote(opts.exe or XLUA), args, stdin, out, err, rc)
    os.execute(cmd)
    return {out = read(out), err = read(err), rc = tonumber(read(rc))}
end

local function script(name, text) return write(dir .. '/' .. name, text) end

-- A chunk that sends SIGINT to this xlua process (as Ctrl-C does) and waits for the kill
-- to finish. io.popen, not os.execute: system() ignores SIGINT in the parent while it waits.
local SELF_INTERRUPT = [[io.popen('kill -INT ' .. io.open('/proc/self/stat'):read('*n')):close()]]

describe('xlua scripts', function()
    it('passes script arguments in arg (arg[0] the script, negative the interpreter) and ...', function()
        local path = script('args.lua', [[
print(select('#', ...), ...)
print(arg[0], arg[1], arg[2], #arg)
print(arg[-1], arg[-2], arg[-3])
]])
        local r = xlua('-e "x=1" ' .. quote(path) .. ' a "b c"')
        assert.are.equal(0, r.rc)
        assert.are.equal('', r.err)
        local lines = {}
        for l in r.out:gmatch('[^\n]+') do lines[#lines + 1] = l end
        assert.are.equal('2\ta\tb c', lines[1])
        assert.are.equal(path .. '\ta\tb c\t2', lines[2])
        assert.are.equal('x=1\t-e\t' .. XLUA, lines[3])
    end)

    it('skips a shebang line', function()
        local path = script('shebang.lua', '#!/usr/bin/env xlua\nprint("ran", 1 + 1)\n')
        local r = xlua(quote(path))
        assert.are.equal(0, r.rc)
        assert.are.equal('ran\t2\n', r.out)
    end)

    it('runs -e and -l in order, before the script', function()
        local r = xlua([[-e "a = 1" -l string -l S=string -e "print(a, string == S, S.rep('x', 3))"]])
        assert.are.equal(0, r.rc)
        assert.are.equal('1\ttrue\txxx\n', r.out)
        r = xlua([[-e"print('attached')"]])
        assert.are.equal('attached\n', r.out)
    end)

    it('reports a runtime error as "xlua: message" with a traceback and exit status 1', function()
        local path = script('boom.lua', 'local function f()\n  error("boom")\nend\nf()\nprint("after")\n')
        local r = xlua(quote(path))
        assert.are.equal(1, r.rc)
        assert.are.equal('', r.out)
        assert.truthy(r.err:find('^xlua: ' .. path:gsub('%p', '%%%0') .. ':2: boom\n'))
        assert.truthy(r.err:find('stack traceback:', 1, true))
        assert.truthy(r.err:find("in function 'f'", 1, true))
        assert.truthy(r.err:find('in main chunk', 1, true))
    end)

    it('reports syntax errors, missing files and missing modules with status 1', function()
        local r = xlua('-e "x = = 1"')
        assert.are.equal(1, r.rc)
        assert.truthy(r.err:find('^xlua: %(command line%):1:'))
        r = xlua(quote(dir .. '/no_such_script.lua'))
        assert.are.equal(1, r.rc)
        assert.truthy(r.err:find('^xlua: cannot open .*no_such_script%.lua'))
        r = xlua('-l no_such_module_xyz')
        assert.are.equal(1, r.rc)
        assert.truthy(r.err:find("module 'no_such_module_xyz' not found", 1, true))
        r = xlua('-e "error(1)" -e "print(2)"')   -- stops at the first failing option
        assert.are.equal(1, r.rc)
        assert.are.equal('', r.out)
    end)

    it('shows error objects that are not strings', function()
        local r = xlua([[-e "error({})"]])
        assert.are.equal(1, r.rc)
        assert.truthy(r.err:find('^xlua: %(error object is a table value%)\nstack traceback:'))
        r = xlua([[-e "error(setmetatable({}, {__tostring = function() return 'custom' end}))"]])
        assert.truthy(r.err:find('^xlua: custom\n'))
        r = xlua([[-e "error()"]])   -- nil: silent failure, as lua.c (busted relies on it)
        assert.are.equal(1, r.rc)
        assert.are.equal('', r.err)
    end)

    it('exits with the status given to os.exit', function()
        assert.are.equal(3, xlua('-e "os.exit(3)"').rc)
        assert.are.equal(0, xlua('-e "os.exit(true)"').rc)
        assert.are.equal(1, xlua('-e "os.exit(false)"').rc)
        local r = xlua('-i', 'print("before")\nos.exit(4)\nprint("after")\n')
        assert.are.equal(4, r.rc)
        assert.are.equal('before\n', r.out)
    end)

    it('runs finalizers at os.exit (so tensors are released), unless asked not to', function()
        local finalizable = [[local p = newproxy(true) getmetatable(p).__gc = function() print('finalized') end ]] ..
                            [[_G.p = p ]]
        -- (a live tensor at exit would be reported by the sanitizer build's leak check)
        local r = xlua('-e ' .. quote(finalizable .. 'x = xt.ones(1000) os.exit(3)'))
        assert.are.equal(3, r.rc, r.err)
        assert.are.equal('finalized\n', r.out)
        r = xlua('-e ' .. quote(finalizable .. 'os.exit(0, false)'))
        assert.are.equal(0, r.rc)
        assert.are.equal('', r.out)
    end)

    it('reads the script from stdin for - and when stdin is not a terminal', function()
        local r = xlua('- x y', 'print("stdin", ...)\n')
        assert.are.equal(0, r.rc)
        assert.are.equal('stdin\tx\ty\n', r.out)
        r = xlua('', '#!shebang too\nprint(arg[0], 6 * 7)\nerror("late")\n')
        assert.are.equal(1, r.rc)
        assert.are.equal('nil\t42\n', r.out)
        assert.truthy(r.err:find('^xlua: stdin:3: late'))
    end)

    it('stops handling options at --', function()
        local path = script('dashes.lua', 'print(...)\n')
        local r = xlua('-- ' .. quote(path) .. ' -e -v')
        assert.are.equal(0, r.rc)
        assert.are.equal('-e\t-v\n', r.out)
    end)

    it('prints the version and the help, and rejects unknown options', function()
        local r = xlua('-v')
        assert.are.equal(0, r.rc)
        assert.truthy(r.out:find('^xlua %d+%.%d+%.%d+ %(LuaJIT'))
        r = xlua('-h')
        assert.are.equal(0, r.rc)
        assert.truthy(r.out:find('^usage: xlua %[options%] %[script %[args%]%]'))
        r = xlua('-x')
        assert.are.equal(1, r.rc)
        assert.truthy(r.err:find("^xlua: unrecognized option '%-x'\nusage:"))
        r = xlua('-e')
        assert.are.equal(1, r.rc)
        assert.truthy(r.err:find("^xlua: missing argument to '%-e'"))
    end)

    it('turns Ctrl-C (SIGINT) into the error "interrupted!"', function()
        local r = xlua('-e ' .. quote(SELF_INTERRUPT .. '; for i = 1, 1e10 do end; print("not reached")'))
        assert.are.equal(1, r.rc)
        assert.are.equal('', r.out)
        assert.truthy(r.err:find('interrupted!', 1, true))
    end)

    it('finds the xt package from any directory', function()
        local r = xlua([[-e "print(require('xt.repl') ~= nil, require('ffi').string(require('xt.lib').xt_version()))"]],
                       nil, {cwd = '/'})
        assert.are.equal(0, r.rc, r.err)
        assert.truthy(r.out:find('^true\t%d+%.%d+%.%d+\n$'))
    end)
end)

describe('xlua installed', function()
    -- `cmake --install` of the build this xlua belongs to, into a temporary prefix that is
    -- then moved: the installed tree must not depend on the build tree or on its location.
    local build = XLUA:match('^(.*)/[^/]+$')
    local cache = read(build .. '/CMakeCache.txt')

    it('runs from any directory, and plain luajit can require the package', function()
        assert.truthy(cache:find('CMAKE_PROJECT_NAME:STATIC=xlua', 1, true), 'not a build tree: ' .. build)
        local staged, moved = dir .. '/staged', dir .. '/moved'
        assert.is_true(os.execute(string.format('cmake --install %s --prefix %s >/dev/null && mv %s %s',
                                                quote(build), quote(staged), quote(staged), quote(moved))) == 0)
        local probe = "print(package.searchpath('xt.repl', package.path), " ..
                      "require('ffi').string(require('xt.lib').xt_version()), require('xt.paths').libxt)"
        local r = xlua('-e ' .. quote(probe), nil, {cwd = '/', exe = moved .. '/bin/xlua'})
        assert.are.equal(0, r.rc, r.err)
        local found, version = r.out:match('^(%S+)\t(%S+)\t')
        assert.are.equal(moved .. '/share/lua/5.1/xt/repl.lua', found)
        assert.truthy(version:find('^%d+%.%d+%.%d+$'))
        -- plain luajit loads libxt itself (through the installed xt/paths.lua); an ASan
        -- libxt cannot be loaded into an uninstrumented luajit, so that half needs Release.
        if cache:find('XT_SANITIZE:BOOL=ON', 1, true) then return end
        local lua_path = moved .. '/share/lua/5.1/?.lua;' .. moved .. '/share/lua/5.1/?/init.lua;;'
        local out = dir .. '/luajit_out'
        local status = os.execute(string.format('cd / && LUA_PATH=%s luajit -e %s >%s 2>&1',
                                                quote(lua_path), quote(probe), quote(out)))
        assert.are.equal(0, status, read(out))
        assert.truthy(read(out):find('^' .. (moved .. '/share/lua/5.1/xt/repl.lua\t'):gsub('%p', '%%%0')))
    end)
end)

describe('xlua globals', function()
    it('loads xt, nn, F and optim on first use, not at startup', function()
        local fake = [[package.preload.xt = function() loads = (loads or 0) + 1
            return {nn = {functional = 'F!'}, optim = 'optim!'} end]]
        local r = xlua('-e ' .. quote(fake) .. [[ -e "print(rawget(_G, 'xt'), loads)"]] ..
                       [[ -e "print(F, optim, nn.functional, type(xt), loads, rawget(_G, 'F'))"]])
        assert.are.equal(0, r.rc, r.err)
        assert.are.equal('nil\tnil\nF!\toptim!\tF!\ttable\t1\tF!\n', r.out)
    end)

    it('names the global when it cannot be loaded, and other globals stay nil', function()
        local r = xlua([[-e "package.preload.xt = function() error('no libxt here') end" ]] ..
                       [[-e "print(undefined_name)" -e "print(nn)"]])
        assert.are.equal(1, r.rc)
        assert.are.equal('nil\n', r.out)
        assert.truthy(r.err:find("global 'nn' (xt.nn) could not be loaded", 1, true))
        assert.truthy(r.err:find('no libxt here', 1, true))
    end)
end)

describe('the xlua REPL (stdin piped, with -i)', function()
    it('prints expression values, runs statements, continues multi-line chunks', function()
        local path = script('setup.lua', 'greeting = "hi"\n')
        local input = table.concat({
            'greeting', 'x = 20 + 1', 'x', 'x, "s", nil, {1, 2, a = {b = 3}}',
            'for i = 1, 2 do', '  print("i", i)', 'end', '= x * 2', 'local t = {} -- nothing to show',
            'print("done")', 'x -- a comment'}, '\n') .. '\n'
        local r = xlua('-i ' .. quote(path), input)
        assert.are.equal(0, r.rc)
        assert.are.equal('', r.err)
        assert.are.equal('hi\n21\n21\ts\tnil\t{1, 2, a = {b = 3}}\ni\t1\ni\t2\n42\ndone\n21\n', r.out)
    end)

    it('shows values that print on several lines one per line', function()
        local mt = [[{__tostring = function() return 'line1\nline2' end}]]
        local r = xlua('-i', 'setmetatable({}, ' .. mt .. '), 7\n')
        assert.are.equal('line1\nline2\n7\n', r.out)
    end)

    it('has xt, nn, F and optim at hand and prints tensors through their __tostring', function()
        local xt = require 'xt'
        local input = 'x = xt.ones(2, 3)\nx\nx:sum(), x.shape\nprint(type(nn.Linear), type(F.relu), type(optim.SGD))\n'
        local r = xlua('-i', input)
        assert.are.equal(0, r.rc, r.err)
        local ones = xt.ones(2, 3)
        assert.are.equal(tostring(ones) .. '\n' .. tostring(ones:sum()) .. '\t' .. tostring(ones.shape) ..
                         '\ntable\tfunction\ttable\n', r.out)
    end)

    it('prints an error with its traceback and goes on', function()
        local input = 'local function f() error("bad") end f()\nx = = 1\nerror({})\nprint("still here")\n'
        local r = xlua('-i', input)
        assert.are.equal(0, r.rc)
        assert.are.equal('still here\n', r.out)
        assert.truthy(r.err:find('^stdin:1: bad\nstack traceback:\n'))
        assert.truthy(r.err:find("in function 'f'", 1, true))
        assert.truthy(r.err:find("\nstdin:1: unexpected symbol near '='\n", 1, true))
        assert.truthy(r.err:find('\n(error object is a table value)\nstack traceback:', 1, true))
    end)

    it('reports a chunk left unfinished at the end of input', function()
        local r = xlua('-i', 'if true then\nprint(1)\n')
        assert.are.equal(0, r.rc)
        assert.are.equal('', r.out)
        assert.truthy(r.err:find("^stdin:2: 'end' expected %(to close 'if' at line 1%) near '<eof>'"))
    end)

    it('interrupts a running computation on Ctrl-C and returns to the prompt', function()
        -- SIGINT arrives while the loop runs, long since hot. Typed code runs in the
        -- interpreter, so the hook stops the loop at once; JIT-compiled, the loop would only
        -- see the hook once it had run to its end. (On a busy machine the signal may even
        -- come before the loop starts: `last` is then nil, also an interrupted loop.)
        local line = "io.popen('(sleep 0.2; kill -INT ' .. io.open('/proc/self/stat'):read('*n') .. " ..
                     "') >/dev/null 2>&1 &'):close() for i = 1, 3e9 do last = i end"
        local r = xlua('-i', line .. '\nprint((last or 0) < 3e9)\n')
        assert.are.equal(0, r.rc)
        assert.are.equal('true\n', r.out)
        assert.truthy(r.err:find('interrupted!', 1, true))
    end)
end)

describe('xt.repl.compile', function()
    it('compiles an expression so that it returns its values', function()
        local fn = repl.compile('1 + 1, "a"')
        assert.are.same({2, 'a'}, {fn()})
        fn = repl.compile('=3')
        assert.are.equal(3, fn())
        fn = repl.compile('nil, nil')
        assert.are.equal(2, select('#', fn()))
    end)

    it('compiles statements as they are', function()
        local fn = repl.compile('repl_spec_value = 5')
        assert.are.equal(0, select('#', fn()))
        assert.are.equal(5, repl_spec_value)
        repl_spec_value = nil
    end)

    it('tells an unfinished chunk from a wrong one', function()
        for _, src in ipairs{'for i = 1, 2 do', 'f(', 'x = [[', 'local t = {', 'if x then else'} do
            local fn, msg, incomplete = repl.compile(src)
            assert.is_nil(fn)
            assert.is_true(incomplete, src)
            assert.truthy(msg:find('^stdin:'))
        end
        for _, src in ipairs{'x = = 1', 'end', 'x = "abc', 'local 1 = 2'} do
            local fn, msg, incomplete = repl.compile(src)
            assert.is_nil(fn)
            assert.is_false(incomplete, src)
            assert.truthy(msg:find('^stdin:1:'))
        end
    end)

    it('keeps the error position of a call typed as an expression', function()
        local fn = repl.compile('error("here")')
        local ok, msg = pcall(fn)
        assert.is_false(ok)
        assert.are.equal('stdin:1: here', msg)
    end)
end)

describe('xt.repl.format', function()
    it('shows strings as they are at the top and quoted inside tables', function()
        assert.are.equal('a b', repl.format('a b'))
        assert.are.equal('{"a b", "x\\ny"}', repl.format({'a b', 'x\ny'}))
    end)

    it('shows tables by their contents, array part first, then sorted keys', function()
        assert.are.equal('{}', repl.format({}))
        assert.are.equal('{1, 2, 3}', repl.format({1, 2, 3}))
        assert.are.equal('{10, 20, [5] = "five", a = 1, b = true, ["not id"] = 2}',
                         repl.format({10, 20, b = true, a = 1, ['not id'] = 2, [5] = 'five'}))
        assert.are.equal('{a = {b = {...}}}', repl.format({a = {b = {c = {}}}}))
    end)

    it('elides long tables and survives cycles', function()
        local big = {}
        for i = 1, 50 do big[i] = i end
        local s = repl.format(big)
        assert.truthy(s:find('^{1, 2, 3, .*, 20, %.%.%. %(50 entries%)}$'))
        local t = {}
        t.self = t
        assert.are.equal('{self = <cycle>}', repl.format(t))
    end)

    it('uses __tostring when there is one', function()
        local v = setmetatable({}, {__tostring = function() return 'tensor([1, 2])' end})
        assert.are.equal('tensor([1, 2])', repl.format(v))
        assert.are.equal('{tensor([1, 2])}', repl.format({v}))
        assert.are.equal('nil', repl.format(nil))
        assert.are.equal('3.5', repl.format(3.5))
    end)
end)

describe('xt.repl.complete', function()
    local Base = {}
    Base.__index = Base
    function Base.base_method() end
    local Derived = setmetatable({}, {__index = Base})
    Derived.__index = Derived
    function Derived.derived_method() end
    Derived.not_a_method = 42
    -- a type whose __index is a function publishing its methods and properties (as xt.Tensor)
    local Fancy = {methods = {size = print, view = print}, properties = {shape = print}}
    Fancy.__index = function() error('not reached by completion') end

    before_each(function()
        rawset(_G, 'spec_obj', setmetatable({field_a = 1, _private = 2}, Derived))
        rawset(_G, 'spec_fancy', setmetatable({}, Fancy))
        rawset(_G, 'spec_str', 'text')
        rawset(_G, 'spec_ns', {inner = {deep_value = 1, deep_fn = print}})
        rawset(_G, 'spec_boom', setmetatable({}, {__index = function() error('boom') end}))
    end)
    after_each(function()
        for _, k in ipairs{'spec_obj', 'spec_fancy', 'spec_str', 'spec_ns', 'spec_boom'} do
            rawset(_G, k, nil)
        end
    end)

    it('completes globals, the lazy globals and keywords', function()
        assert.are.same({'print'}, repl.complete('prin'))
        assert.are.same({'spec_boom', 'spec_fancy', 'spec_ns', 'spec_obj', 'spec_str'},
                        repl.complete('spec_'))
        assert.are.same({'xt'}, repl.complete('xt'))
        assert.are.same({'optim'}, repl.complete('opti'))
        assert.are.same({'function'}, repl.complete('functio'))
    end)

    it('completes fields along a dotted path', function()
        assert.are.same({'string.format'}, repl.complete('string.fo'))
        assert.are.same({'spec_ns.inner.deep_fn', 'spec_ns.inner.deep_value'},
                        repl.complete('spec_ns.inner.'))
        assert.are.same({'spec_obj.base_method', 'spec_obj.derived_method', 'spec_obj.field_a',
                         'spec_obj.not_a_method'}, repl.complete('spec_obj.'))
    end)

    it('completes methods after a colon through the class chain', function()
        assert.are.same({'spec_obj:base_method', 'spec_obj:derived_method'}, repl.complete('spec_obj:'))
        assert.are.same({'spec_str:upper'}, repl.complete('spec_str:up'))
        assert.are.same({'spec_fancy:size', 'spec_fancy:view'}, repl.complete('spec_fancy:'))
        assert.are.same({'spec_fancy.shape', 'spec_fancy.size', 'spec_fancy.view'},
                        repl.complete('spec_fancy.'))
    end)

    it('completes the xt namespace, modules and tensor methods', function()
        local xt = require 'xt'
        rawset(_G, 'spec_t', xt.zeros(2))
        local function has(list, name)
            for _, v in ipairs(list) do if v == name then return true end end
            return false
        end
        assert.is_true(has(repl.complete('xt.rand'), 'xt.randn'))
        assert.is_true(has(repl.complete('xt.nn.Lin'), 'xt.nn.Linear'))
        assert.is_true(has(repl.complete('spec_t:vie'), 'spec_t:view'))
        assert.is_true(has(repl.complete('spec_t:'), 'spec_t:matmul'))
        assert.is_false(has(repl.complete('spec_t:'), 'spec_t:_c'))
        rawset(_G, 'spec_t', nil)
    end)

    it('hides names starting with _ unless asked for', function()
        assert.are.same({}, repl.complete('spec_obj.field_b'))
        assert.are.same({'spec_obj._private'}, repl.complete('spec_obj._'))
        assert.are.same({'spec_obj.__index'}, repl.complete('spec_obj.__'))
    end)

    it('gives nothing for what it cannot resolve, without raising', function()
        assert.are.same({}, repl.complete('no_such_global.x'))
        assert.are.same({}, repl.complete('spec_boom.inner.'))
        assert.are.same({}, repl.complete('spec_obj:base_method.'))
        assert.are.same({}, repl.complete('.x'))
        assert.are.same({}, repl.complete('1.'))
    end)
end)
