-- Mobs: long-lived members, each a conversation with one of the
-- blueprint's LLM agents as its profile, spawned, wired, messaging each
-- other, retired and respawned. Written over host calls on the run's
-- store (src/lua/modules/mob.rs, src/mob/): every roster operation is one
-- journaled call, so a resumed run replays it without touching the store;
-- a member's turn is journaled by the host with the model calls under it.
--
-- Two error channels, as everywhere: misuse raises `bad_argument`;
-- refusals raise their own codes (`member_exists`, `stale_member`,
-- `retired`, `not_wired`, `unknown_member`, `token_budget`).
local swarm, host = ...
local flow = host.flow_exports()
local journaled_call, position = flow._journaled_call, flow._position
local wait, error_of, token_limit = host.wait, host.error, host.token_limit
local error, pcall, setmetatable, getmetatable, type, pairs, ipairs, tostring =
  error, pcall, setmetatable, getmetatable, type, pairs, ipairs, tostring

local function raise(code, message, fields)
  error(error_of(code, message, fields), 0)
end

local function call(op, args)
  return journaled_call("mob", op, args, function(pos) return wait("mob", op, args, pos) end)
end

local function need_string(v, what)
  if type(v) ~= "string" or v == "" then
    raise("bad_argument", what .. " must be a non-empty string, got " .. type(v))
  end
end

-- Tokens reserved for members' budgets in this execution of the run, out
-- of its `limits.tokens`, by member id (a member holds one reservation
-- whatever spawns, ensures and respawns it). A flow's Lua runs one branch
-- at a time, so a check and its reservation are never split by another
-- branch; replayed spawns reserve again, so a resumed run counts the same.
local reserved, by_member = 0, {}

local function reserve(tokens, id)
  if type(tokens) ~= "number" or by_member[id] then return end
  local limit = token_limit()
  if limit and reserved + tokens > limit then
    raise("token_budget", "member `" .. id .. "`'s budget of " .. tokens
      .. " tokens cannot be covered: the run's limits.tokens is " .. limit .. ", "
      .. reserved .. " of it reserved for members already")
  end
  reserved, by_member[id] = reserved + tokens, tokens
end

local function release(id)
  local tokens = by_member[id]
  if tokens then reserved, by_member[id] = reserved - tokens, nil end
end

local Member = {}
Member.__index = Member
local Mob = {}
Mob.__index = Mob

local function member(mob, view)
  return setmetatable({ mob = mob, id = view.id, incarnation = view.incarnation,
                        agent = view.agent, labels = view.labels, mode = view.mode }, Member)
end

local function handle(m)
  if getmetatable(m) ~= Member then
    raise("bad_argument", "expects a member (call it as member:method(...))")
  end
  return { mob = m.mob.name, id = m.id, incarnation = m.incarnation }
end

--- One turn of the member's conversation: `text` (after the peer
--- messages waiting for it) in, its reply out. Turns on one member run
--- one at a time; on different members, in parallel.
function Member:ask(text)
  local h = handle(self)
  need_string(text, "member:ask: the text")
  return wait("mob_ask", h, text, position())
end

--- The member's conversation: `{ role, content }` turns, oldest first.
function Member:history()
  return call("history", { handle = handle(self) })
end

--- Ends the member; its budget goes back to the run. Its handles are
--- refused from now on (`retired`).
function Member:retire()
  call("retire", { handle = handle(self) })
  release(self.id)
  return true
end

--- A peer message to `to` (wired to this member): `{ id, delivered }`.
function Member:tell(to, text)
  local h = handle(self)
  need_string(to, "member:tell: the recipient")
  need_string(text, "member:tell: the text")
  return call("tell", { handle = h, to = to, text = text })
end

--- A new member `spec.id` whose conversation starts as a copy of this one's.
function Member:fork(spec)
  local h = handle(self)
  if type(spec) ~= "table" then raise("bad_argument", "member:fork: expects { id = ... }") end
  need_string(spec.id, "member:fork: id")
  return member(self.mob, call("fork", { handle = h, id = spec.id }))
end

