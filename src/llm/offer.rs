//! The tools one LLM step offers its model, and the names the model
//! knows them by. Agent names may hold characters a model's function name
//! may not (`fs.read_file`: OpenAI accepts only `[A-Za-z0-9_-]`, at most 64),
//! so each tool is offered under a wire name (`fs_read_file`) and a call
//! is mapped back to its agent here, in one place.

use super::ToolInfo;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// A family of tools one agent offers (an MCP server's), listed on demand:
/// listing may start its server.
pub trait ToolCatalog: Send + Sync {
    /// Each tool as `(agent name, description)`, e.g. `("fs.read_file", …)`.
    fn tools(&self) -> BoxFuture<'static, Result<Vec<(String, ToolInfo)>, Value>>;
}

/// The tools of one step, by wire name.
#[derive(Default)]
pub struct Offered {
    by_wire: BTreeMap<String, (String, ToolInfo)>,
    /// Wire names in the order the agent's `tools` listed them.
    order: Vec<String>,
}

impl Offered {
    pub fn new(tools: Vec<(String, ToolInfo)>) -> Offered {
        let mut o = Offered::default();
        for (name, info) in tools {
            let base = wire_name(&name);
            let mut wire = base.clone();
            let mut n = 2;
            while o.by_wire.contains_key(&wire) {
                wire = format!("{}_{n}", &base[..base.len().min(60)]);
                n += 1;
            }
            o.order.push(wire.clone());
            o.by_wire.insert(wire, (name, info));
        }
        o
    }

    /// The `tools` of a chat-completions request.
    pub fn wire(&self) -> Vec<Value> {
        self.order
            .iter()
            .map(|w| {
                let (_, info) = &self.by_wire[w];
                json!({ "type": "function", "function": {
                    "name": w, "description": info.description, "parameters": info.params } })
            })
            .collect()
    }

    /// The agent and description behind a wire name.
    pub fn get(&self, wire: &str) -> Option<(&str, &ToolInfo)> {
        self.by_wire.get(wire).map(|(n, i)| (n.as_str(), i))
    }

    /// The wire names, for messages.
    pub fn names(&self) -> Vec<&str> {
        self.order.iter().map(String::as_str).collect()
    }
}

/// `name` with every character a function name may not hold as `_`, cut
/// to 64 characters. Names that are already valid are kept as they are.
pub fn wire_name(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '_' | '-' => c,
            _ => '_',
        })
        .take(64)
        .collect()
}
