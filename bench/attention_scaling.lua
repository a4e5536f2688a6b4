-- bench/attention_scaling.lua: time and peak memory of one forward + backward of each attention
-- op as the sequence grows, to set against the survey's complexity table
-- (research/efficient_attention.md § 1). B = 1, H = 4 heads, d = 64 per head.
--
--   xlua bench/attention_scaling.lua [--T 1024,2048,4096,8192,16384] [--ops name,name]
--                                    [--threads N] [--reps 3]
--
-- Every (op, T) runs in a fresh xlua process (this script with --case), so that one
-- measurement's freed memory cannot hide the next one's peak; glibc's mmap threshold is
-- pinned (MALLOC_MMAP_THRESHOLD_) so that large buffers come from and go back to the system.
--
-- Ops (q, k, v [1,4,T,64] that require grad; the upstream gradient made beforehand):
--   softmax         F.scaled_dot_product_attention, causal and full        O(T^2 d)
--   linear          F.linear_attention (elu + 1), causal and full          O(T d^2)
--   performer       F.favor_attention, 256 random features, causal, full   O(T m d)
--   performer_composed  the same (full) with the feature map composed of tensor ops, to
--                   weigh the fused xt_favor_features against what it replaces
--   linformer       F.linformer_attention, k = 256 projections (learned)   O(T k d)
--   axial           F.axial_attention over rows, then over columns of a grid as square as T
--                   allows (32x32 .. 128x128)                               O(T sqrt(T) d)
--   aft_simple      F.aft_simple on [1,T,256] (causal), when xt has it     O(T d)
-- Time: the best of --reps calls after one warm-up call. Memory: the growth of the process's
-- peak resident set (VmHWM, reset through /proc/self/clear_refs) during the warm-up call,
-- the inputs made before; it counts everything the call allocates: outputs, what the graph
-- saves, scratch and the input gradients (3 x T x 256 floats = 3 MiB per 1k positions).
local xt = require 'xt'
local timer = require 'bench.timer'
local process = require 'xt.process'
local F = xt.nn.functional

