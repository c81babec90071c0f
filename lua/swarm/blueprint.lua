-- The blueprint DSL: the constructors a blueprint file calls.
--
--   return swarm.blueprint "review" {
--     agents = { writer = swarm.agent.process { cmd = { "python3", "w.py" } } },
--     hints  = { layers = { "audit", { "retry", max = 3 } } },
--     layers = { shout = swarm.layer { after = function(ctx, r) return r end } },
--     gate   = { worker = { "fetch_prompt", "emit", "post_result" } },
--     flow   = function(input) return swarm.step("writer", input) end,
--   }
--
-- Constructors record where they were called, so validation errors name
-- file:line and the field (swarm/validate.lua checks what they built).
local swarm, host = ...
local error, ipairs, type = error, ipairs, type
local where, error_of = host.where, host.error

-- Constructors record where they were called, for validation. Agent VMs
-- evaluate blueprints that were already validated and turn this off
-- (`host.locating = false`, see `skip_locations` in src/lua/modules/parts.rs).
local function locate()
  if host.locating ~= false then return where() end
end

local M = {}

local function marker(kind, spec)
  if type(spec) ~= "table" then
    error(error_of("bad_argument", "swarm." .. kind .. " expects a table of fields, got "
      .. type(spec) .. ": write swarm." .. kind .. " { ... }"), 0)
  end
  return { __swarm = kind, where = locate(), spec = spec }
end

--- `swarm.blueprint "name" { ... }`
function M.blueprint(name)
  if type(name) ~= "string" or name == "" then
    error(error_of("bad_argument", "swarm.blueprint: the name must be a non-empty string, got "
      .. type(name) .. ': write swarm.blueprint "name" { ... }'), 0)
  end
  local at = locate()
  return function(spec)
    local bp = marker("blueprint", spec)
    bp.name, bp.where = name, at
    return bp
  end
end

-- Agent kinds come from the host's registry (`src/spawn/kinds.rs`): one
-- constructor per kind, `swarm.agent.lua { ... }`, `swarm.agent.process { ... }`...
-- The names are read when the library loads; the fields only when a
-- blueprint is validated (swarm/validate.lua), so a VM that never
-- validates never builds them.
M.agent = {}
for _, kind in ipairs(host.agent_kind_names()) do
  local marker_kind = "agent." .. kind
  M.agent[kind] = function(spec) return marker(marker_kind, spec) end
end

--- A middleware layer written in Lua: `before(ctx, input)` may return a new
--- input, or `nil, reason` to reject; `after(ctx, result)` may return a new
--- `{ ok = bool, value = any }`.
function M.layer(spec) return marker("layer", spec) end

--- Milliseconds from a number (ms) or a string like "250ms", "60s", "2m"
--- (parsed by the host: one rule for Lua and Rust).
function M.duration(v)
  if type(v) == "number" then return v end
  if type(v) ~= "string" then return nil end
  return host.duration_ms(v)
end

return M
