//! `swarm runs`, `show`, `answer`, `cancel`: the journal from the outside.

use super::Db;
use crate::auth::Signer;
use crate::engine::{Engine, EngineConfig, now_ms};
use crate::run::service::Authority;
use crate::run::{self, Runs};
use crate::store::{Location, RunRecord, RunStatus, Store, wait};
use clap::Args;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Args)]
pub struct RunsArgs {
    /// Only runs with this status.
    #[arg(long, value_parser = run_status())]
    status: Option<RunStatus>,
    /// Print the runs as one JSON array.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    journal: Db,
}

#[derive(Args)]
pub struct PruneArgs {
    /// Only runs last updated longer ago than this.
    #[arg(long, value_name = "DURATION", default_value = "30d",
          value_parser = super::parse_duration)]
    older_than: std::time::Duration,
    /// Only runs with these statuses (finished ones only: pass, blocked,
    /// cancelled).
    #[arg(long, value_delimiter = ',', default_value = "pass,blocked,cancelled",
          value_parser = finished_status)]
    status: Vec<RunStatus>,
    /// Keep this many of the newest matching runs.
    #[arg(long, value_name = "N", default_value_t = 0)]
    keep_last: usize,
    #[command(flatten)]
    journal: Db,
}

#[derive(Args)]
pub struct AnswerArgs {
    /// The run's id (see `swarm runs`).
    run: String,
    /// The question's name (its `key`, or its text).
    key: String,
    /// JSON, or plain text.
    value: String,
    #[command(flatten)]
    journal: Db,
}

#[derive(Args)]
pub struct CancelArgs {
    /// The run's id (see `swarm runs`).
    run: String,
    #[command(flatten)]
    journal: Db,
}

/// The journal and where it is, or an exit code after saying why not.
pub(super) fn store(j: &Db) -> Result<(Arc<dyn Store>, Location), ExitCode> {
    j.open().map_err(fail)
}

/// Calls the run service on journal `s` from a synchronous command, as
/// the user at this terminal.
pub(super) fn on_runs<T>(s: &Arc<dyn Store>, call: impl AsyncFnOnce(&Runs, &Authority) -> T) -> T {
    super::runtime().block_on(async {
        let engine = Engine::new(EngineConfig::default(), Signer::random());
        let runs = Runs::new(engine, Some(s.clone()));
        call(&runs, &Authority::local()).await
    })
}

/// The journal and run `id` in it, or an exit code after saying why not.
pub(super) fn journaled_run(j: &Db, id: &str) -> Result<(Arc<dyn Store>, RunRecord), ExitCode> {
    let (s, at) = store(j)?;
    match on_runs(&s, async |runs, who| runs.record(who, id).await) {
        Ok(r) => Ok((s, r)),
        Err(run::RunError::UnknownRun(_)) => Err(fail(format!("no run `{id}` in {at}"))),
        Err(e) => Err(fail(e)),
    }
}

pub(super) fn fail(message: impl std::fmt::Display) -> ExitCode {
    errln!("error: {message}");
    ExitCode::from(2)
}

fn ago(ms: u64) -> String {
    let s = now_ms().saturating_sub(ms) / 1000;
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

pub fn list(args: RunsArgs) -> ExitCode {
    let s = match store(&args.journal) {
        Ok((s, _)) => s,
        Err(c) => return c,
    };
    let runs = match on_runs(&s, async |runs, who| runs.list(who, args.status).await) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    if args.json {
        outln!("{}", serde_json::to_string(&runs).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    outln!(
        "{:<28} {:<14} {:<13} {:>6} {:>9}  {:<10} UPDATED",
        "RUN",
        "BLUEPRINT",
        "STATUS",
        "STEPS",
        "TOKENS",
        "STARTED"
    );
    for r in runs {
        let status = match r.status {
            st if st.is_resumable() => format!("{st} ↻"),
            st => st.to_string(),
        };
        // Padded by characters, not bytes: `↻` is one column, three bytes.
        let status = format!(
            "{status}{}",
            " ".repeat(13usize.saturating_sub(status.chars().count()))
        );
        // Lineage: the run a fork was made from, and where.
        let fork = r
            .fork
            .as_ref()
            .map_or(String::new(), |f| format!("  ← {}@{}", f.run, f.at));
        outln!(
            "{:<28} {:<14} {} {:>6} {:>9}  {:<10} {}{fork}",
            r.id,
            r.blueprint,
            status,
            r.steps,
            match r.tokens {
                0 => "-".to_string(),
                n => crate::llm::thousands(n),
            },
            ago(r.created_ms),
            ago(r.updated_ms)
        );
    }
    ExitCode::SUCCESS
}

pub fn answer(args: AnswerArgs) -> ExitCode {
    use crate::run::service::Answered;
    let (s, r) = match journaled_run(&args.journal, &args.run) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let value = run::parse_answer(&args.value);
    match on_runs(&s, async |runs, who| {
        runs.answer(who, &r.id, &args.key, value).await
    }) {
        Ok(Answered::Continues) => outln!("answered; run {} continues", r.id),
        Ok(Answered::NeedsResume) => {
            outln!("answered; continue it with `swarm resume {}`", r.id)
        }
        Err(e) => return fail(e),
    }
    ExitCode::SUCCESS
}

pub fn cancel(args: CancelArgs) -> ExitCode {
    use crate::run::service::Cancelled;
    let (s, r) = match journaled_run(&args.journal, &args.run) {
        Ok(x) => x,
        Err(c) => return c,
    };
    match on_runs(&s, async |runs, who| runs.cancel(who, &r.id).await) {
        Ok(Cancelled::Now) => outln!("cancelled"),
        Ok(Cancelled::Requested) => outln!("cancel requested; the run's owner stops it"),
        Err(e) => return fail(e),
    }
    ExitCode::SUCCESS
}

/// `--status` takes the names of [`RunStatus`], listed in `--help`.
fn run_status() -> impl clap::builder::TypedValueParser<Value = RunStatus> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(RunStatus::ALL.map(RunStatus::as_str))
        .try_map(|s| s.parse::<RunStatus>())
}

fn finished_status(s: &str) -> Result<RunStatus, String> {
    let st: RunStatus = s.parse()?;
    if st.is_finished() {
        Ok(st)
    } else {
        Err(format!(
            "`{s}` is not a finished status (pass, blocked, cancelled)"
        ))
    }
}

/// Deletes finished runs (their journal, events and questions) and gives
/// the space back. Running, waiting, interrupted and diverged runs are
/// never touched.
pub fn prune(args: PruneArgs) -> ExitCode {
    let (s, at) = match store(&args.journal) {
        Ok(x) => x,
        Err(c) => return c,
    };
    // Only a SQLite journal has a file whose size means something.
    let size = || {
        at.sqlite_path()
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
    };
    let before = size();
    let filter = crate::store::Prune {
        before_ms: now_ms().saturating_sub(args.older_than.as_millis() as u64),
        statuses: args.status.clone(),
        keep_last: args.keep_last,
    };
    match wait(s.prune(&filter)) {
        Ok(ids) => {
            let statuses: Vec<&str> = args.status.iter().map(|s| s.as_str()).collect();
            let space = match (before, size()) {
                (Some(before), Some(after)) => {
                    format!("; {at} is {} KiB (was {} KiB)", after / 1024, before / 1024)
                }
                _ => String::new(),
            };
            outln!(
                "pruned {} run{} ({}){space}",
                ids.len(),
                if ids.len() == 1 { "" } else { "s" },
                statuses.join(", "),
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
