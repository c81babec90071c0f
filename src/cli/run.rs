//! `swarm run FILE` and `swarm resume RUN`: run a flow to the end.
//!
//! Prints the flow's return value on stdout (pretty JSON, or one line with
//! `--json`); `--events` writes NDJSON events to stderr (or `--events-file`);
//! on a terminal a live progress line shows done / running / failed steps.
//! Exit status: 0 pass, 1 the flow failed, was cancelled or is waiting for
//! an answer, 2 usage, blueprint or journal errors. Ctrl-C cancels the run:
//! process agents are killed and events flushed before exiting. Runs are
//! journaled (see `store`) unless `--no-journal`.

use super::{Journaling, open_store};
use crate::auth::Signer;
use crate::engine::{Engine, EngineConfig, EventKind, TaskStatus};
use crate::run::service::Authority;
use crate::run::{self, Handle, RunOptions, Runs};
use crate::store::Store;
use clap::Args;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Flags shared by `run` and `resume`.
#[derive(Args, Clone)]
pub struct Output {
    /// Print the result as one line of JSON.
    #[arg(long)]
    json: bool,
    /// Write every event as NDJSON to stderr.
    #[arg(long)]
    events: bool,
    /// Write every event as NDJSON to this file.
    #[arg(long, value_name = "PATH")]
    events_file: Option<PathBuf>,
    /// Answer a senior question: NAME=VALUE (VALUE is JSON or text). Repeatable.
    #[arg(long = "answer", value_name = "NAME=VALUE")]
    answers: Vec<String>,
    /// Without a terminal, wait for `swarm answer` instead of stopping.
    #[arg(long)]
    wait_answers: bool,
    /// Stop the run after this long (e.g. 90s, 10m, 1h; default 1h, `none`
    /// for no limit); the blueprint's `limits.deadline` applies too, and
    /// the shorter one wins.
    #[arg(long, value_name = "DURATION", value_parser = parse_deadline)]
    deadline: Option<Deadline>,
    /// Lua-agent VMs that may run tasks at once, per spawn depth
    /// (default 256, or $SWARM_MAX_LUA_VMS).
    #[arg(long, value_name = "N")]
    max_vms: Option<usize>,
}

#[derive(Args)]
pub struct RunArgs {
    /// The blueprint file.
    file: PathBuf,
    /// The flow's input: JSON text, or @path to a JSON file.
    #[arg(long)]
    input: Option<String>,
    /// Id for the journaled run (default: <blueprint>-<8 hex>).
    #[arg(long, value_name = "ID")]
    run_id: Option<String>,
    #[command(flatten)]
    out: Output,
    #[command(flatten)]
    journal: Journaling,
}

#[derive(Args)]
pub struct ResumeArgs {
    /// The run to continue.
    run: String,
    /// Resume even though the blueprint changed since the run started.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    out: Output,
    #[command(flatten)]
    journal: super::Db,
}

/// Parses `--input`: JSON text or `@file`.
pub(crate) fn parse_input(input: Option<&str>) -> Result<serde_json::Value, String> {
    let Some(text) = input else {
        return Ok(serde_json::Value::Null);
    };
    let body = match text.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).map_err(|e| format!("--input @{path}: {e}"))?,
        None => text.to_string(),
    };
    serde_json::from_str(&body).map_err(|e| format!("--input is not valid JSON: {e}"))
}

/// A run's wall-clock deadline when `--deadline` is not given: a script
/// that never ends (`while true do swarm.sleep(1) end`) must not hold the
/// process forever. `--deadline none` lifts it.
const DEFAULT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(3600);

/// `--deadline`: a duration, or `none`.
#[derive(Clone, Copy)]
struct Deadline(Option<std::time::Duration>);

fn parse_deadline(s: &str) -> Result<Deadline, String> {
    match s.trim() {
        "none" => Ok(Deadline(None)),
        d => super::parse_duration(d).map(|d| Deadline(Some(d))),
    }
}

