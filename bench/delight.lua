-- bench/delight.lua: DeLighT speed, side by side with PyTorch (bench/delight_torch.py: the
-- official structure from PyTorch modules), forward + backward.
--
--   xlua bench/delight.lua [--threads N] [--calls K] [--rounds R] [--case PATTERN]
--
-- Cases: the DeLighT block of issue 5 (B16 T256, d_m 256, d_o 128, N 4, m_w 2, g_max 8,
-- post-norm, softmax attention, no dropout, the input needing its gradient too), its
-- DExTra alone, and one GLT layer (640 -> 512, 4 groups, mixed input), the last also
-- against the same layer composed of plain xt ops (cat, select, matmul, add, stack,
-- layer_norm, silu).
--
-- Each side times every call separately (3 warm-up calls, then K calls, default 20) and
-- the rounds alternate PyTorch and xt (default 2), so neither side gets the machine's quiet
-- moments alone. Reported: the median call (ratio = torch / xt, > 1: xt is faster) and the
-- mean, which is what a training loop sees. The best call is not used: on a shared machine
-- it rewards a lucky call, and PyTorch's calls spread widely (its freed memory goes back to
-- the system and every reuse page-faults again). Both sides use N threads (default: all
-- cores); PyTorch's OpenBLAS is held to N too (OPENBLAS_NUM_THREADS), since PyTorch leaves
-- it at every core.
local xt = require 'xt'
local clock = require 'xt.clock'
local nn, F = xt.nn, xt.nn.functional

local args = {...}
local threads, calls, rounds, pattern = xt.get_num_threads(), 20, 2, nil
local i = 1
while i <= #args do
    if args[i] == '--threads' then threads = tonumber(args[i + 1]); i = i + 1
    elseif args[i] == '--calls' then calls = tonumber(args[i + 1]); i = i + 1
    elseif args[i] == '--rounds' then rounds = tonumber(args[i + 1]); i = i + 1
    elseif args[i] == '--case' then pattern = args[i + 1]; i = i + 1 end
    i = i + 1
end
xt.set_num_threads(threads)
xt.manual_seed(0)

local B, T, D = 16, 256, 256
local here = debug.getinfo(1, 'S').source:match('^@(.*/)') or './'

-- every case: a name (the same in delight_torch.py) and a function returning the step
local cases = {}

cases[#cases + 1] = {name = 'block', title = 'DeLighT block fwd+bwd B16 T256 d_m256', xt = function()
    local m = nn.DeLighTBlock{d_m = D, depth = 4, width_mult = 2, max_groups = 8}
    local x, dout = xt.randn(B, T, D):requires_grad(), xt.randn(B, T, D)
    return function()
        m:zero_grad()
        x.grad = nil
        m(x):backward(dout)
    end
end}

cases[#cases + 1] = {name = 'dextra', title = 'DExTra fwd+bwd B16 T256 256->128 N4', xt = function()
    local m = nn.DExTra{d_m = D, d_o = D / 2, depth = 4, width_mult = 2, max_groups = 8}
    local x, dout = xt.randn(B, T, D):requires_grad(), xt.randn(B, T, D / 2)
    return function()
        m:zero_grad()
        x.grad = nil
        m(x):backward(dout)
    end
end}

-- one GLT layer of that DExTra: z [4096, 512] and xp [4096, 128] mixed in 4 groups -> 512
local N, DZ, DP, G, DOUT = B * T, 512, 128, 4, 512
local function glt_step(fn)
    local z, xp = xt.randn(N, DZ):requires_grad(), xt.randn(N, DP):requires_grad()
    local w = (xt.randn(G, (DZ + DP) / G, DOUT / G) * 0.05):requires_grad()
    local b = xt.zeros(G, DOUT / G):requires_grad()
    local gamma, beta = xt.ones(DOUT / G):requires_grad(), xt.zeros(DOUT / G):requires_grad()
    local inputs, dout = {z, xp, w, b, gamma, beta}, xt.randn(N, DOUT)
    return function()
        for _, t in ipairs(inputs) do t.grad = nil end
        fn(unpack(inputs)):backward(dout)
    end
end

