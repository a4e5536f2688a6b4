-- xt.experiment: what an experiment script needs around its training loop.
--
--   local run = xt.experiment.start{
--       name = 'aft_conv_cifar', description = '...',
--       defaults = {epochs = 10, batch_size = 128, lr = 3e-3, width = 128},   -- --batch-size ...
--       help = {width = 'channels in the stem'},
--   }
--   run.config.lr, run.dir
--   if run.resumed then state = run.checkpoint end          -- from <dir>/last.xt
--   local bar = run:progress{total = steps, label = 'epoch 1', per_step = 128, unit = 'img'}
--   run:log{epoch = 1, step = 390, train_loss = 0.52, test_acc = 0.91}
--   run:save_checkpoint(state, {best = is_best})            -- last.xt (and best.xt)
--   run:plot()                                               -- curves.png from the metrics
--
-- A run directory holds config.json, metrics.jsonl, metrics.csv, last.xt / best.xt,
-- curves.png and whatever the experiment writes (sample grids). `--resume DIR` reloads the
-- saved config (flags given again on the command line win), the last checkpoint, and the
-- metrics recorded up to it.
local ffi = require 'ffi'
local json = require 'dkjson'
local xt = require 'xt'
local clock = require 'xt.clock'
local config = require 'xt.experiment.config'
local Metrics = require 'xt.experiment.metrics'
local Progress = require 'xt.experiment.progress'

pcall(ffi.cdef, 'int mkdir(const char *path, unsigned int mode);')

local experiment = {config = config, Metrics = Metrics, Progress = Progress}

local Run = {}
Run.__index = Run
experiment.Run = Run

-- mkdir -p; errors name the directory.
function experiment.mkdir(path)
    local sofar = path:sub(1, 1) == '/' and '/' or ''
    for part in path:gmatch('[^/]+') do
        sofar = sofar .. part .. '/'
        if ffi.C.mkdir(sofar, tonumber('755', 8)) ~= 0 then
            local errno = ffi.errno()
            local f = io.open(sofar, 'r')
            local exists = f ~= nil
            if f then f:close() end
            if not exists then
                error(string.format('experiment: cannot create directory %s (errno %d)', sofar,
                                    errno), 2)
            end
        end
    end
end

local function file_exists(path)
    local f = io.open(path, 'r')
    if f then f:close() end
    return f ~= nil
end

