-- Read-only views of tables (see src/lua/frozen.rs for what they guard):
-- a proxy whose metatable reads through to the backing table, refuses
-- writes, hides itself and walks the backing table with `pairs`. Built in
-- Lua because a VM freezes a few dozen tables as it is built, and a host
-- call per field cost more than the work.
local shared, setmetatable, rawset, getmetatable, next, type, keep_caller = ...
local newindex, walk, locked, frozen =
  shared.__newindex, shared.__pairs, shared.__metatable, shared.__frozen

-- `nested` (the `swarm` library): freeze the plain tables inside `t` too,
-- and put its Lua functions behind `keep_caller` (src/lua/location.rs), so
-- a user's `return swarm.x(...)` keeps the user's line on the stack.
local function freeze(name, t, nested)
  if nested then
    for k, v in next, t do
      if type(k) == "string" and type(v) == "table" and getmetatable(v) == nil then
        rawset(t, k, freeze(name .. "." .. k, v, true))
      elseif type(v) == "function" then
        rawset(t, k, keep_caller(v))
      end
    end
  end
  return setmetatable({}, {
    __newindex = newindex, __pairs = walk, __metatable = locked,
    __frozen = frozen, __index = t, __label = name,
  })
end

return freeze
