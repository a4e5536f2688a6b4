-- experiments/main.lua: what `make run` runs. For now a short demo of the core: a two-layer
-- network fitted to a noisy sine with autograd and plain gradient descent. It will hand over
-- to experiments/aft_conv_cifar.lua once that exists.
local xt = require 'xt'

local ok_main, aft = pcall(function()
    local f = io.open('experiments/aft_conv_cifar.lua')
    if f then f:close(); return true end
end)
if ok_main and aft then
    return dofile('experiments/aft_conv_cifar.lua')
end

xt.manual_seed(0)
local n, hidden = 256, 64
local x = xt.linspace(-3, 3, n):view(n, 1)
local y = x:sin() + xt.randn(n, 1) * 0.05

local w1 = (xt.randn(1, hidden) * 1.0):requires_grad()
local b1 = xt.zeros(hidden):requires_grad()
local w2 = (xt.randn(hidden, 1) * (1 / math.sqrt(hidden))):requires_grad()
local b2 = xt.zeros(1):requires_grad()
local params = {w1, b1, w2, b2}

print(string.format('xt %s, %d threads: fitting sin(x) with a %d-unit tanh network', xt.version,
                    xt.get_num_threads(), hidden))
local lr = 0.05
for step = 1, 2000 do
    local pred = (x:matmul(w1) + b1):tanh():matmul(w2) + b2
    local loss = ((pred - y) ^ 2):mean()
    for _, p in ipairs(params) do p.grad = nil end
    loss:backward()
    xt.no_grad(function()
        for _, p in ipairs(params) do p:sub_(p.grad * lr) end
    end)
    if step % 250 == 0 then print(string.format('step %4d  mse %.5f', step, loss:item())) end
end
