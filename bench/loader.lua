-- bench/loader.lua: DataLoader throughput (images/s) with CIFAR-style augmentation
-- (random_crop 32 padding 4, random_horizontal_flip, to_tensor, normalize), batch 128:
--   1. in-memory CIFAR-shaped uint8 images [N,32,32,3], workers 0, 1, 2;
--   2. the same images as a 32x32 PNG ImageFolder decoded by the workers (written to a
--      temporary directory first), workers 0, 1, 2.
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
    xt.image.save(paths[i], images[i])
end
local files = {source = function()
    return {kind = 'files', paths = paths, labels = labels:narrow(1, 1, n_png), channels = 3}
end}
report(string.format('32x32 PNG files (%d)', n_png), files, 1)
os.execute('rm -rf ' .. dir)
