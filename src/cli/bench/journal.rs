//! The `journal` workload: per-step cost with the durable journal on, side
//! by side with it off.

use super::{constant_agent, engine, line, passed, run_passed};
use crate::auth::Role;
use crate::engine::{AttachOptions, Caller, TaskSpec};
use crate::run::{self, RunOptions};
use crate::store::{Journal, SqliteStore, Store, input_hash};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

fn scratch_db() -> PathBuf {
    let p = std::env::temp_dir().join(format!("swarm-bench-{}.db", std::process::id()));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
    }
    p
}

/// Sequential create+dispatch of a Rust agent, each result journaled
/// (waiting for its commit) and the events persisted.
async fn step_rust(journal: bool, steps: u64) -> f64 {
    let engine = engine();
    let op = engine
        .attach(Caller::Host, AttachOptions::new("bench", Role::Operator))
        .expect("attach");
    let agent = constant_agent();
    let db = scratch_db();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).expect("journal"));
    let j = Journal::new(store.clone(), "bench", Vec::new());
    // Steps are children of one root, as a run's are; the sink follows it.
    let root = engine
        .start_task(&op, TaskSpec::new("bench-root", json!(null)))
        .expect("root");
    let sink = journal
        .then(|| crate::run::EventSink::start(&engine, store.clone(), "bench", 0, root))
        .flatten();
    let start = Instant::now();
    for i in 0..steps {
        let mut spec = TaskSpec::new("const", json!(i));
        spec.parent = Some(root);
        let id = engine.start_task(&op, spec).expect("start");
        let view = engine
            .dispatch_attempt(&op, id, agent.as_ref())
            .await
            .expect("dispatch");
        passed("journal", &view);
        if journal {
            let value = view.result.map(|r| (*r).clone()).unwrap_or_default();
            j.record(
                &i.to_string(),
                "step",
                "const",
                input_hash(&json!(i)),
                true,
                value,
            )
            .await
            .expect("journal");
        }
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / steps as f64;
    if let Some(s) = sink {
        s.finish().await;
    }
    us
}

const SEQ: &str = r#"
local swarm = require "swarm"
return swarm.blueprint "seq" {
  agents = { rust = swarm.agent.rust { name = "echo" } },
  flow = function(n)
    local x = 0
    for i = 1, n do x = swarm.step("rust", i) end
    return x
  end,
}
"#;

/// µs per step of `runs` back-to-back runs of `n` sequential steps. The
/// 100-step figure is the goal row; the 1,000-step one shares each run's
/// fixed cost (creating the run, the last events' commit, its status)
/// among ten times the steps, so the two together tell that cost from
/// the cost of a step.
async fn flow_seq(journal: bool, n: u64, runs: u64) -> f64 {
    let engine = engine();
    let db = scratch_db();
    let mut opts = RunOptions::default();
    if journal {
        opts.store = Some(Arc::new(SqliteStore::open(&db).expect("journal")));
    }
    let r = run::prepare_source(&engine, Path::new("seq.lua"), SEQ, opts).expect("blueprint");
    // Every run must pass with the last step's result: a failing agent
    // must not print a good figure.
    let check = |report: run::RunReport| run_passed("journal", &report, Some(&json!(n)));
    check(r.run(json!(n)).await.expect("warm-up"));
    let start = Instant::now();
    for _ in 0..runs {
        check(r.run(json!(n)).await.expect("run"));
    }
    start.elapsed().as_secs_f64() * 1e6 / (n * runs) as f64
}

const PAR8: &str = r#"
local swarm = require "swarm"
return swarm.blueprint "par8" {
  agents = { rust = swarm.agent.rust { name = "echo" } },
  flow = function(n)
    local chains = {}
    for c = 1, 8 do
      chains[c] = function()
        local x = 0
        for i = 1, n do x = x + swarm.step("rust", i) end
        return x
      end
    end
    local sums, total = swarm.parallel(chains), 0
    for _, x in ipairs(sums) do total = total + x end
    return total
  end,
}
"#;

/// Eight sequential chains in one run (a `parallel` of sequential flows,
/// as several runs on one host are): µs per step, and how many steps'
/// records share a commit.
async fn flow_par8(journal: bool) -> (f64, f64) {
    let engine = engine();
    let store = Arc::new(SqliteStore::open(&scratch_db()).expect("journal"));
    let mut opts = RunOptions::default();
    if journal {
        opts.store = Some(store.clone());
    }
    let r = run::prepare_source(&engine, Path::new("par8.lua"), PAR8, opts).expect("blueprint");
    let (runs, n) = (10, 100);
    let want = json!(8 * n * (n + 1) / 2);
    let check = |report: run::RunReport| run_passed("journal par8", &report, Some(&want));
    check(r.run(json!(n)).await.expect("warm-up"));
    let before = store.transactions();
    let start = Instant::now();
    for _ in 0..runs {
        check(r.run(json!(n)).await.expect("run"));
    }
    let steps = (8 * n * runs) as f64;
    let us = start.elapsed().as_secs_f64() * 1e6 / steps;
    (us, steps / (store.transactions() - before).max(1) as f64)
}

pub async fn journal() {
    line(
        "journal",
        "step_rust_us_journal_off",
        step_rust(false, 5_000).await,
        "us",
    );
    line(
        "journal",
        "step_rust_us_journal_on",
        step_rust(true, 5_000).await,
        "us",
    );
    for (n, runs) in [(100, 50), (1_000, 5)] {
        for (journal, state) in [(false, "off"), (true, "on")] {
            let figure = format!("flow_seq{n}_us_journal_{state}");
            line("journal", &figure, flow_seq(journal, n, runs).await, "us");
        }
    }
    line(
        "journal",
        "flow_par8_us_journal_off",
        flow_par8(false).await.0,
        "us",
    );
    let (us, shared) = flow_par8(true).await;
    line("journal", "flow_par8_us_journal_on", us, "us");
    line("journal", "flow_par8_steps_per_commit", shared, "steps");
    let _ = std::fs::remove_file(scratch_db());
}
