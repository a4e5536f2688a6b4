-- xt.experiment.metrics: a run's metric records, kept in memory and on disk as
-- metrics.jsonl (one JSON object per line, appended) and metrics.csv (one column per key
-- seen so far; rewritten with a wider header when a new key appears).
local json = require 'dkjson'

local Metrics = {}
Metrics.__index = Metrics

local function csv_field(v)
    if v == nil then return '' end
    local s = type(v) == 'number' and string.format('%.10g', v) or tostring(v)
    if s:find('[,"\n]') then s = '"' .. s:gsub('"', '""') .. '"' end
    return s
end
Metrics.csv_field = csv_field   -- one CSV cell (quoted when it needs to be)

-- Column order: the keys of the first records in order of appearance, as written.
function Metrics:_write_csv_row(f, record)
    local row = {}
    for i, k in ipairs(self.columns) do row[i] = csv_field(record[k]) end
    f:write(table.concat(row, ','), '\n')
end

function Metrics:_rewrite_csv()
    local tmp = self.csv_path .. '.tmp'
    local f = assert(io.open(tmp, 'w'))
    f:write(table.concat(self.columns, ','), '\n')
    for _, r in ipairs(self.records) do self:_write_csv_row(f, r) end
    f:close()
    assert(os.rename(tmp, self.csv_path))
end

-- Records come in as tables; `keyorder` keeps JSON and CSV columns in the order the caller
-- lists (step, epoch, split, then the rest alphabetically).
local FIRST = {'epoch', 'step', 'split', 'time'}

function Metrics:_columns_for(record)
    local added = false
    local function add(k)
        if record[k] ~= nil and not self.known[k] then
            self.known[k] = true
            self.columns[#self.columns + 1] = k
            added = true
        end
    end
    for _, k in ipairs(FIRST) do add(k) end
    local rest = {}
    for k in pairs(record) do if not self.known[k] then rest[#rest + 1] = k end end
    table.sort(rest)
    for _, k in ipairs(rest) do add(k) end
    return added
end

-- Open the metrics of run directory dir. keep(record) -> bool filters records already on disk
-- (a resumed run drops what came after its checkpoint).
function Metrics.open(dir, keep)
    local self = setmetatable({
        dir = dir, jsonl_path = dir .. '/metrics.jsonl', csv_path = dir .. '/metrics.csv',
        records = {}, columns = {}, known = {},
    }, Metrics)
    local f = io.open(self.jsonl_path, 'r')
    if f then
        for line in f:lines() do
            local r = json.decode(line)
            if type(r) == 'table' and (not keep or keep(r)) then
                self.records[#self.records + 1] = r
                self:_columns_for(r)
            end
        end
        f:close()
        -- rewrite both files so they hold exactly the kept records
        local out = assert(io.open(self.jsonl_path .. '.tmp', 'w'))
        for _, r in ipairs(self.records) do out:write(self:_encode(r), '\n') end
        out:close()
        assert(os.rename(self.jsonl_path .. '.tmp', self.jsonl_path))
    end
    self:_rewrite_csv()
    return self
end

function Metrics:_encode(record)
    return json.encode(record, {keyorder = self.columns})
end

-- Append one record (a flat table of numbers, strings, booleans).
function Metrics:log(record)
    local widened = self:_columns_for(record)
    self.records[#self.records + 1] = record
    local f = assert(io.open(self.jsonl_path, 'a'))
    f:write(self:_encode(record), '\n')
    f:close()
    if widened then
        self:_rewrite_csv()
    else
        local c = assert(io.open(self.csv_path, 'a'))
        self:_write_csv_row(c, record)
        c:close()
    end
end

-- The records for which filter(record) holds (all when filter is nil).
function Metrics:select(filter)
    local out = {}
    for _, r in ipairs(self.records) do
        if not filter or filter(r) then out[#out + 1] = r end
    end
    return out
end

-- Read the records of a metrics.jsonl file (for plots from any run directory).
function Metrics.read(path)
    local f, err = io.open(path, 'r')
    if not f then error('metrics: cannot read ' .. tostring(err), 2) end
    local records = {}
    local n = 0
    for line in f:lines() do
        n = n + 1
        local r, _, msg = json.decode(line)
        if type(r) ~= 'table' then
            f:close()
            error(string.format('metrics: %s line %d is not a JSON object (%s)', path, n,
                                tostring(msg)), 2)
        end
        records[#records + 1] = r
    end
    f:close()
    return records
end

return Metrics
