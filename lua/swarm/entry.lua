-- A Lua agent's per-task entry, one call from the host: a fresh global
-- environment (its own metatable too, so nothing set on it reaches the next
-- task), the agent body (the chunk's return value, or a blueprint's
-- agents[name].run), and the task table.
local setmetatable, base, current = ...

return function(chunk, name, id, attempt, retry, agent, input)
  local env = setmetatable({}, { __index = base })
  env._G = env
  -- The run in progress: `load`'s default environment and a fresh
  -- `require` cache (see `CURRENT` in src/lua/ctx.rs).
  current.env, current.loaded = env, {}
  local body = chunk(env)
  if name then
    body = body.spec.agents[name].spec.run
  end
  return body, { id = id, attempt = attempt, retry = retry, agent = agent, input = input }
end
