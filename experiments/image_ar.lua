-- experiments/image_ar.lua: autoregressive image modelling, images as sequences of byte values.
--
--   xlua experiments/image_ar.lua                         -- Fashion-MNIST, 784 tokens, AFT-full
--   xlua experiments/image_ar.lua --attention aft_local --window 64
--   xlua experiments/image_ar.lua --dataset cifar10       -- 3072 sub-pixels (needs data/)
--
-- The model is xt.models.pixel_transformer: causal blocks whose attention is a flag
-- (aft_full, aft_local, aft_simple, softmax, delight). Reports train and test bits per
-- dimension each epoch and writes a grid of samples, drawn with incremental decoding, as
-- samples-<epoch>.png in the run directory.
local xt = require 'xt'
local optim, data = xt.optim, xt.data
local PixelTransformer = require 'xt.models.pixel_transformer'

local run = xt.experiment.start{
    name = 'image_ar',
    description = 'Autoregressive image model (bits/dim) with a choice of attention',
    defaults = {
        attention = 'aft_full', dim = 64, depth = 2, heads = 4, window = 64,
        epochs = 2, batch_size = 16, lr = 3e-3, weight_decay = 0.01, warmup_steps = 100,
        dataset = 'fashion_mnist', data = 'data/cifar-10-batches-bin', limit_train = 4000,
        limit_test = 500, samples = 16, temperature = 1,
    },
    help = {
        attention = 'delight, or a causal attention of nn.attention_by_name: aft_full, aft_local, aft_simple, softmax, linear, performer',
        dim = 'model width', depth = 'blocks', heads = 'heads (softmax, linear, performer)',
        window = 'aft_local window', weight_decay = 'AdamW weight decay',
        warmup_steps = 'linear warmup steps', dataset = 'fashion_mnist or cifar10',
        samples = 'images sampled after each epoch (0: none)',
        temperature = 'sampling temperature',
    },
}
local cfg = run.config

local train_set, test_set
if cfg.dataset == 'fashion_mnist' then
    train_set, test_set = data.fashion_mnist{split = 'train'}, data.fashion_mnist{split = 'test'}
elseif cfg.dataset == 'cifar10' then
    train_set = data.cifar10{root = cfg.data, split = 'train'}
    test_set = data.cifar10{root = cfg.data, split = 'test'}
else
    error("image_ar: --dataset must be fashion_mnist or cifar10, got '" .. cfg.dataset .. "'")
end

-- images uint8 [N,H,W,C] -> tokens int64 [N, H*W*C] in 1..256 (raster order, channels
-- within a pixel)
local function tokens_of(set, limit)
    local images = set:source().images
    if limit > 0 and limit < images:size(1) then images = images:narrow(1, 1, limit) end
    return images:contiguous():view(images:size(1), -1):long() + 1, images
end
local train_tokens, train_images = tokens_of(train_set, cfg.limit_train)
local test_tokens = tokens_of(test_set, cfg.limit_test)
local H, W, C = train_images:size(2), train_images:size(3), train_images:size(4)
local T = train_tokens:size(2)
local N = train_tokens:size(1)

local model = PixelTransformer{seq_len = T, attention = cfg.attention, dim = cfg.dim,
                               depth = cfg.depth, heads = cfg.heads, window = cfg.window}
print(model)
print(string.format('image_ar: %s, %d training images of %dx%dx%d = %d tokens, attention %s',
                    cfg.dataset, N, H, W, C, T, cfg.attention))

local steps_per_epoch = math.floor(N / cfg.batch_size)
local opt = optim.AdamW(model:parameters(), {lr = cfg.lr, weight_decay = cfg.weight_decay})
local sched = optim.WarmupCosine(opt, {warmup_steps = cfg.warmup_steps,
                                       total_steps = cfg.epochs * steps_per_epoch})

local first_epoch = 1
if run.resumed then
    local ck = run.checkpoint
    model:load_state_dict(ck.model)
    opt:load_state_dict(ck.optimizer)
    sched:load_state_dict(ck.scheduler)
    xt.set_rng_state(ck.rng)
    first_epoch = ck.epoch + 1
end

local function test_bpd()
    model:eval()
    local total, count = 0, 0
    xt.no_grad(function()
        for i = 1, test_tokens:size(1), cfg.batch_size do
            local n = math.min(cfg.batch_size, test_tokens:size(1) - i + 1)
            local _, bpd = model:loss(test_tokens:narrow(1, i, n))
            total, count = total + bpd * n, count + n
        end
    end)
    return total / count
end

-- samples int64 [n,T] -> a PNG grid of [H,W,C] images
local function save_samples(epoch)
    if cfg.samples <= 0 then return end
    model:eval()
    local s = model:sample(cfg.samples, {temperature = cfg.temperature})
    local images = (s - 1):to('uint8'):view(cfg.samples, H, W, C)
    local list = {}
    for i = 1, cfg.samples do list[i] = images[i] end
    local path = string.format('%s/samples-%d.png', run.dir, epoch)
    xt.image.save(path, xt.image.grid(list, {nrow = math.ceil(math.sqrt(cfg.samples))}))
    return path
end

for epoch = first_epoch, cfg.epochs do
    model:train()
    -- the epoch's order depends only on (seed, epoch), so a resumed run sees the same batches
    local order = xt.randperm(N, {generator = xt.Generator(cfg.seed * 1000003 + epoch)})
    local bar = run:progress{total = steps_per_epoch, label = string.format('epoch %d/%d', epoch, cfg.epochs),
                             per_step = cfg.batch_size, unit = 'img'}
    local bpd_sum = 0
    for step = 1, steps_per_epoch do
        local batch = train_tokens:index_select(1, order:narrow(1, (step - 1) * cfg.batch_size + 1, cfg.batch_size))
        local loss, bpd = model:loss(batch)
        opt:zero_grad()
        loss:backward()
        xt.nn.utils.clip_grad_norm(model:parameters(), 1.0)
        opt:step()
        sched:step()
        bpd_sum = bpd_sum + bpd
        bar:update(1, {bpd = bpd_sum / step})
    end
    local seconds = bar:finish()
    local test = test_bpd()
    local samples = save_samples(epoch)
    run:log{epoch = epoch, train_bpd = bpd_sum / steps_per_epoch, test_bpd = test,
            lr = sched:get_last_lr()[1], epoch_seconds = seconds}
    print(string.format('epoch %d: train %.4f bits/dim | test %.4f bits/dim | %.0f s%s', epoch,
                        bpd_sum / steps_per_epoch, test, seconds,
                        samples and (' | samples in ' .. samples) or ''))
    run:save_checkpoint({model = model:state_dict(), optimizer = opt:state_dict(),
                         scheduler = sched:state_dict(), rng = xt.get_rng_state(), epoch = epoch})
    run:plot()
    if run:should_stop(epoch) then
        print(string.format('stopped after epoch %d; continue with --resume %s', epoch, run.dir))
        os.exit(0)
    end
end
print(string.format('final test bits/dim %.4f (%s, %s); run directory %s', test_bpd(), cfg.dataset,
                    cfg.attention, run.dir))
