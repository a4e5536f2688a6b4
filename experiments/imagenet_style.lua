-- experiments/imagenet_style.lua: ImageNet-style classification from an ImageFolder tree.
--
--   xlua experiments/imagenet_style.lua --data /path/to/imagenet      (train/ and val/ inside)
--   xlua datasets/export_image_folder.lua --dataset fashion_mnist --out data/fmnist-folder
--   xlua experiments/imagenet_style.lua --data data/fmnist-folder --channels 1 --crop 28 --resize 28
--
-- Training: RandomResizedCrop + horizontal flip; validation: resize the shorter side to
-- `resize` and center-crop `crop`. Top-1 and top-5 accuracy after each epoch, label smoothing,
-- AdamW with linear warmup and cosine decay. Backbones: aft_conv, aft_full (DeiT-style
-- tokens), delight (DeLighT blocks over tokens), resnet (a small ResNet).
local xt = require 'xt'
local F, optim, data = xt.nn.functional, xt.optim, xt.data

local run = xt.experiment.start{
    name = 'imagenet_style',
    description = 'ImageNet-style classification (ImageFolder train/ + val/) with a choice of backbone',
    defaults = {
        data = 'data/imagenet', backbone = 'aft_conv', crop = 32, resize = 36, dim = 64,
        depth = 4, patch = 4, epochs = 4, batch_size = 64, lr = 2e-3, weight_decay = 0.05,
        warmup_epochs = 0.5, label_smoothing = 0.1, workers = 2, channels = 3,
    },
    help = {
        backbone = 'aft_conv, aft_full, delight or resnet', crop = 'training/validation crop size',
        resize = 'validation: shorter side before the center crop', dim = 'model width',
        depth = 'blocks (token backbones)', patch = 'patch size (token backbones)',
        weight_decay = 'AdamW weight decay', warmup_epochs = 'linear warmup in epochs',
        label_smoothing = 'cross-entropy smoothing', workers = 'data loader threads',
        channels = 'image channels the model takes (1 gray, 3 RGB)',
    },
}
local cfg = run.config

local train_set = data.image_folder{root = cfg.data, split = 'train', channels = cfg.channels}
local val_set = data.image_folder{root = cfg.data, split = 'val', channels = cfg.channels}
if cfg.limit_train > 0 then train_set = data.subset(train_set, 1, cfg.limit_train, {shuffle_seed = cfg.seed}) end
if cfg.limit_test > 0 then val_set = data.subset(val_set, 1, cfg.limit_test, {shuffle_seed = cfg.seed}) end
local classes = #train_set.classes
print(string.format('imagenet_style: %d training and %d validation images, %d classes, backbone %s',
                    train_set:size(), val_set:size(), classes, cfg.backbone))

local mean, std = {0.485, 0.456, 0.406}, {0.229, 0.224, 0.225}
if cfg.channels == 1 then mean, std = {0.5}, {0.25} end
local train_loader = data.DataLoader(train_set, {
    batch_size = cfg.batch_size, shuffle = true, seed = cfg.seed, drop_last = true, workers = cfg.workers,
    transform = data.transforms{{'random_resized_crop', cfg.crop}, 'random_horizontal_flip',
                                'to_tensor', {'normalize', mean, std}}})
local val_loader = data.DataLoader(val_set, {
    batch_size = cfg.batch_size, workers = cfg.workers,
    transform = data.transforms{{'resize', cfg.resize}, {'center_crop', cfg.crop}, 'to_tensor',
                                {'normalize', mean, std}}})

local model
if cfg.backbone == 'aft_conv' then
    model = require('xt.models.aft_conv_net'){in_channels = cfg.channels, classes = classes,
                                              dim = cfg.dim, depth = {2, 2}, heads = 8, kernel = 5}
elseif cfg.backbone == 'resnet' then
    model = require('xt.models.resnet'){in_channels = cfg.channels, classes = classes, width = cfg.dim / 2}
elseif cfg.backbone == 'aft_full' or cfg.backbone == 'delight' then
    model = require('xt.models.token_classifier'){
        in_channels = cfg.channels, image_size = {cfg.crop, cfg.crop}, patch = cfg.patch,
        classes = classes, dim = cfg.dim, depth = cfg.depth, attention = cfg.backbone}
else
    error("imagenet_style: --backbone must be aft_conv, aft_full, delight or resnet, got '" .. cfg.backbone .. "'")
end
print(model)

local opt = optim.AdamW(model:param_groups(cfg.weight_decay), {lr = cfg.lr})
local steps = train_loader:size()
local sched = optim.WarmupCosine(opt, {warmup_steps = math.floor(cfg.warmup_epochs * steps),
                                       total_steps = cfg.epochs * steps})
local first_epoch, best = 1, 0
if run.resumed then
    local ck = run.checkpoint
    model:load_state_dict(ck.model)
    opt:load_state_dict(ck.optimizer)
    sched:load_state_dict(ck.scheduler)
    xt.set_rng_state(ck.rng)
    first_epoch, best = ck.epoch + 1, ck.best_top1
end

-- top-1 and top-5 (top-k with k = min(5, classes)) accuracy on the validation set
local function evaluate()
    model:eval()
    local top1, top5, n = 0, 0, 0
    local k = math.min(5, classes)
    xt.no_grad(function()
        for batch in val_loader:iter() do
            local logits = model(batch.input)
            local target = batch.target:view(-1, 1)
            -- the rank of the true class: how many classes score higher
            local true_score = logits:gather(2, target)
            local rank = logits:gt(true_score):float():sum(2)
            top1 = top1 + rank:lt(1):float():sum():item()
            top5 = top5 + rank:lt(k):float():sum():item()
            n = n + target:size(1)
        end
    end)
    return top1 / n, top5 / n
end

for epoch = first_epoch, cfg.epochs do
    model:train()
    train_loader:set_epoch(epoch)
    local bar = run:progress{total = steps, label = string.format('epoch %d/%d', epoch, cfg.epochs),
                             per_step = cfg.batch_size, unit = 'img'}
    local loss_sum, seen = 0, 0
    for batch in train_loader:iter() do
        local loss = F.cross_entropy(model(batch.input), batch.target, {label_smoothing = cfg.label_smoothing})
        opt:zero_grad()
        loss:backward()
        opt:step()
        sched:step()
        loss_sum, seen = loss_sum + loss:item(), seen + 1
        bar:update(1, {loss = loss_sum / seen})
    end
    local seconds = bar:finish()
    local top1, top5 = evaluate()
    local is_best = top1 > best
    best = math.max(best, top1)
    run:log{epoch = epoch, train_loss = loss_sum / seen, val_top1 = top1, val_top5 = top5,
            lr = sched:get_last_lr()[1], epoch_seconds = seconds}
    print(string.format('epoch %d: train loss %.4f | val top-1 %.4f top-5 %.4f | %.0f s', epoch,
                        loss_sum / seen, top1, top5, seconds))
    run:save_checkpoint({model = model:state_dict(), optimizer = opt:state_dict(),
                         scheduler = sched:state_dict(), rng = xt.get_rng_state(), epoch = epoch,
                         best_top1 = best}, {best = is_best})
    run:plot()
    if run:should_stop(epoch) then
        print(string.format('stopped after epoch %d; continue with --resume %s', epoch, run.dir))
        os.exit(0)
    end
end
local top1, top5 = evaluate()
print(string.format('final validation top-1 %.2f%% top-5 %.2f%% (%s); run directory %s',
                    top1 * 100, top5 * 100, cfg.backbone, run.dir))
