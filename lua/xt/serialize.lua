-- xt.serialize: checkpoints. xt.save(path, value) / xt.load(path) for nested Lua tables of
-- tensors, numbers, strings, booleans and 64-bit integers (RNG states).
--
-- File layout (little-endian):
--   "XTCKPT\n\0" | u32 format version | value | u32 CRC-32 of every byte after the magic
--   value := u8 tag, then: nil/false/true: nothing; number: f64; string: u64 n, n bytes;
--            u64: u64 (uint64_t cdata); table: u64 n, n (key value) pairs;
--            tensor: u8 dtype, u8 ndim, ndim x i64 shape, raw C-order data
-- Writing goes to path.tmp, is flushed and fsync'd, then renamed over path, so a crash
-- never leaves a half-written checkpoint under the real name.
local ffi = require 'ffi'
local xt = require 'xt.tensor'
local C = require 'xt.lib'

pcall(ffi.cdef, [[
typedef struct FILE FILE;
FILE *fopen(const char *path, const char *mode);
size_t fwrite(const void *ptr, size_t size, size_t n, FILE *f);
size_t fread(void *ptr, size_t size, size_t n, FILE *f);
int fflush(FILE *f);
int fclose(FILE *f);
int fileno(FILE *f);
int fsync(int fd);
int rename(const char *from, const char *to);
int remove(const char *path);
char *strerror(int errnum);
unsigned long crc32(unsigned long crc, const unsigned char *buf, unsigned int len);
]])

local zlib = (function()
    local ok, lib = pcall(function() return ffi.C.crc32 ~= nil and ffi.C end)
    if ok and lib then return lib end
    return ffi.load('z')
end)()

local M = {}
local MAGIC = 'XTCKPT\n\0'
local VERSION = 1
local TAG = {['nil'] = 0, ['false'] = 1, ['true'] = 2, number = 3, string = 4, table = 5, tensor = 6, u64 = 7}
local DTYPE_ID = {float32 = 0, int64 = 1, uint8 = 2}
local DTYPE_SIZE = {[0] = 4, [1] = 8, [2] = 1}

local function errno_message() return ffi.string(ffi.C.strerror(ffi.errno())) end

---------------------------------------------------------------------------------------------
-- writing

local Writer = {}
Writer.__index = Writer

function Writer:raw(ptr, n)
    if n == 0 then return end
    local written = ffi.C.fwrite(ptr, 1, n, self.f)
    if written ~= n then error(string.format('save: %s: write failed: %s', self.path, errno_message()), 0) end
    -- zlib's crc32 takes an unsigned int length: feed big buffers in 1 GB pieces
    local p = ffi.cast('const unsigned char*', ptr)
    local done = 0
    while done < n do
        local piece = math.min(n - done, 2 ^ 30)
        self.crc = zlib.crc32(self.crc, p + done, piece)
        done = done + piece
    end
end

local scratch = ffi.new('union { uint8_t u8; uint32_t u32; uint64_t u64; int64_t i64; double f64; unsigned char bytes[8]; }')
function Writer:u8(v) scratch.u8 = v; self:raw(scratch.bytes, 1) end
function Writer:u32(v) scratch.u32 = v; self:raw(scratch.bytes, 4) end
function Writer:u64(v) scratch.u64 = v; self:raw(scratch.bytes, 8) end
function Writer:i64(v) scratch.i64 = v; self:raw(scratch.bytes, 8) end
function Writer:f64(v) scratch.f64 = v; self:raw(scratch.bytes, 8) end

local u64_type = ffi.typeof('uint64_t')

