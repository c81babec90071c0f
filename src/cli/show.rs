//! `swarm show RUN`: one run, its journal, questions, retries and events.
//!
//! Events are paged from the journal (the last N, those after an id, or
//! all of them, 10,000 at a time), so showing a run of any length takes
//! bounded memory, and the output says what it left out. `--json` streams
//! NDJSON: a head line with the run, its journal and questions, then one
//! line per event.

use super::Db;
use super::runs::{fail, journaled_run};
use crate::store::{EventRecord, RunRecord, Store, StoreError, wait};
use clap::Args;
use std::process::ExitCode;

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

/// Events of `run` after `after`, at most `limit`, handed to `each` a page
/// at a time.
fn each_event(
    s: &dyn Store,
    run: &str,
    after: i64,
    limit: usize,
    mut each: impl FnMut(&EventRecord),
) -> Result<(), StoreError> {
    let (mut after, mut left) = (after, limit);
    while left > 0 {
        let batch = wait(s.events(run, after, left.min(10_000)))?;
        let Some(last) = batch.last() else { break };
        after = last.id;
        left = left.saturating_sub(batch.len());
        batch.iter().for_each(&mut each);
    }
    Ok(())
}

pub fn show(args: ShowArgs) -> ExitCode {
    let (s, r) = match journaled_run(&args.journal, &args.run) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let (total, tail) = match wait(s.event_tail(&r.id, args.events)) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    // Which events: the last N, those after an id, or all.
    let (start, limit) = match (args.all, args.after) {
        (true, _) => (0, usize::MAX),
        (false, Some(after)) => (after, args.events),
        (false, None) => (tail, args.events),
    };
    let shown = if args.json {
        show_json(&*s, &r, total, start, limit)
    } else {
        show_table(&*s, &r, total, start, limit)
    };
    match shown {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn show_json(
    s: &dyn Store,
    r: &RunRecord,
    total: u64,
    start: i64,
    limit: usize,
) -> Result<(), StoreError> {
    let journal = wait(s.journal(&r.id))?;
    let head = serde_json::json!({
        "run": r, "usage": crate::run::journal_usage(&journal), "journal": journal,
        "questions": wait(s.questions(&r.id))?, "events_total": total,
    });
    outln!("{head}");
    each_event(s, &r.id, start, limit, |e| {
        outln!("{}", serde_json::to_string(e).unwrap_or_default())
    })
}

fn show_table(
    s: &dyn Store,
    r: &RunRecord,
    total: u64,
    start: i64,
    limit: usize,
) -> Result<(), StoreError> {
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
    print_lineage(s, r)?;
    let journal = wait(s.journal(&r.id))?;
    outln!("\njournal ({} entries)", journal.len());
    for e in &journal {
        let mark = if e.ok { "ok " } else { "err" };
        // A fork says where each entry came from; another run's are all live.
        let from = match (&e.from, &r.fork) {
            (Some(o), _) => format!("  {o}"),
            (None, Some(_)) => "  live".into(),
            (None, None) => String::new(),
        };
        outln!(
            "  {:<10} {:<6} {:<16} {mark} {}{from}",
            e.pos,
            e.kind,
            e.key,
            clip(e.value.to_string(), 60)
        );
    }
    for q in wait(s.questions(&r.id))? {
        let a = q
            .answer
            .as_ref()
            .map_or("(unanswered)".to_string(), |a| a.to_string());
        outln!("  question {} `{}`: {a}", q.pos, q.name);
    }
    print_usage(&crate::run::journal_usage(&journal));
    print_retries(s, &r.id)?;
    // Said before the events stream, so nothing is held to count them.
    if start == 0 && limit as u64 >= total {
        outln!("\nevents ({total})");
    } else {
        outln!(
            "\nevents ({total}; showing at most {limit} after id {start}: \
             --events N, --after ID or --all for others)"
        );
    }
    each_event(s, &r.id, start, limit, |e| {
        outln!(
            "  #{:<6} {:<18} task {}",
            e.id,
            e.kind,
            e.payload.get("task").unwrap_or(&serde_json::Value::Null)
        )
    })
}

/// Where the run was forked from, and the runs forked from it.
fn print_lineage(s: &dyn Store, r: &RunRecord) -> Result<(), StoreError> {
    if let Some(f) = &r.fork {
        let reuse = if f.reuse { "unchanged" } else { "none" };
        outln!("forked     from {} at {} (reuse {reuse})", f.run, f.at);
    }
    let forks: Vec<String> = wait(s.runs(None))?
        .into_iter()
        .filter_map(|c| Some((c.fork?, c.id)))
        .filter(|(f, _)| f.run == r.id)
        .map(|(f, id)| format!("{id} (at {})", f.at))
        .collect();
    if !forks.is_empty() {
        outln!("forks      {}", forks.join(", "));
    }
    for e in wait(s.events_of_kind(&r.id, "run_upgraded", 100))? {
        let short = |k: &str| {
            e.payload[k]
                .as_str()
                .unwrap_or("?")
                .chars()
                .take(12)
                .collect::<String>()
        };
        outln!(
            "upgraded   {} → {} (event #{})",
            short("from"),
            short("to"),
            e.id
        );
    }
    Ok(())
}

/// Model tokens: the run's total, then by model and by step; in a fork,
/// what its reused and copied turns had spent in their source.
fn print_usage(u: &crate::run::JournalUsage) {
    use crate::llm::thousands;
    let taken = u.reused.total.turns + u.copied.total.turns;
    if u.tally.total.turns + taken == 0 {
        return;
    }
    outln!("\nusage      {}", u.tally.line());
    if u.reused.total.turns > 0 {
        outln!("saved      {} reused, not spent again", u.reused.line());
    }
    if u.copied.total.turns > 0 {
        outln!("copied     {} spent by the source", u.copied.line());
    }
    // Counted here, not reported by the server (see `llm::estimate`).
    let mark = |u: &crate::llm::Usage| if u.estimated { "  estimated" } else { "" };
    for (model, m) in &u.tally.by_model {
        outln!(
            "  model {model:<24} {:>10} tokens  {:>4} turns{}",
            thousands(m.total_tokens),
            m.turns,
            mark(m)
        );
    }
    for (pos, st) in &u.by_step {
        outln!(
            "  step  {:<24} {:>10} tokens  {:>4} turns{}",
            format!("{pos} {}", st.agent),
            thousands(st.usage.total_tokens),
            st.usage.turns,
            mark(&st.usage)
        );
    }
}

/// Each retry the `retry` layer noted: which task, which try, and why.
fn print_retries(s: &dyn Store, run: &str) -> Result<(), StoreError> {
    let notes = wait(s.events_of_kind(run, "layer_note", 10_000))?;
    let retries: Vec<_> = notes
        .iter()
        .filter(|e| e.payload.get("layer") == Some(&"retry".into()))
        .collect();
    if retries.is_empty() {
        return Ok(());
    }
    outln!("\nretries ({})", retries.len());
    for e in retries {
        let note = &e.payload["note"];
        outln!(
            "  task {} try {} {} → retried: {}",
            e.payload.get("task").unwrap_or(&serde_json::Value::Null),
            note["try"],
            note["outcome"].as_str().unwrap_or("?"),
            clip(note["cause"].to_string(), 80),
        );
    }
    Ok(())
}

/// `text`, cut to `max` bytes (on a character boundary) with `...`.
fn clip(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max - 3;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}
