//! The `mcp` agent kind: `swarm.agent.mcp { command = {...} }`, an MCP
//! server whose tools become agents `name.<tool>` (see `crate::mcp`). Its
//! `tools` (a profile field every kind has) is the allow-list here. Each
//! run gets its own client: the server starts on the run's first use and
//! stops with the run.

use super::{Backend, Decl, Kind};
use crate::engine::{SpawnError, Spawner};
use crate::mcp::{McpAgent, McpClient, McpSpec};
use crate::run::agents::Build;
use crate::run::blueprint::BlueprintError;
use crate::spawn::kinds::AgentKind;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// How long `swarm check` waits for a server to start and list its tools.
const CHECK_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

pub(super) const MCP: Kind = Kind {
    info: AgentKind {
        name: "mcp",
        about: "an MCP server (`command = { argv... }`) whose tools are agents `name.<tool>`",
        fields: &[
            ("command", "table"),
            ("url", "string"),
            ("bearer_env", "string"),
            ("cwd", "string"),
            ("env", "table"),
            ("inherit", "table"),
            ("timeout", "duration"),
            ("start_timeout", "duration"),
            ("max_message", "number"),
        ],
        requires: (
            &["command", "url"],
            "is required (a list: program, args...; or `url` for a streamable-HTTP server)",
        ),
    },
    read: read_mcp,
};

fn read_mcp(d: &Decl<'_>) -> Result<Arc<dyn Backend>, BlueprintError> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default)]
        command: Vec<String>,
        url: Option<String>,
        bearer_env: Option<String>,
        cwd: Option<String>,
        #[serde(default)]
        env: BTreeMap<String, String>,
        #[serde(default)]
        inherit: Vec<String>,
        max_message: Option<f64>,
    }
    // Validation checked every field's type; profile fields are ignored.
    let raw = Raw::deserialize(d.json()?).map_err(|e| d.problem("", e.to_string()))?;
    if raw.command.is_empty() && raw.url.is_none() {
        return Err(d.problem("command", "must name a program"));
    }
    if !raw.command.is_empty() && raw.url.is_some() {
        return Err(d.problem(
            "url",
            "is for an HTTP server; give `command` or `url`, not both",
        ));
    }
    let mut spec = McpSpec::new(raw.command);
    spec.url = raw.url;
    spec.bearer_env = raw.bearer_env;
    spec.cwd = Some(match raw.cwd {
        Some(c) => d.dir.join(c),
        None => d.dir.to_path_buf(),
    });
    spec.env = raw.env;
    spec.inherit = raw.inherit;
    if let Some(t) = d.duration("timeout")? {
        spec.timeout = t;
    }
    if let Some(t) = d.duration("start_timeout")? {
        spec.start_timeout = t;
    }
    if let Some(max) = raw.max_message {
        spec.max_message = max as usize;
    }
    spec.tools = match d.profile.get("tools") {
        None | Some(serde_json::Value::Null) => None,
        // An empty Lua table decodes as an object.
        Some(serde_json::Value::Object(o)) if o.is_empty() => Some(Vec::new()),
        Some(v) => Some(
            Vec::<String>::deserialize(v)
                .map_err(|_| d.problem("tools", "must be a list of tool names"))?,
        ),
    };
    Ok(Arc::new(Mcp(spec)))
}

#[derive(Debug)]
struct Mcp(McpSpec);

impl Backend for Mcp {
    fn build(&self, b: &Build<'_>, agent: &str) -> Result<Arc<dyn Spawner>, SpawnError> {
        let inherit = self.0.inherit.iter().map(String::as_str);
        crate::spawn::secrets::check_all(agent, "inherit", inherit)?;
        let bearer = self.0.bearer_env.as_deref();
        crate::spawn::secrets::check_all(agent, "bearer_env", bearer)?;
        let client = Arc::new(McpClient::new(agent, self.0.clone()));
        let tools = Arc::new(McpAgent::new(client));
        b.catalogs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(agent.to_string(), tools.clone());
        Ok(tools)
    }

    fn family(&self) -> bool {
        true
    }

    /// Starts the server on a thread of its own (any caller, async or
    /// not, may ask), lists its allowed tools and stops it.
    fn tool_names(&self, agent: &str) -> Option<Result<Vec<String>, String>> {
        let mut spec = self.0.clone();
        spec.start_timeout = spec.start_timeout.min(CHECK_DEADLINE);
        spec.timeout = spec.timeout.min(CHECK_DEADLINE);
        let agent = agent.to_string();
        let listed = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let client = McpClient::new(&agent, spec);
                let tools = client
                    .tools()
                    .await
                    .map_err(|f| format!("{} ({})", f, f.code()));
                client.stop().await;
                tools.map(|t| t.keys().cloned().collect())
            })
        })
        .join()
        .unwrap_or_else(|_| Err("listing the tools panicked".into()));
        Some(listed)
    }

    /// The server's program is neither on PATH nor a file.
    fn preflight(&self, agent: &str, dir: &Path) -> Vec<String> {
        if let Some(var) = &self.0.bearer_env {
            return match crate::spawn::secrets::may_name(var) {
                Err(why) => vec![format!("agent `{agent}`: bearer_env names ${var}: {why}")],
                Ok(()) if std::env::var_os(var).is_none() => vec![format!(
                    "agent `{agent}`: bearer_env names ${var}, which is not set"
                )],
                Ok(()) => Vec::new(),
            };
        }
        let dir = self.0.cwd.as_deref().unwrap_or(dir);
        super::program_missing(agent, self.0.command.first(), dir)
    }
}
