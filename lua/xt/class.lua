-- xt.class: a small class helper. class(name, parent) returns a table whose call makes an
-- instance and runs its __init. Metamethods (__call, __tostring, __newindex, ...) are
-- copied from the parent, since Lua looks them up in the metatable itself, not through
-- __index.
local METAMETHODS = {'__call', '__tostring', '__newindex', '__len', '__eq', '__concat'}

local function class(name, parent)
    local cls = {}
    cls.__index = cls
    cls.__name = name
    cls.__parent = parent
    if parent then
        for _, m in ipairs(METAMETHODS) do
            if rawget(cls, m) == nil then cls[m] = rawget(parent, m) end
        end
    end
    setmetatable(cls, {
        __index = parent,
        __call = function(c, ...)
            local obj = setmetatable({}, c)
            obj:__init(...)
            return obj
        end,
        __tostring = function(c) return 'class ' .. c.__name end,
    })
    return cls
end

-- Is obj an instance of cls (or of a subclass)?
local function is_instance(obj, cls)
    if type(obj) ~= 'table' then return false end
    local c = getmetatable(obj)
    while c do
        if c == cls then return true end
        c = rawget(c, '__parent')
    end
    return false
end

return {class = class, is_instance = is_instance}
