-- bench/attention_aft.lua: the AFT family, fwd+bwd, side by side with PyTorch in one run;
-- and the peak memory of aft_full / aft_simple at a long sequence.
--
--   xlua bench/attention_aft.lua [--threads N] [--time SECONDS] [--passes N] [pattern]
--   xlua bench/attention_aft.lua --memory [T] [D]     (T = 16384, D = 64 by default)
--
-- Speed: each case is one forward and backward with gradients to q, k, v (and w), the
-- upstream gradient all ones, against the efficient PyTorch formulation of
-- bench/attention_aft_torch.py (GEMMs with exp(w), cumulative sums, depth-wise conv2d) with
-- the same thread count. Ratio = torch time / xt time (> 1: xt is faster).
--
-- Roofline, measured in the same run: the SGEMM peak (a direct cblas_sgemm 1024^3, as
-- bench/run.lua's matmul case) and the streaming bandwidth (the better of memcpy and xt's
-- copy_ of 128 MB; read + write bytes). Each case prints its rate and the fraction of the
-- roofline it reaches, for xt and for PyTorch:
--  - aft_full, aft_local (GEMM-bound): GFLOP/s over the minimal GEMM work, the allowed
--    (query, key) pairs (half the square when causal; the band for aft_local) times
--    2 flops x 2BD columns ([E V | E]), for the forward and the backward's two GEMMs of the
--    same size, against the SGEMM peak;
--  - aft_simple, aft_conv (memory-bound): GB/s of the compulsory traffic, against the
--    bandwidth: the forward reads q, k, v and writes y; the backward reads the upstream
--    gradient and q, k, v again and writes dq, dk, dv; nothing saved (what an op saves for
--    its backward is extra traffic of its own choosing, counted against it).
--
-- Memory: each op runs in a fresh process (this script with --memory-one, and the PyTorch
-- script's memory mode) at B = 1; the figure is the growth of the peak resident memory over
-- one fwd+bwd, in buffers of T*D floats, beside w's own size.
local xt = require 'xt'
local timer = require 'bench.timer'
local F = xt.nn.functional

local args = {...}
local threads, min_time, pattern, rounds = xt.get_num_threads(), 0.5, nil, 3
local memory_mode, memory_one, mem_T, mem_D = false, nil, 16384, 64
local i = 1
while i <= #args do
    if args[i] == '--threads' then threads = tonumber(args[i + 1]); i = i + 1
    elseif args[i] == '--time' then min_time = tonumber(args[i + 1]); i = i + 1
    elseif args[i] == '--passes' then rounds = tonumber(args[i + 1]); i = i + 1
    elseif args[i] == '--memory' or args[i] == '--memory-one' then
        memory_mode = true
        if args[i] == '--memory-one' then memory_one = args[i + 1]; i = i + 1 end
        if tonumber(args[i + 1]) then mem_T = tonumber(args[i + 1]); i = i + 1 end
        if tonumber(args[i + 1]) then mem_D = tonumber(args[i + 1]); i = i + 1 end
    else pattern = args[i] end
    i = i + 1
end
xt.set_num_threads(threads)
xt.manual_seed(0)

-- PyTorch's CPU allocator hands large blocks back to the system, so every big temporary
-- page-faults again on first touch, which is very slow on this VM (an 8M-float exp takes
-- 0.5 s instead of 12 ms). xt keeps freed blocks (storage.c); for a fair comparison glibc's
-- malloc is told to keep them for PyTorch too.
local PYTHON = 'MALLOC_MMAP_THRESHOLD_=17179869184 MALLOC_TRIM_THRESHOLD_=17179869184 ' ..
               'MALLOC_TOP_PAD_=1073741824 /usr/bin/python3'
local here = debug.getinfo(1, 'S').source:match('^@(.*/)') or './'
local torch_script = here .. 'attention_aft_torch.py'

local function has_torch()
    local probe = io.popen(PYTHON .. ' -c "import torch; print(torch.__version__)" 2>/dev/null')
    local version = probe and probe:read('*l')
    if probe then probe:close() end
    return version and version ~= '' and version or nil
end

---------------------------------------------------------------------------------------------
-- memory

local process = require 'xt.process'
local status_kib = process.status_kib

if memory_one then
    local T, D = mem_T, mem_D
    local q = xt.randn(1, T, D):requires_grad()
    local k = xt.randn(1, T, D):requires_grad()
    local v = xt.randn(1, T, D):requires_grad()
    local w = memory_one == 'aft_full' and xt.randn(T, T):mul_(0.1):requires_grad() or nil
    local dout = xt.ones(1, T, D)
    collectgarbage()
    process.reset_peak()   -- start the peak over from here
    local base = status_kib('VmHWM')
    if memory_one == 'aft_full' then
        F.aft_full(q, k, v, w, {causal = true}):backward(dout)
    else
        F.aft_simple(q, k, v, {causal = true}):backward(dout)
    end
    print(base, status_kib('VmHWM'))
    os.exit(0)
end

if memory_mode then
    -- the interpreter running this script, to start fresh processes of it
    local exe, j = arg and arg[-1], -1
    while arg and arg[j - 1] do j = j - 1; exe = arg[j] end
    local T, D = mem_T, mem_D
    local buffer_mib = T * D * 4 / 2 ^ 20
    local torch_version = has_torch()
    print(string.format('peak resident memory of one causal fwd+bwd, B=1 T=%d D=%d, %d threads',
                        T, D, threads))
    print(string.format('(a T*D float buffer is %.1f MiB; w [T,T] is %.0f MiB)', buffer_mib,
                        T * T * 4 / 2 ^ 20))
    for _, op in ipairs{'aft_full', 'aft_simple'} do
        local p = io.popen(string.format('%s %sattention_aft.lua --threads %d --memory-one %s %d %d',
                                         exe, here, threads, op, T, D))
        local base, peak = p:read('*n', '*n')
        p:close()
        local grew = (peak - base) / 1024
        local w_mib = op == 'aft_full' and T * T * 4 / 2 ^ 20 or 0
        print(string.format('xt    %-10s peak %8.1f MiB, grew %8.1f MiB = %s%.1f buffers of T*D', op,
                            peak / 1024, grew, op == 'aft_full' and 'dw (= w) + ' or '',
                            (grew - w_mib) / buffer_mib))
        if torch_version then
            -- plain malloc here: keeping freed blocks would only add to PyTorch's peak
            local tp = io.popen(string.format('/usr/bin/python3 %s memory %d %s %d %d', torch_script,
                                              threads, op, T, D))
            local tpeak = tp:read('*n')
            tp:close()
            if tpeak then
                print(string.format('torch %-10s peak %8.1f MiB (whole process, incl. inputs and w)', op, tpeak))
            end
        end
    end
    os.exit(0)
end

---------------------------------------------------------------------------------------------
-- speed

local function leaf(shape, scale)
    local t = xt.randn(shape)
    if scale then t = t * scale end
    return t:requires_grad()
end

-- allowed (query, key) pairs: causal, with a window of s (s >= T: all of the past)
local function causal_pairs(T, s)
    s = math.min(s, T)
    return s * T - s * (s - 1) / 2
end

local function gemm_flops(B, D, pairs) return 3 * 2 * pairs * 2 * B * D end

-- fwd+bwd of fn over the leaves, whose gradients are dropped first (as the PyTorch side
-- does), so the timing holds no gradient accumulation
local function step(leaves, fn, dout)
    return function()
        for _, t in ipairs(leaves) do t.grad = nil end
        fn():backward(dout)
    end
end

local cases = {
    {
        name = 'aft_full causal B8 T1024 D256', torch = 'aft_full',
        flops = gemm_flops(8, 256, causal_pairs(1024, 1024)),
        xt = function()
            local q, k, v = leaf{8, 1024, 256}, leaf{8, 1024, 256}, leaf{8, 1024, 256}
            local w, dout = leaf({1024, 1024}, 0.1), xt.ones(8, 1024, 256)
            return step({q, k, v, w}, function() return F.aft_full(q, k, v, w, {causal = true}) end, dout)
        end,
    },
    {
        name = 'aft_local causal B4 T3072 D128 window 256', torch = 'aft_local',
        flops = gemm_flops(4, 128, causal_pairs(3072, 256)),
        xt = function()
            local q, k, v = leaf{4, 3072, 128}, leaf{4, 3072, 128}, leaf{4, 3072, 128}
            local w, dout = leaf({3072, 3072}, 0.1), xt.ones(4, 3072, 128)
            return step({q, k, v, w}, function()
                return F.aft_local(q, k, v, w, {window = 256, causal = true})
            end, dout)
        end,
    },
    {
        name = 'aft_simple causal B8 T4096 D256', torch = 'aft_simple',
        bytes = 11 * 8 * 4096 * 256 * 4, -- q k v in, y out; G q k v in, dq dk dv out
        xt = function()
            local q, k, v = leaf{8, 4096, 256}, leaf{8, 4096, 256}, leaf{8, 4096, 256}
            local dout = xt.ones(8, 4096, 256)
            return step({q, k, v}, function() return F.aft_simple(q, k, v, {causal = true}) end, dout)
        end,
    },
    {
        name = 'aft_conv B64 C128 16x16 8 heads 3x3', torch = 'aft_conv',
        -- q, v, k (1/16 of q) in, y out; G, q, v, k in, dq, dv, dk out (w is 72 floats)
        bytes = (8 + 3 / 16) * 64 * 128 * 256 * 4,
        xt = function()
            local q, k, v = leaf{64, 128, 16, 16}, leaf{64, 8, 16, 16}, leaf{64, 128, 16, 16}
            local w, dout = leaf({8, 3, 3}, 0.5), xt.ones(64, 128, 16, 16)
            return step({q, k, v, w}, function() return F.aft_conv(q, k, v, w) end, dout)
        end,
    },
}

local function selected(c) return not pattern or c.name:find(pattern, 1, true) end

local torch_probe
local function torch_times()
    if torch_probe == nil then torch_probe = has_torch() or false end
    local version = torch_probe
    if not version then return nil end
    local names = {}
    for _, c in ipairs(cases) do
        if selected(c) then names[#names + 1] = c.torch end
    end
    local p = io.popen(string.format('%s %s time %d %g %s', PYTHON, torch_script, threads, min_time,
                                     table.concat(names, ' ')))
    local out = p:read('*a')
    p:close()
    return require('dkjson').decode(out), version
end

-- the roofline: SGEMM peak (GFLOP/s) and streaming bandwidth (GB/s), this run, these threads
local ffi = require 'ffi'
pcall(ffi.cdef, [[
void cblas_sgemm(int order, int transa, int transb, int m, int n, int k, float alpha,
                 const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);
void *memcpy(void *dst, const void *src, size_t n);
]])

local function sgemm_peak()
    local n = 1024
    local a, b, c = xt.randn(n, n), xt.randn(n, n), xt.zeros(n, n)
    local pa, pb, pc = ffi.cast('float*', a._c.data), ffi.cast('float*', b._c.data),
                       ffi.cast('float*', c._c.data)
    local t = timer.time(function()
        ffi.C.cblas_sgemm(101, 111, 111, n, n, n, 1, pa, n, pb, n, 0, pc, n)
    end, min_time)
    return 2 * n ^ 3 / t / 1e9
end

local function bandwidth()
    local n = 32 * 1024 * 1024
    local src, dst = xt.ones(n), xt.zeros(n)
    local t_memcpy = timer.time(function() ffi.C.memcpy(dst._c.data, src._c.data, n * 4) end, min_time)
    local t_copy = timer.time(function() dst:copy_(src) end, min_time)
    return 2 * n * 4 / math.min(t_memcpy, t_copy) / 1e9
end

-- The machine's speed drifts (a shared VM), and PyTorch runs in its own process, so a single
-- pass compares the two at different moments. The passes alternate, PyTorch then xt, and each
-- side keeps its best time over the passes; the ratio is of the two bests, and the spread of the
-- per-pass ratios is printed beside it.
print(string.format('xt %s, %d threads, %d passes; times are the best per-call over the passes '
                    .. '(each the best of 5 batches)', xt.version, threads, rounds))
local runs = {}
for _, c in ipairs(cases) do
    if selected(c) then runs[#runs + 1] = {case = c, step = c.xt(), xt = {}, torch = {}} end
end
local torch_version
for _ = 1, rounds do
    local ref
    ref, torch_version = torch_times()
    for _, r in ipairs(runs) do
        r.xt[#r.xt + 1] = timer.time(r.step, min_time)
        if ref and ref[r.case.torch] then r.torch[#r.torch + 1] = ref[r.case.torch] end
    end
    collectgarbage()
end
print(torch_version and ('PyTorch ' .. torch_version) or '(PyTorch not found: xt times only)')
local peak, bw = sgemm_peak(), bandwidth()
print(string.format('roofline this run: SGEMM peak %.1f GFLOP/s (cblas_sgemm 1024^3), bandwidth %.1f GB/s (copy)',
                    peak, bw))
print(string.format('%-44s %10s %10s %7s %13s  %s', 'case (fwd+bwd)', 'xt', 'torch', 'ratio',
                    'pass ratios', 'xt rate / torch rate, fraction of the roofline xt / torch'))
for _, r in ipairs(runs) do
    local c = r.case
    local t = math.min(unpack(r.xt))
    local tt = #r.torch > 0 and math.min(unpack(r.torch)) or nil
    local spread = '-'
    if tt then
        local lo, hi = math.huge, 0
        for i, x in ipairs(r.xt) do
            local q = r.torch[i] / x
            lo, hi = math.min(lo, q), math.max(hi, q)
        end
        spread = string.format('%.2f-%.2f', lo, hi)
    end
    local work, unit, roof = c.flops or c.bytes, c.flops and 'GFLOP/s' or 'GB/s', c.flops and peak or bw
    local rate = string.format('%.1f %s', work / t / 1e9, unit)
    if tt then rate = rate .. string.format(' / %.1f', work / tt / 1e9) end
    rate = rate .. string.format(', %.0f%%', 100 * work / t / 1e9 / roof)
    if tt then rate = rate .. string.format(' / %.0f%%', 100 * work / tt / 1e9 / roof) end
    rate = rate .. (c.flops and ' of peak' or ' of bandwidth')
    print(string.format('%-44s %8.1fms %10s %7s %13s  %s', c.name, t * 1e3,
                        tt and string.format('%.1fms', tt * 1e3) or '-',
                        tt and string.format('%.2fx', tt / t) or '-', spread, rate))
end
