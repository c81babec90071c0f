-- pcall, xpcall and the coroutine functions, made to respect the VM's limits:
-- - once the budget, deadline, cancellation or memory limit has tripped, the
--   error is raised again instead of being returned, so no script can catch
--   its way past a limit;
-- - an xpcall message handler never runs for a tripped limit (Lua would run
--   it inside the hook that raised, where hooks are off, outside every limit);
-- - each resume is charged a fixed number of instructions, because a
--   yield/resume round trip costs the host far more than the few
--   instructions the hook counts for it;
-- - coroutine.wrap resumes through the guarded resume;
-- - a host call that waits (a step, `ask`, `sleep`, `parallel`) made inside
--   a coroutine of the script's own suspends that coroutine with mlua's
--   "pending" marker. The guarded resume passes the marker up, so the whole
--   flow waits for the call, then resumes the inner coroutine where it
--   was: scripts never see the marker, and such calls work in coroutines;
-- - a coroutine waiting that way, or paused by the limit hook at the end
--   of its time slice (passed up the same way), has exactly one resumer,
--   the one driving it: another resume is refused (`false, message`, as
--   for a running coroutine) and closing it raises, instead of two
--   resumers handing the host call's wake-up between them forever; and
--   only coroutines the script created can be resumed or closed at all;
-- - a yield is charged like a resume (a yield/resume loop with the host's
--   poller on the other end is otherwise nearly free);
-- - every Lua thread that runs user code has a pcall at its base (`protect`,
--   used by the host for flows, agents and layers, and by coroutine.create
--   and wrap). An error raised by the limit hook leaves Lua's "hooks
--   allowed" flag off on its way out; a pcall restores it before pending
--   `__close` handlers run, so those handlers stay under the limits.
local raw_pcall, raw_xpcall, raw_resume, raw_create, raw_close, raw_status, raw_yield, pending,
  collect, tripped, charge, traceback, host_traceback, sliced, mark_sliced, isyieldable = ...
local error, type, select, setmetatable = error, type, select, setmetatable
local pack, unpack = table.pack, table.unpack

local function pass(ok, ...)
  if not ok and tripped((...)) then
    error((...), 0)
  end
  return ok, ...
end

local function rethrow(ok, ...)
  if ok then return ... end
  error((...), 0)
end

-- The message handler adds the traceback where the error happened, as
-- the host showed it before this pcall existed.
local function protect(f, ...)
  return rethrow(raw_xpcall(f, traceback, ...))
end

-- The host's entry point: `true, results...`, or `false, err` with the
-- error value itself, so an error table reaches the host as a table (any
-- other value that is not a string comes wrapped with its traceback).
-- (`tripped` notes a memory error on the limits, as `pcall` does.)
local function settled(ok, ...)
  if not ok then tripped((...)) end
  return ok, ...
end

local function protect_host(f, ...)
  return settled(raw_xpcall(f, host_traceback, ...))
end

-- The coroutines the script made (weak keys): the only ones it may resume
-- or close. The threads the host runs (the flow, `parallel` branches)
-- are not the script's to resume, even when `coroutine.running()` hands
-- one out.
local ours = setmetatable({}, { __mode = "k" })

local function create(f)
  if type(f) ~= "function" then
    error("bad argument #1 to 'create' (function expected, got " .. type(f) .. ")", 2)
  end
  local co = raw_create(function(...) return protect(f, ...) end)
  ours[co] = true
  return co
end

-- Coroutines stopped for the host (weak keys): waiting on a host call, or
-- paused at the end of a time slice. Only the resumer that drives them
-- may go on.
local driven = setmetatable({}, { __mode = "k" })

-- Closes a coroutine whose host call was abandoned (its flow branch lost a
-- race, was cancelled or hit a limit while waiting) and collects the call
-- at once, so its task is cancelled now rather than at some later GC.
local abandon = {
  __close = function(w)
    if w.co then
      driven[w.co] = nil
      raw_close(w.co)
      collect()
    end
  end,
}

-- Whether `co` stopped for the host rather than for its resumer: it waits
-- on a host call (it yielded the pending marker), or the limit hook paused
-- it at the end of its time slice (see src/lua/limits.rs).
local function for_host(co, r)
  if r.n == 2 then return r[2] == pending and raw_status(co) == "suspended" end
  return r.n == 1 and sliced(co)
end

-- Drives `co` while it stops for the host: passes each stop up (our own
-- resumer is the host's poller, or a guarded resume doing the same), then
-- resumes `co` where it was. Scripts never see these stops.
local function drive(co, r)
  local w <close> = setmetatable({ co = co }, abandon)
  driven[co] = true
  repeat
    if r.n == 2 then
      r = pack(raw_resume(co, raw_yield(pending)))
    else
      -- A pause: pass it up when we can (marked, so a guarded resumer
      -- above knows it for one), else just go on.
      if isyieldable() then
        mark_sliced()
        raw_yield()
      end
      r = pack(raw_resume(co))
    end
  until not (r[1] and for_host(co, r))
  driven[co] = nil
  w.co = nil
  return unpack(r, 1, r.n)
end

local function waited(co, ok, ...)
  if ok then
    local n = select("#", ...)
    if (n == 1 and (...) == pending and raw_status(co) == "suspended")
      or (n == 0 and sliced(co)) then
      return drive(co, pack(ok, ...))
    end
  end
  return ok, ...
end

local function refused(co, verb)
  if type(co) ~= "thread" then
    error("bad argument #1 to '" .. verb .. "' (coroutine expected)", 3)
  end
  if not ours[co] then
    return "cannot " .. verb .. " a thread the host runs (only coroutines the script created)"
  end
  if driven[co] then
    return "cannot " .. verb .. " a coroutine that is waiting for the host (its resumer drives it)"
  end
end

local function resume(co, ...)
  charge()
  local why = refused(co, "resume")
  if why then return false, why end
  return pass(waited(co, raw_resume(co, ...)))
end

local function close(co)
  local why = refused(co, "close")
  if why then error(why, 2) end
  return raw_close(co)
end

local function yield(...)
  charge()
  return raw_yield(...)
end

local function unwrap(co, ok, ...)
  if ok then return ... end
  local err = ...
  if raw_status(co) == "dead" then raw_close(co) end
  error(err, 0)
end

return {
  pcall = function(f, ...) return pass(raw_pcall(f, ...)) end,
  xpcall = function(f, handler, ...)
    if type(handler) ~= "function" then
      return pass(raw_xpcall(f, handler, ...))
    end
    return pass(raw_xpcall(f, function(e)
      if tripped(e) then return e end
      return handler(e)
    end, ...))
  end,
  resume = resume,
  close = close,
  yield = yield,
  protect = protect_host,
  create = create,
  wrap = function(f)
    local co = create(f)
    return function(...) return unwrap(co, resume(co, ...)) end
  end,
}
