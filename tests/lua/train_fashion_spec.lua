-- End to end: a small convnet trained on 2,000 Fashion-MNIST images (Debian's
-- dataset-fashion-mnist) beats 75% on 1,000 held-out test images. Exercises conv, pooling,
-- batch norm, linear, cross entropy, autograd and AdamW together on real data.
local xt = require 'xt'
local nn, F, optim = xt.nn, xt.nn.functional, xt.optim

local SEED = 0
print('train_fashion_spec: seed ' .. SEED)

-- images uint8 [N,28,28,1] -> float [N,1,28,28] in [0,1]; labels int64 1..10
local function tensors(split, n)
    local src = xt.data.fashion_mnist{split = split}:source()
    local images = src.images:narrow(1, 1, n):permute(1, 4, 2, 3):float() / 255
    return images:contiguous(), src.labels:narrow(1, 1, n):contiguous()
end

describe('a convnet on Fashion-MNIST', function()
    it('beats 75% held-out accuracy after training on 2,000 images', function()
        xt.manual_seed(SEED)
        local x, y = tensors('train', 2000)
        local tx, ty = tensors('test', 1000)
        local model = nn.Sequential(
            nn.Conv2d(1, 16, 3, {padding = 1}), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, {padding = 1}), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 7 * 7, 10))
        local opt = optim.AdamW(model:parameters(), {lr = 3e-3, weight_decay = 1e-4})
        local batch = 100
        for epoch = 1, 3 do
            model:train()
            local order = xt.randperm(2000)
            for i = 1, 2000, batch do
                local idx = order:narrow(1, i, batch)
                local loss = F.cross_entropy(model(x:index_select(1, idx)), y:index_select(1, idx))
                opt:zero_grad()
                loss:backward()
                opt:step()
            end
        end
        model:eval()
        local correct = xt.no_grad(function()
            return model(tx):argmax(2):eq(ty):float():sum():item()
        end)
        local acc = correct / 1000
        print(string.format('train_fashion_spec: held-out accuracy %.3f', acc))
        assert.is_true(acc > 0.75, 'accuracy ' .. acc)
    end)
end)