pub(super) fn options(out: &Output, store: Option<Arc<dyn Store>>) -> Result<RunOptions, String> {
    if out.events && out.events_file.is_some() {
        return Err("--events and --events-file: choose one (both write the same NDJSON)".into());
    }
    let mut opts = RunOptions {
        interactive: std::io::stdin().is_terminal(),
        wait_for_answers: out.wait_answers,
        store,
        deadline: out.deadline.map_or(Some(DEFAULT_DEADLINE), |d| d.0),
        ..RunOptions::default()
    };
    if let Some(n) = out.max_vms {
        if n == 0 {
            return Err("--max-vms must be at least 1".into());
        }
        opts.vm_slots = Some(crate::lua::VmSlots::new(n));
    }
    for a in &out.answers {
        let Some((name, value)) = a.split_once('=') else {
            return Err(format!("--answer `{a}`: expected NAME=VALUE"));
        };
        opts.answers
            .insert(name.to_string(), run::parse_answer(value));
    }
    opts.print = Some(Arc::new(|line: &str| errln!("{line}")));
    Ok(opts)
}

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    errln!("error: {message}");
    ExitCode::from(code)
}

pub fn run(args: RunArgs) -> ExitCode {
    let input = match parse_input(args.input.as_deref()) {
        Ok(v) => v,
        Err(e) => return fail(2, e),
    };
    let store = match open_store(&args.journal, true) {
        Ok(s) => s,
        Err(e) => return fail(2, e),
    };
    let mut opts = match options(&args.out, store) {
        Ok(o) => o,
        Err(e) => return fail(2, e),
    };
    opts.run_id = args.run_id.clone();
    let journal = opts.store.take();
    super::runtime().block_on(async move {
        let engine = Engine::new(EngineConfig::default(), Signer::from_env());
        let runs = Runs::new(engine, journal);
        match runs
            .start(&Authority::local(), &args.file, input, opts)
            .await
        {
            Ok(h) => execute(&runs, h, &args.out).await,
            Err(e) => {
                super::report_error(&e);
                ExitCode::from(2)
            }
        }
    })
}

pub fn resume(args: ResumeArgs) -> ExitCode {
    let (store, record) = match super::runs::journaled_run(&args.journal, &args.run) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let opts = match options(&args.out, None) {
        Ok(o) => o,
        Err(e) => return fail(2, e),
    };
    super::runtime().block_on(async move {
        let engine = Engine::new(EngineConfig::default(), Signer::from_env());
        let runs = Runs::new(engine, Some(store));
        match runs
            .resume(&Authority::local(), &record.id, args.force, opts)
            .await
        {
            Ok(h) => execute(&runs, h, &args.out).await,
            Err(e) => fail(2, e),
        }
    })
}

/// Waits for a run to end with progress, events and Ctrl-C.
pub(super) async fn execute(runs: &Arc<Runs>, run: Handle, out: &Output) -> ExitCode {
    // Registered before anything runs, so a signal that comes as soon as
    // the first agent starts is ours, not the default (killing us).
    let mut stop = Stop::register();
    if let Some(id) = &run.id {
        errln!("run {id}");
    }
    let engine = runs.engine();
    let events = spawn_event_writer(engine, out);
    let progress = std::io::stderr().is_terminal() && !out.events;
    let progress = progress.then(|| spawn_progress(engine));
    let key = run.key.clone();
    let finish = run.finished();
    tokio::pin!(finish);
    let report = tokio::select! {
        r = &mut finish => r,
        sig = stop.next() => {
            errln!("\n{sig}: stopping the run (again to force)");
            let _ = runs.interrupt(&Authority::local(), &key);
            tokio::select! {
                r = &mut finish => r,
                sig = stop.next() => {
                    errln!("{sig} again: exiting now");
                    std::process::exit(130);
                }
            }
        }
    };
    if let Some(p) = progress {
        p.stop();
    }
    if let Some(w) = events {
        w.done.notify_one();
        let _ = w.handle.await;
    }
    match report {
        Ok(report) => {
            if report.usage.total.turns > 0 && std::io::stderr().is_terminal() {
                errln!("tokens: {}", report.usage.line());
            }
            print_report(&report, out.json)
        }
        Err(e) => fail(1, e),
    }
}

