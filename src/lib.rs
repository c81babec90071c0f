//! lua-swarm: a host for agent swarms scripted in Lua.
//!
//! Layout (each layer calls only the ones below it):
//! - `engine` — tasks, attempts, sessions, the event ledger; one state, one lock.
//! - `auth`   — roles, verbs, the role × verb gate, HMAC-signed capability tokens.
//! - `spawn`  — the `Spawner`/`Layer` seams, the layer registry, agent backends.
//! - `lua`    — sandboxed VMs, the `swarm.*` modules, the `lua` agent backend.
//! - `store`  — the durable journal (SQLite): runs, steps, events, questions.
//! - `run`    — blueprints: load, validate, build agent stacks, run a flow.
//! - `reload` — hot reload: live blueprint versions kept current by a file watcher.
//! - `llm`    — the OpenAI-compatible LLM agent backend (turns, tools, usage).
//! - `repl`   — `swarm repl`: a Lua session on a live engine.
//! - `serve`  — `swarm serve`: runs over HTTP, bearer tokens, SSE events, the workers' routes.
//! - `worker` — `swarm worker`: claims remote steps from a server, runs them as process agents.
//! - `cli`    — the `swarm` command line (`run`, `check`, `bench`).

pub mod auth;
pub mod cli;
pub mod engine;
pub mod llm;
pub mod lua;
pub mod reload;
pub mod repl;
pub mod run;
pub mod serve;
pub mod spawn;
pub mod store;
pub mod worker;
