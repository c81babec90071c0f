//! MCP (the Model Context Protocol), client side: an MCP server's tools
//! as agents. A blueprint's `swarm.agent.mcp { command = {...} }` named
//! `fs` makes each allowed tool of that server an agent `fs.<tool>`; a step
//! of one is one `tools/call`. The protocol and its framing are the
//! official Rust SDK's (`rmcp`); this module owns what the SDK leaves to a
//! host: starting the server lazily with a clean environment, reusing it
//! for every step, restarting it after a crash, bounding what it may send,
//! checking arguments against each tool's input schema, and mapping every
//! failure to a typed fault that names the agent and the tool.
//!
//! - `client.rs` — [`McpClient`]: one server connection, started on first
//!   use, its tool list (refreshed on `tools/list_changed`), calls.
//! - `stdio.rs`  — the stdio transport: the child process, its stderr as
//!   events, its stdout bounded and checked before the SDK reads it.
//! - `result.rs` — a `tools/call` result as a step's value.
//! - `agent.rs`  — [`McpAgent`]: the spawner behind every `fs.<tool>`.
//!
//! The journal, layers and the role gate apply as to any agent: an MCP
//! tool step is a step, dispatched through its stack.

mod agent;
mod client;
mod http;
mod result;
mod stdio;

pub use agent::McpAgent;
pub use client::{McpClient, ToolEntry};
pub use result::to_value;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// An MCP agent as the blueprint declares it.
#[derive(Debug, Clone)]
pub struct McpSpec {
    /// The server's program and arguments (no shell), for stdio.
    pub command: Vec<String>,
    /// The server's streamable-HTTP endpoint, instead of `command`.
    pub url: Option<String>,
    /// The NAME of the host variable holding the HTTP bearer token.
    pub bearer_env: Option<String>,
    pub cwd: Option<PathBuf>,
    /// Variables set for the server, on top of the clean environment.
    pub env: BTreeMap<String, String>,
    /// Host variables passed through by name (allow-listed).
    pub inherit: Vec<String>,
    /// The tools offered as agents; `None`: all of them.
    pub tools: Option<Vec<String>>,
    /// Time one tool call may take.
    pub timeout: Duration,
    /// Time the server may take to start and answer `initialize`.
    pub start_timeout: Duration,
    /// Bytes of one message from the server accepted before it is treated
    /// as a fault (`too_large`) and the server is stopped.
    pub max_message: usize,
}

impl McpSpec {
    pub fn new(command: Vec<String>) -> McpSpec {
        McpSpec {
            command,
            url: None,
            bearer_env: None,
            cwd: None,
            env: BTreeMap::new(),
            inherit: Vec::new(),
            tools: None,
            timeout: Duration::from_secs(300),
            start_timeout: Duration::from_secs(60),
            max_message: 16 << 20,
        }
    }

    /// Whether the allow-list lets `tool` through.
    pub fn allows(&self, tool: &str) -> bool {
        self.tools
            .as_ref()
            .is_none_or(|list| list.iter().any(|t| t == tool))
    }
}

/// Why an MCP call failed, each with a stable code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Fault {
    /// The server could not be started, or did not complete the handshake.
    #[error("the MCP server did not start: {0}")]
    Start(String),
    /// The connection ended (the server exited or crashed).
    #[error("the MCP server closed the connection: {0}")]
    Closed(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The server sent something that is not MCP.
    #[error("the MCP server broke the protocol: {0}")]
    Protocol(String),
    /// A message over [`McpSpec::max_message`].
    #[error("the MCP server sent a message over {0} bytes")]
    TooLarge(usize),
    #[error("no tool `{tool}` (tools: {known})")]
    UnknownTool { tool: String, known: String },
    /// Arguments that do not match the tool's input schema.
    #[error("the arguments do not match the tool's input schema: {0}")]
    BadArguments(String),
    /// The tool ran and reported an error (`isError`, or a JSON-RPC error).
    #[error("{0}")]
    Tool(String),
}

impl Fault {
    pub fn code(&self) -> &'static str {
        match self {
            Fault::Start(_) => "mcp_start",
            Fault::Closed(_) => "mcp_closed",
            Fault::Timeout(_) => "timeout",
            Fault::Protocol(_) => "mcp_protocol",
            Fault::TooLarge(_) => "too_large",
            Fault::UnknownTool { .. } => "unknown_tool",
            Fault::BadArguments(_) => "bad_arguments",
            Fault::Tool(_) => "tool_error",
        }
    }

    /// Whether the connection is unusable after this fault (the next call
    /// starts the server again).
    fn breaks_connection(&self) -> bool {
        matches!(
            self,
            Fault::Start(_) | Fault::Closed(_) | Fault::Protocol(_) | Fault::TooLarge(_)
        )
    }
}