/// SIGINT, SIGTERM and SIGHUP, as one stream. Each stops a durable run as
/// `interrupted` (resumable); a second one forces the exit.
struct Stop(Vec<(tokio::signal::unix::Signal, &'static str)>);

impl Stop {
    fn register() -> Stop {
        use tokio::signal::unix::{SignalKind, signal};
        let kinds = [
            (SignalKind::interrupt(), "interrupted"),
            (SignalKind::terminate(), "terminated"),
            (SignalKind::hangup(), "hung up"),
        ];
        Stop(
            kinds
                .into_iter()
                .filter_map(|(k, name)| Some((signal(k).ok()?, name)))
                .collect(),
        )
    }

    /// The next signal's name; pending forever when none is registered.
    async fn next(&mut self) -> &'static str {
        if self.0.is_empty() {
            return std::future::pending().await;
        }
        let waits = self
            .0
            .iter_mut()
            .map(|(s, name)| Box::pin(async move { s.recv().await.map(|_| *name) }));
        match futures_util::future::select_all(waits).await.0 {
            Some(name) => name,
            None => std::future::pending().await,
        }
    }
}

/// Exit status of a run that stopped to wait for an answer, was
/// interrupted, or was lost to another owner: it is not finished here (0
/// pass, 1 failed or cancelled, 2 usage or blueprint error).
const EXIT_WAITING: u8 = 3;

fn print_report(report: &run::RunReport, json: bool) -> ExitCode {
    let text = if json {
        serde_json::to_string(&report.result)
    } else {
        serde_json::to_string_pretty(&report.result)
    }
    .unwrap_or_default();
    let code = report.result.get("code").and_then(|c| c.as_str());
    let message = report.result.get("error").and_then(|m| m.as_str());
    match (report.status, code, &report.run_id) {
        (TaskStatus::Pass, ..) => {
            outln!("{text}");
            ExitCode::SUCCESS
        }
        (_, Some("senior_unanswered"), Some(id)) => {
            errln!(
                "run {id} is waiting for an answer: {}",
                message.unwrap_or("a senior question is open")
            );
            ExitCode::from(EXIT_WAITING)
        }
        (_, Some("message_awaited"), Some(id)) => {
            errln!(
                "run {id} is waiting for a message: {}",
                message.unwrap_or("swarm.recv waits")
            );
            ExitCode::from(EXIT_WAITING)
        }
        (_, Some("interrupted"), Some(_)) => {
            errln!("run {}", message.unwrap_or("interrupted"));
            ExitCode::from(EXIT_WAITING)
        }
        (_, Some("run_lost"), Some(_)) => {
            errln!(
                "error: {}",
                message.unwrap_or("lost the run to another owner")
            );
            ExitCode::from(EXIT_WAITING)
        }
        (_, Some(code @ ("journal_fault" | "diverged")), Some(id)) => {
            let state = if code == "diverged" {
                "diverged"
            } else {
                "interrupted"
            };
            errln!("error: run {id} {state}: {}", message.unwrap_or(code));
            ExitCode::from(EXIT_WAITING)
        }
        (TaskStatus::Cancelled, ..) if report.result.is_null() => {
            errln!("run cancelled");
            ExitCode::from(1)
        }
        (status, ..) if json => {
            errln!("error: flow {status}: {text}");
            ExitCode::from(1)
        }
        _ => {
            errln!("{}", run::error_chain(&report.result));
            ExitCode::from(1)
        }
    }
}

struct EventWriter {
    handle: tokio::task::JoinHandle<()>,
    done: Arc<tokio::sync::Notify>,
}

/// NDJSON events to stderr or a file, following the ledger from the start.
fn spawn_event_writer(engine: &Engine, out: &Output) -> Option<EventWriter> {
    let mut sink: Box<dyn Write + Send> = match (&out.events_file, out.events) {
        (Some(path), _) => match std::fs::File::create(path) {
            Ok(f) => Box::new(std::io::BufWriter::new(f)),
            Err(e) => {
                errln!("swarm: --events-file {}: {e}", path.display());
                return None;
            }
        },
        (None, true) => Box::new(std::io::stderr()),
        (None, false) => return None,
    };
    let mut sub = observer(engine).and_then(|t| engine.subscribe(&t, 0).ok())?;
    let done = Arc::new(tokio::sync::Notify::new());
    let stop = done.clone();
    let handle = tokio::spawn(async move {
        let mut write = |ev: &crate::engine::Event| {
            let _ = serde_json::to_writer(&mut sink, ev);
            let _ = sink.write_all(b"\n");
        };
        loop {
            tokio::select! {
                ev = sub.next() => match ev {
                    Ok(ev) => write(&ev),
                    Err(_) => break,
                },
                _ = stop.notified() => {
                    while let Ok(Some(ev)) = sub.try_next() {
                        write(&ev);
                    }
                    break;
                }
            }
        }
        let _ = sink.flush();
    });
    Some(EventWriter { handle, done })
}

fn observer(engine: &Engine) -> Option<crate::auth::CapToken> {
    use crate::auth::Role;
    use crate::engine::{AttachOptions, Caller};
    engine
        .attach(Caller::Host, AttachOptions::new("cli", Role::Observer))
        .ok()
}

/// A live `done · running · failed · tokens` line on stderr, and under it
/// the latest text an LLM agent is streaming. Redrawn at most every 80 ms.
fn spawn_progress(engine: &Engine) -> Progress {
    let sub = observer(engine).and_then(|t| engine.subscribe(&t, 0).ok());
    let handle = tokio::spawn(async move {
        let Some(mut sub) = sub else { return };
        let mut screen = Screen::default();
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(80));
        loop {
            tokio::select! {
                ev = sub.next() => match ev {
                    Ok(ev) => screen.see(&ev),
                    Err(_) => break,
                },
                _ = tick.tick() => screen.draw(),
            }
        }
    });
    Progress(handle)
}

