---@meta swarm.flow
-- Flow primitives and the blueprint DSL, on the `swarm` table.

---A step that did not pass.
---@class swarm.StepError : swarm.Error
---@field agent string
---@field task integer
---@field result any  what the agent reported

---Runs one step; raises a `swarm.StepError` unless it passed.
---@param agent string
---@param input any
---@return any result
function swarm.step(agent, input) end

---Runs one step; returns `true, result` or `false, step_error`.
---@param agent string
---@param input any
---@return boolean ok
---@return any result_or_error
function swarm.pstep(agent, input) end

---`pcall`: `true, results...` or `false, err`.
---@param fn function
---@return boolean ok
---@return any ...
function swarm.try(fn, ...) end

---Runs all at once; results in order; the first failure cancels the rest and is raised.
---@param fns function[]
---@param opts { concurrency: integer? }?
---@return any[]
function swarm.parallel(fns, opts) end

---Runs all; `{ ok = true, value }` or `{ ok = false, error }` for each.
---@param fns function[]
---@param opts { concurrency: integer? }?
---@return { ok: boolean, value: any, error: any }[]
function swarm.all_settled(fns, opts) end

---The first branch to finish wins; the others are cancelled.
---@param fns function[]
---@return any value
---@return integer index
function swarm.race(fns) end

---The first branch to succeed wins; raises `all_failed` when none does.
---@param fns function[]
---@return any value
---@return integer index
function swarm.any(fns) end

---`fn(item, index)` for every item, at most `opts.concurrency` (64) at a time.
---@param items any[]
---@param fn fun(item: any, index: integer): any
---@param opts { concurrency: integer? }?
---@return any[]
function swarm.map(items, fn, opts) end

---Asks a senior and waits for the answer. Name it with `key` for `--answer`.
---@param question string|{ key: string?, text: string? }
---@param opts { timeout_ms: integer? }?
---@return any answer
function swarm.ask(question, opts) end

---@class swarm.Message
---@field seq integer      its number among the run's messages
---@field id string?       the sender's id (`--id`, `id`), which dedups retries
---@field topic string
---@field sent_ms integer

---Waits for the next message sent into the run on `topic` (`swarm send RUN
---TOPIC JSON`, `POST /v1/runs/{id}/messages`): its value and details. With
---`opts.timeout`, `nil, err` (code `recv_timeout`) once it passes. Journaled:
---a resumed run receives the same messages in the same places, each once.
---@param topic string
---@param opts { timeout: string|number? }?
---@return any value
---@return swarm.Message|swarm.Error meta
function swarm.recv(topic, opts) end

---Waits without blocking other branches (journaled in durable runs).
---@param ms number
function swarm.sleep(ms) end

---Milliseconds from a number or "250ms", "60s", "2m", "1h".
---@param v number|string
---@return number?
function swarm.duration(v) end

---@class swarm.AgentSpec
---@field description string?
---@field system string?
---@field model string?
---@field tools table?
---@field layers (string|table)[]?  this agent's layers, inside the blueprint's
---@field params table?  JSON Schema of its input, when an LLM agent calls it as a tool

---@class swarm.LuaAgentSpec : swarm.AgentSpec
---@field run fun(task: { id: integer, attempt: integer, retry: integer, agent: string, input: any }): any

---@class swarm.ProcessAgentSpec : swarm.AgentSpec
---@field cmd string[]?      program and arguments (no shell)
---@field shell string?      or a command for `sh -c`
---@field cwd string?        relative to the blueprint's directory
---@field env table<string, string>?
---@field timeout (number|string)?
---@field max_output number?

---@class swarm.RustAgentSpec : swarm.AgentSpec
---@field name string  a Rust function registered with the host

---@class swarm.LlmAgentSpec : swarm.AgentSpec
---@field base_url string?     default $SWARM_LLM_BASE_URL, else https://api.openai.com/v1
---@field api_key_env string?  the NAME of the env var holding the key (read at dispatch)
---@field tools string[]?      other agents of this blueprint, offered as tools (`fs.*`: every tool of MCP agent `fs`)
---@field schema table?        JSON Schema: the answer is decoded and validated
---@field max_turns number?    default 8
---@field temperature number?
---@field max_tokens number? per turn (default 2048; 0 sends none); a turn cut there fails with `max_tokens`
---@field turn_timeout (number|string)?  the most one turn may take, retries included (default "5m")
---@field headers table<string, string>?
---@field extra table?         merged into every request body
---@field timeout (number|string)?  per request (default turn_timeout)
---@field stream boolean?      default true
---@field retries number?      on 429, 5xx, connection errors, broken streams (default 4)

---@class swarm.RemoteAgentSpec : swarm.AgentSpec
---@field queue string           the queue `swarm worker --queue` claims from
---@field timeout (number|string)?  the whole step, waiting for a worker included

---@class swarm.McpAgentSpec : swarm.AgentSpec
---@field command string[]            the MCP server: program and arguments (no shell)
---@field tools string[]?             the server's tools offered as agents `name.<tool>` (default all)
---@field cwd string?                 relative to the blueprint's directory (the default)
---@field env table<string, string>?  variables set for the server
---@field inherit string[]?           host variables passed through by name ($SWARM_ALLOW_ENV)
---@field timeout (number|string)?    one tool call (default 5 minutes)
---@field start_timeout (number|string)?  starting the server and its handshake (default 60s)
---@field max_message number?         bytes of one message from the server (default 16 MiB)

swarm.agent = {}
---Each allowed tool of the server is an agent `name.<tool>`: `swarm.step("fs.read_text_file", { path = "..." })`.
---@param spec swarm.McpAgentSpec
function swarm.agent.mcp(spec) end
---@param spec swarm.LlmAgentSpec
function swarm.agent.llm(spec) end
---@param spec swarm.LuaAgentSpec
function swarm.agent.lua(spec) end
---@param spec swarm.ProcessAgentSpec
function swarm.agent.process(spec) end
---@param spec swarm.RustAgentSpec
function swarm.agent.rust(spec) end
---@param spec swarm.RemoteAgentSpec
function swarm.agent.remote(spec) end

---A middleware layer written in Lua.
---@param spec { before: (fun(ctx: table, input: any): any, any?)?, after: (fun(ctx: table, result: { ok: boolean, value: any, status: string }): table?)? }
function swarm.layer(spec) end

---@class swarm.BlueprintSpec
---@field description string?
---@field agents table<string, table>?
---@field hints { layers: (string|table)[]? }?
---@field layers table<string, table>?
---@field gate table<string, string[]>?
---@field limits { deadline: string|number?, tokens: integer?, instructions: integer?, memory: integer?, journal_entries: integer?, journal_bytes: integer? }? wall-clock deadline ("1h"); model tokens the run may spend; the run-wide budgets of its Lua VMs (instructions, bytes) and journal (entries, bytes)
---@field input table? JSON Schema the run's input must match (checked before the run starts)
---@field flow fun(input: any): any

---`swarm.blueprint "name" { ... }`
---@param name string
---@return fun(spec: swarm.BlueprintSpec): table
function swarm.blueprint(name) end
