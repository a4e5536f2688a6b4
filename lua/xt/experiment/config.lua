-- xt.experiment.config: an experiment's table of defaults turned into command-line flags.
--
-- Each key of `defaults` becomes a flag spelled with dashes (batch_size -> --batch-size); the
-- flag's type is the default's type (number, string, boolean: --flag / --no-flag). Keys whose
-- default is `config.NONE` take a string and default to nil. Parsing is lua-argparse's, so
-- --help lists every flag with its default and help text, and mistakes are reported the way
-- command-line users expect.
local argparse = require 'argparse'

local config = {}

-- A default meaning "no value unless given" (a Lua table cannot hold nil).
config.NONE = setmetatable({}, {__tostring = function() return 'none' end})

-- Flags every experiment has. An experiment's own defaults override these values.
config.COMMON = {
    data = config.NONE, dataset = config.NONE, epochs = 10, batch_size = 128, lr = 1e-3,
    seed = 0, threads = 0, out = config.NONE, resume = config.NONE,
    limit_train = 0, limit_test = 0, stop_after = 0,
}
config.COMMON_HELP = {
    data = 'dataset directory', dataset = 'which dataset to use',
    epochs = 'passes over the training set', batch_size = 'samples per step',
    lr = 'peak learning rate', seed = 'random seed (model init, shuffling, augmentation)',
    threads = 'OpenMP/OpenBLAS threads (0: all cores)',
    out = 'run directory (default runs/<experiment>-<time>)',
    resume = 'continue the run in this directory from its last checkpoint',
    limit_train = 'use only the first N training samples (0: all)',
    limit_test = 'use only the first N test samples (0: all)',
    stop_after = 'stop after this epoch (continue later with --resume; 0: run to the end)',
}

local function flag_name(key) return '--' .. key:gsub('_', '-') end

local function sorted_keys(t)
    local keys = {}
    for k in pairs(t) do keys[#keys + 1] = k end
    table.sort(keys)
    return keys
end

-- Build the parser for spec = {name=, description=, defaults=, help=}.
local function make_parser(spec, defaults, help)
    local parser = argparse(spec.name or 'experiment', spec.description)
    for _, key in ipairs(sorted_keys(defaults)) do
        local default, text = defaults[key], help[key] or ''
        local kind = type(default)
        if default == config.NONE then kind = 'none' end
        if kind == 'boolean' then
            parser:flag(flag_name(key), text .. (default and ' (default: on)' or ''))
                  :target(key):action('store_true')
            parser:flag('--no-' .. key:gsub('_', '-'), 'turn off ' .. flag_name(key))
                  :target(key):action('store_false')
        elseif kind == 'number' then
            parser:option(flag_name(key), text .. ' (default: ' .. tostring(default) .. ')')
                  :target(key):convert(tonumber)
        elseif kind == 'string' or kind == 'none' then
            local shown = kind == 'none' and '' or ' (default: ' .. default .. ')'
            parser:option(flag_name(key), text .. shown):target(key)
        else
            error(string.format("experiment: default for '%s' must be a number, string, boolean "
                                .. "or config.NONE, got %s", key, kind), 3)
        end
    end
    return parser
end

-- Parse args (a list of strings, e.g. the script's `arg`) against the experiment's defaults.
-- Returns the config (defaults overridden by flags) and the set of keys given on the command
-- line (a resumed run takes its saved config, then only these).
function config.parse(spec, args)
    local defaults, help = {}, {}
    for k, v in pairs(config.COMMON) do defaults[k] = v end
    for k, v in pairs(config.COMMON_HELP) do help[k] = v end
    for k, v in pairs(spec.defaults or {}) do defaults[k] = v end
    for k, v in pairs(spec.help or {}) do help[k] = v end
    local parser = make_parser(spec, defaults, help)
    local list = {}
    for i = 1, #(args or {}) do list[i] = args[i] end
    local ok, parsed = parser:pparse(list)
    if not ok then
        io.stderr:write(parser:get_usage(), '\n\n', 'error: ', parsed, '\n')
        os.exit(2)
    end
    local cfg, given = {}, {}
    for k, v in pairs(defaults) do
        if parsed[k] ~= nil then
            cfg[k], given[k] = parsed[k], true
        elseif v ~= config.NONE then
            cfg[k] = v
        end
    end
    return cfg, given
end

return config
