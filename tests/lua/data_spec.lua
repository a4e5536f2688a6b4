-- data_spec: the datasets and xt.image on real files: Debian's Fashion-MNIST (values read
-- independently with python's gzip module, written here as constants), CIFAR-format files
-- and image folders of PNG and JPEG files that the test writes, and every error path.
local xt = require 'xt'
local lfs = require 'lfs'
local data, image = xt.data, xt.image

local SEED = 11
print('data_spec: seed ' .. SEED)

local FASHION = '/usr/share/datasets/fashion-mnist'

-- ---- helpers --------------------------------------------------------------------------

local function rm_tree(path)
    if lfs.attributes(path, 'mode') == 'directory' then
        for name in lfs.dir(path) do
            if name ~= '.' and name ~= '..' then rm_tree(path .. '/' .. name) end
        end
        lfs.rmdir(path)
    else
        os.remove(path)
    end
end

local function temp_dir()
    local path = os.tmpname()
    os.remove(path)
    assert(lfs.mkdir(path))
    return path
end

local function mkdirs(path)
    local sofar = path:sub(1, 1) == '/' and '' or '.'
    for part in path:gmatch('[^/]+') do
        sofar = sofar .. '/' .. part
        lfs.mkdir(sofar)
    end
end

local function write_file(path, bytes)
    local f = assert(io.open(path, 'wb'))
    f:write(bytes)
    f:close()
end

local function read_file(path)
    local f = assert(io.open(path, 'rb'))
    local bytes = f:read('*a')
    f:close()
    return bytes
end

local function max_abs_diff(a, b) return (a:float() - b:float()):abs():max():item() end

local function error_of(fn, ...)
    local ok, err = pcall(fn, ...)
    assert.is_false(ok, 'expected an error')
    return tostring(err)
end

-- ---- Fashion-MNIST from the Debian package ---------------------------------------------------

