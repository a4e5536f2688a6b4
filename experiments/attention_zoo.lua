-- experiments/attention_zoo.lua: every attention of xt on one small task, with the same model
-- and budget, and how each one's cost grows with the sequence.
--
--   xlua experiments/attention_zoo.lua                              -- all of nn.attention_names()
--   xlua experiments/attention_zoo.lua --attentions softmax,linear,aft_simple --steps 100
--   xlua experiments/attention_zoo.lua --no-scaling                 -- only the table
--   xlua experiments/attention_zoo.lua --no-train --lengths 1024,4096   -- only the scaling plot
--
-- The defaults (300 steps of 16, dim 32, depth 1, 1000 test images) take about 20 minutes for
-- all 13 attentions on this 2-core machine while it runs other jobs: about 15 for training
-- (3 s for one step of each attention), 3.5 for the scaling part.
--
-- The task: sequential Fashion-MNIST, the 28x28 pixels of an image as a sequence of 784 values.
-- The model: xt.models.token_classifier with patch = 0 (Linear(1, dim) + a learned position
-- embedding, `depth` pre-norm blocks with the attention and an MLP, mean over positions,
-- Linear to 10 classes). Every attention gets the same budget (--steps of --batch-size, AdamW,
-- warmup + cosine), the same seed before the model is built, and the same batches in the same
-- order. Options an attention takes from the shared table: heads, window (local, aft_local,
-- longformer, bigbird), linformer_k, features (performer), image_size {28, 28} (axial).
--
-- Each attention trains in a fresh xlua process (this script with --case): its peak memory
-- cannot hide behind what the previous one freed, and a failure (an error, a crash, the
-- --case-timeout) costs only its row of the table. Reported per attention: test accuracy after
-- the budget (the first --limit-test test images), the median time of a training step (forward,
-- backward, clipping, optimizer), the peak memory of training (how far the peak resident set
-- rose during the training steps above where it stood with the data loaded and the model
-- built: activations, gradients, optimizer state, allocator cache) and the parameter count.
--
-- The scaling part: one forward + backward of the attention module alone (B = 1, dim
-- --scaling-dim, --heads heads) at each of --lengths, each (attention, T) in a fresh process;
-- the best of --reps calls after a warm-up call (short calls are repeated until half a second
-- has been spent, long ones stop after 10 s), and the peak memory growth of the warm-up call.
-- Axial attention runs on the most nearly square grid of T positions. A length is skipped,
-- with the reason, when an estimate says it needs more than --max-mib, or after a smaller
-- length of the same attention failed or timed out.
--
-- The child processes run with OMP_WAIT_POLICY=passive (--wait-policy): on a machine shared with
-- other jobs, OpenMP threads that spin at a barrier wait for a thread the scheduler has put
-- aside, and measured here that made training steps 2x and small attention calls up to 10x
-- slower (aft_simple fwd+bwd at T = 4096: 81 ms spinning, 9 ms passive). On an idle machine
-- passive waiting costs a wake-up per parallel region.
--
-- The run directory gets zoo.md (the table, ready for the README), zoo.csv, scaling.csv,
-- step_time_vs_T.png (log-log), metrics.jsonl/.csv (a record per attention and per
-- (attention, T)) and cases/*.json (what each child process reported).
local json = require 'dkjson'
local xt = require 'xt'
local nn, F, optim, data = xt.nn, xt.nn.functional, xt.optim, xt.data
local process = require 'xt.process'
local clock = require 'xt.clock'
local experiment = require 'xt.experiment'
local TokenClassifier = require 'xt.models.token_classifier'

local SIDE, CLASSES = 28, 10
local MEAN, STD = 0.286, 0.353   -- Fashion-MNIST's pixel statistics, for inputs of about unit scale
-- The position embedding is all the model knows of where a pixel is: at ViT's 0.02 it starts
-- far below the pixel's own embedding and a short budget learns little more than a histogram
-- of intensities; at the scale of nn.Embedding's N(0, 1) it is useful from the first step.
local POS_STD = 1

local spec = {
    name = 'attention_zoo',
    description = 'Every attention on sequential Fashion-MNIST (784 pixels as a sequence), '
                  .. 'then step time against sequence length',
    defaults = {
        attentions = 'all', steps = 300, batch_size = 16, lr = 1e-2, weight_decay = 0.05,
        warmup_steps = 30, clip = 1, dim = 32, depth = 1, heads = 4, window = 64,
        linformer_k = 128, features = 64, limit_test = 1000, eval_batch_size = 100,
        train = true, scaling = true, lengths = '256,1024,4096,16384', scaling_dim = 64, reps = 3,
        max_mib = 8192, case_timeout = 900, wait_policy = 'passive', case = experiment.config.NONE,
    },
    help = {
        attentions = "comma-separated names of nn.attention_names(), or 'all'",
        steps = 'training steps per attention (the budget)', weight_decay = 'AdamW weight decay',
        warmup_steps = 'linear warmup steps', clip = 'gradient norm clipping (0: none)',
        dim = 'model width', depth = 'blocks', heads = 'attention heads (where the attention has heads)',
        window = 'window of local, aft_local, longformer and bigbird',
        linformer_k = 'linformer: projected length k', features = 'performer: random features',
        eval_batch_size = 'test batch size', train = 'train and test each attention (the table)',
        scaling = 'time one forward + backward of each attention at --lengths (the plot)',
        lengths = 'comma-separated sequence lengths of the scaling part',
        scaling_dim = 'model width of the scaling part',
        reps = 'timed calls per length at least (the best counts)',
        max_mib = 'skip a length whose estimated memory exceeds this',
        case_timeout = 'seconds a child process may run (0: no limit)',
        wait_policy = "OMP_WAIT_POLICY of the child processes ('inherit': as this process has it)",
        case = '(internal) run one case in this process: train:NAME or scale:NAME:T',
    },
}

local function fail(msg)
    io.stderr:write('attention_zoo: ', msg, '\n')
    os.exit(2)
end

local function split_list(s)
    local out = {}
    for v in tostring(s):gmatch('[^,%s]+') do out[#out + 1] = v end
    return out
end

local function positive_int(v) return type(v) == 'number' and v >= 1 and v == math.floor(v) end

-- The flags checked, the attention names and the lengths resolved: a mistake fails before
-- any run directory is made or any minute is spent. (The options of one attention, window,
-- linformer_k and features, are checked by the attention: a bad value fails its row.)
local function check_config(cfg)
    for _, key in ipairs{'steps', 'batch_size', 'dim', 'depth', 'heads', 'eval_batch_size', 'scaling_dim', 'reps'} do
        if not positive_int(cfg[key]) then
            fail(string.format('--%s must be a positive integer, got %s', key:gsub('_', '-'), tostring(cfg[key])))
        end
    end
    for _, key in ipairs{'dim', 'scaling_dim'} do
        if cfg[key] % cfg.heads ~= 0 then
            fail(string.format('--%s %d is not a multiple of --heads %d', key:gsub('_', '-'), cfg[key], cfg.heads))
        end
    end
    if cfg.resume then fail('--resume is not supported (each attention trains from scratch)') end
    local known = nn.attention_names()
    local is_known = {}
    for _, name in ipairs(known) do is_known[name] = true end
    local names = cfg.attentions == 'all' and known or split_list(cfg.attentions)
    if #names == 0 then fail('--attentions is empty') end
    for _, name in ipairs(names) do
        if not is_known[name] then
            fail(string.format("unknown attention '%s' in --attentions (known: %s)", name, table.concat(known, ', ')))
        end
    end
    local lengths = {}
    for i, s in ipairs(split_list(cfg.lengths)) do
        lengths[i] = tonumber(s)
        if not positive_int(lengths[i]) then fail("--lengths must list positive integers, got '" .. s .. "'") end
    end
    if cfg.scaling and #lengths == 0 then fail('--lengths is empty') end
    table.sort(lengths)
    return names, lengths
end

-- the most nearly square grid {rows, cols} with rows * cols = T
local function grid_of(T)
    local rows = math.floor(math.sqrt(T))
    while T % rows ~= 0 do rows = rows - 1 end
    return {rows, T / rows}
end

-- What every attention is built with (each takes the options it understands).
local function attention_options(cfg, dim, T, grid)
    return {dim = dim, heads = cfg.heads, seq_len = T, window = cfg.window, image_size = grid,
            k = cfg.linformer_k, features = cfg.features}
end

local function write_json(path, value)
    local f = assert(io.open(path .. '.tmp', 'w'))
    f:write(json.encode(value), '\n')
    f:close()
    assert(os.rename(path .. '.tmp', path))
end

local function read_json(path)
    local f = io.open(path)
    if not f then return nil end
    local value = json.decode(f:read('*a'))
    f:close()
    return type(value) == 'table' and value or nil
end

---------------------------------------------------------------------------------------------
-- The child processes: one case each, the result written to cases/<case>.json.

-- pixels uint8 [N,28,28,1] -> inputs [N,784,1] of about unit scale
local function pixel_sequence(images)
    local n = images:size(1)
    return (images:float():view(n, SIDE * SIDE, 1) / 255 - MEAN) / STD
end

-- batches(step) -> the indices (int64 [batch_size], 1..N) of that step's batch: a fresh
-- shuffle of the training set for each pass, the same for every attention (it depends on the
-- seed only).
local function batch_order(cfg, N)
    local orders = {}
    local function order(pass)
        if not orders[pass] then
            orders[pass] = xt.randperm(N, {generator = xt.Generator(cfg.seed * 1000003 + pass)})
            orders[pass - 1] = nil
        end
        return orders[pass]
    end
    return function(step)
        local first = (step - 1) * cfg.batch_size          -- 0-based position in the stream
        local pass, offset = math.floor(first / N) + 1, first % N
        local n = math.min(cfg.batch_size, N - offset)
        local idx = order(pass):narrow(1, offset + 1, n)
        if n < cfg.batch_size then   -- the batch runs into the next pass
            idx = xt.cat({idx, order(pass + 1):narrow(1, 1, cfg.batch_size - n)})
        end
        return idx
    end
end

local function test_accuracy(model, cfg, images, labels)
    model:eval()
    local correct, n = 0, images:size(1)
    xt.no_grad(function()
        for i = 1, n, cfg.eval_batch_size do
            local b = math.min(cfg.eval_batch_size, n - i + 1)
            local logits = model(pixel_sequence(images:narrow(1, i, b)))
            correct = correct + logits:argmax(2):eq(labels:narrow(1, i, b)):float():sum():item()
        end
    end)
    return correct / n
end

local function train_case(cfg, name)
    local train_set = data.fashion_mnist{split = 'train'}
    local test_set = data.fashion_mnist{split = 'test'}
    if cfg.limit_train > 0 then train_set = data.subset(train_set, 1, math.min(cfg.limit_train, #train_set)) end
    if cfg.limit_test > 0 then test_set = data.subset(test_set, 1, math.min(cfg.limit_test, #test_set)) end
    local train, test = train_set:source(), test_set:source()
    local N = train.images:size(1)

    xt.manual_seed(cfg.seed)
    local model = TokenClassifier{patch = 0, seq_len = SIDE * SIDE, dim_in = 1, image_size = {SIDE, SIDE},
                                  classes = CLASSES, dim = cfg.dim, depth = cfg.depth, attention = name,
                                  heads = cfg.heads, window = cfg.window, pos_std = POS_STD,
                                  attention_options = {k = cfg.linformer_k, features = cfg.features}}
    local opt = optim.AdamW(model:param_groups(cfg.weight_decay), {lr = cfg.lr})
    local sched = optim.WarmupCosine(opt, {warmup_steps = cfg.warmup_steps, total_steps = cfg.steps})
    io.stderr:write(string.format('%s: %d parameters, %d steps of %d\n', name, model:num_parameters(),
                                  cfg.steps, cfg.batch_size))

    local bar = experiment.Progress.new{total = cfg.steps, label = name, per_step = cfg.batch_size, unit = 'img'}
    local times, losses = {}, {}
    local batches = batch_order(cfg, N)
    local started = clock.now()
    model:train()
    local peak_mib = process.peak_growth(function()
        for step = 1, cfg.steps do
            local idx = batches(step)
            local t0 = clock.now()
            local loss = F.cross_entropy(model(pixel_sequence(train.images:index_select(1, idx))),
                                         train.labels:index_select(1, idx))
            opt:zero_grad()
            loss:backward()
            if cfg.clip > 0 then nn.utils.clip_grad_norm(model:parameters(), cfg.clip) end
            opt:step()
            sched:step()
            losses[step] = loss:item()
            times[step] = clock.now() - t0
            bar:update(1, {loss = losses[step]})
        end
    end)
    local train_seconds = bar:finish()
    -- the median step; the first allocates the optimizer state and warms the allocator: not a
    -- typical step
    if #times > 1 then table.remove(times, 1) end
    table.sort(times)
    local mid = (#times + 1) / 2
    local median = (times[math.floor(mid)] + times[math.ceil(mid)]) / 2
    -- the training loss: the mean over the last tenth of the steps
    local tail, tail_sum = math.ceil(#losses / 10), 0
    for i = #losses - tail + 1, #losses do tail_sum = tail_sum + losses[i] end

    local t0 = clock.now()
    local acc = test_accuracy(model, cfg, test.images, test.labels)
    return {attention = name, params = model:num_parameters(), test_acc = acc,
            train_loss = tail_sum / tail, ms_per_step = median * 1e3, peak_mib = peak_mib,
            train_seconds = train_seconds, eval_seconds = clock.now() - t0, test_images = test.images:size(1),
            wall_seconds = clock.now() - started}
end

local function scale_case(cfg, name, T)
    xt.manual_seed(cfg.seed)
    local m = nn.attention_by_name(name, attention_options(cfg, cfg.scaling_dim, T, grid_of(T)))
    local x = xt.randn(1, T, cfg.scaling_dim):requires_grad()
    local dout = xt.randn(1, T, cfg.scaling_dim)
    local function run() m(x):backward(dout) end
    local function clear()
        x.grad = nil
        m:zero_grad()
    end
    local mib = process.peak_growth(run)
    clear()
    -- the best call counts (a busy moment on a shared machine does not); short calls are
    -- repeated for at least half a second, long ones stop after 10 s
    local best, spent, calls = math.huge, 0, 0
    while (calls < cfg.reps and spent < 10) or (spent < 0.5 and calls < 50) do
        collectgarbage()
        local t0 = clock.now()
        run()
        local t = clock.now() - t0
        clear()
        best, spent, calls = math.min(best, t), spent + t, calls + 1
    end
    return {attention = name, T = T, ms = best * 1e3, peak_mib = mib}
end

local function case_path(dir, case) return string.format('%s/cases/%s.json', dir, (case:gsub(':', '-'))) end

local function run_case(cfg)
    local dir = cfg.out
    if cfg.threads > 0 then xt.set_num_threads(cfg.threads) end
    local kind, name, T = cfg.case:match('^(%a+):([%w_]+):?(%d*)$')
    local ok, result = xpcall(function()
        if kind == 'train' then return train_case(cfg, name) end
        if kind == 'scale' and T ~= '' then return scale_case(cfg, name, tonumber(T)) end
        error("--case must be train:NAME or scale:NAME:T, got '" .. cfg.case .. "'")
    end, debug.traceback)
    if not ok then
        io.stderr:write(result, '\n')
        -- the message's first line, without the position it was raised from
        local msg = tostring(result):match('^[^\n]*'):gsub('^[^:]*:%d+: ', '')
        result = {attention = name, T = tonumber(T), error = msg}
    end
    write_json(case_path(dir, cfg.case), result)
    os.exit(ok and 0 or 1)
end

---------------------------------------------------------------------------------------------
-- The parent: one child process per case, then the tables and the plot.

-- Run a case in a fresh process; returns its result table (with .error when it failed).
-- Interrupting a child (Ctrl-C) stops the zoo.
local function spawn(run, case, fields)
    local path = case_path(run.dir, case)
    os.remove(path)
    io.stdout:flush()
    local cfg = run.config
    local cmd = process.fresh_command({arg[0], '--case', case, '--out', run.dir}, {
        timeout = cfg.case_timeout > 0 and cfg.case_timeout or nil,
        env = cfg.wait_policy ~= 'inherit' and {OMP_WAIT_POLICY = cfg.wait_policy} or nil})
    local status = os.execute(cmd)
    if type(status) == 'boolean' then status = status and 0 or 256 end   -- Lua 5.2-style results
    local code, signal = math.floor(status / 256), status % 128
    if signal == 2 or code == 130 then fail('interrupted') end
    local result = read_json(path) or {}
    for k, v in pairs(fields) do result[k] = result[k] or v end
    if not result.error and (code ~= 0 or signal ~= 0) then
        result.error = code == 124 and string.format('timed out after %d s', cfg.case_timeout)
                       or signal ~= 0 and ('killed by signal ' .. signal)
                       or ('exit status ' .. code)
    end
    return result
end

local function fmt(v, pattern)
    if type(v) ~= 'number' or v ~= v then return '' end
    return string.format(pattern, v)
end

local function write_text(path, text)
    local f = assert(io.open(path, 'w'))
    f:write(text)
    f:close()
end

local ZOO_COLUMNS = {'attention', 'test_acc', 'ms_per_step', 'peak_mib', 'params', 'train_loss', 'train_seconds',
                     'eval_seconds', 'error'}
local SCALING_COLUMNS = {'attention', 'T', 'ms', 'peak_mib', 'note'}

-- A CSV line: the record's values under these columns (empty cells where it has none), or
-- without a record the header.
local function csv_row(columns, record)
    local out = {}
    for i, key in ipairs(columns) do out[i] = record and experiment.Metrics.csv_field(record[key]) or key end
    return table.concat(out, ',') .. '\n'
end

local function zoo_tables(run, rows)
    local cfg = run.config
    local test_images = cfg.limit_test
    for _, r in ipairs(rows) do test_images = r.test_images or test_images end
    local csv = {csv_row(ZOO_COLUMNS)}
    local policy = cfg.wait_policy == 'inherit' and os.getenv('OMP_WAIT_POLICY') or cfg.wait_policy
    local md = {string.format('Sequential Fashion-MNIST (784 pixels), %d steps of batch %d, dim %d, depth %d, '
                              .. 'heads %d, window %d; test accuracy on %d images; %d threads%s.\n\n',
                              cfg.steps, cfg.batch_size, cfg.dim, cfg.depth, cfg.heads, cfg.window,
                              test_images, xt.get_num_threads(),
                              policy and (', OMP_WAIT_POLICY=' .. policy) or ''),
                '| attention | test acc | ms/step | peak MiB | params |\n', '|---|---:|---:|---:|---:|\n'}
    for _, r in ipairs(rows) do
        csv[#csv + 1] = csv_row(ZOO_COLUMNS, r)
        if r.error then
            md[#md + 1] = string.format('| %s | failed: %s | | | |\n', r.attention, (r.error:gsub('|', '\\|')))
        else
            md[#md + 1] = string.format('| %s | %s | %s | %s | %d |\n', r.attention, fmt(r.test_acc * 100, '%.1f%%'),
                                        fmt(r.ms_per_step, '%.0f'), fmt(r.peak_mib, '%.0f'), r.params)
        end
    end
    write_text(run.dir .. '/zoo.csv', table.concat(csv))
    write_text(run.dir .. '/zoo.md', table.concat(md))
    return table.concat(md)
end

local function train_all(run, names)
    local rows = {}
    for i, name in ipairs(names) do
        print(string.format('[%d/%d] %s', i, #names, name))
        local r = spawn(run, 'train:' .. name, {attention = name})
        rows[#rows + 1] = r
        run:log{split = 'train', attention = name, test_acc = r.test_acc, ms_per_step = r.ms_per_step,
                peak_mib = r.peak_mib, params = r.params, train_loss = r.train_loss,
                train_seconds = r.train_seconds, error = r.error}
        print(r.error and ('  failed: ' .. r.error)
              or string.format('  test acc %.1f%%, %.0f ms/step, peak %s MiB', r.test_acc * 100, r.ms_per_step,
                               fmt(r.peak_mib, '%.0f')))
        zoo_tables(run, rows)   -- kept current, so an interrupted zoo leaves what it measured
    end
    return zoo_tables(run, rows)
end

-- Attentions whose memory grows as T^2 whatever the kernel: a learned position bias w [T,T]
-- (aft_full, aft_local) made from its factors, and its gradient (measured: 2.1 GiB at T = 16384).
local QUADRATIC_PARAMETERS = {aft_full = 2, aft_local = 2}

local function estimated_mib(name, T)
    return (QUADRATIC_PARAMETERS[name] or 0) * T * T * 4 / 2 ^ 20
end

local function scaling_all(run, names, lengths)
    local cfg = run.config
    local results = {}
    local csv = {csv_row(SCALING_COLUMNS)}
    for _, name in ipairs(names) do
        local stop
        for _, T in ipairs(lengths) do
            local r
            local est = estimated_mib(name, T)
            if stop then
                r = {attention = name, T = T, note = stop}
            elseif est > cfg.max_mib then
                r = {attention = name, T = T, note = string.format('skipped: needs about %.0f MiB (> --max-mib %d)', est, cfg.max_mib)}
            else
                r = spawn(run, string.format('scale:%s:%d', name, T), {attention = name, T = T})
                if r.error then
                    r.note = 'failed: ' .. r.error
                    stop = string.format('skipped: T = %d failed', T)
                end
            end
            results[#results + 1] = r
            csv[#csv + 1] = csv_row(SCALING_COLUMNS, r)
            run:log{split = 'scaling', attention = name, T = T, ms = r.ms, peak_mib = r.peak_mib, note = r.note}
            io.stderr:write(string.format('  %-16s T=%-6d %10s ms %8s MiB %s\n', name, T, fmt(r.ms, '%.1f'),
                                          fmt(r.peak_mib, '%.1f'), r.note or ''))
            write_text(run.dir .. '/scaling.csv', table.concat(csv))
        end
    end
    return results
end

local function scaling_report(run, names, lengths, results)
    local by = {}
    for _, r in ipairs(results) do
        by[r.attention] = by[r.attention] or {}
        by[r.attention][r.T] = r
    end
    local series = {}
    local lines = {string.format('%-16s', 'fwd+bwd ms')}
    for _, T in ipairs(lengths) do lines[1] = lines[1] .. string.format(' %10s', 'T=' .. T) end
    for _, name in ipairs(names) do
        local s = {name = name, x = {}, y = {}}
        local line = string.format('%-16s', name)
        for i, T in ipairs(lengths) do
            local r = by[name][T]
            s.x[i], s.y[i] = T, r.ms or 0 / 0
            line = line .. string.format(' %10s', r.ms and string.format('%.1f', r.ms) or '-')
        end
        series[#series + 1] = s
        lines[#lines + 1] = line
    end
    local path = run.dir .. '/step_time_vs_T.png'
    xt.plot.save(path, {width = 820, height = 560, panels = {{
        title = string.format('fwd+bwd ms vs T (B=1, dim %d; log-log)', run.config.scaling_dim),
        xlabel = 'T (sequence length)', xlog = true, ylog = true, xticks = lengths, legend = 'top-left',
        series = series}}})
    return table.concat(lines, '\n') .. '\n(- : skipped or failed, see scaling.csv)\n', path
end

---------------------------------------------------------------------------------------------
local args = _G.arg or {}
local cfg = experiment.config.parse(spec, args)
if cfg.case then
    if not cfg.out then fail('--case needs --out (the run directory)') end
    -- the child takes the run's configuration, as the parent wrote it
    local saved = read_json(cfg.out .. '/config.json') or fail('--case: no config.json in ' .. cfg.out)
    saved.case, saved.out = cfg.case, cfg.out
    run_case(saved)
end
local names, lengths = check_config(cfg)
local run = experiment.start(spec)
experiment.mkdir(run.dir .. '/cases')
local table_text, scaling_text, plot_path
if run.config.train then table_text = train_all(run, names) end
if run.config.scaling then
    scaling_text, plot_path = scaling_report(run, names, lengths, scaling_all(run, names, lengths))
end
if table_text then print('\n' .. table_text) end
if scaling_text then print(scaling_text .. 'plot: ' .. plot_path) end
print('run directory ' .. run.dir)