cases[#cases + 1] = {name = 'glt', title = 'GLT layer fwd+bwd [4096] 640->512 g4', xt = function()
    return glt_step(function(z, xp, w, b, gamma, beta)
        return F.group_linear(z, w, b, {mix = xp, shuffle = true, norm = true, norm_weight = gamma,
                                        norm_bias = beta, activation = 'swish'})
    end)
end, composed = function()
    local cz, cp, co = DZ / G, DP / G, DOUT / G
    return glt_step(function(z, xp, w, b, gamma, beta)
        local mixed = xt.cat({xp:view(N, G, cp), z:view(N, G, cz)}, 3)
        local parts = {}
        for k = 1, G do parts[k] = mixed:select(2, k):matmul(w[k]) + b[k] end
        local s = xt.stack(parts, 3):view(N, G, co)   -- [N, co, g] read as [N, g, co]
        return F.layer_norm(s, co, gamma, beta):silu():view(N, DOUT)
    end)
end}

local selected = {}
for _, c in ipairs(cases) do
    if not pattern or c.name:find(pattern, 1, true) then selected[#selected + 1] = c end
end

-- per-call times (seconds) of step: 3 warm-up calls, then `calls` timed ones
local function call_times(step)
    for _ = 1, 3 do step() end
    local out = {}
    for k = 1, calls do
        collectgarbage('step')
        local t0 = clock.now()
        step()
        out[k] = clock.now() - t0
    end
    return out
end

local function median(list)
    local s = {}
    for k, v in ipairs(list) do s[k] = v end
    table.sort(s)
    local n = #s
    return n % 2 == 1 and s[(n + 1) / 2] or (s[n / 2] + s[n / 2 + 1]) / 2
end

local function append(dst, src) for _, v in ipairs(src) do dst[#dst + 1] = v end end

-- PyTorch's per-call times {name: [seconds, ...]} from one python process, or nil
local function torch_times()
    local python = '/usr/bin/python3'
    local probe = io.popen(python .. ' -c "import torch" 2>/dev/null && echo yes')
    local has_torch = probe and probe:read('*a'):find('yes')
    if probe then probe:close() end
    if not has_torch then return nil end
    local names = {}
    for _, c in ipairs(selected) do names[#names + 1] = c.name end
    local p = io.popen(string.format('OPENBLAS_NUM_THREADS=%d OMP_NUM_THREADS=%d %s %sdelight_torch.py %d %d %s',
                                     threads, threads, python, here, threads, calls, table.concat(names, ',')))
    local out = p:read('*a')
    p:close()
    return require('dkjson').decode(out)
end

print(string.format('xt %s, %d threads, %d rounds of %d calls per side', xt.version, threads, rounds, calls))
local xt_calls, torch_calls, composed_calls, have_torch = {}, {}, {}, true
local steps = {}
for _, c in ipairs(selected) do
    steps[c.name] = {xt = c.xt(), composed = c.composed and c.composed()}
    xt_calls[c.name], torch_calls[c.name], composed_calls[c.name] = {}, {}, {}
end
for _ = 1, rounds do
    local ref = have_torch and torch_times()
    if not ref then have_torch = false end
    for _, c in ipairs(selected) do
        if ref and ref[c.name] then append(torch_calls[c.name], ref[c.name]) end
        append(xt_calls[c.name], call_times(steps[c.name].xt))
        if steps[c.name].composed then append(composed_calls[c.name], call_times(steps[c.name].composed)) end
    end
end
if not have_torch then print('(PyTorch not found: /usr/bin/python3 -c "import torch" failed; xt times only)') end

local function mean(list)
    local s = 0
    for _, v in ipairs(list) do s = s + v end
    return s / #list
end
local function ms(v) return v and string.format('%.1fms', v * 1e3) or '-' end

print(string.format('%-38s %19s %19s %7s %7s', '', 'xt', 'torch', 'ratio', 'ratio'))
print(string.format('%-38s %9s %9s %9s %9s %7s %7s', 'case', 'median', 'mean', 'median', 'mean', 'median', 'mean'))
for _, c in ipairs(selected) do
    local xc, tc = xt_calls[c.name], torch_calls[c.name]
    local xm, xa = median(xc), mean(xc)
    local tm, ta = #tc > 0 and median(tc) or nil, #tc > 0 and mean(tc) or nil
    print(string.format('%-38s %9s %9s %9s %9s %7s %7s', c.title, ms(xm), ms(xa), ms(tm), ms(ta),
                        tm and string.format('%.2fx', tm / xm) or '-', ta and string.format('%.2fx', ta / xa) or '-'))
    local cc = composed_calls[c.name]
    if cc and #cc > 0 then
        print(string.format('%-38s %9s %9s   (the fused op is %.2fx faster than this composition)',
                            '  the same, plain xt ops', ms(median(cc)), ms(mean(cc)), median(cc) / xm))
    end
end
