-- xt.format: tensors as text, in PyTorch's layout, with shape and dtype shown.
-- Big tensors are elided: past 1000 elements only the first and last 3 entries of each dim.
local ffi = require 'ffi'

local M = {}

local THRESHOLD, EDGE = 1000, 3
local PTR = {[0] = 'float*', [1] = 'int64_t*', [2] = 'uint8_t*'}

-- The values shown, in order, to choose one number format for all of them.
local function shown_values(c, p, summarize)
    local vals = {}
    local function walk(dim, off)
        if dim == c.ndim then vals[#vals + 1] = tonumber(p[off]); return end
        local n, st = tonumber(c.shape[dim]), tonumber(c.strides[dim])
        for i = 0, n - 1 do
            if summarize and n > 2 * EDGE and i == EDGE then i = n - EDGE end
            if not (summarize and n > 2 * EDGE and i >= EDGE and i < n - EDGE) then
                walk(dim + 1, off + i * st)
            end
        end
    end
    walk(0, 0)
    return vals
end

local function number_format(vals, is_float)
    if not is_float then
        local width = 1
        for _, v in ipairs(vals) do width = math.max(width, #string.format('%d', v)) end
        return function(v) return string.format('%' .. width .. 'd', v) end
    end
    local finite, integral, maxabs, minabs = {}, true, 0, math.huge
    for _, v in ipairs(vals) do
        if v == v and v ~= math.huge and v ~= -math.huge then
            finite[#finite + 1] = v
            if v ~= math.floor(v) then integral = false end
            local a = math.abs(v)
            maxabs = math.max(maxabs, a)
            if a > 0 then minabs = math.min(minabs, a) end
        end
    end
    local fmt
    if #finite == 0 then fmt = '%.4f'
    elseif integral and maxabs < 1e8 then fmt = '%.0f.'
    elseif maxabs >= 1e8 or (minabs < 1e-4) or (maxabs / minabs > 1e3 and maxabs > 1e3) then fmt = '%.4e'
    else fmt = '%.4f' end
    local function show(v)
        if v ~= v then return 'nan' end
        if v == math.huge then return 'inf' end
        if v == -math.huge then return '-inf' end
        return string.format(fmt, v)
    end
    local width = 1
    for _, v in ipairs(vals) do width = math.max(width, #show(v)) end
    return function(v)
        local s = show(v)
        return string.rep(' ', width - #s) .. s
    end
end

function M.tensor(t)
    local c = t._c
    local dtype = ({[0] = 'float32', 'int64', 'uint8'})[c.dtype]
    local shape = {}
    for i = 0, c.ndim - 1 do shape[i + 1] = tonumber(c.shape[i]) end
    local numel = 1
    for i = 1, #shape do numel = numel * shape[i] end
    local p = ffi.cast(PTR[c.dtype], c.data)
    local summarize = numel > THRESHOLD
    local fmt = number_format(shown_values(c, p, summarize), c.dtype == 0)

    local prefix = 'tensor('
    local function render(dim, off, indent)
        if dim == c.ndim then return fmt(tonumber(p[off])) end
        local n, st = tonumber(c.shape[dim]), tonumber(c.strides[dim])
        local parts = {}
        for i = 0, n - 1 do
            if summarize and n > 2 * EDGE and i == EDGE then
                parts[#parts + 1] = '...'
            end
            if not (summarize and n > 2 * EDGE and i >= EDGE and i < n - EDGE) then
                parts[#parts + 1] = render(dim + 1, off + i * st, indent .. ' ')
            end
        end
        local sep = dim == c.ndim - 1 and ', ' or (',' .. string.rep('\n', c.ndim - dim - 1) .. indent .. ' ')
        return '[' .. table.concat(parts, sep) .. ']'
    end
    local body = numel == 0 and '[]' or render(0, 0, string.rep(' ', #prefix))
    local extras = {'shape=[' .. table.concat(shape, ',') .. ']', 'dtype=' .. dtype}
    local grad_fn = t.grad_fn
    if grad_fn then extras[#extras + 1] = 'grad_fn=<' .. grad_fn .. '>'
    elseif c.requires_grad ~= 0 then extras[#extras + 1] = 'requires_grad=true' end
    return prefix .. body .. ', ' .. table.concat(extras, ', ') .. ')'
end

return M
