-- xt: the xlua tensor package. `local xt = require 'xt'`
--
-- Tensors, their ops and autograd live in C (libxt); this package is the thin Lua layer
-- over it: the Tensor type (xt.tensor), printing (xt.format), memory pacing (xt.memory),
-- autograd helpers (xt.autograd), neural-network modules (xt.nn), optimizers (xt.optim)
-- and data loading (xt.data), each loaded when first used.
local ffi = require 'ffi'
local C = require 'xt.lib'
local xt = require 'xt.tensor'

xt.C = C
xt.version = ffi.string(C.xt_version())
C.xt_set_message_base(1)   -- C's messages count dims and indices from 1, as Lua does

function xt.set_num_threads(n) C.xt_set_num_threads(n) end
function xt.get_num_threads() return C.xt_get_num_threads() end
-- One thread pool for our kernels and OpenBLAS: OMP_NUM_THREADS if set, else every core.
C.xt_set_num_threads(tonumber(os.getenv('OMP_NUM_THREADS') or '') or 0)

function xt.is_grad_enabled() return C.xt_is_grad_enabled() ~= 0 end

-- Run fn(...) with grad mode set to `mode`, restoring it even when fn raises.
local function with_grad_mode(mode, fn, ...)
    local previous = C.xt_set_grad_enabled(mode)
    local results = {pcall(fn, ...)}
    C.xt_set_grad_enabled(previous)
    if not results[1] then error(results[2], 0) end
    return unpack(results, 2, table.maxn(results))
end
function xt.no_grad(fn, ...) return with_grad_mode(0, fn, ...) end
function xt.enable_grad(fn, ...) return with_grad_mode(1, fn, ...) end

function xt.save_npy(path, t) xt._check(C.xt_save_npy(path, t._c)) end
function xt.load_npy(path) return xt._wrap(C.xt_load_npy(path)) end

xt.memory = require 'xt.memory'

-- checkpoints: nested tables of tensors, numbers, strings, booleans
local serialize = require 'xt.serialize'
xt.save, xt.load = serialize.save, serialize.load

-- Submodules load on first use: xt.nn, xt.optim, xt.data, xt.autograd, xt.image, ...
setmetatable(xt, {__index = function(t, k)
    if type(k) ~= 'string' then return nil end
    local ok, mod = pcall(require, 'xt.' .. k)
    if ok then
        rawset(t, k, mod)
        return mod
    end
    if not tostring(mod):find("module 'xt." .. k .. "' not found", 1, true) then error(mod, 2) end
    return nil
end})

return xt
