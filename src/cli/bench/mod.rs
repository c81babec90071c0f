//! `swarm bench`: performance figures, one line each, in the form
//! `bench <workload> <figure> <value> <unit>`. Figures are printed, never
//! asserted: run them on a release build.

mod flow;
mod journal;
mod llm;
mod lua;
mod mcp;
mod mob;
#[cfg(feature = "postgres")]
mod postgres;
mod process;
mod reload;
mod replay;
mod serve;

use crate::auth::{Role, Signer};
use crate::engine::Spawner;
use crate::engine::{AttachOptions, Caller, Engine, EngineConfig, TaskSpec};
use crate::spawn::RustAgent;
use clap::Args;
use serde_json::json;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

#[derive(Args)]
pub struct BenchArgs {
    /// Workloads to run (default: all).
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(WORKLOADS))]
    workloads: Vec<String>,
}

const WORKLOADS: &[&str] = &[
    "step-rust",
    "fanout-rust",
    "step-lua",
    "vm-new",
    "verb-call",
    "flow-seq100",
    "flow-map100k",
    "step-process",
    "journal",
    "replay-check",
    "reload-latency",
    "repl-start",
    "llm",
    "mob",
    "serve",
    "swarm-run",
    #[cfg(feature = "postgres")]
    "postgres",
    "mcp-stdio",
];

pub fn run(args: BenchArgs) -> ExitCode {
    let chosen: Vec<String> = if args.workloads.is_empty() {
        WORKLOADS.iter().map(|s| s.to_string()).collect()
    } else {
        args.workloads
    };
    if let Some(bad) = chosen.iter().find(|w| !WORKLOADS.contains(&w.as_str())) {
        errln!(
            "swarm bench: unknown workload `{bad}` (known: {})",
            WORKLOADS.join(", ")
        );
        return ExitCode::from(2);
    }
    if cfg!(debug_assertions) {
        errln!("swarm bench: this is a debug build; figures mean little (use --release)");
    }
    let rt = super::runtime();
    for w in &chosen {
        match w.as_str() {
            "step-rust" => rt.block_on(step_rust()),
            "fanout-rust" => rt.block_on(fanout_rust()),
            "step-lua" => rt.block_on(lua::step_lua()),
            "vm-new" => lua::vm_new(),
            "verb-call" => rt.block_on(lua::verb_call()),
            "flow-seq100" => rt.block_on(flow::flow_seq100()),
            "flow-map100k" => rt.block_on(flow::flow_map100k()),
            "step-process" => rt.block_on(flow::step_process()),
            "journal" => rt.block_on(journal::journal()),
            "replay-check" => rt.block_on(replay::replay_check()),
            "reload-latency" => rt.block_on(reload::reload_latency()),
            "repl-start" => lua::repl_start(),
            "llm" => rt.block_on(llm::llm()),
            "mob" => rt.block_on(mob::mob()),
            "serve" => rt.block_on(serve::serve()),
            "swarm-run" => process::swarm_run(),
            #[cfg(feature = "postgres")]
            "postgres" => rt.block_on(postgres::postgres()),
            "mcp-stdio" => rt.block_on(mcp::mcp_stdio()),
            _ => unreachable!("checked above"),
        }
    }
    ExitCode::SUCCESS
}

pub(crate) fn line(workload: &str, figure: &str, value: f64, unit: &str) {
    outln!("bench {workload} {figure} {value:.2} {unit}");
}

pub(crate) fn engine() -> Engine {
    Engine::new(EngineConfig::default(), Signer::random())
}

pub(crate) fn constant_agent() -> Arc<dyn Spawner> {
    Arc::new(RustAgent::new(|_ctx| async { Ok(json!("ok")) }))
}

/// A step a bench counts must have passed: a failing agent panics the
/// workload instead of printing a good figure.
pub(crate) fn passed(workload: &str, view: &crate::engine::TaskView) {
    assert_eq!(
        view.status,
        crate::engine::TaskStatus::Pass,
        "bench {workload}: a step did not pass: {:?}",
        view.result
    );
}

/// A run a bench counts must have passed, with `want` as its result when
/// given: a failing flow panics the workload instead of printing a figure.
pub(crate) fn run_passed(
    workload: &str,
    report: &crate::run::RunReport,
    want: Option<&serde_json::Value>,
) {
    assert!(
        report.status == crate::engine::TaskStatus::Pass
            && want.is_none_or(|w| *w == report.result),
        "bench {workload}: the flow did not pass: {:?} {}",
        report.status,
        report.result
    );
}

/// Starts one task of `agent` and dispatches it; panics unless it passed.
pub(crate) async fn one_step(
    workload: &str,
    engine: &Engine,
    op: &crate::auth::CapToken,
    agent: &dyn Spawner,
    input: serde_json::Value,
) -> crate::engine::TaskView {
    let id = engine
        .start_task(op, TaskSpec::new("const", input))
        .expect("start");
    let view = engine
        .dispatch_attempt(op, id, agent)
        .await
        .expect("dispatch");
    passed(workload, &view);
    view
}

/// Sequential create+dispatch; per-step cost early and late in history.
async fn step_rust() {
    let engine = engine();
    let op = engine
        .attach(Caller::Host, AttachOptions::new("bench", Role::Operator))
        .expect("attach");
    let agent = constant_agent();
    let total = 100_000;
    let window = 1_000;
    let mut window_start = Instant::now();
    let all = Instant::now();
    for i in 1..=total {
        one_step("step-rust", &engine, &op, agent.as_ref(), json!(i)).await;
        if i == window || i == total {
            let us = window_start.elapsed().as_secs_f64() * 1e6 / window as f64;
            line("step-rust", &format!("us_per_step_at_{i}"), us, "us");
        }
        if i == total - window {
            window_start = Instant::now();
        }
    }
    let us = all.elapsed().as_secs_f64() * 1e6 / total as f64;
    line("step-rust", "us_per_step_mean", us, "us");
    line(
        "step-rust",
        "tasks_in_memory",
        engine.tasks_in_memory() as f64,
        "tasks",
    );
}

/// N concurrent create+dispatch, wall time and peak RSS.
async fn fanout_rust() {
    for n in [1_000usize, 100_000] {
        let engine = engine();
        let op = engine
            .attach(Caller::Host, AttachOptions::new("bench", Role::Operator))
            .expect("attach");
        let agent = constant_agent();
        reset_peak_rss();
        let start = Instant::now();
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (engine, op, agent) = (engine.clone(), op.clone(), agent.clone());
                tokio::spawn(async move {
                    let id = engine.start_task(&op, TaskSpec::new("const", json!(i)))?;
                    engine.dispatch_attempt(&op, id, agent.as_ref()).await
                })
            })
            .collect();
        let mut ok = 0;
        for h in handles {
            let view = h.await.expect("join").expect("dispatch");
            passed("fanout-rust", &view);
            ok += 1;
        }
        let ms = start.elapsed().as_secs_f64() * 1e3;
        line("fanout-rust", &format!("wall_ms_{n}"), ms, "ms");
        line("fanout-rust", &format!("ok_{n}"), ok as f64, "tasks");
        line("fanout-rust", &format!("peak_rss_{n}"), peak_rss_mb(), "MB");
    }
}

/// Resets the peak RSS (VmHWM) so a workload's figure is its own, not the
/// high-water mark of workloads run before it in this process.
pub(crate) fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set size of this process (VmHWM), in MB.
pub(crate) fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