local Work = {}
Work.__index = Work

--- Queues `work` (text) for the member: a message from `work` that its
--- next turn shows. Returns a handle: `h:wait()` is the reply of the turn
--- that took it up, `h:cancel()` withdraws it while no turn has.
function Member:submit(work)
  local h = handle(self)
  need_string(work, "member:submit: the work")
  local r = call("post", { mob = h.mob, to = h.id, from = "work", text = work })
  return setmetatable({ member = self, id = r.id }, Work)
end

--- The reply of the turn that took this work up. While it waits, the
--- member takes turns: an autonomous one through `mob:run`, another by
--- being asked to do the work waiting for it. Raises `cancelled` for work
--- withdrawn.
function Work:wait()
  local m = self.member
  local args = { handle = handle(m), seq = self.id }
  local state = call("work", args)
  while state.state == "queued" do
    if m.mode == "autonomous" then
      m.mob:run { rounds = 1 }
    else
      m:ask("Do the work above.")
    end
    state = call("work", args)
  end
  if state.state == "cancelled" then
    raise("cancelled", "work " .. self.id .. " for `" .. m.id .. "` was withdrawn")
  end
  return state.reply
end

--- Withdraws the work while no turn has taken it up: true, else false.
function Work:cancel()
  return call("cancel_work", { handle = handle(self.member), seq = self.id }).cancelled
end

local SPEC = { id = "string", agent = "string", message = "string", wire = "table",
               labels = "table", budget = "table", mode = "string" }

local function check_spec(spec, what)
  if type(spec) ~= "table" then raise("bad_argument", what .. ": expects a table") end
  for k, v in pairs(spec) do
    local want = SPEC[k]
    if not want then
      raise("bad_argument", what .. ": unknown field `" .. tostring(k)
        .. "` (fields: id, agent, message, wire, labels, budget, mode)")
    end
    if type(v) ~= want then
      raise("bad_argument", what .. ": `" .. k .. "` must be a " .. want .. ", got " .. type(v))
    end
  end
  need_string(spec.id, what .. ": id")
  need_string(spec.agent, what .. ": agent")
  if spec.mode ~= nil and spec.mode ~= "turns" and spec.mode ~= "autonomous" then
    raise("bad_argument", what .. ": mode is \"turns\" or \"autonomous\", got \""
      .. spec.mode .. "\"")
  end
  local b = spec.budget
  if b ~= nil and (type(b.tokens) ~= "number" or b.tokens < 1 or b.tokens % 1 ~= 0) then
    raise("bad_argument", what .. ": budget must be { tokens = N }, N a whole number >= 1")
  end
end

--- A new member: `{ id, agent, message?, wire?, labels?, budget? }`.
--- `budget.tokens` is reserved from the run's `limits.tokens` first: one
--- that cannot be covered is `token_budget`, before any model call.
function Mob:spawn(spec)
  check_spec(spec, "mob:spawn")
  local tokens = spec.budget and spec.budget.tokens
  local held = by_member[spec.id]
  reserve(tokens, spec.id)
  local ok, view = pcall(call, "spawn", { mob = self.name, spec = spec })
  if not ok then
    if not held then release(spec.id) end
    error(view, 0)
  end
  return member(self, view)
end

--- The live member with `spec.id`, or a new one spawned from `spec`.
function Mob:ensure(spec)
  check_spec(spec, "mob:ensure")
  -- Reserved first: a member its budget cannot cover is never spawned.
  local held = by_member[spec.id]
  reserve(spec.budget and spec.budget.tokens, spec.id)
  local ok, view = pcall(call, "ensure", { mob = self.name, spec = spec })
  if not ok then
    if not held then release(spec.id) end
    error(view, 0)
  end
  if not by_member[view.id] then reserve(view.budget, view.id) end
  return member(self, view)
end

--- A new incarnation of member `id`: fresh, or with its conversation
--- (`{ keep_history = true }`). Older handles fail `stale_member`.
function Mob:respawn(id, opts)
  need_string(id, "mob:respawn: id")
  local keep = type(opts) == "table" and opts.keep_history == true or nil
  local view = call("respawn", { mob = self.name, id = id, keep_history = keep })
  reserve(view.budget, view.id)
  return member(self, view)
