-- loader_spec: xt.data.transforms (spellings, checks, applying to one image) and
-- xt.data.DataLoader (batches, labels, epochs and seeds, workers giving identical batches,
-- drop_last, datasets without source(), PNG file sources, errors surfacing as Lua errors).
local xt = require 'xt'
local data = xt.data
local T = data.transforms

local SEED = 7
print('loader_spec: seed ' .. SEED)

-- n random images [H,W,C] uint8 with labels 1..n, as a dataset with a memory source
local function memory_dataset(n, h, w, c)
    xt.manual_seed(SEED)
    local images = xt.randint(0, 256, n, h, w, c):to('uint8')
    local labels = xt.arange(1, n + 1)
    return {images = images, labels = labels,
            source = function() return {kind = 'memory', images = images, labels = labels} end}
end

local function epoch_batches(loader)
    local out = {}
    for batch in loader:iter() do out[#out + 1] = {input = batch.input:totable(), target = batch.target:totable()} end
    return out
end

local function order_of(batches)
    local order = {}
    for _, b in ipairs(batches) do
        for _, label in ipairs(b.target) do order[#order + 1] = label end
    end
    return order
end

local function near(a, b, tol)
    if type(a) == 'table' then
        if type(b) ~= 'table' or #a ~= #b then return false end
        for i = 1, #a do if not near(a[i], b[i], tol) then return false end end
        return true
    end
    return math.abs(a - b) <= tol
end

describe('transforms', function()
    it('accepts names, {name, args..., key = value} and constructors alike', function()
        local a = T{{'random_crop', 32, padding = 4}, 'random_horizontal_flip', 'to_tensor',
                    {'normalize', {0.5, 0.5, 0.5}, {0.25, 0.25, 0.25}}}
        local b = T.Compose{T.RandomCrop(32, {padding = 4}), T.RandomHorizontalFlip(),
                            T.ToTensor(), T.Normalize({0.5, 0.5, 0.5}, {0.25, 0.25, 0.25})}
        assert.are.equal(4, #a.steps)
        assert.are.equal('transforms{random_crop, random_horizontal_flip, to_tensor, normalize}',
                         tostring(a))
        assert.are.same(a.steps[1].padding, {4, 4, 4, 4})
        for i = 1, 4 do
            assert.are.equal(a.steps[i].kind, b.steps[i].kind)
        end
        assert.are.same({2, 1, 2, 1}, T.RandomCrop({8, 6}, {padding = {2, 1}}).padding)
        assert.are.equal(2, #T{T{'to_tensor'}, {'normalize', 0.5, 0.5}}.steps)   -- nested pipelines flatten
    end)

    it('applies to one image, with the random choices of a sample', function()
        local img = xt.tensor({{{1, 2}, {3, 4}, {5, 6}}}, {dtype = 'uint8'})   -- [1,3,2]
        local flipped = T{{'random_horizontal_flip', 1}}(img)
        assert.are.equal('uint8', flipped.dtype)
        assert.are.same({{{5, 6}, {3, 4}, {1, 2}}}, flipped:totable())
        local x = T{'to_tensor', {'normalize', {0, 1}, {1, 2}}}(img)        -- [2,1,3] float32
        assert.are.same({2, 1, 3}, x.shape)
        assert.is_true(near(x:totable(), {{{1 / 255, 3 / 255, 5 / 255}},
                                         {{(2 / 255 - 1) / 2, (4 / 255 - 1) / 2, (6 / 255 - 1) / 2}}}, 1e-6))
        -- a random step: the same (seed, epoch, index) gives the same result
        local crop = T{{'random_crop', 2, padding = 2}}
        local big = xt.randint(0, 256, 5, 5, 1):to('uint8')
        local opts = {seed = 3, epoch = 2, index = 4}
        assert.are.same(crop(big, opts):totable(), crop(big, opts):totable())
    end)

    it('reports bad pipelines where they are written', function()
        local ok, err = pcall(T, {'nope'})
        assert.is_false(ok)
        assert.truthy(err:find("unknown transform 'nope'", 1, true))
        ok, err = pcall(T, {{'normalize', 0.5, 0.5}, 'to_tensor'})
        assert.truthy(err:find('transform 1 (normalize): works on float images; put it after to_tensor', 1, true))
        ok, err = pcall(T, {'to_tensor', {'center_crop', 4}})
        assert.truthy(err:find('transform 2 (center_crop): works on uint8 HWC images', 1, true))
        ok, err = pcall(T.RandomCrop, 4, {pading = 1})
        assert.truthy(err:find("random_crop: unknown option 'pading'", 1, true))
        ok, err = pcall(T.Normalize, {0.5, 0.5}, {1})
        assert.truthy(err:find('mean has 2 values but std has 1', 1, true))
        ok, err = pcall(T, {{'random_horizontal_flip', 2}})
        assert.truthy(err:find('p must be in [0, 1]', 1, true))
        ok, err = pcall(T.Resize, 4, {interpolation = 'cubic'})
        assert.truthy(err:find("interpolation must be 'bilinear' or 'area'", 1, true))
        ok, err = pcall(T.CenterCrop, 'big')
        assert.truthy(err:find('center_crop: size must be a number or {height, width}', 1, true))
    end)
end)

describe('DataLoader', function()
    local ds = memory_dataset(37, 6, 5, 3)
    local pipeline = T{{'random_crop', 4, padding = 1}, 'random_horizontal_flip', 'to_tensor',
                       {'normalize', {0.5, 0.4, 0.3}, {0.2, 0.25, 0.3}}}

    it('gives float32 [B,C,H,W] inputs and int64 [B] targets covering the dataset once', function()
        local loader = data.DataLoader(ds, {batch_size = 8, shuffle = true, seed = 1,
                                            transform = pipeline})
        assert.are.equal(5, loader:size())
        local shapes, seen = {}, {}
        for batch in loader:iter() do
            assert.are.equal('float32', batch.input.dtype)
            assert.are.equal('int64', batch.target.dtype)
            shapes[#shapes + 1] = batch.input.shape[1]
            assert.are.same({3, 4, 4}, {batch.input.shape[2], batch.input.shape[3], batch.input.shape[4]})
            for _, label in ipairs(batch.target:totable()) do seen[label] = (seen[label] or 0) + 1 end
        end
        assert.are.same({8, 8, 8, 8, 5}, shapes)
        for label = 1, 37 do assert.are.equal(1, seen[label]) end
    end)

    it('gives each sample the transform of its (seed, epoch, index)', function()
        local loader = data.DataLoader(ds, {batch_size = 10, shuffle = true, seed = 5,
                                            transform = pipeline, workers = 2})
        loader:set_epoch(3)
        local checked = 0
        for batch in loader:iter() do
            for i, label in ipairs(batch.target:totable()) do
                local want = pipeline(ds.images[label], {seed = 5, epoch = 3, index = label})
                assert.are.same(want:totable(), batch.input[i]:totable())
                checked = checked + 1
            end
        end
        assert.are.equal(37, checked)
    end)

    it('gives identical batches for 0, 1 and 2 workers', function()
        local ref
        for _, workers in ipairs({0, 1, 2}) do
            local loader = data.DataLoader(ds, {batch_size = 6, shuffle = true, seed = 11,
                                                workers = workers, prefetch = 1 + workers,
                                                transform = pipeline})
            local got = epoch_batches(loader)
            ref = ref or got
            assert.are.same(ref, got)
        end
    end)

    it('orders an epoch by (seed, epoch) alone', function()
        local function loader(seed, batch_size, shuffle)
            return data.DataLoader(ds, {batch_size = batch_size, shuffle = shuffle, seed = seed})
        end
        local a = loader(2, 8, true)
        local e1, e2 = order_of(epoch_batches(a)), order_of(epoch_batches(a))   -- epochs 1, 2
        assert.are_not.same(e1, e2)
        a:set_epoch(1)
        assert.are.same(e1, order_of(epoch_batches(a)))
        local b = loader(2, 5, true)
        b:set_epoch(2)
        assert.are.same(e2, order_of(epoch_batches(b)))            -- another batch size
        assert.are_not.same(e1, order_of(epoch_batches(loader(3, 8, true))))
        local plain = order_of(epoch_batches(loader(2, 8, false)))
        for i = 1, 37 do assert.are.equal(i, plain[i]) end
        -- without a seed, xt.manual_seed decides
        xt.manual_seed(42)
        local c = data.DataLoader(ds, {batch_size = 8, shuffle = true})
        xt.manual_seed(42)
        local d = data.DataLoader(ds, {batch_size = 8, shuffle = true})
        assert.are.equal(c.seed, d.seed)
        assert.are.same(order_of(epoch_batches(c)), order_of(epoch_batches(d)))
    end)

    it('drops the last short batch when asked', function()
        local loader = data.DataLoader(ds, {batch_size = 8, drop_last = true, workers = 1})
        assert.are.equal(4, loader:size())
        local batches = epoch_batches(loader)
        assert.are.equal(4, #batches)
        assert.are.equal(32, #order_of(batches))
    end)

    it('gathers a dataset that has no source() into memory', function()
        local samples = {}
        for i = 1, 5 do
            samples[i] = {image = xt.full({2, 2, 1}, i * 10, {dtype = 'uint8'}), label = i}
        end
        local plain = setmetatable({size = function() return #samples end},
                                   {__index = function(_, i) return samples[i] end})
        local loader = data.DataLoader(plain, {batch_size = 2})
        local batches = epoch_batches(loader)
        assert.are.same({1, 2}, batches[1].target)
        assert.are.same({5}, batches[3].target)
        assert.is_true(near(batches[3].input, {{{{50 / 255, 50 / 255}, {50 / 255, 50 / 255}}}}, 1e-6))
    end)

    it('decodes file sources in the workers: PNG files give the in-memory batches', function()
        local dir = os.tmpname()
        os.remove(dir)
        assert.is_true(os.execute('mkdir -p ' .. dir) == 0)
        local small = memory_dataset(9, 6, 5, 3)
        local paths = {}
        for i = 1, 9 do
            paths[i] = string.format('%s/%d.png', dir, i)
            xt._check(xt.C.xt_image_save_png(paths[i], small.images[i]:contiguous()._c))
        end
        local files = {source = function()
            return {kind = 'files', paths = paths, labels = small.labels, channels = 3}
        end}
        local opts = {batch_size = 4, shuffle = true, seed = 3, transform = pipeline}
        local want = epoch_batches(data.DataLoader(small, opts))
        for _, workers in ipairs({0, 2}) do
            opts.workers = workers
            assert.are.same(want, epoch_batches(data.DataLoader(files, opts)))
        end
        -- a truncated file: the error names it, with the sample counted from 1
        local f = assert(io.open(paths[1], 'rb'))
        local head = f:read(50)
        f:close()
        f = assert(io.open(paths[3], 'wb'))
        f:write(head)
        f:close()
        local loader = data.DataLoader(files, {batch_size = 2, workers = 2})
        local ok, err = pcall(function() for _ in loader:iter() do end end)
        assert.is_false(ok)
        assert.truthy(err:find('DataLoader: sample 3: ', 1, true))
        assert.truthy(err:find(paths[3], 1, true))
        loader:close()
        os.execute('rm -rf ' .. dir)
    end)

    it('raises clear errors', function()
        local ok, err = pcall(data.DataLoader, ds, {batch_sise = 3})
        assert.truthy(err:find("DataLoader: unknown option 'batch_sise'", 1, true))
        ok, err = pcall(data.DataLoader, ds, {batch_size = 0})
        assert.truthy(err:find('batch_size must be an integer >= 1, got 0', 1, true))
        ok, err = pcall(data.DataLoader, ds, {transform = 'flip'})
        assert.truthy(err:find('transform must be data.transforms', 1, true))
        ok, err = pcall(data.DataLoader, ds, {transform = function(x) return x end})
        assert.truthy(err:find('the worker threads run C, not Lua functions', 1, true))
        ok, err = pcall(data.DataLoader, 5)
        assert.truthy(err:find('expected a dataset, got number', 1, true))
        -- a sample that cannot be transformed fails at its batch, in any worker count
        for _, workers in ipairs({0, 2}) do
            local loader = data.DataLoader(ds, {batch_size = 4, workers = workers,
                                                transform = T{{'center_crop', 3}, {'random_crop', 5}}})
            ok, err = pcall(function() for _ in loader:iter() do end end)
            assert.is_false(ok)
            assert.truthy(err:find('DataLoader: sample 1: random_crop: the crop 5x5 is larger ' ..
                                   'than the padded image 3x3', 1, true))
            loader:close()
        end
        -- an iterator ends when a newer one starts
        local loader = data.DataLoader(ds, {batch_size = 4, workers = 2})
        local first = loader:iter()
        assert.truthy(first())
        local second = loader:iter()
        assert.truthy(second())
        ok, err = pcall(first)
        assert.truthy(err:find('ended by a newer loader:iter()', 1, true))
        loader:close()
        ok, err = pcall(second)
        assert.is_false(ok)
    end)
end)
