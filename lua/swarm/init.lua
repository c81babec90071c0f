-- The `swarm` table. Host functions return `true, value` or `false, err`;
-- here they become functions that return the value or raise `err` (an error
-- table with `code`, `message` and `where`, the caller's file:line). The
-- flow library and the blueprint DSL join it on first read.
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

-- Verbs that wait all go through the one async host function, built on
-- the first wait (`raw.wait()` builds it; see src/lua/modules/mod.rs).
local make_wait, waits = raw.wait, nil
local function wait(op, a, b, c)
  waits = waits or make_wait()
  return waits(op, a, b, c)
end
local function waiting(op)
  return function(a, b)
    return check(wait(op, a, b))
  end
end

-- The host modules are built on first read of `swarm.<name>` (see
-- src/lua/modules/parts.rs): a VM that never reads one never builds it.
-- `built` keeps the host's own tables, which `host.now` reads too.
local build, built = raw.module, {}
local function host_module(name)
  local t = built[name]
  if not t then
    t = build(name)
    built[name] = t
  end
  return t
end

local swarm, modules = {}, {}
function modules.engine()
  local engine = wrap(host_module("engine"))
  engine.poll_task = waiting("poll_task")
  engine.dispatch = waiting("dispatch")
  engine.await_resume = waiting("await_resume")
  engine.events = waiting("events")
  return engine
end
function modules.gate() return wrap(host_module("gate")) end
function modules.worker() return wrap(host_module("worker")) end
function modules.json() return host_module("json") end
function modules.log() return host_module("log") end

-- `swarm.step`'s one host call: `passed, result_or_step_error`; misuse
-- (an unknown agent, input that is not JSON) raises. The host says
-- `"failed"` for a step that ran and did not pass. A step its journal
-- recorded is replayed by a plain host call first (nil: nothing there).
local step_replayed = raw.step_replayed
local function step(agent, input, pos)
  local ok, v
  if pos then ok, v = step_replayed(agent, input, pos) end
  if ok == nil then ok, v = wait("step", agent, input, pos) end
  if ok == true then return true, v end
  if ok == "failed" then return false, v end
  error(v, 0)
end

-- In a durable run the clock and random numbers are journaled, so a
-- replayed flow sees the values the first run saw; os.time() and
-- os.clock() too. The journaling is the flow library's (`_read`,
-- `_random` in swarm/flow.lua), loaded by the first such read in a
-- durable run; elsewhere these are the plain functions behind one check.
local journal_active, load_flow = raw.journal_active, raw.flow
local select, flow = select, nil
local function journaled_read(kind, read)
  return function(...)
    if select("#", ...) > 0 or not journal_active() then return read(...) end
    flow = flow or load_flow()
    return flow._read(kind, read)
  end
end
local raw_random = math.random
local function raw_now() return check(host_module("time").now()) end
function modules.time()
  return { now = journaled_read("now", raw_now), sleep = waiting("sleep") }
end
os.time = journaled_read("os.time", os.time)
os.clock = journaled_read("os.clock", os.clock)
math.random = function(...)
  if not journal_active() then return raw_random(...) end
  flow = flow or load_flow()
  return flow._random(...)
end

-- What the flow library takes besides `swarm` (the host adds its helpers
-- when the library loads, see src/lua/modules/parts.rs), and the makers of
-- the host modules.
return swarm, {
  wait = function(op, a, b, c) return check(wait(op, a, b, c)) end,
  step = step,
  journal_active = journal_active,
  now = raw_now,
  random = raw_random,
}, modules
