-- bench/timer.lua: wall-clock timing for benchmarks (the best of several repeats).
local M = {}

M.now = require('xt.clock').now

-- Seconds per call of fn: two warm-up calls, then repeats for at least min_time seconds;
-- the best of 5 batches, so a busy moment on the machine does not count.
function M.time(fn, min_time)
    min_time = min_time or 0.3
    fn(); fn()
    local t0 = M.now()
    fn()
    local once = math.max(M.now() - t0, 1e-6)
    local reps = math.max(1, math.floor(min_time / 5 / once))
    local best = math.huge
    for _ = 1, 5 do
        collectgarbage()
        local start = M.now()
        for _ = 1, reps do fn() end
        best = math.min(best, (M.now() - start) / reps)
    end
    return best
end

return M