local function write_json(path, value)
    local f = assert(io.open(path .. '.tmp', 'w'))
    local keys = {}
    for k in pairs(value) do keys[#keys + 1] = k end
    table.sort(keys)
    f:write(json.encode(value, {indent = true, keyorder = keys}), '\n')
    f:close()
    assert(os.rename(path .. '.tmp', path))
end

local function read_json(path)
    local f, err = io.open(path, 'r')
    if not f then error('experiment: cannot read ' .. tostring(err), 3) end
    local text = f:read('*a')
    f:close()
    local value, _, msg = json.decode(text)
    if type(value) ~= 'table' then
        error(string.format('experiment: %s is not valid JSON (%s)', path, tostring(msg)), 3)
    end
    return value
end

-- Start (or resume) a run. spec: name, description, defaults, help, args (default: the
-- script's global `arg`), quiet.
function experiment.start(spec)
    assert(type(spec) == 'table' and spec.name, 'experiment.start: spec.name is required')
    local cfg, given = config.parse(spec, spec.args or _G.arg or {})
    local self = setmetatable({name = spec.name, started = clock.now(), resumed = false}, Run)
    if cfg.resume then
        local dir = cfg.resume:gsub('/+$', '')
        if not file_exists(dir .. '/config.json') then
            error(string.format('experiment: --resume %s: no config.json there (is it a run '
                                .. 'directory?)', dir), 2)
        end
        local saved = read_json(dir .. '/config.json')
        for k, v in pairs(given) do if v then saved[k] = cfg[k] end end
        saved.resume = nil
        if not given.stop_after then saved.stop_after = 0 end   -- a stop applies once
        cfg = saved
        self.dir = dir
        local last = dir .. '/last.xt'
        if not file_exists(last) then
            error(string.format('experiment: --resume %s: no checkpoint %s yet', dir, last), 2)
        end
        self.checkpoint = xt.load(last)
        self.resumed = true
    else
        self.dir = cfg.out or string.format('runs/%s-%s', spec.name, os.date('%Y%m%d-%H%M%S'))
    end
    self.config = cfg
    experiment.mkdir(self.dir)
    write_json(self.dir .. '/config.json', cfg)
    -- A resumed run keeps the records up to its checkpoint's epoch; later ones are redone.
    local upto = self.checkpoint and self.checkpoint.epoch
    self.metrics = Metrics.open(self.dir, upto and function(r)
        return r.epoch == nil or r.epoch <= upto
    end)
    if cfg.threads and cfg.threads > 0 then xt.set_num_threads(cfg.threads) end
    xt.manual_seed(cfg.seed or 0)
    if not spec.quiet then
        print(string.format('%s: %s run in %s (%d threads, seed %d)', spec.name,
                            self.resumed and 'resuming the' or 'a new', self.dir,
                            xt.get_num_threads(), cfg.seed or 0))
    end
    return self
end

-- Append a metrics record; `time` (seconds since the run started) is added.
function Run:log(record)
    local r = {}
    for k, v in pairs(record) do r[k] = v end
    if r.time == nil then r.time = math.floor((clock.now() - self.started) * 1000 + 0.5) / 1000 end
    self.metrics:log(r)
end

function Run:progress(opts) return Progress.new(opts) end

-- True when the run should stop after this epoch (--stop-after), to be resumed later.
function Run:should_stop(epoch)
    local stop = self.config.stop_after or 0
    return stop > 0 and epoch >= stop
end

-- Write state to last.xt (atomically) and, when opts.best, also to best.xt.
function Run:save_checkpoint(state, opts)
    xt.save(self.dir .. '/last.xt', state)
    if opts and opts.best then xt.save(self.dir .. '/best.xt', state) end
end

-- Curves from the per-epoch records: one panel per metric family (loss, acc, bpd, lr, ...),
-- a line per prefix (train_loss and test_loss share the 'loss' panel).
function experiment.curves_spec(records, xkey)
    xkey = xkey or 'epoch'
    local panels, order = {}, {}
    for _, r in ipairs(records) do
        if r[xkey] ~= nil and r.split == nil then
            for k, v in pairs(r) do
                if type(v) == 'number' and k ~= xkey and k ~= 'time' and k ~= 'step'
                   and k ~= 'epoch' and not k:find('_seconds$') then
                    local prefix, family = k:match('^(.-)_([^_]+)$')
                    if not family then prefix, family = k, k end
                    local panel = panels[family]
                    if not panel then
                        panel = {title = family, xlabel = xkey, series = {}, by_name = {}}
                        panels[family] = panel
                        order[#order + 1] = family
                    end
                    local s = panel.by_name[prefix]
                    if not s then
                        s = {name = prefix, x = {}, y = {}}
                        panel.by_name[prefix] = s
                        panel.series[#panel.series + 1] = s
                    end
                    s.x[#s.x + 1], s.y[#s.y + 1] = r[xkey], v
                end
            end
        end
    end
    table.sort(order)
    local spec = {panels = {}}
    for _, family in ipairs(order) do
        local p = panels[family]
        table.sort(p.series, function(a, b) return a.name < b.name end)
        p.by_name = nil
        spec.panels[#spec.panels + 1] = p
    end
    return spec
end

-- Write <dir>/curves.png from this run's per-epoch records (or from any run directory).
function Run:plot(path)
    return experiment.plot_dir(self.dir, path, self.metrics.records)
end

function experiment.plot_dir(dir, path, records)
    records = records or Metrics.read(dir .. '/metrics.jsonl')
    local spec = experiment.curves_spec(records)
    if #spec.panels == 0 then return nil end
    path = path or dir .. '/curves.png'
    xt.plot.save(path, spec)
    return path
end

return experiment
