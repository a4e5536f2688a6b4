-- xt.plot: line charts as PNG, for training curves. Drawing happens in C (xt_draw_*); this
-- file only lays out axes, ticks and legends.
--
--   local img = xt.plot.figure{panels = {
--       {title = 'loss', xlabel = 'epoch', series = {{name = 'train', x = {1,2,3}, y = {...}},
--                                                    {name = 'test', x = ..., y = ...}}},
--       {title = 'accuracy', ...}}}          -- a uint8 image [H,W,3]
--   xt.plot.save('curves.png', {panels = ...})
--
-- A panel may set xlog / ylog = true (a log10 axis; values <= 0 are left out) and xticks = a
-- list of values to mark on the x axis instead of the automatic ones; legend = 'top-left'
-- moves the legend from the top-right corner.
local ffi = require 'ffi'
local xt = require 'xt'
local C = xt.C

local plot = {}

local PALETTE = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44}, {214, 39, 40},
                 {148, 103, 189}, {140, 86, 75}, {227, 119, 194}, {127, 127, 127},
                 {188, 189, 34}, {23, 190, 207}, {0, 0, 128}, {128, 128, 0},
                 {0, 128, 128}, {128, 0, 0}, {255, 200, 0}, {0, 0, 0}}
local BLACK, GRID, WHITE = {0, 0, 0}, {225, 225, 225}, {255, 255, 255}

local function rgb(c) return ffi.new('uint8_t[3]', c[1], c[2], c[3]) end

local function text_size(s, scale)
    local w, h = ffi.new('int32_t[1]'), ffi.new('int32_t[1]')
    C.xt_text_size(s, scale, w, h)
    return w[0], h[0]
end

local function draw_text(img, x, y, s, scale, colour)
    xt._check(C.xt_draw_text(img._c, x, y, s, scale, 3, rgb(colour)))
end
local function draw_line(img, x0, y0, x1, y1, thickness, colour)
    xt._check(C.xt_draw_line(img._c, x0, y0, x1, y1, thickness, 3, rgb(colour)))
end
local function draw_rect(img, x0, y0, x1, y1, colour)
    xt._check(C.xt_draw_rect(img._c, x0, y0, x1, y1, 3, rgb(colour)))
end

