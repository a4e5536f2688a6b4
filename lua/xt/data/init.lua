-- xt.data: data loading. Datasets (xt/data/datasets.lua: cifar10, cifar100, mnist,
-- fashion_mnist, image_folder, subset) give uint8 [H,W,C] images and 1-based labels;
-- `data.DataLoader(ds, opts)` batches a dataset with C worker threads (xt/data/loader.lua);
-- `data.transforms{...}` builds the augmentation pipeline they run (xt/data/transforms.lua).
local data = {}

for name, fn in pairs(require 'xt.data.datasets') do data[name] = fn end
data.DataLoader = require 'xt.data.loader'
data.transforms = require 'xt.data.transforms'

return data
