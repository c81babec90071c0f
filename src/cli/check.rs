//! `swarm check FILE|DIR...`: validate blueprints without running them.
//!
//! A directory is checked the way `swarm dev DIR` loads it: its `.lua`
//! files that call `swarm.blueprint` (the others are helpers, skipped).
//! Every problem of every file is reported; exit status 2 if any. Besides
//! validation, it catches what it can without running: a literal agent
//! name in `swarm.step("…")` that no agent has (an error, with the closest
//! name), and a process agent whose program is not found (a warning).

use crate::auth::Signer;
use crate::engine::{Engine, EngineConfig};
use crate::reload::{blueprint_files, is_blueprint};
use crate::run::{self, BlueprintError};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args)]
pub struct CheckArgs {
    /// Blueprint files, or directories of them.
    #[arg(required = true, value_name = "FILE|DIR")]
    paths: Vec<PathBuf>,
}

pub fn run(args: CheckArgs) -> ExitCode {
    let rt = super::runtime();
    let _guard = rt.enter();
    let engine = Engine::new(EngineConfig::default(), Signer::random());
    let files = match targets(&args.paths) {
        Ok(f) => f,
        Err(msg) => {
            errln!("error: {msg}");
            return ExitCode::from(2);
        }
    };
    let mut failed = 0;
    for file in &files {
        if !check_one(&engine, file) {
            failed += 1;
        }
    }
    if failed > 0 {
        errln!("error: {failed} of {} blueprints have errors", files.len());
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

/// The blueprint files named by `paths`; helpers given by name are skipped
/// with a note.
fn targets(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let found = blueprint_files(p);
            if found.is_empty() {
                return Err(format!("{}: no blueprints in this directory", p.display()));
            }
            files.extend(found);
            continue;
        }
        match std::fs::read_to_string(p) {
            Ok(src) if !is_blueprint(&src) => errln!(
                "note: skipping {} (it does not call swarm.blueprint: a helper)",
                p.display()
            ),
            _ => files.push(p.clone()),
        }
    }
    Ok(files)
}

/// Checks one file; prints `ok …` or its errors. True when it is fine.
fn check_one(engine: &Engine, file: &Path) -> bool {
    let checked = run::check::check_file(engine, file);
    match &checked.error {
        Some(e @ run::RunError::Blueprint(BlueprintError::Invalid(_))) => {
            super::report_error(e);
            return false;
        }
        Some(e) => {
            errln!("error: {}: {e}", file.display());
            return false;
        }
        None => {}
    }
    for e in &checked.unknown {
        errln!("error: {e}");
    }
    for w in &checked.warnings {
        errln!("warning: {w}");
    }
    if let (true, Some(bp)) = (checked.ok(), &checked.blueprint) {
        let n = bp.agents.len();
        outln!(
            "ok {} (blueprint `{}`, {n} agent{})",
            file.display(),
            bp.name,
            if n == 1 { "" } else { "s" }
        );
        for (agent, tools) in &checked.tools {
            outln!("  {agent}: {}", tools.join(", "));
        }
        if let Some(schema) = bp.input_schema() {
            outln!("  input: {}", input_summary(schema));
        }
    }
    checked.ok()
}

/// A declared input in one line: an object's fields with their types
/// (`*` marks the required ones), else the schema's type, else the JSON.
fn input_summary(schema: &serde_json::Value) -> String {
    let kind = |s: &serde_json::Value| match &s["type"] {
        serde_json::Value::String(t) => t.clone(),
        serde_json::Value::Null => "any".to_string(),
        other => other.to_string(),
    };
    let Some(props) = schema["properties"].as_object() else {
        return match schema.get("type") {
            Some(_) => kind(schema),
            None => schema.to_string(),
        };
    };
    let required: Vec<&str> = (schema["required"].as_array().into_iter().flatten())
        .filter_map(serde_json::Value::as_str)
        .collect();
    let fields: Vec<String> = props
        .iter()
        .map(|(name, s)| {
            let star = if required.contains(&name.as_str()) {
                "*"
            } else {
                ""
            };
            format!("{name}{star}: {}", kind(s))
        })
        .collect();
    format!("object {{ {} }} (* required)", fields.join(", "))
}