-- Tick positions at 1, 2 or 5 times a power of ten, about n of them over [lo, hi].
function plot.ticks(lo, hi, n)
    n = n or 5
    if hi <= lo then return {lo} end
    local raw = (hi - lo) / n
    local mag = 10 ^ math.floor(math.log10(raw))
    local step, best = mag, math.huge
    for _, m in ipairs({1, 2, 5, 10}) do   -- the round step nearest the raw one
        local miss = math.abs(math.log(m * mag / raw))
        if miss < best then step, best = m * mag, miss end
    end
    local out = {}
    local first = math.ceil(lo / step - 1e-9) * step
    for v = first, hi + step * 1e-6, step do out[#out + 1] = v end
    return out, step
end

-- Ticks for a log axis spanning [10^lo, 10^hi]: the powers of ten, and 2 and 5 times them
-- when the range spans fewer than three decades.
function plot.log_ticks(lo, hi)
    local out = {}
    local mults = hi - lo < 3 and {1, 2, 5} or {1}
    for e = math.floor(lo), math.ceil(hi) do
        for _, m in ipairs(mults) do
            local v = m * 10 ^ e
            local lv = math.log10(v)
            if lv >= lo - 1e-9 and lv <= hi + 1e-9 then out[#out + 1] = v end
        end
    end
    return out
end

local function format_tick(v, step)
    if math.abs(v) < step * 1e-6 then v = 0 end
    local decimals = -math.floor(math.log10(step) + 1e-9)
    if not (decimals > 0) then decimals = 0 end   -- also -0, which would print as '%.-0f'
    if math.abs(v) >= 1e5 or (v ~= 0 and math.abs(v) < 1e-3) then return string.format('%.2g', v) end
    return string.format('%.' .. decimals .. 'f', v)
end

-- The data range of every finite point in the panel's series.
local function extent(series, axis)
    local lo, hi = math.huge, -math.huge
    for _, s in ipairs(series) do
        for i = 1, #s[axis] do
            local v = s[axis][i]
            if v == v and v > -math.huge and v < math.huge then
                lo, hi = math.min(lo, v), math.max(hi, v)
            end
        end
    end
    if lo > hi then return 0, 1 end
    if lo == hi then return lo - 0.5, hi + 0.5 end
    return lo, hi
end

local function check_series(series, where)
    for i, s in ipairs(series) do
        if type(s.x) ~= 'table' or type(s.y) ~= 'table' then
            error(string.format('plot: %s series %d needs x and y lists', where, i), 4)
        end
        if #s.x ~= #s.y then
            error(string.format("plot: %s series %d ('%s') has %d x values and %d y values",
                                where, i, tostring(s.name), #s.x, #s.y), 4)
        end
    end
end

local function log10_or_nan(v) return v > 0 and math.log10(v) or 0 / 0 end

-- The series with log10 applied to the axes that are logarithmic (x and y then hold axis
-- positions; the other fields are kept).
local function to_axes(series, xlog, ylog)
    if not xlog and not ylog then return series end
    local out = {}
    for i, s in ipairs(series) do
        local t = setmetatable({x = {}, y = {}}, {__index = s})
        for j = 1, #s.x do
            t.x[j] = xlog and log10_or_nan(s.x[j]) or s.x[j]
            t.y[j] = ylog and log10_or_nan(s.y[j]) or s.y[j]
        end
        out[i] = t
    end
    return out
end

-- The ticks of one axis over [lo, hi] (axis positions): {position, label} pairs.
local function axis_ticks(lo, hi, n, log, given)
    local out = {}
    if given or log then
        for _, v in ipairs(given or plot.log_ticks(lo, hi)) do
            local pos = log and log10_or_nan(v) or v
            if pos >= lo - 1e-9 and pos <= hi + 1e-9 then out[#out + 1] = {pos, string.format('%g', v)} end
        end
        return out
    end
    local ticks, step = plot.ticks(lo, hi, n)
    for i, v in ipairs(ticks) do out[i] = {v, format_tick(v, step)} end
    return out
end

-- Draw one panel into img with its top-left corner at (ox, oy), size w × h.
local function draw_panel(img, panel, ox, oy, w, h)
    local series = panel.series or {}
    check_series(series, panel.title and ("panel '" .. panel.title .. "'") or 'panel')
    series = to_axes(series, panel.xlog, panel.ylog)
    local left, right, top, bottom = 64, 16, 34, 40
    local px0, py0, px1, py1 = ox + left, oy + top, ox + w - right, oy + h - bottom
    local xlo, xhi = extent(series, 'x')
    local ylo, yhi = extent(series, 'y')
    if panel.ylim then
        ylo, yhi = panel.ylim[1], panel.ylim[2]
        if panel.ylog then ylo, yhi = math.log10(ylo), math.log10(yhi) end
    end
    local pad = (yhi - ylo) * 0.05
    ylo, yhi = ylo - pad, yhi + pad
    local function sx(v) return px0 + (v - xlo) / (xhi - xlo) * (px1 - px0) end
    local function sy(v) return py1 - (v - ylo) / (yhi - ylo) * (py1 - py0) end

    for _, tick in ipairs(axis_ticks(ylo, yhi, 5, panel.ylog)) do
        draw_line(img, px0, sy(tick[1]), px1, sy(tick[1]), 1, GRID)
        local tw, th = text_size(tick[2], 1)
        draw_text(img, px0 - tw - 6, sy(tick[1]) - th / 2, tick[2], 1, BLACK)
    end
    for _, tick in ipairs(axis_ticks(xlo, xhi, 6, panel.xlog, panel.xticks)) do
        draw_line(img, sx(tick[1]), py0, sx(tick[1]), py1, 1, GRID)
        local tw = text_size(tick[2], 1)
        draw_text(img, sx(tick[1]) - tw / 2, py1 + 6, tick[2], 1, BLACK)
    end
    draw_line(img, px0, py0, px0, py1, 1, BLACK)
    draw_line(img, px0, py1, px1, py1, 1, BLACK)

    for i, s in ipairs(series) do
        local colour = s.colour or PALETTE[(i - 1) % #PALETTE + 1]
        local prev
        for j = 1, #s.x do
            local x, y = s.x[j], s.y[j]
            if x == x and y == y and math.abs(y) < math.huge then
                local cur = {sx(x), sy(math.max(ylo, math.min(yhi, y)))}
                if prev then draw_line(img, prev[1], prev[2], cur[1], cur[2], 2, colour)
                elseif #s.x == 1 then draw_rect(img, cur[1] - 2, cur[2] - 2, cur[1] + 2, cur[2] + 2, colour) end
                prev = cur
            else
                prev = nil   -- a gap at NaN
            end
        end
    end

    if panel.title then
        local tw = text_size(panel.title, 2)
        draw_text(img, ox + (w - tw) / 2, oy + 8, panel.title, 2, BLACK)
    end
    if panel.xlabel then
        local tw = text_size(panel.xlabel, 1)
        draw_text(img, px0 + (px1 - px0 - tw) / 2, py1 + 22, panel.xlabel, 1, BLACK)
    end
    -- legend, in the top-right (or top-left) corner of the plot area
    local ly = py0 + 6
    for i, s in ipairs(series) do
        if s.name then
            local colour = s.colour or PALETTE[(i - 1) % #PALETTE + 1]
            local tw, th = text_size(s.name, 1)
            local lx = panel.legend == 'top-left' and px0 + 6 or px1 - tw - 36   -- the box's left edge
            draw_rect(img, lx, ly - 2, lx + tw + 32, ly + th + 2, WHITE)
            draw_line(img, lx + 4, ly + th / 2, lx + 22, ly + th / 2, 2, colour)
            draw_text(img, lx + 28, ly, s.name, 1, BLACK)
            ly = ly + th + 6
        end
    end
end

-- spec: {panels = {...}, width = 520 (per panel), height = 360}. Returns uint8 [H,W,3].
function plot.figure(spec)
    if type(spec) ~= 'table' or type(spec.panels) ~= 'table' then
        error('plot.figure: expected {panels = {{title=, series={...}}, ...}}', 2)
    end
    local n = math.max(1, #spec.panels)
    local w, h = spec.width or 520, spec.height or 360
    local img = xt.full({h, w * n, 3}, 255, {dtype = 'uint8'})
    for i, panel in ipairs(spec.panels) do draw_panel(img, panel, (i - 1) * w, 0, w, h) end
    return img
end

function plot.save(path, spec)
    local img = plot.figure(spec)
    xt.image.save(path, img)
    return img
end

return plot
