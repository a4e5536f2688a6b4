-- xt.experiment.progress: a progress bar for a loop of known length.
--
-- On a terminal it redraws one line (bar, count, the caller's metrics, items/s, ETA) at most
-- ten times a second; elsewhere (logs, CI) it prints a plain line every `every` seconds and at
-- the end, so a log file is not flooded with carriage returns.
local ffi = require 'ffi'
local clock = require 'xt.clock'

pcall(ffi.cdef, 'int isatty(int fd);')

local Progress = {}
Progress.__index = Progress

local function is_terminal(stream)
    if os.getenv('XT_PROGRESS') == 'plain' then return false end
    local fd = stream == io.stdout and 1 or 2
    return ffi.C.isatty(fd) == 1
end

-- opts: total (steps), label, unit ('img' -> "img/s"), per_step (items per step, e.g. the
-- batch size), stream (io.stderr), every (seconds between plain lines, 10), width (bar, 24).
function Progress.new(opts)
    local self = setmetatable({
        total = assert(opts.total, 'progress: total is required'), label = opts.label or '',
        unit = opts.unit or 'it', per_step = opts.per_step or 1,
        stream = opts.stream or io.stderr, every = opts.every or 10, width = opts.width or 24,
        done = 0, items = 0, start = clock.now(), last_draw = -math.huge,
    }, Progress)
    self.tty = is_terminal(self.stream)
    return self
end

local function format_metrics(metrics)
    if not metrics then return '' end
    local keys = {}
    for k in pairs(metrics) do keys[#keys + 1] = k end
    table.sort(keys)
    local parts = {}
    for _, k in ipairs(keys) do
        local v = metrics[k]
        parts[#parts + 1] = type(v) == 'number' and string.format('%s %.4g', k, v)
                            or string.format('%s %s', k, tostring(v))
    end
    return table.concat(parts, '  ')
end

function Progress:line()
    local elapsed = clock.now() - self.start
    local rate = self.items / math.max(elapsed, 1e-9)
    local eta = self.done > 0 and elapsed / self.done * (self.total - self.done) or math.huge
    local frac = self.total > 0 and math.min(1, self.done / self.total) or 1
    local filled = math.floor(frac * self.width + 0.5)
    local bar = string.rep('=', filled) .. string.rep(' ', self.width - filled)
    local width = #tostring(self.total)
    return string.format('%s [%s] %' .. width .. 'd/%d  %s  %.0f %s/s  %s %s', self.label, bar,
                         self.done, self.total, format_metrics(self.metrics), rate, self.unit,
                         self.done >= self.total and 'in' or 'ETA',
                         clock.format_duration(self.done >= self.total and elapsed or eta))
end

-- Advance by n steps (default 1); metrics is a table shown beside the bar.
function Progress:update(n, metrics)
    n = n or 1
    self.done = self.done + n
    self.items = self.items + n * self.per_step
    if metrics then self.metrics = metrics end
    local now = clock.now()
    local interval = self.tty and 0.1 or self.every
    if now - self.last_draw >= interval or self.done >= self.total then
        self.last_draw = now
        if self.tty then
            self.stream:write('\r', self:line(), '\27[K')
        elseif self.done < self.total then
            self.stream:write(self:line(), '\n')
        end
        self.stream:flush()
    end
end

-- Finish the bar (prints its final state once); returns the elapsed seconds.
function Progress:finish(metrics)
    if metrics then self.metrics = metrics end
    local elapsed = clock.now() - self.start
    if self.tty then self.stream:write('\r', self:line(), '\27[K\n')
    else self.stream:write(self:line(), '\n') end
    self.stream:flush()
    return elapsed
end

return Progress
