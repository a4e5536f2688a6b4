-- xt.data datasets: CIFAR-10/100 binary batches, MNIST-style IDX files and image folders.
-- The bytes are parsed in C (core/datasets.c, core/image*.c); this file finds the files,
-- names the classes and turns 0-based stored labels into 1-based ones.
--
--   data.cifar10{root = 'data/cifar-10-batches-bin', split = 'train' | 'test'}
--   data.cifar100{root = 'data/cifar-100-binary', split =, label = 'fine' | 'coarse'}
--   data.mnist{root = 'data/mnist', split =}
--   data.fashion_mnist{root = '/usr/share/datasets/fashion-mnist', split =}
--   data.image_folder{root =, split = nil | 'train' | 'val', extensions = {...},
--                     channels = 3, skip_bad = false}
--   data.export_image_folder(ds, dir, {format = 'png' | 'jpg', quality = 95})
-- See xt/data/dataset.lua for what a dataset offers (#ds, ds[i], ds.classes, ds:source()).
local ffi = require 'ffi'
local lfs = require 'lfs'
local C = require 'xt.lib'
local xt = require 'xt.tensor'
local dataset = require 'xt.data.dataset'

local raise, wrap = xt._raise, xt._wrap
local datasets = {subset = dataset.subset}

local function exists(path)
    local f = io.open(path, 'rb')
    if f then f:close() end
    return f ~= nil
end

local function is_dir(path) return lfs.attributes(path, 'mode') == 'directory' end

-- The repository's data/ directory, wherever xlua is started from.
local function repo_data_dir()
    local ok, paths = pcall(require, 'xt.paths')
    if ok and paths.source_lua then return paths.source_lua:gsub('/lua/?$', '') .. '/data' end
end

-- The directories to look in: root when given, else data/<name> (relative to the current
-- directory, then to the repository) and any extra defaults.
local function candidate_roots(root, name, extra)
    if root then return {root} end
    local list, seen = {}, {}
    local function add(dir)
        if dir and not seen[dir] then seen[dir] = true; list[#list + 1] = dir end
    end
    for _, dir in ipairs(extra or {}) do add(dir) end
    add('data/' .. name)
    local repo = repo_data_dir()
    if repo then add(repo .. '/' .. name) end
    return list
end

-- The first root that holds every one of files (a list of alternatives per file: plain or
-- .gz), and the chosen paths; else an error naming where it looked and how to get the data.
local function find_files(op, roots, files, how)
    for _, root in ipairs(roots) do
        local found = {}
        for i, alternatives in ipairs(files) do
            for _, name in ipairs(alternatives) do
                if exists(root .. '/' .. name) then found[i] = root .. '/' .. name; break end
            end
            if not found[i] then break end
        end
        if #found == #files then return found end
    end
    local wanted = {}
    for _, alternatives in ipairs(files) do wanted[#wanted + 1] = alternatives[1] end
    raise(string.format('%s: cannot find %s in %s; %s', op, table.concat(wanted, ', '),
                        table.concat(roots, ' or '), how))
end

local function check_split(op, split, allowed)
    for _, s in ipairs(allowed) do if split == s then return end end
    raise(string.format("%s: split must be '%s', got %s", op, table.concat(allowed, "' or '"),
                        tostring(split)))
end

-- Labels int64 [N] (1-based) from stored 0-based bytes, checked against the class count.
local function labels_from_bytes(op, bytes, n_classes, path)
    local labels = bytes:long() + 1
    if labels:numel() > 0 and labels:max():item() > n_classes then
        raise(string.format('%s: %s holds label %d, but there are only %d classes (corrupt file?)',
                            op, path, labels:max():item() - 1, n_classes))
    end
    return labels:contiguous()
end

-- Class names: one per line of path if it exists, else the fallback list.
local function read_names(path, fallback)
    local f = io.open(path, 'r')
    if not f then return fallback end
    local names = {}
    for line in f:lines() do
        line = line:gsub('%s+$', '')
        if line ~= '' then names[#names + 1] = line end
    end
    f:close()
    return #names > 0 and names or fallback
end

-- ---- CIFAR ----------------------------------------------------------------------------

local CIFAR10_CLASSES = {'airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse',
                         'ship', 'truck'}

-- images uint8 [N,32,32,3] and label bytes uint8 [N,label_bytes] of several batch files.
local function read_cifar_files(paths, label_bytes)
    local images, labels = {}, {}
    for i, path in ipairs(paths) do
        local out = ffi.new('xt_tensor *[1]')
        images[i] = wrap(C.xt_read_cifar(path, label_bytes, out))
        labels[i] = wrap(out[0])
    end
    if #paths == 1 then return images[1], labels[1] end
    return xt.cat(images, 1), xt.cat(labels, 1)
end

local FETCH_CIFAR = 'get it with datasets/fetch_cifar10.sh (downloads and checks it into data/), '
                    .. 'or pass root='

function datasets.cifar10(opts)
    opts = opts or {}
    local split = opts.split or 'train'
    check_split('data.cifar10', split, {'train', 'test'})
    local names = split == 'train' and
        {{'data_batch_1.bin'}, {'data_batch_2.bin'}, {'data_batch_3.bin'}, {'data_batch_4.bin'},
         {'data_batch_5.bin'}} or {{'test_batch.bin'}}
    local paths = find_files('data.cifar10', candidate_roots(opts.root, 'cifar-10-batches-bin'),
                             names, FETCH_CIFAR)
    local images, label_bytes = read_cifar_files(paths, 1)
    local root = paths[1]:match('^(.*)/[^/]*$')
    local classes = read_names(root .. '/batches.meta.txt', CIFAR10_CLASSES)
    local labels = labels_from_bytes('data.cifar10', label_bytes:view(-1), #classes, root)
    return dataset.memory('cifar10', images, labels, classes, {root = root, split = split})
end

function datasets.cifar100(opts)
    opts = opts or {}
    local split = opts.split or 'train'
    check_split('data.cifar100', split, {'train', 'test'})
    local label = opts.label or 'fine'
    if label ~= 'fine' and label ~= 'coarse' then
        raise("data.cifar100: label must be 'fine' or 'coarse', got " .. tostring(label))
    end
    local paths = find_files('data.cifar100', candidate_roots(opts.root, 'cifar-100-binary'),
                             {{split .. '.bin'}},
                             'download cifar-100-binary.tar.gz from the CIFAR site and extract '
                             .. 'it into data/, or pass root=')
    local images, label_bytes = read_cifar_files(paths, 2)   -- [N,2]: coarse, fine
    local root = paths[1]:match('^(.*)/[^/]*$')
    local classes = read_names(root .. '/' .. label .. '_label_names.txt', nil)
    if not classes then
        classes = {}
        for i = 1, label == 'fine' and 100 or 20 do classes[i] = string.format('%s_%02d', label, i - 1) end
    end
    local column = label_bytes:select(2, label == 'coarse' and 1 or 2)
    local labels = labels_from_bytes('data.cifar100', column, #classes, paths[1])
    return dataset.memory('cifar100', images, labels, classes,
                          {root = root, split = split, label = label})
end

-- ---- IDX (MNIST, Fashion-MNIST) ------------------------------------------------------------

local function read_idx(path) return wrap(C.xt_read_idx(path)) end

local function idx_dataset(name, op, opts, roots, classes, how)
    local split = opts.split or 'train'
    check_split(op, split, {'train', 'test'})
    local prefix = split == 'train' and 'train' or 't10k'
    local files = {}
    for i, kind in ipairs{'images-idx3-ubyte', 'labels-idx1-ubyte'} do
        files[i] = {prefix .. '-' .. kind .. '.gz', prefix .. '-' .. kind}
    end
    local paths = find_files(op, roots, files, how)
    local images, label_bytes = read_idx(paths[1]), read_idx(paths[2])
    if images:dim() ~= 3 or label_bytes:dim() ~= 1 or images:size(1) ~= label_bytes:size(1) then
        raise(string.format('%s: %s holds %s images and %s holds %s labels; expected [N,H,W] '
                            .. 'and [N]', op, paths[1], tostring(images.shape), paths[2],
                            tostring(label_bytes.shape)))
    end
    local labels = labels_from_bytes(op, label_bytes, #classes, paths[2])
    images = images:view(images:size(1), images:size(2), images:size(3), 1)   -- [N,H,W,1]
    return dataset.memory(name, images, labels, classes,
                          {root = paths[1]:match('^(.*)/[^/]*$'), split = split})
end

function datasets.mnist(opts)
    opts = opts or {}
    return idx_dataset('mnist', 'data.mnist', opts, candidate_roots(opts.root, 'mnist'),
                       {'0', '1', '2', '3', '4', '5', '6', '7', '8', '9'},
                       'put the four MNIST IDX files (gzip or plain) there, or pass root=')
end

function datasets.fashion_mnist(opts)
    opts = opts or {}
    return idx_dataset('fashion_mnist', 'data.fashion_mnist', opts,
                       candidate_roots(opts.root, 'fashion-mnist',
                                       {'/usr/share/datasets/fashion-mnist'}),
                       {'T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt',
                        'Sneaker', 'Bag', 'Ankle boot'},
                       "install Debian's dataset-fashion-mnist (apt-get install "
                       .. 'dataset-fashion-mnist), or pass root=')
end

-- ---- image folders ---------------------------------------------------------------------------

local DEFAULT_EXTENSIONS = {'png', 'jpg', 'jpeg', 'bmp'}

local function sorted_entries(dir)
    local names = {}
    for name in lfs.dir(dir) do
        if name:sub(1, 1) ~= '.' then names[#names + 1] = name end
    end
    table.sort(names)
    return names
end

-- root/<class>/<image>; classes in sorted order get labels 1, 2, ...; hidden entries are
-- ignored. skip_bad = true decodes every image once here and leaves out (with a warning)
-- the ones that fail; otherwise a bad image raises an error naming it when it is read.
function datasets.image_folder(opts)
    opts = opts or {}
    local op = 'data.image_folder'
    if type(opts.root) ~= 'string' then raise(op .. ': root= (a directory) is required') end
    local dir = opts.split and opts.root .. '/' .. opts.split or opts.root
    if not is_dir(dir) then
        raise(string.format('%s: %s is not a directory; expected %s/<class>/<image>%s', op, dir, dir,
                            opts.split and '' or ' (or root/train/<class>/... with split=)'))
    end
    local allowed = {}
    for _, e in ipairs(opts.extensions or DEFAULT_EXTENSIONS) do allowed[e:lower():gsub('^%.', '')] = true end
    local channels = opts.channels or 3

    local classes, paths, labels, empty = {}, {}, {}, {}
    for _, name in ipairs(sorted_entries(dir)) do
        local class_dir = dir .. '/' .. name
        if is_dir(class_dir) then
            classes[#classes + 1] = name
            local count = 0
            for _, file in ipairs(sorted_entries(class_dir)) do
                local ext = (file:match('%.([^.]+)$') or ''):lower()
                local path = class_dir .. '/' .. file
                if allowed[ext] and lfs.attributes(path, 'mode') == 'file' then
                    paths[#paths + 1], labels[#labels + 1] = path, #classes
                    count = count + 1
                end
            end
            if count == 0 then empty[#empty + 1] = name end
        end
    end
    if #classes == 0 then
        raise(string.format('%s: no class directories in %s; expected %s/<class>/<image>', op, dir, dir))
    end
    if #empty > 0 then
        raise(string.format('%s: no images (%s) in the class director%s %s of %s', op,
                            table.concat(opts.extensions or DEFAULT_EXTENSIONS, ', '),
                            #empty > 1 and 'ies' or 'y', table.concat(empty, ', '), dir))
    end

    if opts.skip_bad then
        local image = require 'xt.image'
        local kept_paths, kept_labels, skipped = {}, {}, 0
        for i, path in ipairs(paths) do
            local ok, err = pcall(image.load, path, {channels = channels})
            if ok then
                kept_paths[#kept_paths + 1], kept_labels[#kept_labels + 1] = path, labels[i]
            else
                skipped = skipped + 1
                io.stderr:write(string.format('%s: skipping %s: %s\n', op, path, tostring(err)))
            end
        end
        if skipped > 0 then
            io.stderr:write(string.format('%s: skipped %d of %d images in %s\n', op, skipped,
                                          #paths, dir))
        end
        paths, labels = kept_paths, kept_labels
    end
    local label_tensor = #labels > 0 and xt.tensor(labels, {dtype = 'int64'}) or
                         xt.zeros({0}, {dtype = 'int64'})
    return dataset.files('image_folder', paths, label_tensor, classes, channels,
                         {root = opts.root, split = opts.split})
end

-- ---- exporting ---------------------------------------------------------------------------------

-- A class's directory name: its label zero-padded (so sorted names keep the label order)
-- and its name with anything but letters, digits, '-' and '_' replaced.
local function class_dir_name(label, name, n_classes)
    local width = #tostring(n_classes - 1)
    return string.format('%0' .. width .. 'd_%s', label - 1, tostring(name):gsub('[^%w_%-]', '_'))
end

-- export_image_folder(ds, dir, {format = 'png' | 'jpg', quality = 95}): write every sample
-- of ds as dir/<label-1>_<class>/<index>.<format>, the layout image_folder reads back with
-- the same labels. Returns the number of images written.
function datasets.export_image_folder(ds, dir, opts)
    opts = opts or {}
    local op = 'data.export_image_folder'
    local format = opts.format or 'png'
    if format ~= 'png' and format ~= 'jpg' and format ~= 'jpeg' then
        raise(op .. ": format must be 'png' or 'jpg', got " .. tostring(format))
    end
    local image = require 'xt.image'
    local classes = ds.classes
    local n = ds:size()
    local digits = #tostring(n)
    local function make_dir(path)
        if not is_dir(path) then
            local ok, err = lfs.mkdir(path)
            if not ok then raise(string.format('%s: cannot create %s: %s', op, path, tostring(err))) end
        end
    end
    local sofar = dir:sub(1, 1) == '/' and '' or '.'
    for part in dir:gmatch('[^/]+') do sofar = sofar .. '/' .. part; make_dir(sofar) end
    local class_dirs = {}
    for label, name in ipairs(classes) do
        class_dirs[label] = dir .. '/' .. class_dir_name(label, name, #classes)
        make_dir(class_dirs[label])
    end
    local src = ds:source()
    for i = 1, n do
        local label = src.labels[i]
        local img = src.kind == 'memory' and src.images[i] or ds[i].image
        image.save(string.format('%s/%0' .. digits .. 'd.%s', class_dirs[label], i, format), img,
                   {quality = opts.quality})
    end
    return n
end

return datasets