/// The progress task; stopping it clears its lines.
struct Progress(tokio::task::JoinHandle<()>);

impl Progress {
    fn stop(self) {
        self.0.abort();
        eprint!("\r\x1b[2K\n\x1b[2K\x1b[1A");
    }
}

/// What the progress lines show.
#[derive(Default)]
struct Screen {
    running: i64,
    done: u64,
    failed: u64,
    tokens: u64,
    /// Some turn's tokens were counted here, not reported by the server.
    estimated: bool,
    /// The streaming text's last line, and whether it changed.
    partial: String,
    dirty: bool,
}

impl Screen {
    fn see(&mut self, ev: &crate::engine::Event) {
        use crate::engine::OutputKind;
        // The root task is the flow itself, not one of its steps.
        let root = ev.task.is_some() && ev.task == ev.run;
        match &ev.kind {
            EventKind::AttemptStarted { .. } | EventKind::AttemptCompleted { .. } if root => {
                return;
            }
            EventKind::AttemptStarted { .. } => self.running += 1,
            EventKind::AttemptCompleted { status, .. } => {
                self.running -= 1;
                if *status == "pass" {
                    self.done += 1
                } else {
                    self.failed += 1
                }
            }
            EventKind::WorkerOutput {
                output: OutputKind::Partial,
                data,
            } => {
                let delta = data["delta"].as_str().unwrap_or_default();
                self.partial.push_str(delta);
                if let Some(i) = self.partial.rfind('\n') {
                    self.partial.drain(..=i);
                }
            }
            EventKind::WorkerOutput {
                output: OutputKind::Progress,
                data,
            } => {
                // A note on an LLM step (tools offered but unused, a
                // fallback taken) goes above the progress line, once.
                if let Some(note) = data["llm_note"]["message"].as_str() {
                    eprintln!("\r\x1b[2Knote: {note}");
                    self.dirty = true;
                    return;
                }
                let llm = &data["llm"];
                let n = |k: &str| llm[k].as_u64().unwrap_or(0);
                self.tokens += n("prompt_tokens") + n("completion_tokens");
                self.estimated |= llm["estimated"] == true;
                // A turn ended: its text is no longer "in flight".
                self.partial.clear();
            }
            _ => return,
        }
        self.dirty = true;
    }

    fn draw(&mut self) {
        if !std::mem::take(&mut self.dirty) {
            return;
        }
        let mut line = format!(
            "  {} done · {} running · {} failed",
            self.done,
            self.running.max(0),
            self.failed
        );
        if self.tokens > 0 {
            let mark = if self.estimated { " (estimated)" } else { "" };
            let n = crate::llm::thousands(self.tokens);
            line.push_str(&format!(" · {n} tokens{mark}"));
        }
        let width = terminal_width();
        let tail = last_chars(&self.partial, width.saturating_sub(6));
        // Line one, then the streaming text under it; the cursor goes back
        // to line one so the next draw overwrites both.
        eprint!(
            "\r\x1b[2K{}\n\x1b[2K  \x1b[2m{tail}\x1b[0m\x1b[1A\r",
            last_chars(&line, width.saturating_sub(1))
        );
    }
}

/// The last `n` characters of `s`, control characters shown as spaces.
fn last_chars(s: &str, n: usize) -> String {
    let chars: Vec<char> = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    chars[chars.len().saturating_sub(n)..].iter().collect()
}

/// Columns of the terminal on stderr ($COLUMNS, else 80).
fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|&c: &usize| c >= 20)
        .unwrap_or(80)
}
