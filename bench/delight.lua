-- bench/delight.lua: DeLighT speed, side by side with PyTorch (bench/delight_torch.py, the
-- official structure from PyTorch modules), forward + backward.
--
--   xlua bench/delight.lua [--threads N] [--time SECONDS] [--rounds R]
--
-- Cases: the DeLighT block of issue 5 (B16 T256, d_m 256, d_o 128, N 4, m_w 2, g_max 8,
-- post-norm, softmax attention, no dropout), its DExTra alone, and one GLT layer
-- (640 -> 512, 4 groups, mixed input) fused against the same layer composed of plain xt ops
-- (narrow, cat, matmul, add, stack, layer_norm, silu). Times are the best per call of 5
-- batches, and the best over R rounds that alternate PyTorch and xt (default 3), so a busy
-- moment on a shared machine counts against neither; ratio = torch / xt (> 1: xt is faster).
-- PyTorch runs through bench/torch_ref.py with torch.set_num_threads(N); its OpenBLAS keeps
-- its own thread count (all cores), so only the default N (all cores) compares like with like.
local xt = require 'xt'
local timer = require 'bench.timer'
local nn, F = xt.nn, xt.nn.functional

local args = {...}
local threads, min_time, rounds = xt.get_num_threads(), 1.0, 3
local i = 1
while i <= #args do
    if args[i] == '--threads' then threads = tonumber(args[i + 1]); i = i + 1
    elseif args[i] == '--time' then min_time = tonumber(args[i + 1]); i = i + 1
    elseif args[i] == '--rounds' then rounds = tonumber(args[i + 1]); i = i + 1 end
    i = i + 1
end
xt.set_num_threads(threads)
xt.manual_seed(0)

local B, T, D = 16, 256, 256
local here = debug.getinfo(1, 'S').source:match('^@(.*/)') or './'


local cases = {}

cases[#cases + 1] = {
    name = 'DeLighT block fwd+bwd B16 T256 d_m256',
    xt = function()
        local m = nn.DeLighTBlock{d_m = D, depth = 4, width_mult = 2, max_groups = 8}
        local x = xt.randn(B, T, D):requires_grad()
        local dout = xt.randn(B, T, D)
        return function()
            m:zero_grad()
            x.grad = nil
            m(x):backward(dout)
        end
    end,
    torch = {setup = string.format([[
import sys; sys.path.insert(0, %q)
from delight_torch import DeLighTBlock
m = DeLighTBlock(%d, 4, 2.0, 8)
x = torch.randn(%d, %d, %d, requires_grad=True); dout = torch.randn(%d, %d, %d)]], here, D, B, T, D, B, T, D),
        stmt = 'm.zero_grad(set_to_none=True); x.grad = None; m(x).backward(dout)'},
}

cases[#cases + 1] = {
    name = 'DExTra fwd+bwd B16 T256 256->128 N4',
    xt = function()
        local m = nn.DExTra{d_m = D, d_o = D / 2, depth = 4, width_mult = 2, max_groups = 8}
        local x = xt.randn(B, T, D):requires_grad()
        local dout = xt.randn(B, T, D / 2)
        return function()
            m:zero_grad()
            x.grad = nil
            m(x):backward(dout)
        end
    end,
    torch = {setup = string.format([[
import sys; sys.path.insert(0, %q)
from delight_torch import DExTra
m = DExTra(%d, %d, 4, 2.0, 8)
x = torch.randn(%d, %d, %d, requires_grad=True); dout = torch.randn(%d, %d, %d)]], here, D, D / 2, B, T, D, B, T, D / 2),
        stmt = 'm.zero_grad(set_to_none=True); x.grad = None; m(x).backward(dout)'},
}

-- one GLT layer of that DExTra: z [4096, 512] and xp [4096, 128] mixed in 4 groups -> 512
local N, DZ, DP, G, DOUT = B * T, 512, 128, 4, 512
local function glt_inputs()
    local z, xp = xt.randn(N, DZ):requires_grad(), xt.randn(N, DP):requires_grad()
    local w = (xt.randn(G, (DZ + DP) / G, DOUT / G) * 0.05):requires_grad()
    local b = xt.zeros(G, DOUT / G):requires_grad()
    local gamma, beta = xt.ones(DOUT / G):requires_grad(), xt.zeros(DOUT / G):requires_grad()
    return {z, xp, w, b, gamma, beta}, xt.randn(N, DOUT)
