-- xt.data.dataset: the shape every dataset shares, and subsets of them.
--
-- A dataset is a userdata proxy over a table of fields, so that `#ds` works in LuaJIT
-- (tables ignore __len there):
--   #ds, ds:size()      the number of samples
--   ds[i]               {image = uint8 [H,W,C] (a copy), label = integer in 1..#ds.classes}
--   ds.classes          class names; ds.class_to_idx maps a name to its label
--   ds:source()         what the DataLoader's C workers read:
--                         {kind = 'memory', images = uint8 [N,H,W,C], labels = int64 [N]}
--                         {kind = 'files', paths = {...}, labels = int64 [N], channels = C}
--                       tensors contiguous, labels 1-based.
-- A dataset kind supplies get(self, i), size(self), source(self) and its fields.
local xt = require 'xt.tensor'

local raise = xt._raise
local dataset = {}

local function check_index(self, i)
    local n = self:size()
    if type(i) ~= 'number' or i ~= math.floor(i) or i < 1 or i > n then
        raise(string.format('%s: index %s out of range 1..%d', self.name, tostring(i), n))
    end
end

-- new(name, methods, fields) -> the proxy. methods: get, size, source (and any others).
function dataset.new(name, methods, fields)
    fields.name = name
    local proxy = newproxy(true)
    local mt = getmetatable(proxy)
    mt.__index = function(self, k)
        if type(k) == 'number' then
            check_index(self, k)
            return methods.get(self, k)
        end
        local v = fields[k]
        if v ~= nil then return v end
        return methods[k]
    end
    mt.__newindex = function(_, k, v) fields[k] = v end
    mt.__len = function(self) return self:size() end
    mt.__tostring = function(self)
        return string.format('%s(%d samples, %d classes)', name, self:size(), #(self.classes or {}))
    end
    return proxy
end

-- {name = label} for a list of class names.
function dataset.class_index(classes)
    local index = {}
    for i, c in ipairs(classes) do index[c] = i end
    return index
end

-- ---- in-memory datasets: images uint8 [N,H,W,C] and labels int64 [N], both contiguous ----

local memory = {}
function memory.size(self) return self.images:size(1) end
function memory.get(self, i) return {image = self.images[i]:clone(), label = self.labels[i]} end
function memory.source(self) return {kind = 'memory', images = self.images, labels = self.labels} end

function dataset.memory(name, images, labels, classes, fields)
    fields = fields or {}
    fields.images, fields.labels = images:contiguous(), labels:contiguous()
    fields.classes, fields.class_to_idx = classes, dataset.class_index(classes)
    return dataset.new(name, memory, fields)
end

-- ---- image files, decoded when read ------------------------------------------------------

local files = {}
function files.size(self) return #self.paths end
function files.get(self, i)
    return {image = require('xt.image').load(self.paths[i], {channels = self.channels}),
            label = self.labels[i]}
end
function files.source(self)
    return {kind = 'files', paths = self.paths, labels = self.labels, channels = self.channels}
end

function dataset.files(name, paths, labels, classes, channels, fields)
    fields = fields or {}
    fields.paths, fields.labels, fields.channels = paths, labels:contiguous(), channels
    fields.classes, fields.class_to_idx = classes, dataset.class_index(classes)
    return dataset.new(name, files, fields)
end

-- ---- subsets --------------------------------------------------------------------------------

-- subset(ds, first, count): samples first..first+count-1 (a view for in-memory datasets);
-- subset(ds, first, count, {shuffle_seed = s}): the same positions of a random order of the
--   samples that depends only on s (for a sample of a class-sorted image folder);
-- subset(ds, indices): the samples at a list or int64 tensor of 1-based indices, in order.
function dataset.subset(ds, first, count, opts)
    local src = ds:source()
    local n = ds:size()
    local index
    if type(first) == 'number' and opts and opts.shuffle_seed then
        count = count or n - first + 1
        if first < 1 or count < 0 or first + count - 1 > n then
            raise(string.format('subset: samples %s..%s are not within 1..%d', tostring(first),
                                tostring(first + count - 1), n))
        end
        local order = xt.randperm(n, {generator = xt.Generator(opts.shuffle_seed)})
        return dataset.subset(ds, order:narrow(1, first, count))
    elseif type(first) == 'number' then
        count = count or n - first + 1
        if first ~= math.floor(first) or count ~= math.floor(count) or first < 1 or count < 0 or
            first + count - 1 > n then
            raise(string.format('subset: samples %s..%s are not within 1..%d', tostring(first),
                                tostring(first + (count or 0) - 1), n))
        end
    else
        index = xt.is_tensor(first) and first:long():contiguous() or
                xt.tensor(first, {dtype = 'int64'})
        if index:dim() ~= 1 then raise('subset: expected a 1-d list of indices') end
        if index:numel() > 0 and (index:min():item() < 1 or index:max():item() > n) then
            raise(string.format('subset: indices must be within 1..%d', n))
        end
    end
    local name = 'subset of ' .. ds.name
    local fields = {parent = ds}
    if src.kind == 'memory' then
        local images = index and src.images:index_select(1, index) or src.images:narrow(1, first, count)
        local labels = index and src.labels:index_select(1, index) or src.labels:narrow(1, first, count)
        return dataset.memory(name, images, labels, ds.classes, fields)
    end
    local paths = {}
    local labels = index and src.labels:index_select(1, index) or src.labels:narrow(1, first, count)
    for k = 1, labels:numel() do
        paths[k] = src.paths[index and index[k] or first + k - 1]
    end
    return dataset.files(name, paths, labels, ds.classes, src.channels, fields)
end

return dataset
