-- xt.lib: the FFI binding. Declares the API region of core/include/xt.h (generated into
-- xt/cdef.lua at build time) and returns the namespace holding libxt's symbols.
local ffi = require 'ffi'

ffi.cdef(require 'xt.cdef')

-- Inside xlua, libxt is already linked into the process; from plain luajit, load it from
-- where the build (or the install) put it.
local function in_process()
    return pcall(function() return ffi.C.xt_version end)
end

if in_process() then
    return ffi.C
end
local ok_paths, paths = pcall(require, 'xt.paths')
local candidates = {}
if os.getenv('XT_LIBXT') then candidates[#candidates + 1] = os.getenv('XT_LIBXT') end
if ok_paths then candidates[#candidates + 1] = paths.libxt end
candidates[#candidates + 1] = 'xt'
local errors = {}
for _, path in ipairs(candidates) do
    local ok, lib = pcall(ffi.load, path)
    if ok then return lib end
    errors[#errors + 1] = tostring(lib)
end
error('xt: cannot load libxt; tried:\n  ' .. table.concat(errors, '\n  ') ..
      '\nbuild it with `make build`, or set XT_LIBXT to the path of libxt.so', 0)