end
local function glt_step(fn)
    local inputs, dout = glt_inputs()
    return function()
        for _, t in ipairs(inputs) do t.grad = nil end
        fn(unpack(inputs)):backward(dout)
    end
end

cases[#cases + 1] = {
    name = 'GLT layer fwd+bwd [4096] 640->512 g4',
    xt = function()
        return glt_step(function(z, xp, w, b, gamma, beta)
            return F.group_linear(z, w, b, {mix = xp, shuffle = true, norm = true, norm_weight = gamma,
                                            norm_bias = beta, activation = 'swish'})
        end)
    end,
    composed = function()
        -- the same layer from plain xt ops: mixer concatenation, per-group GEMMs, shuffle,
        -- chunk LayerNorm, swish
        local cz, cp, co = DZ / G, DP / G, DOUT / G
        return glt_step(function(z, xp, w, b, gamma, beta)
            local mixed = xt.cat({xp:view(N, G, cp), z:view(N, G, cz)}, 3)
            local parts = {}
            for k = 1, G do parts[k] = mixed:select(2, k):matmul(w[k]) + b[k] end
            local s = xt.stack(parts, 3):view(N, G, co)   -- [N, co, g] read as [N, g, co]
            return F.layer_norm(s, co, gamma, beta):silu():view(N, DOUT)
        end)
    end,
    torch = {setup = string.format([[
import sys; sys.path.insert(0, %q)
from delight_torch import GLT
m = GLT(%d, %d, %d)
z = torch.randn(%d, %d, requires_grad=True); xp = torch.randn(%d, %d, requires_grad=True)
dout = torch.randn(%d, %d)
def f():
    u = torch.cat([xp.view(%d, %d, -1), z.view(%d, %d, -1)], -1).view(%d, -1)
    return m(u)]], here, DZ + DP, DOUT, G, N, DZ, N, DP, N, DOUT, N, G, N, G, N),
        stmt = 'm.zero_grad(set_to_none=True); z.grad = None; xp.grad = None; f().backward(dout)'},
}

-- PyTorch side: one python process through bench/torch_ref.py
local function torch_times()
    local python = '/usr/bin/python3'
    local probe = io.popen(python .. ' -c "import torch" 2>/dev/null && echo yes')
    local has_torch = probe and probe:read('*a'):find('yes')
    if probe then probe:close() end
    if not has_torch then return nil end
    local list = {}
    for _, c in ipairs(cases) do list[#list + 1] = {name = c.name, setup = c.torch.setup, stmt = c.torch.stmt} end
    local json = require 'dkjson'
    local tmp = os.tmpname()
    local f = assert(io.open(tmp, 'w'))
    f:write(json.encode(list))
    f:close()
    local p = io.popen(string.format('%s %storch_ref.py %d %g < %s', python, here, threads, min_time, tmp))
    local out = p:read('*a')
    p:close()
    os.remove(tmp)
    return json.decode(out)
end

print(string.format('xt %s, %d threads; best per-call time over %d rounds', xt.version, threads, rounds))
local best_xt, best_torch, best_composed, have_torch = {}, {}, {}, true
local steps = {}
for _, c in ipairs(cases) do steps[c.name] = {xt = c.xt(), composed = c.composed and c.composed()} end
for _ = 1, rounds do
    local ref = have_torch and torch_times()
    if not ref then have_torch = false end
    for _, c in ipairs(cases) do
        local name = c.name
        if ref and ref[name] then best_torch[name] = math.min(best_torch[name] or math.huge, ref[name]) end
        best_xt[name] = math.min(best_xt[name] or math.huge, timer.time(steps[name].xt, min_time))
        if steps[name].composed then
            best_composed[name] = math.min(best_composed[name] or math.huge, timer.time(steps[name].composed, min_time))
        end
    end
end
if not have_torch then print('(PyTorch not found: /usr/bin/python3 -c "import torch" failed; xt times only)') end
print(string.format('%-40s %11s %11s %8s  %s', 'case', 'xt', 'torch', 'ratio', 'notes'))
for _, c in ipairs(cases) do
    local t, tt, tc = best_xt[c.name], best_torch[c.name], best_composed[c.name]
    local notes = tc and string.format('xt composed of plain ops: %.2fms (fused %.2fx faster)', tc * 1e3, tc / t) or ''
    print(string.format('%-40s %9.2fms %11s %8s  %s', c.name, t * 1e3,
                        tt and string.format('%.2fms', tt * 1e3) or '-',
                        tt and string.format('%.2fx', tt / t) or '-', notes))
end
