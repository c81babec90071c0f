-- The `swarm` table. Host functions return `true, value` or `false, err`;
-- here they become functions that return the value or raise `err` (an error
-- table with `code`, `message` and `where`, the caller's file:line).
local raw = ...
local error, pairs, type = error, pairs, type

local function check(ok, v)
  if not ok then
    error(v, 0)
  end
  return v
end

local function raising(f)
  return function(...)
    return check(f(...))
  end
end

local function wrap(t)
  local out = {}
  for k, v in pairs(t) do
    out[k] = type(v) == "function" and raising(v) or v
  end
  return out
end

-- Verbs that wait all go through the one async host function.
local wait = raw.wait
local function waiting(op)
  return function(a, b)
    return check(wait(op, a, b))
  end
end

local engine = wrap(raw.engine)
engine.poll_task = waiting("poll_task")
engine.dispatch = waiting("dispatch")
engine.await_resume = waiting("await_resume")
engine.events = waiting("events")

local time = wrap(raw.time)
time.sleep = waiting("sleep")

local swarm = {
  engine = engine,
  gate = wrap(raw.gate),
  worker = wrap(raw.worker),
  time = time,
  json = raw.json,
  log = raw.log,
}
-- `swarm.step`'s one host call: `passed, result_or_step_error`; misuse
-- (an unknown agent, input that is not JSON) raises. The host says
-- `"failed"` for a step that ran and did not pass.
local function step(agent, input, pos)
  local ok, v = wait("step", agent, input, pos)
  if ok == true then return true, v end
  if ok == "failed" then return false, v end
  error(v, 0)
end

-- The raising `wait` and `step` go to the flow library.
return swarm, function(op, a, b)
  return check(wait(op, a, b))
end, step
