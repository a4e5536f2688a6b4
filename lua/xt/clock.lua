-- xt.clock: a monotonic wall clock in seconds (for progress rates, ETAs and benchmarks).
local ffi = require 'ffi'
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } xt_timespec;
int clock_gettime(int clk_id, xt_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new('xt_timespec')

local clock = {}

function clock.now()
    ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
    return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

-- "1:02:03" or "2:03" for a duration in seconds.
function clock.format_duration(seconds)
    if seconds ~= seconds or seconds == math.huge then return '?' end
    seconds = math.max(0, math.floor(seconds + 0.5))
    local h, m, s = math.floor(seconds / 3600), math.floor(seconds / 60) % 60, seconds % 60
    if h > 0 then return string.format('%d:%02d:%02d', h, m, s) end
    return string.format('%d:%02d', m, s)
end

return clock
