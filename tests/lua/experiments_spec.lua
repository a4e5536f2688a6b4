-- Each experiment end to end on a tiny budget (--limit-train): it runs, writes its run
-- directory, and a run stopped after epoch 1 and resumed matches an uninterrupted one.
local ffi = require 'ffi'
local json = require 'dkjson'
local xt = require 'xt'

pcall(ffi.cdef, 'ssize_t readlink(const char *path, char *buf, size_t size);')
local XLUA = (function()
    local buf = ffi.new('char[4096]')
    local n = ffi.C.readlink('/proc/self/exe', buf, 4096)
    return ffi.string(buf, n)
end)()

local root = os.tmpname()
os.remove(root)
os.execute('mkdir -p ' .. root)

-- Run an experiment script with flags; returns its output, failing the test on a non-zero exit.
local runs = 0
local function run(script, flags)
    runs = runs + 1
    local log = string.format('%s/log%d.txt', root, runs)
    local cmd = string.format("XT_PROGRESS=plain OMP_NUM_THREADS=2 '%s' %s %s > '%s' 2>&1", XLUA,
                              script, flags, log)
    local ok = os.execute(cmd)
    local f = io.open(log)
    local out = f and f:read('*a') or ''
    if f then f:close() end
    assert(ok == 0 or ok == true, 'experiment failed: ' .. cmd .. '\n' .. out)
    return out
end

