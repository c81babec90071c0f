---@meta swarm.modules

---Who this VM is and what it may call.
---@class swarm.gate
local gate = {}
---@return { role: "operator"|"worker"|"senior"|"observer", subject: string, task: integer? }
function gate.whoami() end
---@param verb string e.g. "start_task"
---@return boolean
function gate.can(verb) end
---@return table<string, string[]> role -> verbs
function gate.table() end

---Inside a Lua agent: the task and the ways to answer it.
---@class swarm.worker
local worker = {}
---@return { task: integer, attempt: integer, agent: string, input: any }
function worker.task() end
---@return any
function worker.input() end
---@param kind "progress"|"partial"|"artifact"
---@param data any
---@return true
function worker.emit(kind, data) end
---Sets the attempt's result; applies when the agent returns nothing.
---@param value any
---@param ok boolean? default true
---@return true
function worker.result(value, ok) end

---JSON with explicit null and empty arrays.
---@class swarm.json
---@field null lightuserdata stands for JSON null
local json = {}
---Raises on values that are not JSON-shaped (functions, userdata).
---@param value any
---@param opts { pretty: boolean? }?
---@return string
function json.encode(value, opts) end
---Expected failure: returns nil, err on bad text.
---@param text string
---@return any value
---@return string? err
function json.decode(text) end
---Marks a table as a JSON array (so `{}` encodes as `[]`).
---@param t table?
---@return table
function json.array(t) end
---@param v any
---@return boolean
function json.is_null(v) end

---Logging into the host's log, tagged with file:line.
---@class swarm.log
local log = {}
function log.trace(...) end
function log.debug(...) end
function log.info(...) end
function log.warn(...) end
function log.error(...) end

---@class swarm.time
local time = {}
---@return integer ms since the Unix epoch
function time.now() end
---Waits without blocking other coroutines. Yields.
---@param ms number
---@return true
function time.sleep(ms) end
