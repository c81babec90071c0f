---@meta swarm.engine
-- Engine verbs, called with the VM's own token. Each raises a
-- `swarm.Error` when the token's role may not call the verb
-- (code "forbidden", the message names role and verb) or the engine refuses.

---@class swarm.engine
local engine = {}

---Creates a pending task. Inside a Lua agent the task is a child of the
---agent's own task (subject to the spawn depth limit).
---@param spec { agent: string, input: any, parent: integer? }
---@return integer id
function engine.start_task(spec) end

---@param id integer
---@return swarm.TaskView
function engine.read_task(id) end

---Cancels the task and its descendants; their workers are stopped.
---@param id integer
---@return swarm.TaskView
function engine.cancel_task(id) end

---Returns when the task is settled or suspended, or after `hold_ms`. Yields.
---@param id integer
---@param hold_ms integer?
---@return swarm.TaskView
function engine.poll_task(id, hold_ms) end

---Runs one attempt of the task through its agent and returns the settled
---view. Yields while the worker runs.
---@param id integer
---@return swarm.TaskView
function engine.dispatch(id) end

---Suspends the task with a question for a senior; returns the resume key.
---@param id integer
---@param question any
---@return string key
function engine.query_senior(id, question) end

---Answers a senior question (senior role).
---@param key string
---@param answer any
---@return true
function engine.resume(key, answer) end

---The answer to `key`: at once if already answered, else waits. Yields.
---@param key string
---@param timeout_ms integer?
---@return any answer
function engine.await_resume(key, timeout_ms) end

---Events with cursor > `after`; waits up to `opts.hold_ms` for one if none.
---@param after integer?
---@param opts { max: integer?, hold_ms: integer? }?
---@return swarm.Event[]
function engine.events(after, opts) end

---@return true
function engine.heartbeat() end

---@return true
function engine.detach() end

---@return integer cursor
function engine.last_cursor() end

return engine
