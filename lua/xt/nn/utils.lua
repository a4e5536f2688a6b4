-- xt.nn.utils: gradient clipping.
local ffi = require 'ffi'
local C = require 'xt.lib'
local xt = require 'xt.tensor'

local utils = {}

-- Scale every gradient so their joint L2 norm is at most max_norm; returns the norm
-- before clipping (as torch.nn.utils.clip_grad_norm_).
function utils.clip_grad_norm(params, max_norm)
    if params.parameters then params = params:parameters() end
    local grads = {}
    for _, p in ipairs(params) do
        local g = p.grad
        if g then grads[#grads + 1] = g end
    end
    if #grads == 0 then return 0 end
    local arr = ffi.new('xt_tensor*[?]', #grads)
    for i, g in ipairs(grads) do arr[i - 1] = g._c end
    local sq = C.xt_sum_of_squares(#grads, arr)
    -- NaN is also what NaN gradients sum to: only a failure status is an error
    if C.xt_last_status() ~= 0 then xt._raise(ffi.string(C.xt_last_error())) end
    local norm = math.sqrt(sq)
    local scale = max_norm / (norm + 1e-6)
    if scale < 1 then
        xt.no_grad(function() for _, g in ipairs(grads) do g:mul_(scale) end end)
    end
    return norm
end
utils.clip_grad_norm_ = utils.clip_grad_norm

return utils
