-- bench/attention_sdpa.lua: softmax attention, fwd+bwd, side by side with PyTorch; and the
-- peak memory of the tiled kernel at a long sequence.
--
--   xlua bench/attention_sdpa.lua [--threads N] [--time SECONDS]
--   xlua bench/attention_sdpa.lua --memory [T] [d]     (T = 16384, d = 64 by default)
--
-- Speed: F.scaled_dot_product_attention and nn.MultiheadAttention (causal, B8 T1024 D256,
-- 4 heads) against PyTorch's efficient formulation in the same run: its own
-- F.scaled_dot_product_attention when it has one (torch >= 2.0), else matmul, masked
-- softmax, matmul (torch 1.13), and torch.nn.MultiheadAttention for the module. Ratio =
-- torch time / xt time (> 1: xt is faster). GFLOP/s counts the useful work only: half of
-- the score matrix when causal, forward 4*T*S*d per head, backward 2.5x the forward, and
-- 2*T*D*D per projection (x3 with its backward). Compare with the machine's SGEMM peak on
-- 2 threads (bench/run.lua's matmul case measures it; 145 to 206 GFLOP/s on the machines
-- this project has run on).
--
-- Memory (run it alone, in a fresh process): peak resident memory of one fwd+bwd at B = 1,
-- one head, counted in buffers of T*d floats; inputs and the upstream gradient are made
-- before the baseline is taken.
local xt = require 'xt'
local timer = require 'bench.timer'
local process = require 'xt.process'
local nn, F = xt.nn, xt.nn.functional

local args = {...}
local threads, min_time, memory_mode, mem_T, mem_d = xt.get_num_threads(), 0.5, false, 16384, 64
local i = 1
while i <= #args do
    if args[i] == '--threads' then threads = tonumber(args[i + 1]); i = i + 1
    elseif args[i] == '--time' then min_time = tonumber(args[i + 1]); i = i + 1
    elseif args[i] == '--memory' then
        memory_mode = true
        if tonumber(args[i + 1]) then mem_T = tonumber(args[i + 1]); i = i + 1 end
        if tonumber(args[i + 1]) then mem_d = tonumber(args[i + 1]); i = i + 1 end
    else error('unknown argument ' .. args[i]) end
    i = i + 1
end
xt.set_num_threads(threads)
xt.manual_seed(0)

---------------------------------------------------------------------------------------------
local status_kib, reset_peak = process.status_kib, process.reset_peak

if memory_mode then
    local T, d = mem_T, mem_d
    local q = xt.randn(1, 1, T, d):requires_grad()
    local k = xt.randn(1, 1, T, d):requires_grad()
    local v = xt.randn(1, 1, T, d):requires_grad()
    local dout = xt.randn(1, 1, T, d)
    collectgarbage()
    if not reset_peak() then print('cannot reset the peak RSS (/proc/self/clear_refs); the figure includes start-up') end
    local base = status_kib('VmHWM')
    local t0 = timer.now()
    local out = F.scaled_dot_product_attention(q, k, v, {causal = true})
    out:backward(dout)
    local elapsed = timer.now() - t0
    local peak = status_kib('VmHWM')
    local buffer_kib = T * d * 4 / 1024
    print(string.format('sdpa causal fwd+bwd, B=1 H=1 T=%d d=%d, %d threads: %.2f s', T, d, threads, elapsed))
    print(string.format('peak RSS %d KiB; grew by %d KiB during fwd+bwd = %.2f buffers of T*d floats (%d KiB each)',
                        peak, peak - base, (peak - base) / buffer_kib, buffer_kib))
    print(string.format('  what it keeps: out, dq, dk, dv (4 buffers) + lse and D (T floats each) + tiles per thread'))
    print(string.format('  a T x T score matrix alone would be %d MiB', T * T * 4 / 2 ^ 20))
    os.exit(0)
end

---------------------------------------------------------------------------------------------
local B, T, D, H = 8, 1024, 256, 4
local hd = D / H
local attn_flops = 4 * B * H * T * T * hd * 0.5 * 3.5       -- causal half; fwd + 2.5x bwd
local proj_flops = 4 * 2 * B * T * D * D * 3                 -- q, k, v, out projections, fwd + bwd

