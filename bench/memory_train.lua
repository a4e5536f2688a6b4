-- bench/memory_train.lua: resident memory over a long training loop must stay flat.
-- Trains the Fashion-MNIST convnet of tests/lua/train_fashion_spec.lua for `steps` steps
-- (default 1000) and prints RSS every 100 steps, then the growth from step 100 to the end.
--   build/xlua bench/memory_train.lua [steps]
local xt = require 'xt'
local nn, F, optim = xt.nn, xt.nn.functional, xt.optim

local steps = tonumber(arg and arg[1]) or 1000

local function rss_mb()
    local f = assert(io.open('/proc/self/statm'))
    local _, resident = f:read('*n', '*n')
    f:close()
    return resident * 4096 / 2 ^ 20
end

xt.manual_seed(0)
local src = xt.data.fashion_mnist{split = 'train'}:source()
local n = 10000
local x = (src.images:narrow(1, 1, n):permute(1, 4, 2, 3):float() / 255):contiguous()
local y = src.labels:narrow(1, 1, n):contiguous()
local model = nn.Sequential(
    nn.Conv2d(1, 16, 3, {padding = 1}), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(16, 32, 3, {padding = 1}), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(32 * 7 * 7, 10))
local opt = optim.AdamW(model:parameters(), {lr = 1e-3})
local batch = 64
local at100
local t0 = require('xt.clock').now()
for step = 1, steps do
    local idx = xt.randint(1, n + 1, batch)
    local loss = F.cross_entropy(model(x:index_select(1, idx)), y:index_select(1, idx))
    opt:zero_grad()
    loss:backward()
    opt:step()
    if step % 100 == 0 then
        local rss = rss_mb()
        if step == 100 then at100 = rss end
        print(string.format('step %5d  loss %.3f  rss %.1f MB  live tensors %.1f MB  cached %.1f MB',
                            step, loss:item(), rss, tonumber(xt.C.xt_live_bytes()) / 2 ^ 20,
                            tonumber(xt.C.xt_cached_bytes()) / 2 ^ 20))
    end
end
local elapsed = require('xt.clock').now() - t0
if at100 then
    print(string.format('rss growth from step 100 to %d: %+.1f MB (%.1f ms/step)', steps,
                        rss_mb() - at100, elapsed / steps * 1000))
end
