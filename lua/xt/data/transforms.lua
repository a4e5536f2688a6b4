-- xt.data.transforms: image transform pipelines, run in C by the DataLoader's workers.
--
-- A pipeline is a list of steps applied in order to a uint8 image [H,W,C]: geometric steps
-- first, then to_tensor (uint8 HWC -> float32 CHW in [0,1]), then normalize. Build one from
-- names, from {name, args..., key = value} tables, or from the PyTorch-style constructors:
--
--   local T = xt.data.transforms
--   local tf = T{{'random_crop', 32, padding = 4}, 'random_horizontal_flip', 'to_tensor',
--                {'normalize', {0.4914, 0.4822, 0.4465}, {0.2470, 0.2435, 0.2616}}}
--   local same = T.Compose{T.RandomCrop(32, {padding = 4}), T.RandomHorizontalFlip(),
--                          T.ToTensor(), T.Normalize({0.4914, 0.4822, 0.4465}, {0.2470, 0.2435, 0.2616})}
--
-- Steps (sizes are a number for a square, or {height, width}; as torchvision):
--   random_crop(size, {padding = p | {lr, tb} | {l, t, r, b}, fill = v | {v1, ..., vC}})
--   random_horizontal_flip(p = 0.5)
--   random_resized_crop(size, {scale = {0.08, 1}, ratio = {3/4, 4/3}, interpolation = 'bilinear'})
--   resize(size, {interpolation = 'bilinear' | 'area'})  a number resizes the shorter side
--   center_crop(size)                                     pads with zeros when larger
--   to_tensor()                                           implicit at the end when left out
--   normalize(mean, std)                                  numbers or one value per channel
--
-- Bilinear is F.interpolate's (half-pixel centres, no antialiasing); use 'area' to shrink a
-- lot. Random choices depend only on (seed, epoch, sample index), never on the worker.
-- A pipeline is also callable on one image: tf(image, {seed =, epoch =, index =}).
local ffi = require 'ffi'
local C = require 'xt.lib'
local xt = require 'xt.tensor'
local class = require('xt.class').class

local raise = xt._raise

local Transform = class('Transform')     -- one step: kind and parameters
local Compose = class('Compose')         -- a pipeline: a list of steps

local MAX_VALUES = 4                     -- XT_TRANSFORM_MAX_CHANNELS

---------------------------------------------------------------------------------------------
-- arguments

local function size_of(name, size)
    if type(size) == 'number' then return size, size end
    if type(size) == 'table' and #size == 2 and type(size[1]) == 'number' and
        type(size[2]) == 'number' then
        return size[1], size[2]
    end
    raise(name .. ': size must be a number or {height, width}, got ' .. tostring(size))
end

local function check_opts(name, opts, allowed) return xt._check_options(opts, allowed, name) end

-- a number or a list of 1..4 numbers (one per channel)
local function values_of(name, what, v)
    if type(v) == 'number' then return {v} end
    if xt.is_tensor(v) then v = v:totable() end
    if type(v) == 'table' and #v >= 1 and #v <= MAX_VALUES then
        for i = 1, #v do
            if type(v[i]) ~= 'number' then break end
            if i == #v then return v end
        end
    end
    raise(string.format('%s: %s must be a number or a list of 1 to %d numbers, got %s',
                        name, what, MAX_VALUES, tostring(v)))
end

local function pair_of(name, what, v)
    if type(v) == 'table' and #v == 2 and type(v[1]) == 'number' and type(v[2]) == 'number' then
        return v
    end
    raise(string.format('%s: %s must be {min, max}, got %s', name, what, tostring(v)))
end

-- padding as torchvision: p, {left/right, top/bottom} or {left, top, right, bottom}
local function padding_of(name, p)
    if p == nil then return {0, 0, 0, 0} end
    if type(p) == 'number' then return {p, p, p, p} end
    if type(p) == 'table' and #p == 2 then return {p[1], p[2], p[1], p[2]} end
    if type(p) == 'table' and #p == 4 then return {p[1], p[2], p[3], p[4]} end
    raise(name .. ': padding must be a number, {left/right, top/bottom} or ' ..
          '{left, top, right, bottom}, got ' .. tostring(p))
