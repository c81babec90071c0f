---@meta swarm
-- LuaLS type stubs for the `swarm` library. `swarm init` wires them into
-- a new project; `swarm stubs DIR` writes them for an existing one (point
-- your editor's `workspace.library` at DIR).

---An error raised by a host function.
---@class swarm.Error
---@field code string    stable machine-readable code, e.g. "forbidden"
---@field message string human-readable message
---@field where string   file:line of the Lua caller

---@class swarm.TaskView
---@field id integer
---@field agent string
---@field status "pending"|"running"|"suspended"|"pass"|"blocked"|"cancelled"
---@field attempt integer
---@field depth integer
---@field parent integer?
---@field input any
---@field result any

---@class swarm.Event
---@field cursor integer
---@field at_ms integer
---@field task integer?
---@field kind string  e.g. "task_created", "attempt_completed", "worker_output"

---@class swarm
---@field engine swarm.engine
---@field gate swarm.gate
---@field worker swarm.worker
---@field json swarm.json
---@field log swarm.log
---@field time swarm.time
swarm = {}

return swarm
