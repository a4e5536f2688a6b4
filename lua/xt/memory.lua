-- xt.memory: tells the Lua GC about tensor memory.
--
-- A tensor's bytes live in C, so the Lua collector only sees a small cdata and would let
-- garbage tensors pile up. After every allocation we compare libxt's monotone allocation
-- counter with where it stood at the last collection; once the bytes allocated since then
-- exceed a budget (at least 64 MB, and at least what was live after that collection), we
-- run a full collection. Resident memory then stays within about twice the live set.
local C = require 'xt.lib'

local M = {}

local MIN_BUDGET = 64 * 1024 * 1024
local mark = tonumber(C.xt_allocated_bytes_total())
local budget = MIN_BUDGET
M.collections = 0

function M.after_alloc()
    local total = tonumber(C.xt_allocated_bytes_total())
    if total - mark > budget then
        collectgarbage('collect')
        M.collections = M.collections + 1
        mark = tonumber(C.xt_allocated_bytes_total())
        local live = tonumber(C.xt_live_bytes())
        budget = live > MIN_BUDGET and live or MIN_BUDGET
    end
end

function M.live_bytes() return tonumber(C.xt_live_bytes()) end

return M
