//! Checking a blueprint without running it, for every face that offers it
//! (`swarm check`, the MCP tool `check_blueprint`): it must load and
//! validate; a literal agent name in `swarm.step("…")` that no agent has is
//! an error (with the closest name); what each agent's kind finds missing
//! on this machine (a program not on PATH) is a warning.

use super::{Blueprint, RunError, RunOptions};
use crate::engine::Engine;
use std::path::Path;

/// What checking one file found.
pub struct Checked {
    /// The blueprint, when it loaded.
    pub blueprint: Option<Blueprint>,
    /// Why it did not load.
    pub error: Option<RunError>,
    /// `file:line: …` for each literal step name no agent has.
    pub unknown: Vec<String>,
    /// `file: agent …: …` for what its agents miss here.
    pub warnings: Vec<String>,
    /// Each tool family's (MCP agent's) tools, as listed by its server.
    pub tools: Vec<(String, Vec<String>)>,
}

impl Checked {
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.unknown.is_empty()
    }
}

/// Checks the blueprint at `file` (see the module doc).
pub fn check_file(engine: &Engine, file: &Path) -> Checked {
    let bp = match super::prepare(engine, file, RunOptions::default()) {
        Ok(r) => r.blueprint.clone(),
        Err(e) => {
            return Checked {
                blueprint: None,
                error: Some(e),
                unknown: Vec::new(),
                warnings: Vec::new(),
                tools: Vec::new(),
            };
        }
    };
    let dir = super::blueprint::dir_of(&bp.path);
    let mut warnings: Vec<String> = bp
        .agents
        .iter()
        .flat_map(|a| a.backend.preflight(&a.name, &dir))
        .map(|w| format!("{}: {w}", bp.chunk))
        .collect();
    let mut tools = Vec::new();
    for a in &bp.agents {
        match a.backend.tool_names(&a.name) {
            Some(Ok(names)) => tools.push((a.name.clone(), names)),
            Some(Err(why)) => warnings.push(format!(
                "{}: agent `{}`: its tools could not be listed: {why}",
                bp.chunk, a.name
            )),
            None => {}
        }
    }
    let unknown = unknown_steps(&bp, &tools);
    Checked {
        blueprint: Some(bp),
        error: None,
        unknown,
        warnings,
        tools,
    }
}

/// `swarm.step("name", …)` / `swarm.pstep("name", …)` with a literal name
/// that no agent of the blueprint has. A name `fs.x` of a tool family
/// (`fs`, an MCP agent) must be one of the tools its server listed; when
/// they could not be listed, any is let through.
fn unknown_steps(bp: &Blueprint, listed: &[(String, Vec<String>)]) -> Vec<String> {
    let mut names: Vec<String> = bp.agents.iter().map(|a| a.name.clone()).collect();
    for (family, tools) in listed {
        names.retain(|n| n != family);
        names.extend(tools.iter().map(|t| format!("{family}.{t}")));
    }
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let families: Vec<&str> = bp
        .agents
        .iter()
        .filter(|a| a.backend.family() && !listed.iter().any(|(f, _)| *f == a.name))
        .map(|a| a.name.as_str())
        .collect();
    let mut out = Vec::new();
    for (i, line) in bp.source.lines().enumerate() {
        for call in ["swarm.step(", "swarm.pstep("] {
            let mut rest = line;
            while let Some(at) = rest.find(call) {
                let before = &rest[..at];
                let after = &rest[at + call.len()..];
                rest = after;
                if before.contains("--") {
                    break;
                }
                let Some(name) = literal(after) else { continue };
                let of_family = name
                    .split_once('.')
                    .is_some_and(|(f, _)| families.contains(&f));
                if names.contains(&name) || of_family {
                    continue;
                }
                out.push(unknown_step(bp, &names, i + 1, name));
            }
        }
    }
    out
}

fn unknown_step(bp: &Blueprint, names: &[&str], line: usize, name: &str) -> String {
    let hint = crate::text::did_you_mean(name, names.iter().copied());
    format!(
        "{}:{line}: swarm.step: no agent named `{name}`{hint}; agents: {}",
        bp.chunk,
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    )
}

/// The string literal at the start of `s` (after spaces), if any.
fn literal(s: &str) -> Option<&str> {
    let s = s.trim_start();
    let quote = s.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let body = &s[1..];
    let end = body.find(quote)?;
    let name = &body[..end];
    (!name.contains('\\')).then_some(name)
}