describe('fashion_mnist', function()
    it('reads the test split: sizes, labels and pixels', function()
        local ds = data.fashion_mnist{split = 'test'}
        assert.are.equal(10000, #ds)
        assert.are.equal(10000, ds:size())
        assert.are.equal('T-shirt/top', ds.classes[1])
        assert.are.equal('Ankle boot', ds.classes[10])
        assert.are.equal(FASHION, ds.root)
        -- the stored labels are 9 2 1 1 6 1 4 6 5 7 4 5 7 3 4 1 2 4 8 0 (0-based)
        local first = {9, 2, 1, 1, 6, 1, 4, 6, 5, 7, 4, 5, 7, 3, 4, 1, 2, 4, 8, 0}
        for i, v in ipairs(first) do assert.are.equal(v + 1, ds[i].label) end
        local s = ds[1]
        assert.are.same({28, 28, 1}, s.image.shape:totable())
        assert.are.equal('uint8', s.image.dtype)
        -- row 15 (row 14 counted from 0) of the first image
        local row = {0, 0, 0, 0, 0, 0, 2, 4, 1, 0, 0, 0, 98, 136, 110, 109, 110, 162, 135, 144,
                     149, 159, 167, 144, 158, 169, 119, 0}
        for x = 1, 28 do assert.are.equal(row[x], s.image[15][x][1]) end
        local img = ds[1235].image   -- image 1234 from 0
        assert.are.equal(173, img[11][11][1])
        assert.are.equal(204, img[21][6][1])
        assert.are.equal(149, img[4][18][1])
        local src = ds:source()
        assert.are.equal('memory', src.kind)
        assert.are.same({10000, 28, 28, 1}, src.images.shape:totable())
        assert.is_true(src.images:is_contiguous() and src.labels:is_contiguous())
        assert.are.equal('int64', src.labels.dtype)
        assert.are.equal(573469082, src.images:long():sum():item())
        assert.are.equal(45000 + 10000, src.labels:sum():item())
    end)

    it('reads the train split', function()
        local ds = data.fashion_mnist{split = 'train'}
        assert.are.equal(60000, #ds)
        local first = {9, 0, 0, 3, 0, 2, 7, 2, 5, 5, 0, 9, 5, 5, 7, 9, 1, 0, 6, 4}
        for i, v in ipairs(first) do assert.are.equal(v + 1, ds[i].label) end
        local row = {0, 0, 1, 4, 6, 7, 2, 0, 0, 0, 0, 0, 237, 226, 217, 223, 222, 219, 222, 221,
                     216, 223, 229, 215, 218, 255, 77, 0}
        local img = ds[1].image
        for x = 1, 28 do assert.are.equal(row[x], img[15][x][1]) end
        assert.are.equal(76247, img:long():sum():item())
        assert.are.equal(16684, ds[60000].image:long():sum():item())
        assert.are.equal(270000 + 60000, ds:source().labels:sum():item())
    end)

    it('names the paths it looked in when the files are missing', function()
        local err = error_of(data.fashion_mnist, {root = '/nonexistent/fmnist'})
        assert.truthy(err:find('data.fashion_mnist: cannot find train-images-idx3-ubyte.gz', 1, true))
        assert.truthy(err:find('/nonexistent/fmnist', 1, true))
        assert.truthy(err:find('dataset-fashion-mnist', 1, true))
        err = error_of(data.fashion_mnist, {split = 'val'})
        assert.truthy(err:find("split must be 'train' or 'test', got val", 1, true))
    end)
end)

-- ---- MNIST-style IDX files the test writes ----------------------------------------------------

describe('mnist', function()
    local dir
    before_each(function() dir = temp_dir() end)
    after_each(function() rm_tree(dir) end)

    local function idx(magic_type, dims, payload)
        local header = string.char(0, 0, magic_type, #dims)
        for _, d in ipairs(dims) do
            header = header .. string.char(math.floor(d / 16777216) % 256, math.floor(d / 65536) % 256,
                                           math.floor(d / 256) % 256, d % 256)
        end
        return header .. payload
    end

    it('reads plain IDX files and checks them against each other', function()
        local pixels = {}
        for i = 0, 3 * 2 * 2 - 1 do pixels[#pixels + 1] = string.char(i * 10) end
        write_file(dir .. '/t10k-images-idx3-ubyte', idx(8, {3, 2, 2}, table.concat(pixels)))
        write_file(dir .. '/t10k-labels-idx1-ubyte', idx(8, {3}, string.char(7, 0, 9)))
        local ds = data.mnist{root = dir, split = 'test'}
        assert.are.equal(3, #ds)
        assert.are.same({8, 1, 10}, {ds[1].label, ds[2].label, ds[3].label})
        assert.are.same({{{40}, {50}}, {{60}, {70}}}, ds[2].image:totable())

        write_file(dir .. '/t10k-labels-idx1-ubyte', idx(8, {2}, string.char(7, 0)))
        local err = error_of(data.mnist, {root = dir, split = 'test'})
        assert.truthy(err:find('holds [3,2,2] images', 1, true))
        write_file(dir .. '/t10k-labels-idx1-ubyte', idx(8, {3}, string.char(7, 0, 10)))
        err = error_of(data.mnist, {root = dir, split = 'test'})
        assert.truthy(err:find('holds label 10, but there are only 10 classes', 1, true))
        write_file(dir .. '/t10k-labels-idx1-ubyte', string.char(0, 1, 8, 1, 0, 0, 0, 1, 0))
        err = error_of(data.mnist, {root = dir, split = 'test'})
        assert.truthy(err:find(dir .. '/t10k-labels-idx1-ubyte: not an IDX file (magic bytes 00 01 08 01', 1, true))
        write_file(dir .. '/t10k-labels-idx1-ubyte', idx(8, {4}, string.char(1, 2, 3)))
        err = error_of(data.mnist, {root = dir, split = 'test'})
        assert.truthy(err:find('need 4 data bytes, the file has 3', 1, true))
    end)
end)

-- ---- CIFAR-format files the test writes ------------------------------------------------------

-- n records: label bytes, then image r's planes with pixel (ch, y, x) = (r*31 + ch*70 + y*5 + x) % 256
local function cifar_records(first, n, label_bytes_of)
    local parts = {}
    for r = first, first + n - 1 do
        parts[#parts + 1] = label_bytes_of(r)
        local plane = {}
        for ch = 0, 2 do
            for y = 0, 31 do
                for x = 0, 31 do plane[#plane + 1] = string.char((r * 31 + ch * 70 + y * 5 + x) % 256) end
            end
        end
        parts[#parts + 1] = table.concat(plane)
    end
    return table.concat(parts)
end

local function expect_cifar_image(img, r)
    assert.are.same({32, 32, 3}, img.shape:totable())
    for _, p in ipairs{{0, 0, 0}, {0, 31, 2}, {17, 4, 1}, {31, 31, 2}} do
        local y, x, ch = p[1], p[2], p[3]
        assert.are.equal((r * 31 + ch * 70 + y * 5 + x) % 256, img[y + 1][x + 1][ch + 1])
    end
end

describe('cifar', function()
    local dir
    before_each(function() dir = temp_dir() end)
    after_each(function() rm_tree(dir) end)

    it('reads CIFAR-10 batches in order, as HWC images with 1-based labels', function()
        for b = 1, 5 do   -- two records per training batch, labels r % 10
            write_file(string.format('%s/data_batch_%d.bin', dir, b),
                       cifar_records((b - 1) * 2, 2, function(r) return string.char(r % 10) end))
        end
        write_file(dir .. '/test_batch.bin', cifar_records(100, 3, function(r) return string.char(r % 10) end))
        local train = data.cifar10{root = dir, split = 'train'}
        assert.are.equal(10, #train)
        assert.are.equal('airplane', train.classes[1])
        for i = 1, 10 do
            assert.are.equal((i - 1) % 10 + 1, train[i].label)
            expect_cifar_image(train[i].image, i - 1)
        end
        local test = data.cifar10{root = dir, split = 'test'}
        assert.are.equal(3, #test)
        expect_cifar_image(test[3].image, 102)
        assert.are.equal(102 % 10 + 1, test[3].label)
        local src = test:source()
        assert.are.same({3, 32, 32, 3}, src.images.shape:totable())
        assert.are.same({1, 2, 3}, src.labels:totable())

        -- class names from batches.meta.txt when it is there
        local names = {'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j'}
        write_file(dir .. '/batches.meta.txt', table.concat(names, '\n') .. '\n\n')
        assert.are.same(names, data.cifar10{root = dir, split = 'test'}.classes)
    end)

    it('reads CIFAR-100 with fine or coarse labels', function()
        write_file(dir .. '/train.bin', cifar_records(0, 4, function(r) return string.char(r, 50 + r) end))
        local fine = data.cifar100{root = dir}
        assert.are.same({51, 52, 53, 54}, fine:source().labels:totable())
        assert.are.equal('fine_00', fine.classes[1])
        assert.are.equal(100, #fine.classes)
        expect_cifar_image(fine[4].image, 3)
        write_file(dir .. '/coarse_label_names.txt', table.concat({'c1', 'c2', 'c3', 'c4', 'c5'}, '\n'))
        local coarse = data.cifar100{root = dir, label = 'coarse'}
        assert.are.same({1, 2, 3, 4}, coarse:source().labels:totable())
        assert.are.same({'c1', 'c2', 'c3', 'c4', 'c5'}, coarse.classes)
        local err = error_of(data.cifar100, {root = dir, label = 'medium'})
        assert.truthy(err:find("label must be 'fine' or 'coarse'", 1, true))
    end)

    it('refuses files of the wrong size, bad labels and missing directories', function()
        write_file(dir .. '/test_batch.bin', cifar_records(0, 2, function() return '\0' end) .. 'xyz')
        local err = error_of(data.cifar10, {root = dir, split = 'test'})
        assert.truthy(err:find(dir .. '/test_batch.bin: size 6149 bytes is not a positive multiple '
                               .. 'of the 3073-byte record', 1, true))
        write_file(dir .. '/test_batch.bin', cifar_records(0, 2, function(r) return string.char(10 + r) end))
        err = error_of(data.cifar10, {root = dir, split = 'test'})
        assert.truthy(err:find('holds label 11, but there are only 10 classes', 1, true))

        err = error_of(data.cifar10, {root = dir .. '/missing'})
        assert.truthy(err:find('data.cifar10: cannot find data_batch_1.bin', 1, true))
        assert.truthy(err:find(dir .. '/missing', 1, true))
        assert.truthy(err:find('datasets/fetch_cifar10.sh', 1, true))
        err = error_of(data.cifar10, {})   -- the default places, named
        assert.truthy(err:find('data/cifar-10-batches-bin', 1, true))
    end)
end)

-- ---- image folders of PNG and JPEG files the test writes ------------------------------------

describe('image_folder', function()
    local dir, written
    before_each(function()
        dir = temp_dir()
        xt.manual_seed(SEED)
        written = {}
        -- train/: cat (2 PNG), dog (1 PNG, 1 JPEG); val/: cat (1 PNG), dog (1 PNG)
        local files = {{'train/cat/b.png'}, {'train/cat/a.png'}, {'train/dog/x.jpg'},
                       {'train/dog/y.png'}, {'val/cat/v.png'}, {'val/dog/w.png'}}
        for _, f in ipairs(files) do
            local path = dir .. '/' .. f[1]
            mkdirs(path:match('^(.*)/'))
            local img
            if path:match('%.jpg$') then   -- smooth, so JPEG keeps it within a few levels
                local ramp = xt.arange(0, 12):float():view(1, 12, 1) * 16 + 30
                img = (ramp:expand(10, 12, 3) + xt.arange(0, 10):float():view(10, 1, 1) * 4):to('uint8')
            else
                img = xt.randint(0, 256, 10, 12, 3):to('uint8')
            end
            image.save(path, img)
            written[f[1]] = img
        end
        write_file(dir .. '/train/dog/notes.txt', 'not an image')   -- ignored: extension
        mkdirs(dir .. '/train/.hidden')                              -- ignored: hidden
    end)
    after_each(function() rm_tree(dir) end)

    it('finds classes and files in sorted order and decodes PNG exactly, JPEG closely', function()
        local ds = data.image_folder{root = dir, split = 'train'}
        assert.are.same({'cat', 'dog'}, ds.classes)
        assert.are.equal(2, ds.class_to_idx.dog)
        assert.are.equal(4, #ds)
        local src = ds:source()
        assert.are.equal('files', src.kind)
        assert.are.equal(3, src.channels)
        assert.are.same({dir .. '/train/cat/a.png', dir .. '/train/cat/b.png',
                         dir .. '/train/dog/x.jpg', dir .. '/train/dog/y.png'}, src.paths)
        assert.are.same({1, 1, 2, 2}, src.labels:totable())
        assert.are.equal(0, max_abs_diff(ds[1].image, written['train/cat/a.png']))
        assert.are.equal(0, max_abs_diff(ds[2].image, written['train/cat/b.png']))
        assert.are.equal(0, max_abs_diff(ds[4].image, written['train/dog/y.png']))
        local jpeg, original = ds[3].image, written['train/dog/x.jpg']
        assert.are.same({10, 12, 3}, jpeg.shape:totable())
        local mean_error = (jpeg:float() - original:float()):abs():mean():item()
        print(string.format('data_spec: JPEG mean abs error %.3f levels', mean_error))
        assert.is_true(mean_error < 2.0, 'JPEG mean error ' .. mean_error)
        assert.is_true(max_abs_diff(jpeg, original) <= 12)

        local val = data.image_folder{root = dir .. '/val'}
        assert.are.equal(2, #val)
        assert.are.equal(0, max_abs_diff(val[2].image, written['val/dog/w.png']))
        local gray = data.image_folder{root = dir, split = 'val', channels = 1}
        assert.are.same({10, 12, 1}, gray[1].image.shape:totable())
        local only_png = data.image_folder{root = dir, split = 'train', extensions = {'.PNG'}}
        assert.are.equal(3, #only_png)
    end)

    it('feeds the DataLoader through its file source', function()
        local ds = data.image_folder{root = dir, split = 'train', extensions = {'png'}}
        local loader = data.DataLoader(ds, {batch_size = 3, workers = 2, transform = data.transforms{'to_tensor'}})
        local batches = {}
        for batch in loader:iter() do batches[#batches + 1] = batch end
        assert.are.equal(1, #batches)
        assert.are.same({3, 3, 10, 12}, batches[1].input.shape:totable())
        assert.are.same({1, 1, 2}, batches[1].target:totable())
        local expect = image.to_float(written['train/cat/b.png'])
        assert.is_true(max_abs_diff(batches[1].input[2], expect) < 1e-6)
    end)

    it('reports a corrupt image when it is read, or skips it when asked', function()
        local good = read_file(dir .. '/train/cat/a.png')
        write_file(dir .. '/train/cat/c.png', good:sub(1, #good - 40))   -- truncated
        write_file(dir .. '/train/dog/z.png', 'GIF89a\2\0\2\0\0\0\0 then junk')   -- a GIF named .png
        local ds = data.image_folder{root = dir, split = 'train'}
        assert.are.equal(6, #ds)
        local err = error_of(function() return ds[3] end)
        assert.truthy(err:find(dir .. '/train/cat/c.png: corrupt or truncated PNG', 1, true))
        err = error_of(function() return ds[6] end)
        assert.truthy(err:find(dir .. '/train/dog/z.png: corrupt or truncated GIF', 1, true))

        local skipping = data.image_folder{root = dir, split = 'train', skip_bad = true}
        assert.are.equal(4, #skipping)
        assert.are.same({dir .. '/train/cat/a.png', dir .. '/train/cat/b.png',
                         dir .. '/train/dog/x.jpg', dir .. '/train/dog/y.png'}, skipping:source().paths)
    end)

    it('names what is missing', function()
        local err = error_of(data.image_folder, {root = dir .. '/nope'})
        assert.truthy(err:find(dir .. '/nope is not a directory', 1, true))
        err = error_of(data.image_folder, {root = dir, split = 'test'})
        assert.truthy(err:find(dir .. '/test is not a directory', 1, true))
        mkdirs(dir .. '/train/empty_class')
        err = error_of(data.image_folder, {root = dir, split = 'train'})
        assert.truthy(err:find('no images (png, jpg, jpeg, bmp) in the class directory empty_class', 1, true))
        mkdirs(dir .. '/flat')
        err = error_of(data.image_folder, {root = dir .. '/flat'})
        assert.truthy(err:find('no class directories in ' .. dir .. '/flat', 1, true))
        err = error_of(data.image_folder, {})
        assert.truthy(err:find('root= (a directory) is required', 1, true))
    end)
end)

-- ---- exporting as an image folder ----------------------------------------------------------------

describe('export_image_folder', function()
    local dir
    before_each(function() dir = temp_dir() end)
    after_each(function() rm_tree(dir) end)

    it('writes a tree that image_folder reads back with the same labels and pixels', function()
        local ds = data.subset(data.fashion_mnist{split = 'test'}, 1, 30)
        assert.are.equal(30, data.export_image_folder(ds, dir .. '/png/val'))
        local back = data.image_folder{root = dir .. '/png', split = 'val', channels = 1}
        assert.are.equal(10, #back.classes)
        assert.are.equal('0_T-shirt_top', back.classes[1])
        assert.are.equal('9_Ankle_boot', back.classes[10])
        assert.are.equal(30, #back)
        -- files are grouped by class; each one holds the sample its name gives
        local src = back:source()
        for k = 1, #back do
            local i = tonumber(src.paths[k]:match('(%d+)%.png$'))
            assert.are.equal(ds[i].label, src.labels[k])
            assert.are.equal(0, max_abs_diff(back[k].image, ds[i].image))
        end
        data.export_image_folder(ds, dir .. '/jpg', {format = 'jpg', quality = 90})
        local jpg = data.image_folder{root = dir .. '/jpg', channels = 1}
        assert.are.same(src.labels:totable(), jpg:source().labels:totable())
        local err = error_of(data.export_image_folder, ds, dir .. '/x', {format = 'gif'})
        assert.truthy(err:find("format must be 'png' or 'jpg', got gif", 1, true))
    end)
end)

-- ---- datasets in general -------------------------------------------------------------------------

describe('datasets', function()
    it('index from 1, refuse out-of-range indices and make subsets', function()
        local ds = data.fashion_mnist{split = 'test'}
        local err = error_of(function() return ds[0] end)
        assert.truthy(err:find('fashion_mnist: index 0 out of range 1..10000', 1, true))
        error_of(function() return ds[10001] end)
        local sub = data.subset(ds, 3, 4)
        assert.are.equal(4, #sub)
        assert.are.equal(ds[3].label, sub[1].label)
        assert.are.equal(0, max_abs_diff(ds[6].image, sub[4].image))
        local picked = data.subset(ds, {10, 2})
        assert.are.same({ds[10].label, ds[2].label}, picked:source().labels:totable())
        local a = data.subset(ds, 1, 50, {shuffle_seed = 3})
        local b = data.subset(ds, 1, 50, {shuffle_seed = 3})
        local c = data.subset(ds, 1, 50, {shuffle_seed = 4})
        assert.are.same(a:source().labels:totable(), b:source().labels:totable())
        assert.are_not.same(a:source().images:long():sum(2):totable(),
                            c:source().images:long():sum(2):totable())
        assert.are.equal(0, max_abs_diff(a:source().images, b:source().images))
        err = error_of(data.subset, ds, 9999, 5)
        assert.truthy(err:find('samples 9999..10003 are not within 1..10000', 1, true))
        -- samples are copies: changing one leaves the dataset alone
        local s = ds[1]
        s.image:fill_(0)
        assert.are.equal(98, ds[1].image[15][13][1])
    end)
end)

-- ---- xt.image ----------------------------------------------------------------------------------

describe('xt.image', function()
    local dir
    before_each(function() dir = temp_dir() end)
    after_each(function() rm_tree(dir) end)

    it('saves and loads PNG exactly, for 1 to 4 channels and [H,W]', function()
        xt.manual_seed(SEED)
        for c = 1, 4 do
            local img = xt.randint(0, 256, 5, 7, c):to('uint8')
            image.save(dir .. '/x.png', img)
            assert.are.equal(0, max_abs_diff(image.load(dir .. '/x.png'), img))
            assert.are.same({5, 7, c}, image.info(dir .. '/x.png'))
        end
        local gray = xt.randint(0, 256, 4, 6):to('uint8')
        image.save(dir .. '/g.png', gray)
        assert.are.equal(0, max_abs_diff(image.load(dir .. '/g.png'):squeeze(3), gray))
        local bytes = read_file(dir .. '/g.png')
        assert.are.equal(0, max_abs_diff(image.decode(bytes):squeeze(3), gray))
        assert.are.same({4, 6, 3}, image.decode(bytes, {channels = 3}).shape:totable())
    end)

    it('converts between uint8 HWC and float CHW with tensor ops', function()
        local img = xt.tensor({{{0, 128, 255}, {1, 2, 3}}}, {dtype = 'uint8'})   -- [1,2,3]
        local x = image.to_float(img)
        assert.are.same({3, 1, 2}, x.shape:totable())
        assert.is_true(math.abs(x[2][1][1] - 128 / 255) < 1e-6)
        assert.are.same(img:totable(), image.to_uint8(x):totable())
        local out_of_range = xt.tensor({{{-0.5, 0.5, 2.0}}})   -- [1,1,3]: C=1, H=1, W=3
        assert.are.same({{{0}, {128}, {255}}}, image.to_uint8(out_of_range):totable())
    end)

    it('lays out a grid: nrow images a row, pad pixels apart, pad_value around', function()
        local a = xt.full({2, 2, 1}, 10, {dtype = 'uint8'})
        local b = xt.full({2, 2, 1}, 20, {dtype = 'uint8'})
        local c = xt.full({2, 2, 1}, 30, {dtype = 'uint8'})
        local g = image.grid({a, b, c}, {nrow = 2, pad = 1, pad_value = 255})
        local P = 255
        assert.are.same({
            {P, P, P, P, P, P, P},
            {P, 10, 10, P, 20, 20, P},
            {P, 10, 10, P, 20, 20, P},
            {P, P, P, P, P, P, P},
            {P, 30, 30, P, P, P, P},
            {P, 30, 30, P, P, P, P},
            {P, P, P, P, P, P, P}}, g:squeeze(3):totable())
        -- a float batch [N,C,H,W] in [0,1] gives the same picture
        local batch = xt.stack({image.to_float(a), image.to_float(b), image.to_float(c)}, 1)
        local gf = image.grid(batch, {nrow = 2, pad = 1, pad_value = 1})
        assert.are.equal(0, max_abs_diff(gf, g))
        assert.are.same({1 + 2 * 3, 1 + 8 * 3, 1}, image.grid({a, a, a, a, a, a, a, a, a},
                                                            {pad = 1}).shape:totable())
        local err = error_of(image.grid, {a, xt.zeros({3, 2, 1}, {dtype = 'uint8'})})
        assert.truthy(err:find('element 2 is [3,2,1], element 1 is [2,2,1]', 1, true))
    end)

    it('gives clear errors', function()
        local f = xt.rand(3, 4, 4)
        local err = error_of(image.save, dir .. '/f.png', f)
        assert.truthy(err:find('expected a uint8 image', 1, true))
        assert.truthy(err:find('xt.image.to_uint8', 1, true))
        err = error_of(image.save, dir .. '/f.tiff', image.to_uint8(f))
        assert.truthy(err:find("unknown extension 'tiff'", 1, true))
        err = error_of(image.load, dir .. '/missing.png')
        assert.truthy(err:find('cannot open ' .. dir .. '/missing.png', 1, true))
        err = error_of(image.decode, 'not an image', {name = 'note.png'})
        assert.truthy(err:find('note.png: not a PNG, JPEG, BMP, GIF or PNM image', 1, true))
        err = error_of(image.load, dir .. '/x.png', {channels = 7})
        assert.truthy(err:find('channels must be 0', 1, true))
    end)
end)