local args = {...}
local lengths, only, threads, reps = {1024, 2048, 4096, 8192, 16384}, nil, xt.get_num_threads(), 3
local child_case
local function list(s) local out = {} for v in s:gmatch('[^,]+') do out[#out + 1] = v end return out end
local i = 1
while i <= #args do
    local a, v = args[i], args[i + 1]
    if a == '--T' then lengths = {}; for _, t in ipairs(list(v)) do lengths[#lengths + 1] = tonumber(t) end
    elseif a == '--ops' then only = {}; for _, o in ipairs(list(v)) do only[o] = true end
    elseif a == '--threads' then threads = tonumber(v)
    elseif a == '--reps' then reps = tonumber(v)
    elseif a == '--case' then child_case = tonumber(v)
    else error('unknown argument ' .. a) end
    i = i + 2
end
xt.set_num_threads(threads)
xt.manual_seed(0)
local H, d, m_features, k_proj = 4, 64, 256, 256

---------------------------------------------------------------------------------------------
-- the most nearly square grid rows x cols = T (both powers of two for powers of two)
local function grid(T)
    local rows = 2 ^ math.floor(math.log(T) / math.log(2) / 2)
    return rows, T / rows
end

-- Each case: setup(T) -> run (one fwd+bwd) and the leaves whose gradients it fills.
local function qkv(T, ...)
    local shape = {...}
    if #shape == 0 then shape = {1, H, T, d} end
    return xt.randn(shape):requires_grad(), xt.randn(shape):requires_grad(), xt.randn(shape):requires_grad()
end

local function attention_case(fn)
    return function(T)
        local q, k, v = qkv(T)
        local dout = xt.randn(1, H, T, d)
        return function() fn(q, k, v):backward(dout) end, {q, k, v}
    end
end

local cases = {
    {op = 'softmax', name = 'softmax causal', cost = 'T^2', setup = attention_case(function(q, k, v)
        return F.scaled_dot_product_attention(q, k, v, {causal = true}) end)},
    {op = 'softmax', name = 'softmax full', cost = 'T^2', setup = attention_case(function(q, k, v)
        return F.scaled_dot_product_attention(q, k, v) end)},
    {op = 'linear', name = 'linear causal', cost = 'T', setup = attention_case(function(q, k, v)
        return F.linear_attention(q, k, v, {causal = true}) end)},
    {op = 'linear', name = 'linear full', cost = 'T', setup = attention_case(function(q, k, v)
        return F.linear_attention(q, k, v) end)},
    {op = 'performer', name = 'performer m=256 causal', cost = 'T', setup = function(T)
        local w = F.orthogonal_random_features(m_features, d)
        return attention_case(function(q, k, v) return F.favor_attention(q, k, v, w, {causal = true}) end)(T)
    end},
    {op = 'performer', name = 'performer m=256 full', cost = 'T', setup = function(T)
        local w = F.orthogonal_random_features(m_features, d)
        return attention_case(function(q, k, v) return F.favor_attention(q, k, v, w) end)(T)
    end},
    -- the fused feature map against the tensor-op composition it replaces
    {op = 'performer_composed', name = 'performer full, phi composed', cost = 'T', setup = function(T)
        local w = F.orthogonal_random_features(m_features, d)
        local function features(x, dims)
            local xs = x * d ^ -0.25
            local u = xs:matmul(w:t()) - (xs * xs):sum(-1, true) / 2
            return ((u - u:amax(dims, true):detach()):exp() + 1e-6) / math.sqrt(m_features)
        end
        return attention_case(function(q, k, v)
            return F.linear_attention(features(q, -1), features(k, {-2, -1}), v, {feature_map = 'identity', eps = 0})
        end)(T)
    end},
    {op = 'linformer', name = 'linformer k=256', cost = 'T', setup = function(T)
        local e = (xt.randn(k_proj, T) / math.sqrt(T)):requires_grad()
        local run, leaves = attention_case(function(q, k, v) return F.linformer_attention(q, k, v, e) end)(T)
        leaves[#leaves + 1] = e
        return run, leaves
    end},
    {op = 'axial', name = 'axial rows+columns', cost = 'T^1.5', setup = function(T)
        local rows, cols = grid(T)
        local q, k, v = qkv(T, 1, H, rows, cols, d)
        local dout = xt.randn(1, H, rows, cols, d)
        return function()
            local out = F.axial_attention(q, k, v, -2) + F.axial_attention(q, k, v, -3)
            out:backward(dout)
        end, {q, k, v}
    end},
}
if F.aft_simple then
    cases[#cases + 1] = {op = 'aft_simple', name = 'aft_simple causal [1,T,256]', cost = 'T', setup = function(T)
        local q, k, v = qkv(T, 1, T, H * d)
        local dout = xt.randn(1, T, H * d)
        return function() F.aft_simple(q, k, v, {causal = true}):backward(dout) end, {q, k, v}
    end}
end

---------------------------------------------------------------------------------------------
local function clear_grads(leaves) for _, t in ipairs(leaves) do t.grad = nil end end

local function measure(case, T)
    local run, leaves = case.setup(T)
    local mem = process.peak_growth(run)
    clear_grads(leaves)
    local best = math.huge
    for _ = 1, reps do
        collectgarbage()
        local t0 = timer.now()
        run()
        best = math.min(best, timer.now() - t0)
        clear_grads(leaves)
    end
    return best, mem
end

-- a child process: one case at one length, one result line
if child_case then
    local t, mem = measure(cases[child_case], lengths[1])
    print(string.format('RESULT %.9g %s', t, mem and string.format('%.4f', mem) or '-'))
    os.exit(0)
end

local function run_child(index, T)
    local cmd = process.fresh_command(string.format('%s --case %d --T %d --threads %d --reps %d',
                                                    arg[0], index, T, threads, reps))
    local p = io.popen(cmd)
    local out = p:read('*a')
    p:close()
    local t, mem = out:match('RESULT (%S+) (%S+)')
    if not t then error('measurement failed: ' .. cmd .. '\n' .. out) end
    return tonumber(t), tonumber(mem)
end

print(string.format('xt %s, %d threads; B=1 H=%d d=%d; fwd+bwd, best of %d calls; memory = growth of peak RSS',
                    xt.version, threads, H, d, reps))
local results = {}
for index, case in ipairs(cases) do
    if not only or only[case.op] then
        results[#results + 1] = {case = case, time = {}, mem = {}}
        for _, T in ipairs(lengths) do
            local t, mem = run_child(index, T)
            results[#results].time[T], results[#results].mem[T] = t, mem
            io.stderr:write(string.format('  %-28s T=%-6d %9.1f ms %9s MiB\n', case.name, T, t * 1e3,
                                          mem and string.format('%.1f', mem) or '-'))
        end
    end
end

local function table_of(title, cell, growth)
    local header = string.format('%-28s %-6s', title, 'cost')
    for _, T in ipairs(lengths) do header = header .. string.format(' %9s', 'T=' .. T) end
    print(header .. string.format(' %10s', growth and 'x per 2T' or ''))
    for _, r in ipairs(results) do
        local line = string.format('%-28s %-6s', r.case.name, r.case.cost)
        for _, T in ipairs(lengths) do line = line .. string.format(' %9s', cell(r, T)) end
        if growth and #lengths > 1 then
            local first, last = lengths[1], lengths[#lengths]
            local ratio = growth(r, last) / growth(r, first)
            line = line .. string.format(' %10.2f', ratio ^ (1 / (math.log(last / first) / math.log(2))))
        end
        print(line)
    end
end

print('\nTime, ms (x per 2T: the mean growth factor when T doubles; O(T) -> 2, O(T^1.5) -> 2.8, O(T^2) -> 4)')
table_of('op', function(r, T) return string.format('%.1f', r.time[T] * 1e3) end, function(r, T) return r.time[T] end)
print('\nPeak memory growth during fwd+bwd, MiB (inputs excluded; their gradients included)')
table_of('op', function(r, T) return r.mem[T] and string.format('%.1f', r.mem[T]) or '-' end)
