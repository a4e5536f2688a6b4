-- bench/attention_sparse.lua: block-sparse attention (F.local_attention, F.sparse_attention,
-- F.global_local_attention) against dense F.scaled_dot_product_attention: time of one
-- forward + backward and its peak extra resident memory, B = 1, H = 4, d = 64.
--
--   xlua bench/attention_sparse.lua [T ...]          (T = 4096 16384 by default)
--   xlua bench/attention_sparse.lua --one OP T       (one case, in this process)
--
-- Each case runs in a fresh process (XLUA, default build/xlua), so that one case's freed
-- heap does not hide the next one's peak. Time: the best of 3 runs (1 at T >= 16384, after
-- one warm-up run). Memory: VmHWM growth in the first run over the resident size once q, k,
-- v and the upstream gradient exist (peak reset through /proc/self/clear_refs), in MiB and
-- in q-sized buffers (H*T*d floats): out, lse and dq, dk, dv are about 4; dense scores of
-- one head would be T/d of them.
local xt = require 'xt'
local F = xt.nn.functional
local clock = require('xt.clock')

local H, d = 4, 64

-- name -> function(q, k, v, T); window 256, stride sqrt(T) (the Sparse Transformer's choice)
local OPS = {
    {'sdpa', function(q, k, v) return F.scaled_dot_product_attention(q, k, v) end},
    {'sdpa_causal', function(q, k, v) return F.scaled_dot_product_attention(q, k, v, {causal = true}) end},
    {'local_w256', function(q, k, v) return F.local_attention(q, k, v, {window = 256}) end},
    {'local_w256_causal', function(q, k, v)
        return F.local_attention(q, k, v, {window = 256, causal = true}) end},
    {'strided_causal', function(q, k, v, T)
        return F.sparse_attention(q, k, v, {pattern = 'strided', causal = true,
                                            stride = math.floor(math.sqrt(T))}) end},
    {'fixed_l128_c32_causal', function(q, k, v)
        return F.sparse_attention(q, k, v, {pattern = 'fixed', stride = 128, summary = 32,
                                            causal = true}) end},
    {'longformer_w256_g16', function(q, k, v, T)
        local g = {}
        for i = 1, 16 do g[i] = math.floor((i - 1) * T / 16) + 1 end
        return F.global_local_attention(q, k, v, {window = 256, global = g}) end},
    {'bigbird_w192_g2_r3', function(q, k, v, T)
        return F.global_local_attention(q, k, v, {window = 192, global = {1, T}, random_blocks = 3,
                                                  block = 64, seed = 1}) end},
}

local process = require 'xt.process'
local status_kib, reset_peak = process.status_kib, process.reset_peak

local args = {...}
if args[1] == '--one' then
    local name, T = args[2], tonumber(args[3])
    local fn
    for _, op in ipairs(OPS) do if op[1] == name then fn = op[2] end end
    assert(fn, 'unknown op ' .. tostring(name))
    xt.manual_seed(0)
    local q = xt.randn(1, H, T, d):requires_grad()
    local k = xt.randn(1, H, T, d):requires_grad()
    local v = xt.randn(1, H, T, d):requires_grad()
    local dout = xt.randn(1, H, T, d)
    local function once()
        q.grad, k.grad, v.grad = nil, nil, nil
        fn(q, k, v, T):backward(dout)
    end
    collectgarbage(); collectgarbage()
    local base = status_kib('VmRSS')
    reset_peak()
    once()   -- the memory of the first run; it is also the warm-up
    local peak = status_kib('VmHWM') - base
    q.grad, k.grad, v.grad = nil, nil, nil
    local best = math.huge
    for _ = 1, T >= 16384 and 1 or 3 do
        local t0 = clock.now()
        once()
        best = math.min(best, clock.now() - t0)
    end
    print(string.format('%s %d %.4f %.1f', name, T, best, peak / 1024))
    return
end

local Ts = {}
for _, a in ipairs(args) do Ts[#Ts + 1] = tonumber(a) end
if #Ts == 0 then Ts = {4096, 16384} end
local xlua = os.getenv('XLUA') or 'build/xlua'
local script = debug.getinfo(1, 'S').source:sub(2)
print(string.format('block-sparse attention fwd+bwd, B=1 H=%d d=%d, %d threads', H, d,
                    xt.get_num_threads()))
print(string.format('%-24s %6s %9s %8s %10s %9s', 'op', 'T', 'time s', 'x sdpa', 'peak MiB',
                    'q bufs'))
for _, T in ipairs(Ts) do
    local dense
    for _, op in ipairs(OPS) do
        local p = assert(io.popen(string.format('%s %s --one %s %d', xlua, script, op[1], T)))
        local out = p:read('*a')
        p:close()
        local name, _, t, mib = out:match('(%S+) (%d+) (%S+) (%S+)')
        if not name then error('case ' .. op[1] .. ' failed: ' .. out) end
        t, mib = tonumber(t), tonumber(mib)
        dense = dense or t
        local bufs = mib * 1024 * 1024 / (4 * T * d * H)
        print(string.format('%-24s %6d %9.4f %8.2f %10.1f %9.1f', name, T, t, dense / t, mib, bufs))
    end
end
