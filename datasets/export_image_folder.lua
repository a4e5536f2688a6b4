-- datasets/export_image_folder.lua: write a dataset as an ImageFolder tree of PNG or JPEG
-- files, <out>/<split>/<label-1>_<class>/<index>.<format>, which data.image_folder reads
-- back with the same labels (used by the tests and the ImageNet-style experiment).
--
--   xlua datasets/export_image_folder.lua --dataset fashion_mnist --out data/fmnist_folder
--   xlua datasets/export_image_folder.lua --dataset cifar10 --splits train,test --format jpg
--
-- Datasets: cifar10, cifar100, mnist, fashion_mnist (their default roots, or --root),
-- image_folder (--root required). Splits are exported into train/ and val/ (test -> val, as
-- ImageNet is laid out).
local argparse = require 'argparse'
local xt = require 'xt'
local data = xt.data

local parser = argparse('export_image_folder', 'Write a dataset as an ImageFolder tree.')
parser:option('--dataset', 'cifar10, cifar100, mnist, fashion_mnist or image_folder')
      :default('fashion_mnist')
parser:option('--root', 'where the dataset is (default: its usual place)')
parser:option('--splits', 'comma-separated splits to export'):default('train,test')
parser:option('--out', 'the directory to write into'):default('data/image_folder')
parser:option('--format', 'png or jpg'):default('png')
parser:option('--quality', 'JPEG quality 1..100'):default('95'):convert(tonumber)
parser:option('--limit', 'at most this many images a split (0: all)'):default('0'):convert(tonumber)
local args = parser:parse(arg)

local KNOWN = {cifar10 = true, cifar100 = true, mnist = true, fashion_mnist = true, image_folder = true}
if not KNOWN[args.dataset] then parser:error('unknown dataset ' .. args.dataset) end
local make = data[args.dataset]
for split in args.splits:gmatch('[^,]+') do
    local ds = make{root = args.root, split = split}
    if args.limit > 0 and args.limit < #ds then ds = data.subset(ds, 1, args.limit) end
    local dir = args.out .. '/' .. (split == 'test' and 'val' or split)
    local clock = os.clock()
    local n = data.export_image_folder(ds, dir, {format = args.format, quality = args.quality})
    print(string.format('%s %s: %d images in %d classes -> %s (%.1fs)', args.dataset, split, n,
                        #ds.classes, dir, os.clock() - clock))
end
