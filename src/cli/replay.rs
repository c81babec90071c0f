//! `swarm replay RUN...`: replays runs' journals against a blueprint (each
//! run's own file as it is now, or `--blueprint FILE`) with nothing
//! dispatched, and says per run `ok` or where it diverges (file:line and
//! both sides). Exit status: 0 all ok, 1 one diverged, 2 a run or
//! blueprint could not be checked. For CI on a copy of production
//! journals: `swarm import` them into a scratch store, then replay.

use super::Db;
use super::runs::{fail, on_runs, store};
use crate::run::{RunOptions, Verdict};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct ReplayArgs {
    /// The runs to check (see `swarm runs`).
    #[arg(required = true, value_name = "RUN")]
    runs: Vec<String>,
    /// Check against this blueprint file instead of each run's own.
    #[arg(long, value_name = "FILE")]
    blueprint: Option<PathBuf>,
    /// One JSON line per run: `{run, verdict, ...}`.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    journal: Db,
}

/// How long one check may take: it dispatches nothing, so only a flow
/// that waits (a long `swarm.sleep` still ahead) comes near it.
const CHECK_DEADLINE: std::time::Duration = std::time::Duration::from_secs(300);

pub fn replay(args: ReplayArgs) -> ExitCode {
    let (s, _) = match store(&args.journal) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let (mut diverged, mut failed) = (false, false);
    for id in &args.runs {
        let opts = RunOptions {
            deadline: Some(CHECK_DEADLINE),
            print: Some(std::sync::Arc::new(|line: &str| errln!("{line}"))),
            ..RunOptions::default()
        };
        let checked = on_runs(&s, async |runs, who| {
            runs.replay(who, id, args.blueprint.as_deref(), opts).await
        });
        match checked {
            Ok(v) => {
                diverged |= !v.is_ok();
                say(id, &v, args.json);
            }
            Err(e) => {
                failed = true;
                if args.json {
                    let line = serde_json::json!({ "run": id, "verdict": "error",
                        "code": e.code(), "message": e.to_string() });
                    outln!("{line}");
                } else {
                    let _ = fail(format!("{id}: {e}"));
                }
            }
        }
    }
    match (failed, diverged) {
        (true, _) => ExitCode::from(2),
        (false, true) => ExitCode::from(1),
        (false, false) => ExitCode::SUCCESS,
    }
}

fn say(id: &str, v: &Verdict, json: bool) {
    if json {
        let mut line = serde_json::json!(v);
        line["run"] = serde_json::json!(id);
        outln!("{line}");
        return;
    }
    match v {
        Verdict::Ok {
            replayed,
            waits_at: None,
        } => outln!("{id} ok ({replayed} entries replayed)"),
        Verdict::Ok {
            replayed,
            waits_at: Some(at),
        } => outln!("{id} ok ({replayed} entries replayed; position {at} would run next)"),
        Verdict::Diverged {
            at: Some(at),
            message,
        } => {
            outln!("{id} diverges at {at}: {message}")
        }
        Verdict::Diverged { at: None, message } => outln!("{id} diverges: {message}"),
        Verdict::Unchecked { at, message } => outln!(
            "{id} not confirmed{}: {message}",
            at.as_ref().map_or(String::new(), |a| format!(" at {a}"))
        ),
    }
}
