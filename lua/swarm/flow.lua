-- Flow primitives, written over `swarm.engine`.
--
-- A flow runs as a coroutine; every step is an engine task dispatched
-- through its agent's middleware stack. Concurrent branches (`parallel`,
-- `map`, `race`, `any`, `all_settled`) are coroutines of the same run, run
-- together by the host's `gather`, so waiting costs memory, not threads.
-- Two error channels: `step` raises a step error; `pstep` and `try` return
-- `ok, value_or_error`.
local swarm, host = ...
local engine, time = swarm.engine, swarm.time
local error, pcall, select, setmetatable, type, tostring, ipairs =
  error, pcall, select, setmetatable, type, tostring, ipairs
local wait, where = host.wait, host.where
local journal_active, journal_get, journal_asked =
  host.journal_active, host.journal_get, host.journal_asked
local running, raw_now, raw_random = coroutine.running, time.now, math.random

-- Journal positions (durable runs only). Each journaled call takes the next
-- number in its coroutine; the branches of a gather at position P number
-- theirs "P/1:1", "P/1:2", ..., so replay finds every call whatever order
-- the branches finished in. The first coroutine to make a journaled call in
-- a run is the flow itself.
local ctxs = setmetatable({}, { __mode = "k" })
local current_run, root_taken

local function journaled()
  local run = journal_active()
  if run and run ~= current_run then
    current_run, root_taken = run, false
    ctxs = setmetatable({}, { __mode = "k" })
  end
  return run
end

local function next_pos()
  local co = running()
  local c = ctxs[co]
  if not c then
    if root_taken then
      error(where() .. ": swarm.step, ask, sleep, now and random must run in the flow or in "
        .. "its swarm.parallel/map branches, not in a coroutine of your own", 0)
    end
    root_taken = true
    c = { prefix = "", n = 0 }
    ctxs[co] = c
  end
  c.n = c.n + 1
  return c.prefix .. c.n
end

-- Records a call; `hash` is the input hash `journal_get` returned, so the
-- input is converted and hashed once per call.
local function put(pos, kind, key, hash, ok, value)
  wait("journal_put", pos, { kind = kind, key = key, hash = hash, ok = ok, value = value })
end

local function question_name(q)
  if type(q) == "table" then return tostring(q.key or "question") end
  return tostring(q)
end

local StepError = {
  __name = "swarm.step_error",
  __tostring = function(e)
    return tostring(e.where) .. ": " .. tostring(e.message) .. " [" .. tostring(e.code) .. "]"
  end,
}

local function describe(v)
  if type(v) == "table" then
    local ok, s = pcall(swarm.json.encode, v)
    if ok then return s end
  end
  return tostring(v)
end

local M = { StepError = StepError }

--- Runs one step; returns `true, result` on pass, `false, step_error` otherwise.
function M.pstep(agent, input)
  if type(agent) ~= "string" then
    error(where() .. ": swarm.step: agent name must be a string, got " .. type(agent), 0)
  end
  local pos, hash
  if journaled() then
    pos = next_pos()
    local found, ok, value
    found, ok, value, hash = journal_get(pos, "step", agent, input)
    if found then
      if ok then return true, value end
      return false, setmetatable({
        code = value.code, agent = agent, task = value.task, result = value.result,
        where = where(), message = value.message,
      }, StepError)
    end
  end
  if not host.has_agent(agent) then
    local message = "unknown agent `" .. agent .. "` (known: " .. host.agent_names() .. ")"
    if not host.current_task() then
      -- Not inside a run (the REPL): there are no agents to step to here.
      message = "swarm.step runs inside a flow, and there is none here: load a blueprint "
        .. "(`swarm repl FILE`, or :load FILE) and call repl.run(name, input)"
    end
    error(setmetatable({
      code = "unknown_agent", agent = agent, where = where(), message = message,
    }, StepError), 0)
  end
  local id = engine.start_task({ agent = agent, input = input, journal = pos })
  local view = engine.dispatch(id)
  if view.status == "pass" then
    if pos then put(pos, "step", agent, hash, true, view.result) end
    return true, view.result
  end
  local code = view.status
  local result = view.result
  if type(result) == "table" and result.error == "timeout" then code = "timeout" end
  local message = "step `" .. agent .. "` (task " .. id .. ") " .. code .. ": " .. describe(result)
  -- A cancelled step is not journaled: on resume it runs again.
  if pos and code ~= "cancelled" then
    put(pos, "step", agent, hash, false, { code = code, task = id, result = result, message = message })
  end
  return false, setmetatable({
    code = code, agent = agent, task = id, result = result, where = where(), message = message,
  }, StepError)
end

--- Runs one step and returns its result; raises a step error unless it passed.
function M.step(agent, input)
  local ok, v = M.pstep(agent, input)
  if not ok then error(v, 0) end
  return v
end

--- Calls `fn(...)`; returns `true, results...` or `false, err` (error values).
function M.try(fn, ...)
  return pcall(fn, ...)
end

local function branches(fns, what)
  if type(fns) ~= "table" then
    error(where() .. ": swarm." .. what .. ": expects a list of functions", 0)
  end
  local wrapped = {}
  local base = journaled() and next_pos()
  for i, fn in ipairs(fns) do
    if type(fn) ~= "function" then
      error(where() .. ": swarm." .. what .. ": item " .. i .. " is not a function", 0)
    end
    if base then
      local prefix = base .. "/" .. i .. ":"
      wrapped[i] = function()
        ctxs[running()] = { prefix = prefix, n = 0 }
        return pcall(fn)
      end
    else
      wrapped[i] = function() return pcall(fn) end
    end
  end
  return wrapped
