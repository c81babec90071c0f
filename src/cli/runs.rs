//! `swarm runs`, `show`, `answer`, `cancel`: the journal from the outside.

use super::Db;
use crate::engine::now_ms;
use crate::run;
use crate::store::{RunRecord, RunStatus, Store, StoreError};
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
pub struct ShowArgs {
    /// The run's id (see `swarm runs`).
    run: String,
    /// Print NDJSON: one line with the run, its journal and questions, then
    /// one line per event (streamed, so a long run never builds one huge
    /// document). Takes the same --events/--after/--all as the table.
    #[arg(long)]
    json: bool,
    /// How many of the last events to show.
    #[arg(long, value_name = "N", default_value_t = 20)]
    events: usize,
    /// Show events after this event id instead of the last ones.
    #[arg(long, value_name = "ID")]
    after: Option<i64>,
    /// Show every event.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    journal: Db,
}

#[derive(Args)]
pub struct PruneArgs {
    /// Only runs last updated longer ago than this.
    #[arg(long, value_name = "DURATION", default_value = "30d",
          value_parser = super::run::parse_duration)]
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

/// The journal, or an exit code after saying why not.
pub(super) fn store(j: &Db) -> Result<Arc<dyn Store>, ExitCode> {
    j.open().map_err(fail)
}

