-- experiments/aft_conv_cifar.lua: image classification with AFT-conv (the main job).
--
--   xlua experiments/aft_conv_cifar.lua                 -- CIFAR-10 if data/ has it, else Fashion-MNIST
--   xlua experiments/aft_conv_cifar.lua --epochs 2 --limit-train 5000 --out runs/try
--   xlua experiments/aft_conv_cifar.lua --resume runs/try --epochs 4
--
-- The model (lua/xt/models/aft_conv_net.lua): a convolutional patch stem, stages of pre-norm
-- AFT-conv blocks with MLPs, global average pooling and a linear head. AdamW with linear
-- warmup and cosine decay, label smoothing, random-crop and flip augmentation (on CIFAR-10; on
-- Fashion-MNIST none by default: in 4 epochs the model underfits there, and the crop cost 0.5
-- points, the flip 0.25 more); evaluation after every
-- epoch; the final test accuracy is printed and logged.
local xt = require 'xt'
local F, optim, data = xt.nn.functional, xt.optim, xt.data
local AFTConvNet = require 'xt.models.aft_conv_net'

local run = xt.experiment.start{
    name = 'aft_conv_cifar',
    description = 'AFT-conv image classifier on CIFAR-10 (or Fashion-MNIST when CIFAR-10 is absent)',
    defaults = {
        epochs = 4, batch_size = 128, lr = 8e-3, weight_decay = 0.05, warmup_epochs = 0.5,
        label_smoothing = 0.1, dim = 64, depth = '2,2', heads = '64', kernel = 5, mlp_ratio = 2,
        workers = 2, data = 'data/cifar-10-batches-bin', dataset = 'auto', eval_batch_size = 500,
        augment = 'auto',
    },
    help = {
        weight_decay = 'AdamW weight decay (not on biases and norms)',
        warmup_epochs = 'linear warmup length in epochs', label_smoothing = 'cross-entropy smoothing',
        dim = 'channels of the first stage (doubled at each later stage)',
        depth = 'blocks per stage, comma-separated',
        heads = 'AFT-conv heads (keys per position; 64: one per channel in the first stage); '
                .. 'one number for every stage or one per stage, comma-separated',
        kernel = 'AFT-conv kernel size (odd)', mlp_ratio = 'MLP hidden width / channels',
        workers = 'data loader threads', dataset = 'cifar10, fashion_mnist or auto',
        eval_batch_size = 'batch size for evaluation',
        augment = "training augmentation: 'crop' (random crop of the padded image), 'flip', "
                  .. "both comma-separated, 'none', or 'auto' (crop,flip on CIFAR-10; none on "
                  .. "Fashion-MNIST, where the model underfits in a 4-epoch budget)",
    },
}
local cfg = run.config

-- The data: CIFAR-10 when present (or asked for), else Fashion-MNIST from Debian's package.
local function cifar_present(dir)
    local f = io.open(dir .. '/data_batch_1.bin', 'rb')
    if f then f:close() end
    return f ~= nil
end

local dataset = cfg.dataset
if dataset == 'auto' then
    if cifar_present(cfg.data) then
        dataset = 'cifar10'
    else
        dataset = 'fashion_mnist'
        print(string.format('aft_conv_cifar: no CIFAR-10 in %s (datasets/fetch_cifar10.sh gets it); '
                            .. 'training on Fashion-MNIST instead', cfg.data))
    end
end

local train_set, test_set, norm, crop_pad
if dataset == 'cifar10' then
    train_set = data.cifar10{root = cfg.data, split = 'train'}
    test_set = data.cifar10{root = cfg.data, split = 'test'}
    norm = {mean = {0.4914, 0.4822, 0.4465}, std = {0.2470, 0.2435, 0.2616}}
    crop_pad = 4
elseif dataset == 'fashion_mnist' then
    local root = cfg.data ~= 'data/cifar-10-batches-bin' and cfg.data or nil
    train_set = data.fashion_mnist{root = root, split = 'train'}
    test_set = data.fashion_mnist{root = root, split = 'test'}
    norm = {mean = {0.2860}, std = {0.3530}}
    crop_pad = 2
else
    error("aft_conv_cifar: --dataset must be cifar10, fashion_mnist or auto, got '" .. dataset .. "'")
end
if cfg.limit_train > 0 then train_set = data.subset(train_set, 1, cfg.limit_train) end
if cfg.limit_test > 0 then test_set = data.subset(test_set, 1, cfg.limit_test) end