end

local INTERPOLATION = {bilinear = C.XT_INTERP_BILINEAR, area = C.XT_INTERP_AREA}

local function interpolation_of(name, v)
    v = v or 'bilinear'
    local id = INTERPOLATION[v]
    if not id then raise(name .. ": interpolation must be 'bilinear' or 'area', got " .. tostring(v)) end
    return id
end

---------------------------------------------------------------------------------------------
-- steps

function Transform:__init(name, kind, params)
    self.name, self.kind = name, kind
    for k, v in pairs(params or {}) do self[k] = v end
end

function Transform:__tostring()
    return 'Transform(' .. self.name .. ')'
end

-- Fill one xt_transform struct; the C side checks the values.
function Transform:fill_struct(s)
    s.kind = self.kind
    s.height, s.width = self.height or 0, self.width or 0
    local pad = self.padding or {0, 0, 0, 0}
    for i = 1, 4 do s.padding[i - 1] = pad[i] end
    s.interpolation = self.interpolation or 0
    s.p = self.p or 0
    local scale, ratio = self.scale or {0, 0}, self.ratio or {0, 0}
    s.scale[0], s.scale[1], s.ratio[0], s.ratio[1] = scale[1], scale[2], ratio[1], ratio[2]
    local fill, mean, std = self.fill or {0}, self.mean or {0}, self.std or {1}
    s.n_values = self.kind == C.XT_TRANSFORM_NORMALIZE and #mean or #fill
    for i = 1, MAX_VALUES do
        s.fill[i - 1] = fill[i] or 0
        s.mean[i - 1] = mean[i] or 0
        s.std[i - 1] = std[i] or 1
    end
end

local T = {}   -- the constructors, in PyTorch's spelling

function T.RandomCrop(size, opts)
    local name = 'random_crop'
    opts = check_opts(name, opts, {padding = true, fill = true})
    local h, w = size_of(name, size)
    return Transform(name, C.XT_TRANSFORM_RANDOM_CROP, {
        height = h, width = w, padding = padding_of(name, opts.padding),
        fill = values_of(name, 'fill', opts.fill or 0)})
end

function T.RandomHorizontalFlip(p)
    local name = 'random_horizontal_flip'
    if type(p) == 'table' then p = check_opts(name, p, {p = true}).p end
    p = p == nil and 0.5 or p
    if type(p) ~= 'number' then raise(name .. ': p must be a number, got ' .. tostring(p)) end
    return Transform(name, C.XT_TRANSFORM_RANDOM_HORIZONTAL_FLIP, {p = p})
end

function T.RandomResizedCrop(size, opts)
    local name = 'random_resized_crop'
    opts = check_opts(name, opts, {scale = true, ratio = true, interpolation = true})
    local h, w = size_of(name, size)
    return Transform(name, C.XT_TRANSFORM_RANDOM_RESIZED_CROP, {
        height = h, width = w,
        scale = pair_of(name, 'scale', opts.scale or {0.08, 1}),
        ratio = pair_of(name, 'ratio', opts.ratio or {3 / 4, 4 / 3}),
        interpolation = interpolation_of(name, opts.interpolation)})
end

function T.Resize(size, opts)
    local name = 'resize'
    opts = check_opts(name, opts, {interpolation = true})
    local h, w
    if type(size) == 'number' then h, w = size, 0 else h, w = size_of(name, size) end
    return Transform(name, C.XT_TRANSFORM_RESIZE, {
        height = h, width = w, interpolation = interpolation_of(name, opts.interpolation)})
end

function T.CenterCrop(size)
    local h, w = size_of('center_crop', size)
    return Transform('center_crop', C.XT_TRANSFORM_CENTER_CROP, {height = h, width = w})
end

function T.ToTensor()
    return Transform('to_tensor', C.XT_TRANSFORM_TO_TENSOR)