/// The journal and run `id` in it, or an exit code after saying why not.
pub(super) fn journaled_run(j: &Db, id: &str) -> Result<(Arc<dyn Store>, RunRecord), ExitCode> {
    let s = store(j)?;
    match s.run(id) {
        Ok(Some(r)) => Ok((s, r)),
        Ok(None) => Err(fail(format!("no run `{id}` in {}", s.path().display()))),
        Err(e) => Err(fail(e)),
    }
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
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
        Ok(s) => s,
        Err(c) => return c,
    };
    let runs = match s.runs(args.status) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    if args.json {
        outln!("{}", serde_json::to_string(&runs).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    outln!(
        "{:<28} {:<14} {:<13} {:>6}  {:<10} UPDATED",
        "RUN",
        "BLUEPRINT",
        "STATUS",
        "STEPS",
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
        outln!(
            "{:<28} {:<14} {} {:>6}  {:<10} {}",
            r.id,
            r.blueprint,
            status,
            r.steps,
            ago(r.created_ms),
            ago(r.updated_ms)
        );
    }
    ExitCode::SUCCESS
}

pub fn show(args: ShowArgs) -> ExitCode {
    let (s, r) = match journaled_run(&args.journal, &args.run) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let (journal, questions, (total, tail)) = match (|| {
        Ok::<_, StoreError>((
            s.journal(&r.id)?,
            s.questions(&r.id)?,
            s.event_tail(&r.id, args.events)?,
        ))
    })() {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    // Which events: the last N, those after an id, or all (in pages).
    let (start, limit) = match (args.all, args.after) {
        (true, _) => (0, usize::MAX),
        (false, Some(after)) => (after, args.events),
        (false, None) => (tail, args.events),
    };
    let page = |after: i64, n: usize| s.events(&r.id, after, n.min(10_000));
    if args.json {
        let head = serde_json::json!({ "run": r, "journal": journal, "questions": questions, "events_total": total });
        outln!("{head}");
        let (mut after, mut left) = (start, limit);
        while left > 0 {
            let batch = match page(after, left) {
                Ok(b) => b,
                Err(e) => return fail(e),
            };
            let Some(last) = batch.last() else { break };
            after = last.id;
            left = left.saturating_sub(batch.len());
            for e in &batch {
                outln!("{}", serde_json::to_string(e).unwrap_or_default());
            }
        }
        return ExitCode::SUCCESS;
    }
    let events = match page(start, limit) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    outln!(
        "run        {}\nblueprint  {} ({})\nhash       {}",
        r.id,
        r.blueprint,
        r.path,
        r.hash
    );
    outln!("status     {}\ninput      {}", r.status, r.input);
    if let Some(res) = &r.result {
        outln!("result     {res}");
    }
    outln!("\njournal ({} entries)", journal.len());
    for e in &journal {
        let mut v = e.value.to_string();
        if v.len() > 60 {
            v.truncate(57);
            v.push_str("...");
        }
        let mark = if e.ok { "ok " } else { "err" };
        outln!("  {:<10} {:<6} {:<16} {mark} {v}", e.pos, e.kind, e.key);
    }
    for q in &questions {
        let a = q
            .answer
            .as_ref()
            .map_or("(unanswered)".to_string(), |a| a.to_string());
        outln!("  question {} `{}`: {a}", q.pos, q.name);
    }
    let notes = s
        .events_of_kind(&r.id, "layer_note", 10_000)
        .unwrap_or_default();
    let retries: Vec<_> = notes
        .iter()
        .filter(|e| e.payload.get("layer") == Some(&"retry".into()))
        .collect();
    if !retries.is_empty() {
        outln!("\nretries ({})", retries.len());
        for e in retries {
            let note = &e.payload["note"];
            let mut cause = note["cause"].to_string();
            if cause.len() > 80 {
                cause.truncate(77);
                cause.push_str("...");
            }
            outln!(
                "  task {} try {} {} → retried: {cause}",
                e.payload.get("task").unwrap_or(&serde_json::Value::Null),
                note["try"],
                note["outcome"].as_str().unwrap_or("?"),
            );
        }
    }
    let shown = if events.len() as u64 == total {
        format!("{total}")
    } else {
        format!(
            "{total}; showing {} (ids {}-{}): --events N, --after ID or --all for others",
            events.len(),
            events.first().map_or(0, |e| e.id),
            events.last().map_or(0, |e| e.id)
        )
    };
    outln!("\nevents ({shown})");
    let mut batch = events;
    let mut left = limit;
    loop {
        for e in &batch {
            outln!(
                "  #{:<6} {:<18} task {}",
                e.id,
                e.kind,
                e.payload.get("task").unwrap_or(&serde_json::Value::Null)
            );
        }
        left = left.saturating_sub(batch.len());
        let Some(last) = batch.last().map(|e| e.id) else {
            break;
        };
        if left == 0 {
            break;
        }
        batch = match page(last, left) {
            Ok(b) => b,
            Err(e) => return fail(e),
        };
    }
    ExitCode::SUCCESS
}

pub fn answer(args: AnswerArgs) -> ExitCode {
    let (s, r) = match journaled_run(&args.journal, &args.run) {
        Ok(x) => x,
        Err(c) => return c,
    };
    match s.answer(&r.id, &args.key, run::parse_answer(&args.value)) {
        Ok(true) => {
            match r.status {
                RunStatus::Running => outln!("answered; run {} continues", r.id),
                _ => outln!("answered; continue it with `swarm resume {}`", r.id),
            }
            ExitCode::SUCCESS
        }
        Ok(false) => {
            let open: Vec<String> = s
                .questions(&r.id)
                .unwrap_or_default()
                .into_iter()
                .filter(|q| q.answer.is_none())
                .map(|q| q.name)
                .collect();
            fail(format!(
                "run `{}` has no open question `{}` (open: {})",
                r.id,
                args.key,
                if open.is_empty() {
                    "none".into()
                } else {
                    open.join(", ")
                }
            ))
        }
        Err(e) => fail(e),
    }
}

pub fn cancel(args: CancelArgs) -> ExitCode {
    let (s, r) = match journaled_run(&args.journal, &args.run) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let done = match r.status {
        st if st.is_finished() => {
            return fail(format!("run `{}` already finished ({st})", r.id));
        }
        RunStatus::Running => s
            .request_cancel(&r.id)
            .map(|()| "cancel requested; the run's owner stops it"),
        _ => crate::store::wait(s.set_status(&r.id, RunStatus::Cancelled, None, None))
            .map(|()| "cancelled"),
    };
    match done {
        Ok(msg) => {
            outln!("{msg}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
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
    let s = match store(&args.journal) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let before = size(&s.path());
    let filter = crate::store::Prune {
        before_ms: now_ms().saturating_sub(args.older_than.as_millis() as u64),
        statuses: args.status.clone(),
        keep_last: args.keep_last,
    };
    match s.prune(&filter) {
        Ok(ids) => {
            let after = size(&s.path());
            outln!(
                "pruned {} run{} ({}); {} is {} KiB (was {} KiB)",
                ids.len(),
                if ids.len() == 1 { "" } else { "s" },
                args.status
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                s.path().display(),
                after / 1024,
                before / 1024
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
