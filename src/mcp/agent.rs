//! [`McpAgent`]: the spawner behind every tool agent `name.<tool>` of one
//! MCP agent. The run registers it once under `name.*` (so the
//! blueprint's layers wrap it once); each step reads its tool from the
//! task's agent name, and its input is the tool's arguments.

use super::{Fault, McpClient};
use crate::engine::{Outcome, SpawnCtx, Spawner, Worker};
use crate::llm::{ToolCatalog, ToolInfo};
use crate::spawn::process::Sink;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use std::sync::Arc;

/// Every tool of one MCP server, as agents.
#[derive(Clone)]
pub struct McpAgent {
    client: Arc<McpClient>,
}

impl McpAgent {
    pub fn new(client: Arc<McpClient>) -> McpAgent {
        McpAgent { client }
    }

    pub fn client(&self) -> &Arc<McpClient> {
        &self.client
    }
}

impl Spawner for McpAgent {
    fn spawn(&self, ctx: SpawnCtx) -> Worker {
        let client = self.client.clone();
        Box::pin(async move {
            let name = client.agent();
            let tool = ctx
                .agent
                .strip_prefix(name)
                .and_then(|t| t.strip_prefix('.'))
                .unwrap_or(&ctx.agent)
                .to_string();
            let (engine, token) = (ctx.engine.clone(), ctx.token.clone());
            let sink: Sink = Arc::new(move |kind, data| {
                let _ = engine.emit(&token, kind, data);
            });
            let call = client.call(&tool, (*ctx.input).clone(), sink);
            let answer = tokio::select! {
                r = call => r.and_then(super::to_value),
                _ = ctx.cancel.cancelled() => return Ok(Outcome::Cancelled),
            };
            Ok(match answer {
                Ok(v) => Outcome::Pass(v),
                Err(f) => Outcome::Blocked(fault_value(name, &tool, &f)),
            })
        })
    }
}

/// A fault as a blocked step's result: its code, and a message naming the
/// agent and the tool.
fn fault_value(agent: &str, tool: &str, f: &Fault) -> Value {
    json!({
        "code": f.code(),
        "error": format!("agent `{agent}`, tool `{tool}`: {f}"),
        "agent": agent,
        "tool": tool,
    })
}

impl ToolCatalog for McpAgent {
    fn tools(&self) -> BoxFuture<'static, Result<Vec<(String, ToolInfo)>, Value>> {
        let client = self.client.clone();
        Box::pin(async move {
            let name = client.agent().to_string();
            let tools = client
                .tools()
                .await
                .map_err(|f| fault_value(&name, "*", &f))?;
            Ok(tools
                .values()
                .map(|t| {
                    let info = ToolInfo {
                        description: t.description.clone(),
                        params: t.schema.clone(),
                    };
                    (format!("{name}.{}", t.name), info)
                })
                .collect())
        })
    }
}
