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
local error, pcall, select, setmetatable, type, ipairs, unpack =
  error, pcall, select, setmetatable, type, ipairs, table.unpack
local wait, step, error_of = host.wait, host.step, host.error
local journal_active, journal_get, journal_asked =
  host.journal_active, host.journal_get, host.journal_asked
local running, raw_now, raw_random = coroutine.running, host.now, host.random

-- Raises the one error shape (`code`, `message`, `where` = the user's
-- file:line, plus `fields`).
local function raise(code, message, fields)
  error(error_of(code, message, fields), 0)
end

-- Journal positions (durable runs only). Each journaled call takes the next
-- number in its coroutine; the branches of a gather at position P number
-- theirs "P/1:1", "P/1:2", ..., so replay finds every call whatever order
-- the branches finished in. The first coroutine to make a journaled call in
-- a run is the flow itself.
-- A branch's entry is removed when the branch returns; the keys are weak
-- so a cancelled branch's coroutine is not kept alive by it.
local ctxs = setmetatable({}, { __mode = "k" })
local current_journal, root_taken

-- The journal attached to this VM's run (a number, unique per execution),
-- or nil when the run is not durable.
local function journaled()
  local j = journal_active()
  if j and j ~= current_journal then
    current_journal, root_taken = j, false
    ctxs = setmetatable({}, { __mode = "k" })
  end
  return j
end

local function branch_done(co, ...)
  ctxs[co] = nil
  return ...
end

local function next_pos()
  local co = running()
  local c = ctxs[co]
  if not c then
    if root_taken then
      raise("bad_call", "swarm.step, ask, sleep, now and random must run in the flow or in "
        .. "its swarm.parallel/map branches, not in a coroutine of your own")
    end
    root_taken = true
    c = { prefix = "", n = 0 }
    ctxs[co] = c
  end
  c.n = c.n + 1
  return c.prefix .. c.n
end

-- The one journaled-call sequence (ask, sleep, the clock, random numbers):
-- in a durable run, the value recorded at this call's position is
-- replayed; otherwise `compute(pos)` runs and its value is recorded
-- (waiting for the commit) before it is returned. `key` and `input` name
-- the call, so a flow that changed is caught at the first call that differs.
local function journaled_call(kind, key, input, compute)
  if not journaled() then return compute(nil) end
  local pos = next_pos()
  local found, _, value, hash = journal_get(pos, kind, key, input)
  if found then return value end
  value = compute(pos)
  wait("journal_put", pos, { kind = kind, key = key, hash = hash, ok = true, value = value })
  return value
end

local M = {}

--- Runs one step; returns `true, result` on pass, `false, step_error`
--- otherwise. One host call: journal lookup, start, dispatch through the
--- agent's stack, record.
function M.pstep(agent, input)
  return step(agent, input, journaled() and next_pos() or nil)
end

--- Runs one step and returns its result; raises a step error unless it passed.
function M.step(agent, input)
  local ok, v = step(agent, input, journaled() and next_pos() or nil)
  if not ok then error(v, 0) end
  return v
end

--- Calls `fn(...)`; returns `true, results...` or `false, err` (error values).
function M.try(fn, ...)
  return pcall(fn, ...)
end

-- One branch: `pcall`'s answer for `fn()` (a list's function) or, in a
-- `map`, `fn(item, i)`; in a durable run its journal positions are
-- numbered under `prefix`.
local function run_branch(prefix, fn, item, i)
  if prefix then
    local co = running()
    ctxs[co] = { prefix = prefix, n = 0 }
    if i then return branch_done(co, pcall(fn, item, i)) end
    return branch_done(co, pcall(fn))
  end
  if i then return pcall(fn, item, i) end
  return pcall(fn)
end

-- The branches of a gather, one closure each: the functions of the list
-- `fns`, or, given `items`, the function `fns` applied to each item.
local function branches(fns, what, items)
  if type(items or fns) ~= "table" then
    raise("bad_argument", "swarm." .. what .. ": expects a list of functions")
  end
  local wrapped = {}
  local base = journaled() and next_pos()
  for i, v in ipairs(items or fns) do
    local fn, item, index = fns, v, i
    if not items then
      fn, item, index = v, nil, nil
      if type(fn) ~= "function" then
        raise("bad_argument", "swarm." .. what .. ": item " .. i .. " is not a function")
      end
    end
    local prefix = base and base .. "/" .. i .. ":"
    wrapped[i] = function() return run_branch(prefix, fn, item, index) end
  end
  return wrapped
end

-- `opts.concurrency` of `swarm.<what>`: `default` when unset, else a
-- whole number of at least 1 (0 or NaN must not mean "no limit").
local function concurrency(opts, what, default)
  if opts == nil then return default end
  if type(opts) ~= "table" then
    raise("bad_argument", "swarm." .. what .. ": opts must be a table, got " .. type(opts))
  end
  local n = opts.concurrency
  if n == nil then return default end
  if type(n) ~= "number" or n < 1 or n ~= math.floor(n) then
    raise("bad_argument", "swarm." .. what .. ": concurrency must be a whole number of at "
      .. "least 1, got " .. tostring(n))
  end
  return n
end

