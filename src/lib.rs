//! lua-swarm: a host for agent swarms scripted in Lua.
//!
//! Layers, bottom-up: each imports only layers listed above it.
//! - `duration` — the one parser of `250ms`/`90s`/`10m` text (a leaf).
//! - `text`   — the one escaper of untrusted text bound for a terminal (a leaf).
//! - `auth`   — roles, verbs, the role × verb gate, HMAC-signed capability tokens.
//! - `engine` — tasks, attempts, the event ledger, the board, the spawner seam; one state, one lock.
//! - `store`  — the store contract (runs, journal, events, questions, fenced ownership, work queue); SQLite and memory.
//! - `mob`    — mobs: rosters of long-lived LLM members, their conversations and peer messages, over the store.
//! - `spawn`  — agent backends (Rust, process, remote) and the layers that wrap them.
//! - `llm`    — the OpenAI-compatible LLM agent backend (turns, tools, usage).
//! - `mcp`    — MCP client: an MCP server's tools as agents (`rmcp`, the official SDK).
//! - `lua`    — sandboxed VMs, the `swarm.*` modules, the `lua` agent backend.
//! - `run`    — blueprints: load, validate, build agent stacks, run a flow; `Runs`, the one owner of executing runs.
//! - `reload` — hot reload: live blueprint versions kept current by a file watcher.
//! - `repl`   — `swarm repl`: a Lua session on a live engine.
//! - `serve`  — `swarm serve`: runs over HTTP, bearer tokens, SSE events, the workers' routes.
//! - `worker` — `swarm worker`: claims remote steps from a server, runs them as process agents.
//! - `cli`    — the `swarm` command line.
//!
//! `repl` and `cli` are behind the default `cli` feature: an embedder that
//! turns default features off does not compile clap or rustyline.

pub mod auth;
#[cfg(feature = "cli")]
pub mod cli;
pub mod duration;
pub mod engine;
pub mod llm;
pub mod lua;
pub mod mcp;
pub mod mob;
pub mod reload;
#[cfg(feature = "cli")]
pub mod repl;
pub mod run;
pub mod serve;
pub mod spawn;
pub mod store;
pub mod text;
pub mod worker;
