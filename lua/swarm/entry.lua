-- A Lua agent's per-task entry, one call from the host: a fresh global
-- environment (its own metatable too, so nothing set on it reaches the next
-- task), the agent body (the chunk's return value, or a blueprint's
-- agents[name].run), and the task table.
--
-- A body whose upvalues are its `_ENV` and values no task can change inside
-- (`local swarm = require "swarm"`, numbers, strings), from a chunk whose
-- top level left that environment as it found it, holds no state of its
-- own once its upvalues are set back, and needs nothing the top level
-- made: it is kept, and later tasks only reset its upvalues, `_ENV` to
-- their new environment, instead of evaluating the chunk again (see
-- src/lua/reuse.rs). Any other body is built afresh for every task.
local setmetatable, base, current, reusable, rebind = ...
local next, rawequal, getmetatable = next, rawequal, getmetatable
local kept, saved

-- Whether `env` still has metatable `mt`, and both hold only what this
-- entry put there.
local function untouched(env, mt)
  if not rawequal(getmetatable(env), mt) or getmetatable(mt) ~= nil then return false end
  local k, v = next(mt)
  if k ~= "__index" or not rawequal(v, base) or next(mt, k) ~= nil then return false end
  k, v = next(env)
  return k == "_G" and rawequal(v, env) and next(env, k) == nil
end

return function(chunk, name, id, attempt, retry, agent, input)
  local mt = { __index = base }
  local env = setmetatable({}, mt)
  env._G = env
  -- The run in progress: `load`'s default environment and a fresh
  -- `require` cache (see `CURRENT` in src/lua/ctx.rs).
  current.env, current.loaded = env, {}
  local body = kept
  if body then
    rebind(body, env, saved)
  else
    body = chunk(env)
    if name then
      body = body.spec.agents[name].spec.run
    end
    local values = reusable(body, env)
    if values and untouched(env, mt) then kept, saved = body, values end
  end
  return body, { id = id, attempt = attempt, retry = retry, agent = agent, input = input }
end