end

--- The live members, those with every label of `opts.labels` if given.
function Mob:members(opts)
  local labels = type(opts) == "table" and opts.labels or nil
  local out = {}
  for i, view in ipairs(call("members", { mob = self.name, labels = labels })) do
    out[i] = member(self, view)
  end
  return out
end

local function ids(a, b, what)
  local x = getmetatable(a) == Member and a.id or a
  local y = getmetatable(b) == Member and b.id or b
  need_string(x, what)
  need_string(y, what)
  return x, y
end

--- Lets members `a` and `b` (ids or members) message each other.
function Mob:wire(a, b)
  local x, y = ids(a, b, "mob:wire: a member id")
  return call("wire", { mob = self.name, a = x, b = y })
end

function Mob:unwire(a, b)
  local x, y = ids(a, b, "mob:unwire: a member id")
  return call("unwire", { mob = self.name, a = x, b = y })
end

--- A message from outside the mob into member `id`'s inbox (no wiring
--- needed), shown at the start of its next turn: `{ id, delivered }`.
--- `opts.from` names the sender (default "outside"). With `swarm.recv`,
--- a message sent into the run reaches a member:
--- `mob:post("lead", swarm.recv("lead"))`.
function Mob:post(id, text, opts)
  if getmetatable(id) == Member then id = id.id end
  need_string(id, "mob:post: the member id")
  need_string(text, "mob:post: the text")
  local from = type(opts) == "table" and opts.from or "outside"
  need_string(from, "mob:post: from")
  return call("post", { mob = self.name, to = id, from = from, text = text })
end

--- Runs the mob's autonomous members (`mode = "autonomous"`): round
--- after round, every live one with messages waiting takes a turn (in
--- parallel, `opts.prompt` as its text), until none has any; with
--- `opts.idle` ("30s") it waits that long for new ones (a `mob:post` from
--- another branch) before it stops. At most `opts.rounds` rounds (100).
--- Returns how many rounds ran.
function Mob:run(opts)
  if opts ~= nil and type(opts) ~= "table" then
    raise("bad_argument", "mob:run: opts must be a table, got " .. type(opts))
  end
  opts = opts or {}
  local prompt = opts.prompt or "Continue: act on the messages above."
  need_string(prompt, "mob:run: prompt")
  local idle = opts.idle and swarm.duration(opts.idle) or 0
  local most = opts.rounds or 100
  local rounds, waited = 0, 0
  while rounds < most do
    local busy = {}
    for _, view in ipairs(call("members", { mob = self.name })) do
      if view.mode == "autonomous" and view.inbox > 0 then
        busy[#busy + 1] = member(self, view)
      end
    end
    if #busy == 0 then
      if waited >= idle then break end
      local step = math.min(250, idle - waited)
      swarm.sleep(step)
      waited = waited + step
    else
      waited = 0
      rounds = rounds + 1
      local turns = {}
      for i, m in ipairs(busy) do turns[i] = function() return m:ask(prompt) end end
      swarm.parallel(turns)
    end
  end
  return rounds
end

--- Spawns a member of `spec.agent`, asks it `spec.task`, retires it and
--- returns the reply.
function Mob:helper(spec)
  if type(spec) ~= "table" then raise("bad_argument", "mob:helper: expects { agent, task }") end
  need_string(spec.task, "mob:helper: task")
  self.helpers = (self.helpers or 0) + 1
  local m = self:spawn { id = spec.id or ("helper-" .. self.helpers), agent = spec.agent,
                         budget = spec.budget }
  local ok, reply = pcall(m.ask, m, spec.task)
  m:retire()
  if not ok then error(reply, 0) end
  return reply
end

local M = {}

--- The mob `name`: the same name in a later run is the same mob, with
--- its members and their conversations.
function M.mob(name)
  need_string(name, "swarm.mob: the name")
  return setmetatable({ name = name }, Mob)
end

return M
