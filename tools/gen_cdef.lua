-- gen_cdef.lua: extract the FFI region of core/include/xt.h into a Lua module.
-- usage: luajit tools/gen_cdef.lua core/include/xt.h out/cdef.lua
-- The region between the XT_API_BEGIN and XT_API_END markers is written out as a
-- string, so the Lua declarations always equal the header: nothing is copied by hand.
local header_path, out_path = arg[1], arg[2]
assert(header_path and out_path, 'usage: gen_cdef.lua xt.h cdef.lua')
local f = assert(io.open(header_path, 'rb'))
local text = f:read('*a')
f:close()
local region = text:match('/%* XT_API_BEGIN %*/(.-)/%* XT_API_END %*/')
assert(region, header_path .. ': XT_API_BEGIN/XT_API_END markers not found')
assert(not region:find('\n%s*#'), header_path .. ': the API region must not hold preprocessor lines')
local out = assert(io.open(out_path .. '.tmp', 'wb'))
out:write('-- generated from ', header_path:match('[^/]*$'), ' by tools/gen_cdef.lua; do not edit\n')
out:write('return ', string.format('%q', region), '\n')
out:close()
assert(os.rename(out_path .. '.tmp', out_path))
