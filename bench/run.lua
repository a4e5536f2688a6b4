-- bench/run.lua: op speed, side by side with PyTorch when Debian's python3-torch is there.
--
--   xlua bench/run.lua [pattern] [--threads N] [--time SECONDS]
--
-- Every case runs in xt and (when torch imports) in PyTorch with the same thread count,
-- in one run, and prints both times and the ratio torch/xt (> 1: xt is faster). Two
-- references that need no PyTorch are printed too: matmul against a direct cblas_sgemm on
-- the same buffers, and a large add against the machine's streaming bandwidth (memcpy).
local xt = require 'xt'
local ffi = require 'ffi'
local timer = require 'bench.timer'

local args = {...}
local pattern, threads, min_time = nil, xt.get_num_threads(), 0.5
local i = 1
while i <= #args do
    if args[i] == '--threads' then threads = tonumber(args[i + 1]); i = i + 1
    elseif args[i] == '--time' then min_time = tonumber(args[i + 1]); i = i + 1
    else pattern = args[i] end
    i = i + 1
end
xt.set_num_threads(threads)
xt.manual_seed(0)

local cases = require 'bench.cases'

local function selected(case) return not pattern or case.name:find(pattern, 1, true) end

-- PyTorch side: one python process times every selected case.
local function torch_times()
    local python = '/usr/bin/python3'
    local probe = io.popen(python .. ' -c "import torch" 2>/dev/null && echo yes')
    local has_torch = probe and probe:read('*a'):find('yes')
    if probe then probe:close() end
    if not has_torch then return nil end
    local list = {}
    for _, c in ipairs(cases) do
        if selected(c) and c.torch then
            list[#list + 1] = {name = c.name, setup = c.torch.setup, stmt = c.torch.stmt}
        end
    end
    local json = require 'dkjson'
    local tmp = os.tmpname()
    local f = assert(io.open(tmp, 'w'))
    f:write(json.encode(list))
    f:close()
    local script = debug.getinfo(1, 'S').source:match('^@(.*/)') .. 'torch_ref.py'
    local p = io.popen(string.format('%s %s %d %g < %s', python, script, threads, min_time, tmp))
    local out = p:read('*a')
    p:close()
    os.remove(tmp)
    return json.decode(out)
end

print(string.format('xt %s, %d threads; times are the best per-call of 5 batches', xt.version, threads))
local ref = torch_times()
if not ref then print('(PyTorch not found: /usr/bin/python3 -c "import torch" failed; xt times only)') end
print(string.format('%-44s %12s %12s %8s  %s', 'case', 'xt', 'torch', 'ratio', 'notes'))
for _, c in ipairs(cases) do
    if selected(c) then
        local fn = c.xt()
        local t = timer.time(fn, min_time)
        local tt = ref and ref[c.name]
        local notes = {}
        if c.flops then notes[#notes + 1] = string.format('%.1f GFLOP/s', c.flops / t / 1e9) end
        if c.bytes then notes[#notes + 1] = string.format('%.1f GB/s', c.bytes / t / 1e9) end
        if c.reference then
            local rname, rfn = c.reference()
            local rt = timer.time(rfn, min_time)
            notes[#notes + 1] = string.format('%.0f%% of %s', 100 * rt / t, rname)
        end
        print(string.format('%-44s %10.3fms %10s %8s  %s', c.name, t * 1e3,
                            tt and string.format('%.3fms', tt * 1e3) or '-',
                            tt and string.format('%.2fx', tt / t) or '-',
                            table.concat(notes, ', ')))
        io.stdout:flush()
    end
end
