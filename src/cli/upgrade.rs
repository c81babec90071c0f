//! `swarm upgrade RUN... [--check]`: moves stopped runs (waiting,
//! interrupted, diverged) to their blueprint as it is now, each only when
//! its journal replays there (see `run::upgrade`); then `swarm resume`
//! continues it without `--force`. Exit status: 0 every run upgraded or
//! current, 1 one was kept on its version, 2 one could not be checked.

use super::Db;
use super::runs::{fail, on_runs};
use crate::run::{RunOptions, Upgraded, Verdict};
use clap::Args;
use std::process::ExitCode;

#[derive(Args)]
pub struct UpgradeArgs {
    /// The runs to upgrade (see `swarm runs`).
    #[arg(required = true, value_name = "RUN")]
    runs: Vec<String>,
    /// Say what would happen; change nothing.
    #[arg(long)]
    check: bool,
    #[command(flatten)]
    journal: Db,
}

pub fn upgrade(args: UpgradeArgs) -> ExitCode {
    let opened = match args.check {
        true => args.journal.open().map(|(s, _)| s),
        false => args.journal.open_to_write(false).map(|(s, _)| s),
    };
    let s = match opened {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let (mut kept, mut failed) = (false, false);
    for id in &args.runs {
        let opts = RunOptions {
            deadline: Some(std::time::Duration::from_secs(300)),
            print: Some(std::sync::Arc::new(|line: &str| errln!("{line}"))),
            ..RunOptions::default()
        };
        let done = on_runs(&s, async |runs, who| {
            runs.upgrade(who, id, args.check, opts).await
        });
        let would = if args.check {
            "would upgrade"
        } else {
            "upgraded"
        };
        match done {
            Ok(Upgraded::Current) => outln!("{id} current (its code has not changed)"),
            Ok(Upgraded::Moved { from, to }) => outln!("{id} {would} {from} → {to}"),
            Ok(Upgraded::Kept { verdict }) => {
                kept = true;
                let why = match verdict {
                    Verdict::Diverged {
                        at: Some(at),
                        message,
                    } => {
                        format!("diverges at {at}: {message}")
                    }
                    Verdict::Diverged { at: None, message } => format!("diverges: {message}"),
                    Verdict::Unchecked { at, message } => format!(
                        "not confirmed{}: {message}",
                        at.as_ref().map_or(String::new(), |a| format!(" at {a}"))
                    ),
                    Verdict::Ok { .. } => "replays".into(),
                };
                outln!("{id} kept on its version: {why}");
            }
            Err(e) => {
                failed = true;
                let _ = fail(format!("{id}: {e}"));
            }
        }
    }
    match (failed, kept) {
        (true, _) => ExitCode::from(2),
        (false, true) => ExitCode::from(1),
        (false, false) => ExitCode::SUCCESS,
    }
}