end

-- Runs `fns` as branches; their values in order, the first failure raised
-- (the branches still running are cancelled).
local function all_of(fns, what, concurrency)
  local res = wait("gather", branches(fns, what), {
    mode = "all", fail_fast = true, concurrency = concurrency,
  })
  local out = {}
  for i = 1, #fns do
    local r = res[i]
    if r and not r.ok then error(r.value, 0) end
    out[i] = r and r.value
  end
  return out
end

--- Runs every function concurrently; returns their results in order.
--- The first failure cancels the others and is raised.
function M.parallel(fns, opts)
  return all_of(fns, "parallel", opts and opts.concurrency)
end

--- Runs every function concurrently; returns `{ ok = bool, value | error }`
--- for each, in order. Never raises for a branch's failure.
function M.all_settled(fns, opts)
  local res = wait("gather", branches(fns, "all_settled"), {
    mode = "all", fail_fast = false, concurrency = opts and opts.concurrency,
  })
  local out = {}
  for i = 1, #fns do
    local r = res[i]
    out[i] = r.ok and { ok = true, value = r.value } or { ok = false, error = r.value }
  end
  return out
end

--- The first branch to finish wins (its value, or its error is raised);
--- the others are cancelled.
function M.race(fns)
  local r = wait("gather", branches(fns, "race"), { mode = "race" })
  if not r.ok then error(r.value, 0) end
  return r.value, r.index
end

--- The first branch to succeed wins; raises only when every branch failed.
function M.any(fns)
  local r = wait("gather", branches(fns, "any"), { mode = "any" })
  if r.ok then return r.value, r.index end
  error(setmetatable({
    code = "all_failed", errors = r.errors, where = where(),
    message = "every branch of swarm.any failed",
  }, StepError), 0)
end

--- Applies `fn(item, index)` to every item, at most `opts.concurrency` at a
--- time (default 64); returns the results in order, raising the first failure.
function M.map(items, fn, opts)
  if type(items) ~= "table" or type(fn) ~= "function" then
    error(where() .. ": swarm.map: expects (items, fn[, opts])", 0)
  end
  local fns = {}
  for i, item in ipairs(items) do
    fns[i] = function() return fn(item, i) end
  end
  return all_of(fns, "map", (opts and opts.concurrency) or 64)
end

--- Asks a senior and waits for the answer. `question` is a string or a
--- table; `question.key` (or the string itself) names it for `--answer`.
function M.ask(question, opts)
  local pos, name, hash
  if journaled() then
    pos, name = next_pos(), question_name(question)
    local found, _, value
    found, _, value, hash = journal_get(pos, "ask", name, question)
    if found then return value end
    -- Answered with `swarm answer` while the run was stopped?
    local early = wait("journal_question", pos, question)
    if early ~= nil then
      put(pos, "ask", name, hash, true, early)
      return early
    end
  end
  local key = engine.query_senior(host.current_task(), question)
  if pos then journal_asked(key, pos) end
  local answer = engine.await_resume(key, opts and opts.timeout_ms)
  if pos then put(pos, "ask", name, hash, true, answer) end
  return answer
end

--- Waits `ms` milliseconds without blocking other branches.
--- Waits `ms` milliseconds. In a durable run the wake-up time is journaled
--- before waiting, so a resumed run sleeps only what is left of it.
function M.sleep(ms)
  if not journaled() then
    time.sleep(ms)
    return true
  end
  local pos = next_pos()
  local found, _, wake, hash = journal_get(pos, "sleep", "sleep", ms)
  if not found then
    wake = raw_now() + ms
    put(pos, "sleep", "sleep", hash, true, wake)
  end
  local left = type(wake) == "number" and wake - raw_now() or 0
  if left > 0 then time.sleep(left) end
  return true
end

-- In a durable run, the clock and random numbers are journaled too, so a
-- replayed flow sees the values the first run saw.
time.now = function()
  if not journaled() then return raw_now() end
  local pos = next_pos()
  local found, _, value, hash = journal_get(pos, "now", "now", nil)
  if found then return value end
  local v = raw_now()
  put(pos, "now", "now", hash, true, v)
  return v
end

-- os.time() and os.clock() too: a replayed flow must not see a new clock.
local raw_os_time, raw_os_clock = os.time, os.clock
local function journaled_read(kind, read)
  return function(...)
    if select("#", ...) > 0 or not journaled() then return read(...) end
    local pos = next_pos()
    local found, _, value, hash = journal_get(pos, kind, kind, nil)
    if found then return value end
    local v = read()
    put(pos, kind, kind, hash, true, v)
    return v
  end
end
os.time = journaled_read("os.time", raw_os_time)
os.clock = journaled_read("os.clock", raw_os_clock)

math.random = function(...)
  if not journaled() then return raw_random(...) end
  local pos, args = next_pos(), { ... }
  local found, _, value, hash = journal_get(pos, "random", "random", args)
  if found then return value end
  local v = raw_random(...)
  put(pos, "random", "random", hash, true, v)
  return v
end

M.StepError = StepError
return M