local sample = train_set[1].image                  -- [H,W,C] uint8
local size, channels = sample:size(1), sample:size(3)
local augment = cfg.augment
if augment == 'auto' then augment = dataset == 'cifar10' and 'crop,flip' or 'none' end
local train_transforms = {}
for name in tostring(augment):gmatch('[^,%s]+') do
    if name == 'crop' then
        train_transforms[#train_transforms + 1] = {'random_crop', size, padding = crop_pad}
    elseif name == 'flip' then
        train_transforms[#train_transforms + 1] = 'random_horizontal_flip'
    elseif name ~= 'none' then
        error(string.format("aft_conv_cifar: --augment takes crop, flip or none, got '%s'", name))
    end
end
train_transforms[#train_transforms + 1] = 'to_tensor'
train_transforms[#train_transforms + 1] = {'normalize', norm.mean, norm.std}
local train_loader = data.DataLoader(train_set, {
    batch_size = cfg.batch_size, shuffle = true, seed = cfg.seed, drop_last = true,
    workers = cfg.workers, transform = data.transforms(train_transforms),
})
local test_loader = data.DataLoader(test_set, {
    batch_size = cfg.eval_batch_size, workers = cfg.workers,
    transform = data.transforms{'to_tensor', {'normalize', norm.mean, norm.std}},
})

local depth, heads = {}, {}
for d in tostring(cfg.depth):gmatch('%d+') do depth[#depth + 1] = tonumber(d) end
for h in tostring(cfg.heads):gmatch('%d+') do heads[#heads + 1] = tonumber(h) end
if #heads == 1 then heads = heads[1] end
-- kept in the checkpoints, so that AFTConvNet(ck.model_args) rebuilds the model (README)
local model_args = {in_channels = channels, classes = #train_set.classes, dim = cfg.dim,
                    depth = depth, heads = heads, kernel = cfg.kernel, mlp_ratio = cfg.mlp_ratio}
local model = AFTConvNet(model_args)
print(model)

local opt = optim.AdamW(model:param_groups(cfg.weight_decay), {lr = cfg.lr})
local steps_per_epoch = train_loader:size()
local sched = optim.WarmupCosine(opt, {warmup_steps = math.floor(cfg.warmup_epochs * steps_per_epoch),
                                       total_steps = cfg.epochs * steps_per_epoch})

local first_epoch, best_acc, final_acc = 1, 0, nil
if run.resumed then
    local ck = run.checkpoint
    model:load_state_dict(ck.model)
    opt:load_state_dict(ck.optimizer)
    sched:load_state_dict(ck.scheduler)
    xt.set_rng_state(ck.rng)
    first_epoch, best_acc = ck.epoch + 1, ck.best_acc
end

local function evaluate()
    model:eval()
    local correct, total, loss_sum = 0, 0, 0
    xt.no_grad(function()
        for batch in test_loader:iter() do
            local logits = model(batch.input)
            loss_sum = loss_sum + F.cross_entropy(logits, batch.target, {reduction = 'sum'}):item()
            correct = correct + logits:argmax(2):eq(batch.target):float():sum():item()
            total = total + batch.target:size(1)
        end
    end)
    return correct / total, loss_sum / total
end

for epoch = first_epoch, cfg.epochs do
    model:train()
    train_loader:set_epoch(epoch)
    local bar = run:progress{total = steps_per_epoch, label = string.format('epoch %d/%d', epoch, cfg.epochs),
                             per_step = cfg.batch_size, unit = 'img'}
    local loss_sum, correct, seen = 0, 0, 0
    for batch in train_loader:iter() do
        local logits = model(batch.input)
        local loss = F.cross_entropy(logits, batch.target, {label_smoothing = cfg.label_smoothing})
        opt:zero_grad()
        loss:backward()
        opt:step()
        sched:step()
        local n = batch.target:size(1)
        loss_sum = loss_sum + loss:item() * n
        correct = correct + logits:argmax(2):eq(batch.target):float():sum():item()
        seen = seen + n
        bar:update(1, {loss = loss_sum / seen, acc = correct / seen})
    end
    local seconds = bar:finish()
    local test_acc, test_loss = evaluate()
    final_acc = test_acc
    local is_best = test_acc > best_acc
    best_acc = math.max(best_acc, test_acc)
    run:log{epoch = epoch, train_loss = loss_sum / seen, train_acc = correct / seen,
            test_loss = test_loss, test_acc = test_acc, lr = sched:get_last_lr()[1],
            epoch_seconds = seconds}
    print(string.format('epoch %d: train loss %.4f acc %.4f | test loss %.4f acc %.4f | %.0f s',
                        epoch, loss_sum / seen, correct / seen, test_loss, test_acc, seconds))
    run:save_checkpoint({model = model:state_dict(), optimizer = opt:state_dict(),
                         scheduler = sched:state_dict(), rng = xt.get_rng_state(),
                         epoch = epoch, best_acc = best_acc, config = cfg, model_args = model_args},
                        {best = is_best})
    run:plot()
    if run:should_stop(epoch) then
        print(string.format('stopped after epoch %d; continue with --resume %s', epoch, run.dir))
        os.exit(0)
    end
end

-- The last epoch's evaluation is the final one (the model has not changed since); a run
-- resumed with nothing left to train evaluates its checkpoint.
final_acc = final_acc or evaluate()
print(string.format('final test accuracy %.2f%% (%s, best %.2f%%); run directory %s',
                    final_acc * 100, dataset, best_acc * 100, run.dir))
run:log{final_test_acc = final_acc, dataset = dataset}