local cases = {
    {
        name = string.format('sdpa causal [%d,%d,%d,%d] fwd+bwd', B, H, T, hd),
        flops = attn_flops,
        xt = function()
            local q = xt.randn(B, H, T, hd):requires_grad()
            local k = xt.randn(B, H, T, hd):requires_grad()
            local v = xt.randn(B, H, T, hd):requires_grad()
            local dout = xt.randn(B, H, T, hd)
            return function()
                F.scaled_dot_product_attention(q, k, v, {causal = true}):backward(dout)
            end
        end,
        torch = {setup = string.format([[
q, k, v = [torch.randn(%d, %d, %d, %d, requires_grad=True) for _ in range(3)]
dout = torch.randn(%d, %d, %d, %d)
T = %d
hidden = torch.ones(T, T, dtype=torch.bool).triu(1)
fused = getattr(torch.nn.functional, "scaled_dot_product_attention", None)
def attention(q, k, v):
    if fused is not None:
        return fused(q, k, v, is_causal=True)
    s = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    return s.masked_fill(hidden, float("-inf")).softmax(-1) @ v]], B, H, T, hd, B, H, T, hd, T),
                 stmt = 'attention(q, k, v).backward(dout)'},
    },
    {
        name = string.format('MultiheadAttention causal B%d T%d D%d %d heads fwd+bwd', B, T, D, H),
        flops = attn_flops + proj_flops,
        xt = function()
            local m = nn.MultiheadAttention{dim = D, heads = H, causal = true}
            local x = xt.randn(B, T, D):requires_grad()
            local dout = xt.randn(B, T, D)
            return function() m(x):backward(dout) end
        end,
        torch = {setup = string.format([[
m = torch.nn.MultiheadAttention(%d, %d, batch_first=True)
x = torch.randn(%d, %d, %d, requires_grad=True)
dout = torch.randn(%d, %d, %d)
hidden = torch.ones(%d, %d, dtype=torch.bool).triu(1)]], D, H, B, T, D, B, T, D, T, T),
                 stmt = 'm(x, x, x, attn_mask=hidden, need_weights=False)[0].backward(dout)'},
    },
}

-- PyTorch side: one python process times every case (bench/torch_ref.py).
local function torch_times()
    local python = '/usr/bin/python3'
    local probe = io.popen(python .. ' -c "import torch; print(torch.__version__)" 2>/dev/null')
    local version = probe and probe:read('*l')
    if probe then probe:close() end
    if not version or version == '' then return nil end
    local json = require 'dkjson'
    local list = {}
    for _, c in ipairs(cases) do list[#list + 1] = {name = c.name, setup = c.torch.setup, stmt = c.torch.stmt} end
    local tmp = os.tmpname()
    local f = assert(io.open(tmp, 'w'))
    f:write(json.encode(list))
    f:close()
    local script = debug.getinfo(1, 'S').source:match('^@(.*/)') .. 'torch_ref.py'
    local p = io.popen(string.format('%s %s %d %g < %s', python, script, threads, min_time, tmp))
    local out = p:read('*a')
    p:close()
    os.remove(tmp)
    return json.decode(out), version
end

print(string.format('xt %s, %d threads; times are the best per-call of 5 batches', xt.version, threads))
local ref, torch_version = torch_times()
print(ref and ('PyTorch ' .. torch_version) or '(PyTorch not found: xt times only)')
print(string.format('%-52s %11s %11s %7s %11s %11s', 'case', 'xt', 'torch', 'ratio', 'xt GFLOP/s', 'torch GF/s'))
for _, c in ipairs(cases) do
    local t = timer.time(c.xt(), min_time)
    local tt = ref and ref[c.name]
    print(string.format('%-52s %9.1fms %11s %7s %11.1f %11s', c.name, t * 1e3,
                        tt and string.format('%.1fms', tt * 1e3) or '-',
                        tt and string.format('%.2fx', tt / t) or '-', c.flops / t / 1e9,
                        tt and string.format('%.1f', c.flops / tt / 1e9) or '-'))
    io.stdout:flush()
end