function Writer:value(v, seen)
    local t = type(v)
    if v == nil then self:u8(TAG['nil'])
    elseif t == 'boolean' then self:u8(v and TAG['true'] or TAG['false'])
    elseif t == 'number' then self:u8(TAG.number); self:f64(v)
    elseif t == 'string' then self:u8(TAG.string); self:u64(#v); self:raw(v, #v)
    elseif t == 'cdata' and ffi.istype(u64_type, v) then self:u8(TAG.u64); self:u64(v)
    elseif xt.is_tensor(v) then
        local c = v:contiguous()
        self:u8(TAG.tensor)
        self:u8(c._c.dtype)
        self:u8(c._c.ndim)
        for i = 0, c._c.ndim - 1 do self:i64(c._c.shape[i]) end
        self:raw(c._c.data, c:numel() * DTYPE_SIZE[c._c.dtype])
    elseif t == 'table' then
        if seen[v] then error('save: cannot save a table that contains itself', 0) end
        seen[v] = true
        local keys = {}
        for k in pairs(v) do
            local kt = type(k)
            if kt ~= 'string' and kt ~= 'number' and kt ~= 'boolean' then
                error('save: table keys must be strings, numbers or booleans, got ' .. kt, 0)
            end
            keys[#keys + 1] = k
        end
        -- a stable order, so the same value gives the same bytes
        table.sort(keys, function(a, b)
            local ta, tb = type(a), type(b)
            if ta ~= tb then return ta < tb end
            if ta == 'boolean' then return (a and 1 or 0) < (b and 1 or 0) end
            return a < b
        end)
        self:u8(TAG.table)
        self:u64(#keys)
        for _, k in ipairs(keys) do
            self:value(k, seen)
            self:value(v[k], seen)
        end
        seen[v] = nil
    else
        error('save: cannot save a value of type ' .. (t == 'cdata' and tostring(ffi.typeof(v)) or t), 0)
    end
end

function M.save(path, value)
    local tmp = path .. '.tmp'
    local f = ffi.C.fopen(tmp, 'wb')
    if f == nil then xt._raise(string.format('save: cannot open %s: %s', tmp, errno_message())) end
    local w = setmetatable({f = f, path = path, crc = 0}, Writer)
    local ok, err = pcall(function()
        ffi.C.fwrite(MAGIC, 1, #MAGIC, f)
        w:u32(VERSION)
        w:value(value, {})
        scratch.u32 = w.crc
        if ffi.C.fwrite(scratch.bytes, 1, 4, f) ~= 4 or ffi.C.fflush(f) ~= 0 or ffi.C.fsync(ffi.C.fileno(f)) ~= 0 then
            error(string.format('save: %s: write failed: %s', path, errno_message()), 0)
        end
    end)
    ffi.C.fclose(f)
    if not ok then
        ffi.C.remove(tmp)
        xt._raise(err)
    end
    if ffi.C.rename(tmp, path) ~= 0 then
        local msg = errno_message()
        ffi.C.remove(tmp)
        xt._raise(string.format('save: cannot rename %s to %s: %s', tmp, path, msg))
    end
end

---------------------------------------------------------------------------------------------
-- reading: every size is checked against what is left in the file before it is used

local Reader = {}
Reader.__index = Reader

function Reader:fail(msg) error(string.format('load: %s: %s', self.path, msg), 0) end

function Reader:raw(ptr, n)
    if n > self.remaining then
        self:fail(string.format('truncated file (needs %d more bytes at offset %d, %d left)',
                                n, self.offset, self.remaining))
    end
    if n == 0 then return end
    if ffi.C.fread(ptr, 1, n, self.f) ~= n then self:fail('read failed: ' .. errno_message()) end
    local p = ffi.cast('const unsigned char*', ptr)
    local done = 0
    while done < n do
        local piece = math.min(n - done, 2 ^ 30)
        self.crc = zlib.crc32(self.crc, p + done, piece)
        done = done + piece
    end
    self.offset, self.remaining = self.offset + n, self.remaining - n
end

local rscratch = ffi.new('union { uint8_t u8; uint32_t u32; uint64_t u64; int64_t i64; double f64; unsigned char bytes[8]; }')
function Reader:u8() self:raw(rscratch.bytes, 1); return rscratch.u8 end
function Reader:u32() self:raw(rscratch.bytes, 4); return rscratch.u32 end
function Reader:u64() self:raw(rscratch.bytes, 8); return rscratch.u64 end
function Reader:i64() self:raw(rscratch.bytes, 8); return rscratch.i64 end
function Reader:f64() self:raw(rscratch.bytes, 8); return rscratch.f64 end

function Reader:count(what)
    local n = self:u64()
    if n > self.remaining then
        self:fail(string.format('corrupt file (%s of %s at offset %d exceeds the file)', what,
                                tostring(n):gsub('ULL', ''), self.offset - 8))
    end
    return tonumber(n)
end

function Reader:value(depth)
    if depth > 200 then self:fail('corrupt file (tables nested too deep)') end
    local tag = self:u8()
    if tag == TAG['nil'] then return nil
    elseif tag == TAG['false'] then return false
    elseif tag == TAG['true'] then return true
    elseif tag == TAG.number then return self:f64()
    elseif tag == TAG.string then
        local n = self:count('a string length')
        local buf = ffi.new('char[?]', math.max(n, 1))
        self:raw(buf, n)
        return ffi.string(buf, n)
    elseif tag == TAG.u64 then return self:u64() + 0ULL
    elseif tag == TAG.tensor then
        local dtype, ndim = self:u8(), self:u8()
        if not DTYPE_SIZE[dtype] then self:fail('corrupt file (unknown dtype ' .. dtype .. ')') end
        if ndim > 8 then self:fail('corrupt file (tensor with ' .. ndim .. ' dims)') end
        local shape, numel = {}, 1
        for i = 1, ndim do
            local s = self:i64()
            if s < 0 or s > self.remaining then self:fail('corrupt file (bad tensor size at offset ' .. (self.offset - 8) .. ')') end
            shape[i] = tonumber(s)
            numel = numel * shape[i]
        end
        local nbytes = numel * DTYPE_SIZE[dtype]
        if nbytes > self.remaining then
            self:fail(string.format('truncated file (a tensor of %d bytes at offset %d, %d left)', nbytes, self.offset, self.remaining))
        end
        local t = xt.empty(shape, ({[0] = 'float32', 'int64', 'uint8'})[dtype])
        self:raw(t._c.data, nbytes)
        return t
    elseif tag == TAG.table then
        local n = self:count('a table size')
        local out = {}
        for _ = 1, n do
            local k = self:value(depth + 1)
            if k == nil then self:fail('corrupt file (nil table key)') end
            out[k] = self:value(depth + 1)
        end
        return out
    end
    self:fail(string.format('corrupt file (unknown tag %d at offset %d)', tag, self.offset - 1))
end

function M.load(path)
    local f = ffi.C.fopen(path, 'rb')
    if f == nil then xt._raise(string.format('load: cannot open %s: %s', path, errno_message())) end
    local size = (function()
        local h = io.open(path, 'rb')
        local n = h:seek('end')
        h:close()
        return n
    end)()
    local r = setmetatable({f = f, path = path, crc = 0, offset = 0, remaining = size}, Reader)
    local ok, result = pcall(function()
        if size < #MAGIC + 8 then r:fail('not an xt checkpoint (file too short)') end
        local magic = ffi.new('char[8]')
        ffi.C.fread(magic, 1, 8, f)
        if ffi.string(magic, 8) ~= MAGIC then r:fail('not an xt checkpoint (bad magic)') end
        r.offset, r.remaining = 8, size - 12   -- the CRC trailer is not part of the value
        local version = r:u32()
        if version > VERSION then
            r:fail(string.format('written by a newer xt (format version %d; this one reads up to %d)', version, VERSION))
        end
        local value = r:value(0)
        if r.remaining ~= 0 then r:fail('corrupt file (' .. r.remaining .. ' unexpected bytes after the value)') end
        local expected = r.crc
        local trailer = ffi.new('uint32_t[1]')
        if ffi.C.fread(trailer, 1, 4, f) ~= 4 then r:fail('truncated file (missing checksum)') end
        if trailer[0] ~= expected then r:fail('corrupt file (checksum mismatch)') end
        return value
    end)
    ffi.C.fclose(f)
    if not ok then xt._raise(result) end
    return result
end

return M
