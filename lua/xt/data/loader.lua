-- xt.data.DataLoader: batches of a dataset, decoded, augmented and assembled by C threads.
--
--   local loader = data.DataLoader(ds, {batch_size = 128, shuffle = true, seed = 0,
--                                       drop_last = true, workers = 2, prefetch = 2,
--                                       transform = data.transforms{...}})
--   for epoch = 1, epochs do
--       loader:set_epoch(epoch)                 -- optional: iter() counts epochs itself
--       for batch in loader:iter() do ... batch.input [B,C,H,W] float32, batch.target [B] int64
--   end
--
-- The dataset gives its samples through ds:source(): {kind = 'memory', images = uint8
-- [N,H,W,C], labels = int64 [N]} or {kind = 'files', paths = {...}, labels = int64 [N]}
-- (decoded by the workers, to `channels` channels: the option, else source.channels, else 3).
-- A dataset without source() (a table with ds:size() or #ds, and ds[i] = {image =, label =}) is
-- gathered into memory once.
--
-- Each iter() runs one epoch (the first is epoch 1) and moves to the next; set_epoch(e) picks
-- the epoch the next iter() runs. An epoch's order depends only on (seed, epoch), each
-- sample's augmentation only on (seed, epoch, index): any workers count gives the same batches.
-- workers = 0 builds each batch in the calling thread when it is asked for; otherwise
-- `workers` threads keep up to workers * prefetch batches ready. Without a seed, one is
-- drawn from xt's default generator (so xt.manual_seed makes runs repeatable).
local ffi = require 'ffi'
local C = require 'xt.lib'
local xt = require 'xt.tensor'
local class = require('xt.class').class
local transforms = require 'xt.data.transforms'

local raise, wrap, check = xt._raise, xt._wrap, xt._check

local DataLoader = class('DataLoader')

local OPTIONS = {batch_size = 1, shuffle = false, seed = false, drop_last = false, workers = 0,
                 prefetch = 2, transform = false, channels = false}

local function check_options(opts) return xt._check_options(opts, OPTIONS, 'DataLoader') end

local function integer_option(opts, name, min)
    local v = opts[name]
    if v == nil then v = OPTIONS[name] end
    if type(v) ~= 'number' or v ~= math.floor(v) or v < min then
        raise(string.format('DataLoader: %s must be an integer >= %d, got %s', name, min, tostring(v)))
    end
    return v
end

-- A dataset without source(): stack its images [H,W,C] uint8 and labels into memory.
local function gather(ds)
    local n = type(ds.size) == 'function' and ds:size() or #ds
    local images, labels = {}, {}
    for i = 1, n do
        local s = ds[i]
        if type(s) ~= 'table' or not xt.is_tensor(s.image) or type(s.label) ~= 'number' then
            raise(string.format('DataLoader: sample %d of the dataset must be {image = uint8 ' ..
                                '[H,W,C] tensor, label = number}', i))
        end
        images[i], labels[i] = s.image, s.label
    end
    if n == 0 then
        return {kind = 'memory', images = xt.zeros({0, 1, 1, 1}, {dtype = 'uint8'}),
                labels = xt.zeros({0}, {dtype = 'int64'})}
    end
    return {kind = 'memory', images = xt.stack(images, 1),
            labels = xt.tensor(labels, {dtype = 'int64'})}
end

local function source_of(ds)
    if type(ds) ~= 'table' and type(ds) ~= 'userdata' then
        raise('DataLoader: expected a dataset, got ' .. type(ds))
    end
    local src = type(ds.source) == 'function' and ds:source() or gather(ds)
    if type(src) ~= 'table' or (src.kind ~= 'memory' and src.kind ~= 'files') then
        raise("DataLoader: ds:source() must return {kind = 'memory' | 'files', ...}")
    end
    if not xt.is_tensor(src.labels) then raise('DataLoader: the source has no labels tensor') end
    return src
end

local function pipeline_of(tf)
    if tf == nil then return transforms{} end
    if transforms.is_pipeline(tf) then return tf end
    if type(tf) == 'table' then return transforms(tf) end
    if type(tf) == 'function' then
        raise('DataLoader: transform must be data.transforms{...}: the worker threads run C, ' ..
              'not Lua functions (transform the dataset itself for custom Lua code)')
    end
    raise('DataLoader: transform must be data.transforms{...}, a list of steps or a step, got ' ..
          type(tf))
end

function DataLoader:__init(ds, opts)
    opts = check_options(opts)
    local src = source_of(ds)
    self.dataset = ds
    self.batch_size = integer_option(opts, 'batch_size', 1)
    self.workers = integer_option(opts, 'workers', 0)
    self.prefetch = integer_option(opts, 'prefetch', 1)
    self.shuffle = opts.shuffle and true or false
    self.drop_last = opts.drop_last and true or false
    self.seed = opts.seed
    if self.seed == nil then self.seed = xt.randint(0, 2 ^ 31, {1}):item() end
    if type(self.seed) ~= 'number' or self.seed < 0 or self.seed ~= math.floor(self.seed) then
        raise('DataLoader: seed must be an integer >= 0, got ' .. tostring(self.seed))
    end
    self.transform = pipeline_of(opts.transform)
    self.epoch = 1

    local o = ffi.new('xt_loader_options')
    o.batch_size, o.seed = self.batch_size, self.seed
    o.shuffle, o.drop_last = self.shuffle and 1 or 0, self.drop_last and 1 or 0
    o.workers, o.prefetch = self.workers, self.prefetch
    o.channels = opts.channels or src.channels or 3
    local n_tf, structs = self.transform:cdata()
    local ptr
    if src.kind == 'memory' then
        if not xt.is_tensor(src.images) then raise('DataLoader: the memory source has no images tensor') end
        ptr = C.xt_loader_new_memory(src.images._c, src.labels._c, o, n_tf, structs)
    else
        local paths = src.paths
        if type(paths) ~= 'table' then raise('DataLoader: the files source has no paths list') end
        local cpaths = ffi.new('const char *[?]', math.max(#paths, 1))
        for i, p in ipairs(paths) do cpaths[i - 1] = p end   -- `paths` keeps the strings alive
        ptr = C.xt_loader_new_files(#paths, cpaths, src.labels._c, o, n_tf, structs)
    end
    if ptr == nil then raise(ffi.string(C.xt_last_error())) end
    self._c = ffi.gc(ptr, C.xt_loader_free)
    self._iterator = 0
end

-- Number of batches in an epoch.
function DataLoader:size() return tonumber(C.xt_loader_num_batches(self._c)) end

function DataLoader:set_epoch(epoch)
    if type(epoch) ~= 'number' or epoch ~= math.floor(epoch) then
        raise('DataLoader: set_epoch takes an integer, got ' .. tostring(epoch))
    end
    self.epoch = epoch
end

-- An iterator over the batches of the current epoch, {input =, target =} each; the epoch
-- counter moves on. Starting another iter() ends this one.
function DataLoader:iter()
    if self._c == nil then raise('DataLoader: the loader is closed') end
    local epoch = self.epoch
    self.epoch = epoch + 1
    check(C.xt_loader_start_epoch(self._c, epoch))
    self._iterator = self._iterator + 1
    local token = self._iterator
    local input, target = ffi.new('xt_tensor *[1]'), ffi.new('xt_tensor *[1]')
    return function()
        if self._iterator ~= token or self._c == nil then
            raise('DataLoader: this iterator was ended by a newer loader:iter() or close()')
        end
        local got = C.xt_loader_next(self._c, input, target)
        if got == 0 then return nil end
        if got < 0 then raise(ffi.string(C.xt_last_error())) end
        return {input = wrap(input[0]), target = wrap(target[0])}
    end
end

-- Stop the workers and free the loader now rather than at garbage collection.
function DataLoader:close()
    if self._c ~= nil then
        C.xt_loader_free(ffi.gc(self._c, nil))
        self._c = nil
    end
end

function DataLoader:__tostring()
    return string.format('DataLoader(%d batches of %d, shuffle=%s, workers=%d, %s)',
                         self._c ~= nil and self:size() or 0, self.batch_size,
                         tostring(self.shuffle), self.workers, tostring(self.transform))
end

return DataLoader
