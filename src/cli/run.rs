//! `swarm run FILE`: run a blueprint's flow to the end.
//!
//! Prints the flow's return value on stdout (pretty JSON, or one line with
//! `--json`); `--events` writes NDJSON events to stderr (or `--events-file`);
//! on a terminal a live progress line shows done / running / failed steps.
//! Exit status: 0 pass, 1 the flow failed or was cancelled, 2 usage or
//! blueprint errors. Ctrl-C cancels the run: process agents are killed and
//! events are flushed before exiting.

use crate::auth::Signer;
use crate::engine::{Engine, EngineConfig, EventKind, TaskStatus};
use crate::run::{self, RunOptions};
use clap::Args;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct RunArgs {
    /// The blueprint file.
    file: PathBuf,
    /// The flow's input: JSON text, or @path to a JSON file.
    #[arg(long)]
    input: Option<String>,
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

pub fn run(args: RunArgs) -> ExitCode {
    let input = match parse_input(args.input.as_deref()) {
        Ok(v) => v,
        Err(e) => return usage(&e),
    };
    let mut opts = RunOptions {
        interactive: std::io::stdin().is_terminal(),
        ..RunOptions::default()
    };
    for a in &args.answers {
        let Some((name, value)) = a.split_once('=') else {
            return usage(&format!("--answer `{a}`: expected NAME=VALUE"));
        };
        opts.answers
            .insert(name.to_string(), run::parse_answer(value));
    }
    opts.print = Some(std::sync::Arc::new(|line: &str| eprintln!("{line}")));
    super::runtime().block_on(async move {
        let engine = Engine::new(EngineConfig::default(), Signer::from_env());
        let prepared = match run::prepare(&engine, &args.file, opts) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        let events = spawn_event_writer(&engine, &args);
        let progress = std::io::stderr().is_terminal() && !args.events;
        let progress = progress.then(|| spawn_progress(&engine));
        let root = match prepared.start(input) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        let finish = prepared.finish(root);
        tokio::pin!(finish);
        let report = tokio::select! {
            r = &mut finish => r,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("\ninterrupted: cancelling the run");
                let _ = prepared.cancel(root);
                finish.await
            }
        };
        if let Some(p) = progress {
            p.abort();
            eprint!("\r\x1b[2K");
        }
        if let Some(w) = events {
            finish_events(&engine, w).await;
        }
        match report {
            Ok(report) => print_report(&report, args.json),
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        }
    })
}

fn usage(message: &str) -> ExitCode {
    eprintln!("swarm run: {message}");
    ExitCode::from(2)
}

fn print_report(report: &run::RunReport, json: bool) -> ExitCode {
    let text = if json {
        serde_json::to_string(&report.result)
    } else {
        serde_json::to_string_pretty(&report.result)
    }
    .unwrap_or_default();
    if report.status == TaskStatus::Pass {
        println!("{text}");
        ExitCode::SUCCESS
    } else {
        eprintln!("flow {}: {text}", report.status);
        ExitCode::from(1)
    }
}

struct EventWriter {
    handle: tokio::task::JoinHandle<()>,
    done: std::sync::Arc<tokio::sync::Notify>,
}

/// NDJSON events to stderr or a file, following the ledger from now on.
fn spawn_event_writer(engine: &Engine, args: &RunArgs) -> Option<EventWriter> {
    let mut out: Box<dyn Write + Send> = match (&args.events_file, args.events) {
        (Some(path), _) => match std::fs::File::create(path) {
            Ok(f) => Box::new(std::io::BufWriter::new(f)),
            Err(e) => {
                eprintln!("swarm run: --events-file {}: {e}", path.display());
                return None;
            }
        },
        (None, true) => Box::new(std::io::stderr()),
        (None, false) => return None,
    };
    let sub = observer(engine);
    let mut sub = sub.and_then(|t| engine.subscribe(&t, 0).ok())?;
    let done = std::sync::Arc::new(tokio::sync::Notify::new());
    let stop = done.clone();
    let handle = tokio::spawn(async move {
        loop {
            tokio::select! {
                ev = sub.next() => match ev {
                    Ok(ev) => {
                        let _ = serde_json::to_writer(&mut out, &ev);
                        let _ = out.write_all(b"\n");
                    }
                    Err(_) => break,
                },
                _ = stop.notified() => {
                    // Drain what is already in the ledger, then stop.
                    while let Ok(Some(ev)) = sub.try_next() {
                        let _ = serde_json::to_writer(&mut out, &ev);
                        let _ = out.write_all(b"\n");
                    }
                    break;
                }
            }
        }
        let _ = out.flush();
    });
    Some(EventWriter { handle, done })
}

async fn finish_events(_engine: &Engine, w: EventWriter) {
    w.done.notify_one();
    let _ = w.handle.await;
}

fn observer(engine: &Engine) -> Option<crate::auth::CapToken> {
    use crate::auth::Role;
    use crate::engine::{AttachOptions, Caller};
    engine
        .attach(Caller::Host, AttachOptions::new("cli", Role::Observer))
        .ok()
}

/// A live `done · running · failed` line on stderr.
fn spawn_progress(engine: &Engine) -> tokio::task::JoinHandle<()> {
    let sub = observer(engine).and_then(|t| engine.subscribe(&t, 0).ok());
    tokio::spawn(async move {
        let Some(mut sub) = sub else { return };
        let (mut running, mut done, mut failed) = (0i64, 0u64, 0u64);
        let mut last_draw = std::time::Instant::now();
        while let Ok(ev) = sub.next().await {
            match ev.kind {
                EventKind::AttemptStarted { .. } => running += 1,
                EventKind::AttemptCompleted { status, .. } => {
                    running -= 1;
                    if status == "pass" {
                        done += 1
                    } else {
                        failed += 1
                    }
                }
                _ => continue,
            }
            if last_draw.elapsed().as_millis() >= 50 {
                last_draw = std::time::Instant::now();
                eprint!(
                    "\r\x1b[2K  {done} done · {} running · {failed} failed",
                    running.max(0)
                );
            }
        }
    })
}
