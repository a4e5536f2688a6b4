-- xt.process: what a benchmark or an experiment measures about its own process, and how it
-- runs one measurement in a fresh process.
--
--   process.status_kib('VmRSS')       a field of /proc/self/status in KiB (nil off Linux)
--   process.reset_peak()              VmHWM := VmRSS (via /proc/self/clear_refs); false when
--                                     the kernel does not allow it
--   mib, ... = process.peak_growth(fn)  how far the peak resident set rose above where it
--                                     stood before fn (MiB, nil when it cannot be measured),
--                                     then fn's results
--   process.fresh_command(args)       the shell command that runs `xlua args` in a new process
--                                     with glibc's mmap threshold pinned
--
-- Why a fresh process: memory one measurement freed can hide the next one's peak. Why the
-- pinned threshold: large buffers then come from and go back to the system (mmap), so the
-- resident set follows what is live instead of what glibc's heap once grew to.
local ffi = require 'ffi'
local C = require 'xt.lib'

pcall(ffi.cdef, 'ssize_t readlink(const char *path, char *buf, size_t size);')

local process = {}

process.MMAP_THRESHOLD = 65536

function process.status_kib(field)
    local f = io.open('/proc/self/status')
    if not f then return nil end
    local text = f:read('*a')
    f:close()
    return tonumber(text:match(field .. ':%s+(%d+) kB'))
end

function process.reset_peak()
    local f = io.open('/proc/self/clear_refs', 'w')
    if not f then return false end
    local ok = f:write('5')
    return f:close() and ok and true or false
end

-- Garbage (and the allocator's cache of freed blocks) is returned first, so the growth
-- counts what fn allocates, not what earlier work left behind.
function process.peak_growth(fn, ...)
    collectgarbage()
    collectgarbage()
    C.xt_empty_cache()
    local can_reset = process.reset_peak()
    local base = process.status_kib('VmHWM')
    local results = {fn(...)}
    local peak = process.status_kib('VmHWM')
    local mib = can_reset and base and peak and (peak - base) / 1024 or nil
    return mib, unpack(results, 1, table.maxn(results))
end

-- The running executable (xlua), by /proc/self/exe; else the interpreter arg[-1] names.
function process.executable()
    local buf = ffi.new('char[4096]')
    local n = ffi.C.readlink('/proc/self/exe', buf, 4096)
    if n > 0 then return ffi.string(buf, n) end
    return _G.arg and _G.arg[-1] or 'xlua'
end

local function quote(s)
    s = tostring(s)
    if s:match('^[%w%._/,=:+-]+$') then return s end
    return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- args: a list (the script and its arguments, quoted here) or a string (used as it is).
-- opts.timeout: seconds after which coreutils' timeout stops the process (exit status 124);
-- opts.env: more environment variables {NAME = value}.
function process.fresh_command(args, opts)
    opts = opts or {}
    local parts = {}
    if type(args) == 'table' then
        for i, a in ipairs(args) do parts[i] = quote(a) end
        args = table.concat(parts, ' ')
    end
    local env = {'MALLOC_MMAP_THRESHOLD_=' .. process.MMAP_THRESHOLD}
    local names = {}
    for name in pairs(opts.env or {}) do names[#names + 1] = name end
    table.sort(names)
    for _, name in ipairs(names) do env[#env + 1] = name .. '=' .. quote(opts.env[name]) end
    local limit = opts.timeout and string.format('timeout %d ', math.ceil(opts.timeout)) or ''
    return string.format('%s %s%s %s', table.concat(env, ' '), limit, quote(process.executable()), args)
end

return process