end

function T.Normalize(mean, std)
    local name = 'normalize'
    if type(mean) == 'table' and std == nil and (mean.mean or mean.std) then
        mean, std = mean.mean, mean.std
    end
    mean, std = values_of(name, 'mean', mean), values_of(name, 'std', std)
    if #mean ~= #std then
        raise(string.format('%s: mean has %d values but std has %d', name, #mean, #std))
    end
    return Transform(name, C.XT_TRANSFORM_NORMALIZE, {mean = mean, std = std})
end

-- names in lists -> constructors
local BY_NAME = {
    random_crop = T.RandomCrop, random_horizontal_flip = T.RandomHorizontalFlip,
    random_resized_crop = T.RandomResizedCrop, resize = T.Resize, center_crop = T.CenterCrop,
    to_tensor = T.ToTensor, normalize = T.Normalize,
}

local function known_names()
    local names = {}
    for k in pairs(BY_NAME) do names[#names + 1] = k end
    table.sort(names)
    return table.concat(names, ', ')
end

-- 'name', {'name', args..., key = value} (the keys become the last argument), a Transform
local function step_of(spec)
    if getmetatable(spec) == Transform then return spec end
    local name, args = spec, {}
    if type(spec) == 'table' then
        name = spec[1]
        for i = 2, #spec do args[#args + 1] = spec[i] end
        local named
        for k, v in pairs(spec) do
            if type(k) ~= 'number' then
                named = named or {}
                named[k] = v
            end
        end
        if named then args[#args + 1] = named end
    end
    local make = type(name) == 'string' and BY_NAME[name]
    if not make then
        raise(string.format("transforms: unknown transform '%s' (known: %s)", tostring(name),
                            known_names()))
    end
    return make(unpack(args, 1, table.maxn(args)))
end

---------------------------------------------------------------------------------------------
-- pipelines

function Compose:__init(list)
    if getmetatable(list) == Compose then list = list.steps end
    if type(list) ~= 'table' or getmetatable(list) == Transform then list = {list} end
    self.steps = {}
    for _, spec in ipairs(list) do
        if getmetatable(spec) == Compose then
            for _, s in ipairs(spec.steps) do self.steps[#self.steps + 1] = s end
        else
            self.steps[#self.steps + 1] = step_of(spec)
        end
    end
    -- checked now, so that a bad pipeline fails where it is written
    local n, structs = self:cdata()
    xt._check(C.xt_transforms_check(n, structs))
end

-- (n, xt_transform[n]) for C; the array lives as long as it is referenced.
function Compose:cdata()
    local n = #self.steps
    local structs = ffi.new('xt_transform[?]', math.max(n, 1))
    for i, step in ipairs(self.steps) do step:fill_struct(structs[i - 1]) end
    return n, structs
end

function Compose:__tostring()
    local names = {}
    for i, s in ipairs(self.steps) do names[i] = s.name end
    return 'transforms{' .. table.concat(names, ', ') .. '}'
end

-- Apply to one uint8 image [H,W,C] with the random choices of sample `index` (1-based) of
-- `epoch` in a loader seeded with `seed` -> float32 [C,H,W] (uint8 [H,W,C] without to_tensor).
function Compose:__call(image, opts)
    opts = check_opts('transform', opts, {seed = true, epoch = true, index = true})
    if not xt.is_tensor(image) then raise('transform: expected an image tensor, got ' .. type(image)) end
    local n, structs = self:cdata()
    return xt._wrap(C.xt_transform_apply(image._c, n, structs, opts.seed or 0, opts.epoch or 1,
                                         (opts.index or 1) - 1))
end

-- A single step applies like a pipeline of one.
function Transform:__call(image, opts) return Compose({self})(image, opts) end

T.Compose = Compose
T.Transform = Transform
T.is_pipeline = function(x) return getmetatable(x) == Compose end

-- transforms{...} builds a pipeline; transforms.Name(...) builds a step.
return setmetatable(T, {__call = function(_, list) return Compose(list) end})
