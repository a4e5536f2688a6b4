-- xt.autograd: checking gradients, and (later) differentiable functions written in Lua.
local ffi = require 'ffi'
local xt = require 'xt.tensor'

local M = {}

-- sum(out * r) in double precision, for a fixed random r.
local function weighted_sum(out, r)
    local c = out:contiguous()
    local p = ffi.cast('float*', c._c.data)
    local total = 0
    for i = 0, r.n - 1 do total = total + p[i] * r[i + 1] end
    return total
end

-- gradcheck(fn, inputs [, opts]) compares the gradients autograd gives for every float32
-- input that requires grad with central finite differences of L = sum(fn(inputs) * r),
-- r a fixed random tensor. opts: eps (1e-3), atol (1e-3), rtol (1e-2), raise (true).
-- Returns true, or raises (or returns false and the message when raise == false).
function M.gradcheck(fn, inputs, opts)
    opts = opts or {}
    local eps, atol, rtol = opts.eps or 1e-3, opts.atol or 1e-3, opts.rtol or 1e-2
    local function fail(msg)
        if opts.raise == false then return false, msg end
        error('gradcheck: ' .. msg, 2)
    end
    for i, x in ipairs(inputs) do
        if xt.is_tensor(x) and x.needs_grad then
            if x.dtype ~= 'float32' or not x:is_contiguous() or not x.is_leaf then
                return fail('input ' .. i .. ' must be a contiguous float32 leaf')
            end
            x.grad = nil
        end
    end
    local out = fn(unpack(inputs))
    if not xt.is_tensor(out) then return fail('fn must return a tensor') end
    local gen = xt.Generator(opts.seed or 1234)
    local rt = xt.randn(out.shape, {generator = gen})
    local r = rt:totable()
    if type(r) == 'number' then r = {r} end
    local flat = {}
    local function flatten(v) if type(v) == 'table' then for _, e in ipairs(v) do flatten(e) end else flat[#flat + 1] = v end end
    flatten(r)
    flat.n = #flat
    out:backward(rt)
    for i, x in ipairs(inputs) do
        if xt.is_tensor(x) and x.needs_grad then
            local g = x.grad
            local gp = g and ffi.cast('float*', g:contiguous()._c.data)
            local p = ffi.cast('float*', x._c.data)
            for k = 0, x:numel() - 1 do
                local saved = p[k]
                local plus, minus
                xt.no_grad(function()
                    p[k] = saved + eps
                    plus = weighted_sum(fn(unpack(inputs)), flat)
                    p[k] = saved - eps
                    minus = weighted_sum(fn(unpack(inputs)), flat)
                end)
                p[k] = saved
                local numeric = (plus - minus) / (2 * eps)
                local analytic = gp and gp[k] or 0
                if not gp or math.abs(analytic - numeric) > atol + rtol * math.abs(numeric) then
                    return fail(string.format('input %d element %d: analytic %.6g, numeric %.6g%s',
                                              i, k + 1, analytic, numeric, gp and '' or ' (no grad)'))
                end
            end
        end
    end
    return true
end


---------------------------------------------------------------------------------------------
-- Differentiable functions written in Lua, without touching C:
--
--   local Square = xt.autograd.Function{
--       name = 'square',
--       forward = function(ctx, x) ctx.x = x; return x * x end,
--       backward = function(ctx, dout) return dout * ctx.x * 2 end,
--   }
--   y = Square(x)
--
-- forward(ctx, ...) runs with grad mode off and returns one tensor; backward(ctx, dout)
-- returns one gradient (or nil) per tensor argument, in order. Gradients must have the
-- argument's shape (or broadcast to it). Anything backward needs goes into ctx.

local C = require 'xt.lib'
local registry = {}           -- node id -> {ctx, backward, name}
local next_id = 0
local freed = ffi.new('int64_t[256]')

local function drop_freed_nodes()
    while true do
        local n = C.xt_lua_nodes_freed(freed, 256)
        for i = 0, n - 1 do registry[tonumber(freed[i])] = nil end
        if n < 256 then return end
    end
end

function M.Function(def)
    assert(type(def) == 'table' and type(def.forward) == 'function' and
           type(def.backward) == 'function', 'Function: expected {forward=fn, backward=fn}')
    local name = def.name or 'lua function'
    return function(...)
        drop_freed_nodes()
        local ctx = {}
        local out = xt.no_grad(def.forward, ctx, ...)
        if not xt.is_tensor(out) then
            xt._raise(name .. ': forward must return a tensor, got ' .. type(out))
        end
        out = out:detach()   -- a fresh header, so recording never touches an input's history
        local inputs = {}
        for i = 1, select('#', ...) do
            local a = select(i, ...)
            if xt.is_tensor(a) then inputs[#inputs + 1] = a end
        end
        local arr = ffi.new('xt_tensor*[?]', math.max(#inputs, 1))
        for i = 1, #inputs do arr[i - 1] = inputs[i]._c end
        next_id = next_id + 1
        local recorded = C.xt_record_lua(out._c, name, next_id, #inputs, arr)
        if recorded < 0 then xt._raise(require('ffi').string(C.xt_last_error())) end
        if recorded == 1 then
            registry[next_id] = {ctx = ctx, backward = def.backward, name = name, n = #inputs}
        end
        return out
    end
end

-- Called by Tensor:backward when the engine reaches the Lua node `id`.
function M._run_lua_node(id, run)
    local entry = registry[id]
    if not entry then xt._raise('backward: lost the Lua function of node ' .. id) end
    local dout = C.xt_backward_waiting_dout(run)
    if dout == nil then return end
    local grads = {entry.backward(entry.ctx, xt._wrap(dout))}
    for i = 1, entry.n do
        local g = grads[i]
        if g ~= nil then
            if not xt.is_tensor(g) then
                xt._raise(entry.name .. ': backward must return tensors or nil, got ' .. type(g))
            end
            xt._check(C.xt_backward_supply(run, i - 1, g._c))
        end
    end
end

return M
