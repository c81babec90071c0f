-- The `swarm` table. Host functions return `true, value` or `false, err`;
-- here they become functions that return the value or raise `err` (an error
-- table with `code`, `message` and `where`, the caller's file:line).
local raw = ...
local error, pairs, type = error, pairs, type

local function raising(f)
  return function(...)
    local ok, v = f(...)
    if not ok then
      error(v, 0)
    end
    return v
  end
end

local function wrap(t)
  local out = {}
  for k, v in pairs(t) do
    out[k] = type(v) == "function" and raising(v) or v
  end
  return out
end

return {
  engine = wrap(raw.engine),
  gate = wrap(raw.gate),
  worker = wrap(raw.worker),
  time = wrap(raw.time),
  json = raw.json,
  log = raw.log,
}
