---@meta swarm.mob
-- LuaLS stubs for `swarm.mob`: long-lived LLM members with durable
-- conversations, wired peers and peer messages (lua/swarm/mob.lua).

---@class swarm.MemberSpec
---@field id string                 unique in the mob (no `#`)
---@field agent string              an LLM agent of the blueprint: the member's profile
---@field message string?           its standing instruction: the conversation's first turn
---@field wire string[]?            peers it may message (wiring is mutual)
---@field labels table<string,string>?
---@field budget { tokens: integer }? reserved from the run's `limits.tokens` at spawn
---@field mode "turns"|"autonomous"? autonomous members take turns by themselves in `mob:run`

---@class swarm.Receipt
---@field id integer        the message's number in the mob
---@field delivered boolean in the recipient's inbox, shown at its next turn

---A member handle, fenced by its incarnation: once the member is
---respawned, every call through this handle fails `stale_member`.
---@class swarm.Member
---@field id string
---@field incarnation integer
---@field agent string
---@field labels table<string,string>
local Member = {}

---One turn of the member's conversation (peer messages waiting for it
---come first); its reply. Journaled: a resumed run never asks again.
---@param text string
---@return any reply
function Member:ask(text) end

---The conversation: `{ role, content }` turns, oldest first.
---@return { role: string, content: string }[]
function Member:history() end

---Ends the member (`retired` from now on); its budget returns to the run.
function Member:retire() end

---A peer message to a wired member.
---@param to string
---@param text string
---@return swarm.Receipt
function Member:tell(to, text) end

---@class swarm.Work
---@field id integer  the work's message number
local Work = {}

---The reply of the turn that took the work up (the member takes turns meanwhile).
---@return any reply
function Work:wait() end

---Withdraws the work while no turn has taken it up.
---@return boolean withdrawn
function Work:cancel() end

---Queues a unit of work for the member's next turn.
---@param text string
---@return swarm.Work
function Member:submit(text) end

---A new member whose conversation starts as a copy of this one's.
---@param spec { id: string }
---@return swarm.Member
function Member:fork(spec) end

---@class swarm.Mob
---@field name string
local Mob = {}

---A new member (`member_exists` if `id` is live).
---@param spec swarm.MemberSpec
---@return swarm.Member
function Mob:spawn(spec) end

---The live member with `spec.id`, or a new one.
---@param spec swarm.MemberSpec
---@return swarm.Member
function Mob:ensure(spec) end

---A new incarnation of member `id`: fresh, or `{ keep_history = true }`.
---@param id string
---@param opts { keep_history: boolean? }?
---@return swarm.Member
function Mob:respawn(id, opts) end

---The live members, those carrying every label of `opts.labels` if given.
---@param opts { labels: table<string,string>? }?
---@return swarm.Member[]
function Mob:members(opts) end

---Lets two members message each other.
---@param a string|swarm.Member
---@param b string|swarm.Member
function Mob:wire(a, b) end

---@param a string|swarm.Member
---@param b string|swarm.Member
function Mob:unwire(a, b) end

---A message from outside the mob into a member's inbox (no wiring needed):
---`mob:post("lead", swarm.recv("lead"))` hands it a message sent into the run.
---@param id string|swarm.Member
---@param text string
---@param opts { from: string? }?
---@return swarm.Receipt
function Mob:post(id, text, opts) end

---Runs the autonomous members: each live one with messages waiting takes a
---turn, round after round, until none has any (or none for `idle`).
---@param opts { prompt: string?, idle: string|number?, rounds: integer? }?
---@return integer rounds
function Mob:run(opts) end

---Spawns a member of `spec.agent`, asks it `spec.task`, retires it; the reply.
---@param spec { agent: string, task: string, id: string?, budget: { tokens: integer }? }
---@return any reply
function Mob:helper(spec) end

---The mob `name`: the same name in a later run is the same mob.
---@param name string
---@return swarm.Mob
function swarm.mob(name) end
