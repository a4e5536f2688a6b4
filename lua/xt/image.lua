-- xt.image: images as tensors. Decoding and encoding happen in C (stb_image, libpng); this
-- file converts between the two layouts with tensor ops, never a loop over pixels.
--
--   local img = xt.image.load('cat.jpg')            -- uint8 [H,W,C] (C as in the file)
--   local rgb = xt.image.load('cat.png', {channels = 3})
--   xt.image.save('out.png', img)                    -- .png, or .jpg/.jpeg ({quality = 95})
--   local x = xt.image.to_float(img)                 -- float32 [C,H,W] in [0,1]
--   local back = xt.image.to_uint8(x)                -- uint8 [H,W,C]
--   xt.image.save('grid.png', xt.image.grid(batch, {nrow = 8, pad = 2}))
local ffi = require 'ffi'
local xt = require 'xt'
local C = xt.C

local image = {}

local function check_channels(channels, op)
    channels = channels or 0
    if type(channels) ~= 'number' or channels < 0 or channels > 4 or channels % 1 ~= 0 then
        xt._raise(string.format('%s: channels must be 0 (as in the file), 1, 2, 3 or 4, got %s',
                                op, tostring(channels)))
    end
    return channels
end

-- load(path [, {channels=}]) -> uint8 [H,W,C]. PNG, JPEG, BMP, GIF (first frame), PNM.
function image.load(path, opts)
    if type(path) ~= 'string' then xt._raise('image.load: expected a path, got ' .. type(path)) end
    local channels = check_channels(opts and opts.channels, 'image.load')
    return xt._wrap(C.xt_image_load(path, channels))
end

-- decode(bytes [, {channels=, name=}]) -> uint8 [H,W,C], from the file's bytes as a string.
function image.decode(bytes, opts)
    if type(bytes) ~= 'string' then
        xt._raise('image.decode: expected the file contents as a string, got ' .. type(bytes))
    end
    opts = opts or {}
    local channels = check_channels(opts.channels, 'image.decode')
    return xt._wrap(C.xt_image_decode(ffi.cast('const uint8_t *', bytes), #bytes, channels,
                                      opts.name))
end

