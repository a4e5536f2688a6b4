-- The run infrastructure of experiments: flags, metrics files, progress lines, resume,
-- curves and the drawing they rest on.
local xt = require 'xt'
local experiment = xt.experiment
local config = experiment.config
local json = require 'dkjson'

local tmp_root = os.tmpname()
os.remove(tmp_root)

local function read_file(path)
    local f = assert(io.open(path, 'r'))
    local s = f:read('*a')
    f:close()
    return s
end

local function lines(path)
    local out = {}
    for line in io.lines(path) do out[#out + 1] = line end
    return out
end

describe('experiment flags', function()
    local spec = {name = 'demo', defaults = {epochs = 3, width = 64, fast = false, act = 'gelu',
                                             lr = 3e-3}}

    it('keeps defaults, overrides from flags and converts types', function()
        local cfg, given = config.parse(spec, {'--width', '32', '--fast', '--act', 'relu',
                                               '--batch-size', '16'})
        assert.are.equal(3, cfg.epochs)
        assert.are.equal(32, cfg.width)
        assert.is_true(cfg.fast)
        assert.are.equal('relu', cfg.act)
        assert.are.equal(16, cfg.batch_size)
        assert.are.equal(3e-3, cfg.lr)            -- the experiment's default beats the common one
        assert.is_nil(cfg.out)                    -- NONE defaults stay nil
        assert.is_true(given.width)
        assert.is_nil(given.epochs)
    end)

    it('has --no-flag for booleans that default to true', function()
        local cfg = config.parse({name = 'x', defaults = {augment = true}}, {'--no-augment'})
        assert.is_false(cfg.augment)
    end)

    it('refuses defaults of other types', function()
        assert.has_error(function() config.parse({name = 'x', defaults = {f = {}}}, {}) end)
    end)
end)

describe('metrics files', function()
    it('writes JSON lines and a CSV that widens when a new key appears', function()
        local dir = tmp_root .. '-metrics'
        experiment.mkdir(dir)
        local m = experiment.Metrics.open(dir)
        m:log({epoch = 1, train_loss = 0.5})
        m:log({epoch = 2, train_loss = 0.25, test_acc = 0.75, note = 'a,b'})
        local csv = lines(dir .. '/metrics.csv')
        assert.are.same({'epoch,train_loss,note,test_acc', '1,0.5,,', '2,0.25,"a,b",0.75'}, csv)
        local js = lines(dir .. '/metrics.jsonl')
        assert.are.equal(2, #js)
        assert.are.equal(0.75, json.decode(js[2]).test_acc)
        -- reopening with a filter keeps only what passes (what resume does)
        local again = experiment.Metrics.open(dir, function(r) return r.epoch <= 1 end)
        assert.are.equal(1, #again.records)
        assert.are.equal(1, #lines(dir .. '/metrics.jsonl'))
        os.execute('rm -rf ' .. dir)
    end)

    it('names the file and line of a corrupt record', function()
        local path = tmp_root .. '-bad.jsonl'
        local f = assert(io.open(path, 'w'))
        f:write('{"epoch":1}\n', 'not json\n')
        f:close()
        assert.has_error(function() experiment.Metrics.read(path) end)
        local ok, err = pcall(experiment.Metrics.read, path)
        assert.is_false(ok)
        assert.truthy(err:find('line 2', 1, true))
        os.remove(path)
    end)
end)

describe('a run', function()
    it('writes config.json, checkpoints and resumes with the saved config', function()
        local dir = tmp_root .. '-run'
        local spec = {name = 'demo', defaults = {epochs = 2, width = 8}, quiet = true}
        local run = experiment.start{name = spec.name, defaults = spec.defaults, quiet = true,
                                     args = {'--out', dir, '--width', '16', '--seed', '7'}}
        assert.are.equal(16, run.config.width)
        assert.is_false(run.resumed)
        local cfg = json.decode(read_file(dir .. '/config.json'))
        assert.are.equal(16, cfg.width)
        for epoch = 1, 2 do
            run:log({epoch = epoch, train_loss = 1 / epoch})
            run:save_checkpoint({epoch = epoch, w = xt.full({2}, epoch)}, {best = epoch == 1})
        end
        assert.are.equal(1, xt.load(dir .. '/best.xt').epoch)
        -- resume: the saved config (width 16, seed 7) plus the flags given now (epochs 4)
        local resumed = experiment.start{name = 'demo', defaults = spec.defaults, quiet = true,
                                         args = {'--resume', dir, '--epochs', '4'}}
        assert.is_true(resumed.resumed)
        assert.are.equal(16, resumed.config.width)
        assert.are.equal(7, resumed.config.seed)
        assert.are.equal(4, resumed.config.epochs)
        assert.are.equal(2, resumed.checkpoint.epoch)
        assert.are.equal(2, resumed.checkpoint.w[1])
        assert.are.equal(2, #resumed.metrics.records)
        os.execute('rm -rf ' .. dir)
    end)

    it('says what is wrong with a bad --resume directory', function()
        local ok, err = pcall(experiment.start, {name = 'demo', quiet = true,
                                                 args = {'--resume', tmp_root .. '-nothing'}})
        assert.is_false(ok)
        assert.truthy(err:find('no config.json', 1, true))
    end)
end)

describe('progress', function()
    it('prints plain lines with count, metrics, rate and a final time', function()
        local path = tmp_root .. '-progress'
        local out = assert(io.open(path, 'w'))
        local bar = experiment.Progress.new{total = 4, label = 'epoch 1', stream = out,
                                            every = 0, per_step = 10, unit = 'img'}
        for _ = 1, 4 do bar:update(1, {loss = 0.5}) end
        bar:finish()
        out:close()
        local text = lines(path)
        assert.are.equal(4, #text)   -- three updates, then the final line
        assert.truthy(text[1]:find('epoch 1 [', 1, true))
        assert.truthy(text[1]:find('1/4', 1, true))
        assert.truthy(text[1]:find('loss 0.5', 1, true))
        assert.truthy(text[4]:find('4/4', 1, true))
        assert.truthy(text[4]:find(' in ', 1, true))
        assert.truthy(text[4]:find('img/s', 1, true))
        os.remove(path)
    end)
end)


-- Whether the first series' colour (matplotlib's blue) is at column mx within 2 rows of my
-- (0-based pixel coordinates).
local function first_colour_near(img, mx, my)
    for dy = -2, 2 do
        local px = img[my + dy + 1][mx + 1]
        if px[1] == 31 and px[2] == 119 and px[3] == 180 then return true end
    end
    return false
end

describe('curves', function()
    it('groups metrics into panels by family and lines by prefix', function()
        local spec = experiment.curves_spec({
            {epoch = 1, train_loss = 2, test_loss = 2.5, test_acc = 0.3, time = 1},
            {epoch = 2, train_loss = 1, test_loss = 1.5, test_acc = 0.6, time = 2},
            {step = 5, train_loss = 9},   -- a step record: not on the epoch axis
        })
        assert.are.equal(2, #spec.panels)
        assert.are.equal('acc', spec.panels[1].title)
        assert.are.equal('loss', spec.panels[2].title)
        local loss = spec.panels[2].series
        assert.are.same({'test', 'train'}, {loss[1].name, loss[2].name})
        assert.are.same({1, 2}, loss[2].x)
        assert.are.same({2, 1}, loss[2].y)
    end)

    it('picks round tick values', function()
        assert.are.same({0, 0.2, 0.4, 0.6, 0.8, 1}, (function()
            local t = xt.plot.ticks(0, 1, 5)
            for i = 1, #t do t[i] = math.floor(t[i] * 10 + 0.5) / 10 end
            return t
        end)())
        local t, step = xt.plot.ticks(13, 97, 4)
        assert.are.equal(20, step)
        assert.are.same({20, 40, 60, 80}, t)
    end)

    it('draws lines in the series colour and text in black', function()
        local img = xt.plot.figure{width = 300, height = 200, panels = {
            {title = 'loss', series = {{name = 'train', x = {0, 1}, y = {0, 1}}}}}}
        assert.are.same({200, 300, 3}, {img:size(1), img:size(2), img:size(3)})
        assert.are.equal('uint8', img.dtype)
        -- the line runs from the bottom-left to the top-right of the plot area; its midpoint
        local x0, y0, x1, y1 = 64, 34, 300 - 16, 200 - 40
        local yspan = (y1 - y0)
        local mx = math.floor((x0 + x1) / 2)
        local my = math.floor(y1 - yspan * (0.5 + 0.05) / 1.1 + 0.5)
        assert.is_true(first_colour_near(img, mx, my))
        assert.are.equal(255, img[1][1][1])   -- background
    end)

    it('labels ticks at integer steps (step 1 once printed as an invalid format)', function()
        local img = xt.plot.figure{panels = {{series = {{x = {1, 2}, y = {5, 10}}}}}}
        assert.are.equal('uint8', img.dtype)
    end)

    it('puts log-axis ticks at 1, 2 and 5 times powers of ten', function()
        assert.are.same({5, 10, 20, 50, 100}, xt.plot.log_ticks(math.log10(3), 2.1))
        assert.are.same({1, 10, 100, 1000}, xt.plot.log_ticks(0, 3.5))   -- many decades: powers only
    end)

    it('draws a log-log line y = x^2 straight, through its geometric midpoint', function()
        local img = xt.plot.figure{width = 300, height = 200, panels = {{xlog = true, ylog = true,
            xticks = {1, 10, 100}, series = {{x = {1, 10, 100}, y = {1, 100, 10000}}, {x = {0, 1}, y = {-1, 5}}}}}}
        -- (10, 100) sits halfway along both log axes: the middle of the plot area
        local x0, y0, x1, y1 = 64, 34, 300 - 16, 200 - 40
        local mx, my = math.floor((x0 + x1) / 2), math.floor((y0 + y1) / 2)
        assert.is_true(first_colour_near(img, mx, my))
    end)

    it('rejects series whose x and y differ in length', function()
        assert.has_error(function()
            xt.plot.figure{panels = {{series = {{x = {1, 2}, y = {1}}}}}}
        end)
    end)
end)

describe('drawing', function()
    local C = xt.C
    local ffi = require 'ffi'
    local white = ffi.new('uint8_t[3]', 255, 255, 255)

    it('fills rectangles, clipped to the image', function()
        local img = xt.zeros({4, 5, 3}, {dtype = 'uint8'})
        xt._check(C.xt_draw_rect(img._c, 3, 2, 10, 10, 3, white))
        assert.are.equal(255, img[3][4][1])   -- row 2, col 3 (0-based) is inside
        assert.are.equal(0, img[2][4][1])
        assert.are.equal(0, img[3][3][1])
        assert.are.equal(255, img[4][5][3])
    end)

    it('refuses images that are not uint8 [H,W,C] and colours of the wrong size', function()
        local f = xt.zeros(4, 4, 3)
        assert.are_not.equal(0, C.xt_draw_rect(f._c, 0, 0, 1, 1, 3, white))
        assert.truthy(ffi.string(C.xt_last_error()):find('uint8', 1, true))
        local img = xt.zeros({4, 4, 1}, {dtype = 'uint8'})
        assert.are_not.equal(0, C.xt_draw_line(img._c, 0, 0, 3, 3, 1, 3, white))
        assert.truthy(ffi.string(C.xt_last_error()):find('channels', 1, true))
    end)

    it('draws text with some ink and a size that grows with scale', function()
        local img = xt.zeros({20, 60, 1}, {dtype = 'uint8'})
        local one = ffi.new('uint8_t[1]', 1)
        xt._check(C.xt_draw_text(img._c, 1, 1, 'loss 0.5', 1, 1, one))
        assert.is_true(img:float():sum():item() > 10)
        local w1, h1 = ffi.new('int32_t[1]'), ffi.new('int32_t[1]')
        local w2, h2 = ffi.new('int32_t[1]'), ffi.new('int32_t[1]')
        C.xt_text_size('abc', 1, w1, h1)
        C.xt_text_size('abc', 2, w2, h2)
        assert.are.equal(2 * w1[0], w2[0])
        assert.is_true(w1[0] > 0 and h1[0] > 0)
    end)
end)

describe('xt.process', function()
    it('measures how far the peak resident set rises while a function runs', function()
        if not xt.process.status_kib('VmHWM') or not xt.process.reset_peak() then
            pending('no /proc/self/status or clear_refs here')
            return
        end
        local mib, n = xt.process.peak_growth(function()
            local t = xt.ones(16, 1024, 1024)   -- 64 MiB, touched
            return t:sum():item()
        end)
        assert.are.equal(16 * 1024 * 1024, n)
        assert.is_true(mib > 60 and mib < 200, 'grew by ' .. tostring(mib) .. ' MiB')
    end)

    it('builds the command that runs xlua in a fresh process', function()
        local cmd = xt.process.fresh_command({'script.lua', '--name', "it's"}, {timeout = 5})
        assert.truthy(cmd:find('^MALLOC_MMAP_THRESHOLD_=65536 timeout 5 '))
        local tail = "script.lua --name 'it'\\''s'"
        assert.are.equal(tail, cmd:sub(-#tail))
        local out = io.popen(xt.process.fresh_command('-e "print(1 + 1)"')):read('*a')
        assert.are.equal('2\n', out)
    end)
end)
