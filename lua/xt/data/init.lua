-- xt.data: data loading. `data.DataLoader(ds, opts)` batches a dataset with C worker threads
-- (xt/data/loader.lua); `data.transforms{...}` builds the augmentation pipeline they run
-- (xt/data/transforms.lua).
local data = {}

data.DataLoader = require 'xt.data.loader'
data.transforms = require 'xt.data.transforms'

return data
