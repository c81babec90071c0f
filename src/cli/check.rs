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
use crate::run::{self, Blueprint, BlueprintError, RunOptions};
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
    let bp = match run::prepare(engine, file, RunOptions::default()) {
        Ok(r) => r.blueprint.clone(),
        Err(e @ run::RunError::Blueprint(BlueprintError::Invalid(_))) => {
            super::report_error(&e);
            return false;
        }
        Err(e) => {
            errln!("error: {}: {e}", file.display());
            return false;
        }
    };
    let unknown = unknown_steps(&bp);
    for e in &unknown {
        errln!("error: {e}");
    }
    let dir = run::blueprint::dir_of(&bp.path);
    for a in &bp.agents {
        for w in a.backend.preflight(&a.name, &dir) {
            errln!("warning: {}: {w}", bp.chunk);
        }
    }
    if unknown.is_empty() {
        let n = bp.agents.len();
        outln!(
            "ok {} (blueprint `{}`, {n} agent{})",
            file.display(),
            bp.name,
            if n == 1 { "" } else { "s" }
        );
    }
    unknown.is_empty()
}

/// `swarm.step("name", …)` / `swarm.pstep("name", …)` with a literal name
/// that no agent of the blueprint has.
fn unknown_steps(bp: &Blueprint) -> Vec<String> {
    let names: Vec<&str> = bp.agents.iter().map(|a| a.name.as_str()).collect();
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
                if names.contains(&name) {
                    continue;
                }
                let hint = crate::text::did_you_mean(name, names.iter().copied());
                out.push(format!(
                    "{}:{}: swarm.step: no agent named `{name}`{hint}; agents: {}",
                    bp.chunk,
                    i + 1,
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ));
            }
        }
    }
    out
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
