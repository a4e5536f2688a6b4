-- bench/loader.lua: DataLoader throughput (images/s) with CIFAR-style augmentation
-- (random_crop 32 padding 4, random_horizontal_flip, to_tensor, normalize), batch 128:
--   1. in-memory CIFAR-shaped uint8 images [N,32,32,3], workers 0, 1, 2;
--   2. the same images as a 32x32 PNG ImageFolder decoded by the workers (written to a
--      temporary directory first), workers 0, 1, 2;
--   3. the loader's share of an AFT-conv training step (the default model of
--      experiments/aft_conv_cifar.lua), workers 0 and 2 (STEPS=n steps, default 6).
-- The consumer does nothing but take batches, so this is the loader's own rate.
--   build/xlua bench/loader.lua [n_images (default 10000)] [png_images (default 5000)]
local xt = require 'xt'
local data = xt.data
local now = require('xt.clock').now

local n = tonumber(arg and arg[1]) or 10000
local n_png = tonumber(arg and arg[2]) or 5000
local BATCH = 128

xt.manual_seed(0)
local images = xt.randint(0, 256, n, 32, 32, 3):to('uint8')
local labels = xt.randint(1, 11, n)

local transform = data.transforms{{'random_crop', 32, padding = 4}, 'random_horizontal_flip',
                                  'to_tensor', {'normalize', {0.4914, 0.4822, 0.4465},
                                                             {0.2470, 0.2435, 0.2616}}}

-- images/s over `epochs` epochs, after warm-up epochs (until the allocator's block cache
-- holds the batch buffers; the first allocations fault their pages in)
local function rate(ds, workers, epochs)
    local loader = data.DataLoader(ds, {batch_size = BATCH, shuffle = true, seed = 0,
                                        workers = workers, transform = transform})
    for _ = 1, 2 do
        for _ in loader:iter() do end
    end
    local count, batches, start = 0, 0, now()
    for _ = 1, epochs do
        for batch in loader:iter() do
            count = count + batch.target:size(1)
            batches = batches + 1
        end
    end
    local seconds = now() - start
    loader:close()
    return count / seconds, seconds / batches * 1e3
end

local function report(what, ds, epochs)
    for _, workers in ipairs({0, 1, 2}) do
        local r, ms = rate(ds, workers, epochs)
        print(string.format('%-34s workers %d: %9.0f images/s  (%.2f ms per batch of %d)',
                            what, workers, r, ms, BATCH))
    end
end

print(string.format('DataLoader throughput, batch %d, crop+flip+normalize, %d OpenMP threads',
                    BATCH, xt.get_num_threads()))
local memory = {source = function() return {kind = 'memory', images = images, labels = labels} end}
report(string.format('in-memory CIFAR-shaped (%d)', n), memory, 3)


-- 32x32 PNG files, as an ImageFolder would list them
local dir = os.tmpname()
os.remove(dir)
assert(os.execute('mkdir -p ' .. dir) == 0, 'cannot make ' .. dir)
local paths = {}
for i = 1, n_png do
    paths[i] = string.format('%s/%05d.png', dir, i)
    xt._check(xt.C.xt_image_save_png(paths[i], images[i]._c))
end
local files = {source = function()
    return {kind = 'files', paths = paths, labels = labels:narrow(1, 1, n_png), channels = 3}
end}
report(string.format('32x32 PNG files (%d)', n_png), files, 1)
os.execute('rm -rf ' .. dir)

-- The loader's share of a training step: the default AFT-conv model of
-- experiments/aft_conv_cifar.lua trained on one fixed batch, then on the loader's batches
-- (the workers run alongside the step's OpenMP threads on the same cores).
local function step_cost(steps)
    if not xt.nn.AFTConv then
        print('AFT-conv step: skipped, nn.AFTConv is not in this build yet')
        return
    end
    local F = xt.nn.functional
    local AFTConvNet = require 'xt.models.aft_conv_net'
    local model = AFTConvNet{in_channels = 3, classes = 10, dim = 64, depth = {2, 2}, heads = 8,
                             kernel = 7, mlp_ratio = 2}
    local opt = xt.optim.AdamW(model:parameters(), {lr = 1e-3})
    local function step(batch)
        local loss = F.cross_entropy(model(batch.input), batch.target)
        opt:zero_grad()
        loss:backward()
        opt:step()
    end
    local function per_step(next_batch)
        step(next_batch())   -- warm-up
        local start = now()
        for _ = 1, steps do step(next_batch()) end
        return (now() - start) / steps
    end
    for _, workers in ipairs({0, 2}) do
        local loader = data.DataLoader(memory, {batch_size = BATCH, shuffle = true, seed = 0,
                                                workers = workers, transform = transform})
        local fixed = loader:iter()()
        local alone = per_step(function() return fixed end)
        local it = loader:iter()
        local fed = per_step(it)
        print(string.format('AFT-conv step (dim 64, depth 2,2) workers %d: %.1f ms on a fixed batch, ' ..
                            '%.1f ms fed by the loader: loader share %.1f%%', workers, alone * 1e3,
                            fed * 1e3, (fed - alone) / fed * 100))
        loader:close()
    end
end
step_cost(tonumber(os.getenv('STEPS') or '') or 6)