local function records(dir)
    local out = {}
    for line in io.lines(dir .. '/metrics.jsonl') do out[#out + 1] = json.decode(line) end
    return out
end

local function exists(path)
    local f = io.open(path)
    if f then f:close() end
    return f ~= nil
end

describe('experiments/aft_conv_cifar.lua', function()
    local flags = '--limit-train 192 --limit-test 64 --batch-size 32 --eval-batch-size 64 '
                  .. '--dim 16 --depth 1,1 --heads 4 --kernel 3 --workers 1'

    it('trains, evaluates and writes its run directory', function()
        local dir = root .. '/aft'
        local out = run('experiments/aft_conv_cifar.lua', flags .. ' --epochs 1 --out ' .. dir)
        assert.truthy(out:find('final test accuracy', 1, true))
        for _, f in ipairs{'config.json', 'metrics.jsonl', 'metrics.csv', 'last.xt', 'best.xt', 'curves.png'} do
            assert.is_true(exists(dir .. '/' .. f), f .. ' missing')
        end
        local r = records(dir)
        assert.are.equal(1, r[1].epoch)
        assert.is_true(r[1].test_acc >= 0 and r[1].test_acc <= 1)
        local img = xt.image.load(dir .. '/curves.png')
        assert.are.equal(3, img:size(3))
    end)

    it("rebuilds its model from a checkpoint, as the README's REPL session does", function()
        local dir = root .. '/explore'
        run('experiments/aft_conv_cifar.lua', flags .. ' --epochs 1 --out ' .. dir)
        local ck = xt.load(dir .. '/best.xt')
        local m = require('xt.models.aft_conv_net')(ck.model_args)
        m:load_state_dict(ck.model)
        m:eval()
        for name, t in pairs(m:state_dict()) do
            assert.are.equal(0, (t:float() - ck.model[name]:float()):abs():max():item(), name)
        end
        local s = xt.data.fashion_mnist{split = 'test'}[1]
        local x = (s.image:permute(3, 1, 2):float() / 255 - 0.286) / 0.353
        local logits = m(x:unsqueeze(1))
        assert.are.same({1, 10}, {logits:size(1), logits:size(2)})
        local class = logits:softmax(2):argmax(2)[1]
        assert.is_true(class >= 1 and class <= 10)
        local w = m.stages[1].attn:position_bias()
        assert.are.same({4, 3, 3}, {w:size(1), w:size(2), w:size(3)})
        w = (w - w:amin()) / (w:amax() - w:amin())
        local tiles = {}
        for h = 1, w:size(1) do tiles[h] = w[h]:unsqueeze(1) end
        xt.image.save(dir .. '/kernels.png', xt.image.grid(tiles, {nrow = 4}))
        assert.is_true(xt.image.load(dir .. '/kernels.png'):size(1) >= 3)
    end)

    it('names a bad --augment value', function()
        local log = root .. '/bad_augment.txt'
        local ok = os.execute(string.format("'%s' experiments/aft_conv_cifar.lua %s --augment crop,spin "
                                            .. "--out '%s/bad' > '%s' 2>&1", XLUA, flags, root, log))
        assert.is_false(ok == 0 or ok == true)
        local f = io.open(log)
        local out = f:read('*a')
        f:close()
        assert.truthy(out:find("--augment takes crop, flip or none, got 'spin'", 1, true), out)
    end)

    it('resumes exactly', function()
        local whole, split = root .. '/whole', root .. '/split'
        run('experiments/aft_conv_cifar.lua', flags .. ' --epochs 2 --out ' .. whole)
        run('experiments/aft_conv_cifar.lua', flags .. ' --epochs 2 --stop-after 1 --out ' .. split)
        assert.are.equal(1, #records(split))
        run('experiments/aft_conv_cifar.lua', '--resume ' .. split)
        local a, b = records(whole), records(split)
        for _, key in ipairs{'train_loss', 'test_loss', 'test_acc'} do
            assert.are.equal(a[2][key], b[2][key], key .. ' differs after resuming')
        end
    end)
end)

describe('experiments/image_ar.lua', function()
    it('trains, reports bits/dim and writes samples', function()
        local dir = root .. '/ar'
        local out = run('experiments/image_ar.lua', '--epochs 1 --limit-train 32 --limit-test 16 '
                        .. '--batch-size 8 --dim 16 --depth 1 --samples 2 --attention aft_simple --out ' .. dir)
        assert.truthy(out:find('bits/dim', 1, true))
        assert.is_true(exists(dir .. '/samples-1.png'))
        local r = records(dir)
        assert.is_true(r[1].test_bpd > 0 and r[1].test_bpd < 9)
    end)
end)

describe('experiments/imagenet_style.lua', function()
    it('trains on an ImageFolder tree and reports top-1 and top-5', function()
        -- a tiny tree: 6 classes of 8x8 gray squares at class-dependent brightness
        local data = root .. '/folder'
        for _, split in ipairs{'train', 'val'} do
            for c = 1, 6 do
                local d = string.format('%s/%s/class%d', data, split, c)
                os.execute('mkdir -p ' .. d)
                for i = 1, 4 do
                    local img = xt.full({8, 8, 1}, c * 40 + i, {dtype = 'uint8'})
                    xt.image.save(string.format('%s/%d.png', d, i), img)
                end
            end
        end
        local dir = root .. '/imagenet'
        local out = run('experiments/imagenet_style.lua', '--data ' .. data .. ' --channels 1 '
                        .. '--crop 8 --resize 8 --dim 16 --epochs 1 --batch-size 8 --workers 1 '
                        .. '--backbone resnet --out ' .. dir)
        assert.truthy(out:find('top-5', 1, true))
        local r = records(dir)
        assert.is_true(r[1].val_top5 >= r[1].val_top1)
    end)
end)

describe('experiments/attention_zoo.lua', function()
    local function read(path)
        local f = assert(io.open(path))
        local text = f:read('*a')
        f:close()
        return text
    end

    it('trains and tests each attention, times them against T and writes the table and plot', function()
        local dir = root .. '/zoo'
        local out = run('experiments/attention_zoo.lua', '--attentions softmax,aft_simple --steps 3 --batch-size 4 '
                        .. '--warmup-steps 1 --limit-train 64 --limit-test 20 --eval-batch-size 10 --dim 16 '
                        .. '--lengths 64,256 --reps 1 --out ' .. dir)
        for _, f in ipairs{'config.json', 'metrics.jsonl', 'zoo.csv', 'zoo.md', 'scaling.csv', 'step_time_vs_T.png'} do
            assert.is_true(exists(dir .. '/' .. f), f .. ' missing')
        end
        local md = read(dir .. '/zoo.md')
        for _, name in ipairs{'softmax', 'aft_simple'} do
            local acc, ms = md:match('| ' .. name .. ' | ([%d.]+)%% | (%d+) |')
            assert.truthy(acc, name .. ' has no row in zoo.md:\n' .. md)
            assert.is_true(tonumber(acc) >= 0 and tonumber(acc) <= 100 and tonumber(ms) > 0)
            assert.truthy(out:find('| ' .. name .. ' |', 1, true), 'the table is printed')
        end
        local scaling = {}
        for line in read(dir .. '/scaling.csv'):gmatch('[^\n]+') do scaling[#scaling + 1] = line end
        assert.are.equal(5, #scaling)   -- header + 2 attentions x 2 lengths
        assert.truthy(scaling[2]:match('^softmax,64,[%d.]+,'))
        local r = records(dir)
        assert.are.equal(6, #r)
        assert.are.equal('train', r[1].split)
        assert.is_true(r[1].params > 0 and r[1].test_acc >= 0 and r[1].test_acc <= 1)
        local img = xt.image.load(dir .. '/step_time_vs_T.png')
        assert.are.equal(3, img:size(3))
    end)

    it('gives a failing attention a row and carries on', function()
        local dir = root .. '/zoo-fail'
        -- window 0 is an error for local attention; aft_simple has no window
        run('experiments/attention_zoo.lua', '--attentions local,aft_simple --window 0 --steps 1 --batch-size 2 '
            .. '--limit-train 8 --limit-test 4 --dim 8 --lengths 16,32 --reps 1 --out ' .. dir)
        local md = read(dir .. '/zoo.md')
        assert.truthy(md:find('| local | failed: LocalAttention: window must be a positive integer'), md)
        assert.truthy(md:find('| aft_simple | [%d.]+%%'), md)
        local csv = read(dir .. '/zoo.csv')
        assert.truthy(csv:find('\nlocal,,,,,,,,"LocalAttention: window must be', 1, true), csv)
        local scaling = read(dir .. '/scaling.csv')
        assert.truthy(scaling:find('\nlocal,16,,,"failed: LocalAttention: window', 1, true), scaling)
        assert.truthy(scaling:find('\nlocal,32,,,skipped: T = 16 failed\n', 1, true), scaling)
        assert.truthy(scaling:find('\naft_simple,32,[%d.]+,'), scaling)
    end)

    it('rejects unknown attention names before it starts', function()
        local log = root .. '/zoo-bad.txt'
        local ok = os.execute(string.format("'%s' experiments/attention_zoo.lua --attentions softmax,sofmax --out %s/zoo-bad > %s 2>&1",
                                            XLUA, root, log))
        assert.is_false(ok == 0 or ok == true)
        assert.truthy(read(log):find("unknown attention 'sofmax'", 1, true))
        assert.is_false(exists(root .. '/zoo-bad/config.json'))
    end)
end)