-- info(path) -> {height, width, channels} from the header alone.
function image.info(path)
    local f, err = io.open(path, 'rb')
    if not f then xt._raise('image.info: cannot open ' .. tostring(err)) end
    local bytes = f:read('*a')
    f:close()
    local shape = ffi.new('int64_t[3]')
    xt._check(C.xt_image_info(ffi.cast('const uint8_t *', bytes), #bytes, path, shape))
    return {tonumber(shape[0]), tonumber(shape[1]), tonumber(shape[2])}
end

-- save(path, t [, {quality=95}]): t uint8 [H,W] or [H,W,C] with C 1..4. The extension picks
-- the format: .png (lossless) or .jpg/.jpeg. Written atomically.
function image.save(path, t, opts)
    if type(path) ~= 'string' then xt._raise('image.save: expected a path, got ' .. type(path)) end
    if not xt.is_tensor(t) then xt._raise('image.save: expected a tensor, got ' .. type(t)) end
    local ext = (path:match('%.([%w]+)$') or ''):lower()
    if ext == 'png' then
        xt._check(C.xt_image_save_png(path, t._c))
    elseif ext == 'jpg' or ext == 'jpeg' then
        xt._check(C.xt_image_save_jpeg(path, t._c, opts and opts.quality or 95))
    else
        xt._raise(string.format("image.save: %s: unknown extension '%s' (use .png, .jpg or .jpeg)",
                                path, ext))
    end
end

-- to_float(img): uint8 [H,W,C] -> float32 [C,H,W] in [0,1]; [N,H,W,C] -> [N,C,H,W].
function image.to_float(img)
    if img.dtype ~= 'uint8' or (img:dim() ~= 3 and img:dim() ~= 4) then
        xt._raise(string.format('image.to_float: expected uint8 [H,W,C] or [N,H,W,C], got %s %s',
                                img.dtype, tostring(img.shape)))
    end
    local chw = img:dim() == 3 and img:permute(3, 1, 2) or img:permute(1, 4, 2, 3)
    return (chw:float() / 255):contiguous()
end

-- to_uint8(x): float [C,H,W] (or [N,C,H,W]) in [0,1] -> uint8 [H,W,C] ([N,H,W,C]); values
-- outside [0,1] are clamped, the rest rounded to the nearest level.
function image.to_uint8(x)
    if x.dtype ~= 'float32' or (x:dim() ~= 3 and x:dim() ~= 4) then
        xt._raise(string.format('image.to_uint8: expected float32 [C,H,W] or [N,C,H,W] in [0,1], '
                                .. 'got %s %s', x.dtype, tostring(x.shape)))
    end
    local levels = (x:clamp(0, 1) * 255):round():to('uint8')
    local hwc = x:dim() == 3 and levels:permute(2, 3, 1) or levels:permute(1, 3, 4, 2)
    return hwc:contiguous()
end

-- A batch of uint8 [N,H,W,C] images from a list of images or a batch, uint8 HWC or float
-- CHW in [0,1]; 2-D uint8 images count as one channel.
local function as_uint8_batch(images)
    if xt.is_tensor(images) then
        if images.dtype == 'float32' then
            if images:dim() == 3 then images = images:unsqueeze(1) end
            return image.to_uint8(images)
        end
        if images.dtype == 'uint8' and images:dim() == 3 then return images:unsqueeze(1) end
        if images.dtype == 'uint8' and images:dim() == 4 then return images end
        xt._raise(string.format('image.grid: expected uint8 [N,H,W,C] or float32 [N,C,H,W], got '
                                .. '%s %s', images.dtype, tostring(images.shape)))
    end
    if type(images) ~= 'table' or #images == 0 then
        xt._raise('image.grid: expected a non-empty list of images or a batch tensor')
    end
    local list = {}
    for i, img in ipairs(images) do
        if not xt.is_tensor(img) then
            xt._raise(string.format('image.grid: element %d is a %s, not a tensor', i, type(img)))
        end
        if img.dtype == 'float32' then
            img = image.to_uint8(img)
        elseif img.dtype == 'uint8' and img:dim() == 2 then
            img = img:unsqueeze(3)
        elseif img.dtype ~= 'uint8' or img:dim() ~= 3 then
            xt._raise(string.format('image.grid: element %d: expected uint8 [H,W,C] or float32 '
                                    .. '[C,H,W], got %s %s', i, img.dtype, tostring(img.shape)))
        end
        if i > 1 and not (img.shape == list[1].shape) then
            xt._raise(string.format('image.grid: element %d is %s, element 1 is %s (all images '
                                    .. 'must have one size)', i, tostring(img.shape),
                                    tostring(list[1].shape)))
        end
        list[i] = img
    end
    return xt.stack(list, 1)
end

-- grid(images, {nrow=8, pad=2, pad_value=0}) -> uint8 [H',W',C]: the images in rows of nrow,
-- pad pixels apart and around. pad_value is in the images' units (0..1 for float images,
-- 0..255 for uint8); a number, or a list with one value per channel.
function image.grid(images, opts)
    opts = opts or {}
    local float_input = (xt.is_tensor(images) and images.dtype == 'float32') or
                        (type(images) == 'table' and not xt.is_tensor(images) and
                         xt.is_tensor(images[1]) and images[1].dtype == 'float32')
    local batch = as_uint8_batch(images)
    local n, h, w, c = batch:size(1), batch:size(2), batch:size(3), batch:size(4)
    local nrow = math.min(opts.nrow or 8, n)
    local pad = opts.pad or 2
    if nrow < 1 or nrow % 1 ~= 0 or pad < 0 or pad % 1 ~= 0 then
        xt._raise(string.format('image.grid: nrow must be a positive integer and pad a '
                                .. 'non-negative one, got nrow=%s pad=%s', tostring(opts.nrow),
                                tostring(opts.pad)))
    end
    local rows = math.ceil(n / nrow)
    local out_h, out_w = rows * (h + pad) + pad, nrow * (w + pad) + pad
    local scale = float_input and 255 or 1
    local pad_value = opts.pad_value or 0
    local out
    if type(pad_value) == 'table' then
        if #pad_value ~= c then
            xt._raise(string.format('image.grid: pad_value has %d values for %d channels',
                                    #pad_value, c))
        end
        local levels = {}
        for i = 1, c do levels[i] = math.floor(math.min(math.max(pad_value[i] * scale, 0), 255) + 0.5) end
        out = xt.tensor(levels, {dtype = 'uint8'}):view(1, 1, c):expand(out_h, out_w, c):contiguous()
    else
        out = xt.full({out_h, out_w, c},
                      math.floor(math.min(math.max(pad_value * scale, 0), 255) + 0.5),
                      {dtype = 'uint8'})
    end
    for i = 1, n do   -- one copy per image, never per pixel
        local row, col = math.floor((i - 1) / nrow), (i - 1) % nrow
        out:narrow(1, pad + row * (h + pad) + 1, h):narrow(2, pad + col * (w + pad) + 1, w)
           :copy_(batch[i])
    end
    return out
end

return image