-- Runs `fns` as branches; their values in order, the first failure raised
-- (the branches still running are cancelled).
local function all_of(fns, what, opts, default, items)
  local res = wait("gather", branches(fns, what, items), {
    mode = "all", fail_fast = true, concurrency = concurrency(opts, what, default),
  })
  if res.failed then error(res.value[res.failed], 0) end
  return res.value
end

--- Runs every function concurrently; returns their results in order.
--- The first failure cancels the others and is raised.
function M.parallel(fns, opts)
  return all_of(fns, "parallel", opts)
end

--- Runs every function concurrently; returns `{ ok = bool, value | error }`
--- for each, in order. Never raises for a branch's failure.
function M.all_settled(fns, opts)
  local res = wait("gather", branches(fns, "all_settled"), {
    mode = "all", fail_fast = false, concurrency = concurrency(opts, "all_settled"),
  })
  local oks, values, out = res.ok, res.value, {}
  for i = 1, #fns do
    out[i] = oks[i] and { ok = true, value = values[i] } or { ok = false, error = values[i] }
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
  raise("all_failed", "every branch of swarm.any failed", { errors = r.errors })
end

--- Applies `fn(item, index)` to every item, at most `opts.concurrency` at a
--- time (default 64); returns the results in order, raising the first failure.
function M.map(items, fn, opts)
  if type(items) ~= "table" or type(fn) ~= "function" then
    raise("bad_argument", "swarm.map: expects (items, fn[, opts])")
  end
  return all_of(fn, "map", opts, 64, items)
end

--- Asks a senior and waits for the answer. `question` is a string or a
--- table; `question.key` (or the string itself) names it for `--answer`.
function M.ask(question, opts)
  local kind = type(question)
  if (kind ~= "string" and kind ~= "table") or question == "" then
    raise("bad_argument", "swarm.ask: expects a question (a non-empty string, or a table "
      .. "with `key` and `text`), got " .. (question == "" and "\"\"" or kind))
  end
  local function senior(pos)
    if pos then
      -- Answered with `swarm answer` while the run was stopped?
      local early = wait("journal_question", pos, question)
      if early ~= nil then return early end
    end
    local key = engine.query_senior(host.current_task(), question)
    if pos then journal_asked(key, pos) end
    return engine.await_resume(key, opts and opts.timeout_ms)
  end
  local name = journaled() and host.question_name(question)
  return journaled_call("ask", name, question, senior)
end

--- Waits `ms` milliseconds without blocking other branches. In a durable
--- run the wake-up time is journaled before waiting, so a resumed run
--- sleeps only what is left of it.
function M.sleep(ms)
  if type(ms) ~= "number" then
    raise("bad_argument", "swarm.sleep: expects milliseconds, got " .. type(ms))
  end
  local wake = journaled_call("sleep", "sleep", ms, function() return raw_now() + ms end)
  local left = type(wake) == "number" and wake - raw_now() or 0
  if left > 0 then time.sleep(left) end
  return true
end

--- Waits for the next message sent into the run on `topic` (`swarm send
--- RUN TOPIC JSON`, `POST /v1/runs/{id}/messages`). Returns its value and
--- `{ seq, id, topic, sent_ms }`. With `opts.timeout` ("10m", "90s", or
--- milliseconds), returns `nil, err` (code `recv_timeout`) once it passes
--- without one. Journaled: a resumed run receives the same messages at
--- the same places, each message once, and waits only what is left of
--- the timeout.
function M.recv(topic, opts)
  if type(topic) ~= "string" or topic == "" then
    raise("bad_argument", "swarm.recv: expects a topic (a non-empty string), got "
      .. (topic == "" and "\"\"" or type(topic)))
  end
  local ms
  if opts ~= nil then
    if type(opts) ~= "table" then
      raise("bad_argument", "swarm.recv: opts must be a table, got " .. type(opts))
    end
    local t = opts.timeout
    ms = type(t) == "string" and host.duration_ms(t) or t
    if t ~= nil and (type(ms) ~= "number" or ms < 0 or ms ~= ms) then
      raise("bad_argument", "swarm.recv: timeout must be a duration (\"10m\", \"90s\") or "
        .. "milliseconds, got " .. tostring(t))
    end
  end
  local deadline = ms and journaled_call("recv_until", topic, ms,
    function() return raw_now() + ms end)
  local got = journaled_call("recv", topic, nil,
    function() return wait("recv", topic, deadline) end)
  if got.timeout then
    return nil, error_of("recv_timeout", "swarm.recv: no message on `" .. topic
      .. "` within " .. tostring(opts.timeout), { topic = topic })
  end
  return got.value, { seq = got.seq, id = got.id, topic = got.topic, sent_ms = got.sent_ms }
end

-- For the mob library (`swarm/mob.lua`): the one journaled-call helper,
-- and the next journal position (nil when the run is not durable).
M._journaled_call = journaled_call
function M._position()
  return journaled() and next_pos() or nil
end

-- The journaled reads behind swarm.time.now, os.time, os.clock and
-- math.random in a durable run (swarm/init.lua installs those).
function M._read(kind, read)
  return journaled_call(kind, kind, nil, function() return read() end)
end

function M._random(...)
  local args = { ... }
  return journaled_call("random", "random", args, function() return raw_random(unpack(args)) end)
end

return M
