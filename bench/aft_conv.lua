-- bench/aft_conv.lua: the fused AFT-conv kernel at the main experiment's shapes.
--
--   OMP_NUM_THREADS=1 xlua bench/aft_conv.lua [--threads N] [--time SECONDS]
--
-- q, v [128,64,14,14], k [128,8,14,14], w [8,k,k] for k = 3, 5, 7: ms per forward call
-- (no graph) and per backward call (forward + backward minus forward), and the window's
-- multiply-adds per second of the forward (B C H W k^2 of them). Times are wall-clock (best
-- of 5 batches) and, because a shared machine can leave a process a fraction of a core,
-- also process CPU time per call (os.clock, all threads) with --cpu.
local xt = require 'xt'
local F = require 'xt.nn.functional'
local timer = require 'bench.timer'

local args = {...}
local threads, min_time, cpu = xt.get_num_threads(), 0.5, false
for i = 1, #args do
    if args[i] == '--threads' then threads = tonumber(args[i + 1])
    elseif args[i] == '--time' then min_time = tonumber(args[i + 1])
    elseif args[i] == '--cpu' then cpu = true end
end
xt.set_num_threads(threads)
xt.manual_seed(0)
if cpu then timer.now = os.clock end

local B, C, heads, H, W = 128, 64, 8, 14, 14
print(string.format('aft_conv q,v [%d,%d,%d,%d] k [%d,%d,%d,%d], %d threads, %s time', B, C, H, W, B,
                    heads, H, W, threads, cpu and 'CPU' or 'wall'))
print(string.format('%-6s %12s %12s %14s', 'kernel', 'forward ms', 'backward ms', 'fwd GMAC/s'))
for _, ks in ipairs{3, 5, 7} do
    local q, k, v = xt.randn(B, C, H, W), xt.randn(B, heads, H, W), xt.randn(B, C, H, W)
    local w = xt.randn(heads, ks, ks)
    local fwd = timer.time(function() return F.aft_conv(q, k, v, w) end, min_time)
    local qg, kg, vg, wg = q:requires_grad(), k:requires_grad(), v:requires_grad(), w:requires_grad()
    local dout = xt.randn(B, C, H, W)
    local both = timer.time(function()
        F.aft_conv(qg, kg, vg, wg):backward(dout)
    end, min_time)
    print(string.format('%-6s %12.2f %12.2f %14.2f', ks .. 'x' .. ks, fwd * 1e3, (both - fwd) * 1e3,
                        B * C * H * W * ks * ks / fwd / 1e9))
end
