//! `postgres`: durable steps on Postgres, one node and three, beside the
//! same workloads on SQLite. A fan-out of many short Rust steps per run
//! (`swarm.map`, journal on: every step's result group committed, its
//! events paged), steps per second; a sequential flow's cost per step;
//! runs started per second through `serve`. Every run must pass with its
//! expected result, or the workload panics instead of printing.
//!
//! It needs a database: `$SWARM_BENCH_PG` (`postgres://…`, one swarm may
//! fill; each pass uses fresh run ids). Without it, one line says so.
//! Three nodes are three stores in this process, each with its own
//! engine and connection pool, driving runs at once on one database.

use super::{engine, line, run_passed};
use crate::run::{self, RunOptions};
use crate::store::{SqliteStore, Store};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

const MAP: &str = r#"
local swarm = require "swarm"
return swarm.blueprint "fan" {
  agents = { echo = swarm.agent.rust { name = "echo" } },
  flow = function(n)
    local items = {}
    for i = 1, n do items[i] = i end
    local out = swarm.map(items, function(i) return swarm.step("echo", i) end,
                          { concurrency = 256 })
    return #out
  end,
}
"#;

const SEQ: &str = r#"
local swarm = require "swarm"
return swarm.blueprint "seq" {
  agents = { echo = swarm.agent.rust { name = "echo" } },
  flow = function(n)
    local x = 0
    for i = 1, n do x = swarm.step("echo", i) end
    return x
  end,
}
"#;

/// Seconds to run `source` (`n` steps, returning `n`) `runs` times on
/// `store`, `at_once` runs at a time, after one warm-up run.
async fn drive(store: Arc<dyn Store>, source: &str, n: u64, runs: u64, at_once: usize) -> f64 {
    use futures_util::StreamExt;
    let engine = engine();
    let opts = RunOptions {
        store: Some(store),
        ..RunOptions::default()
    };
    // A prepared run executes one run at a time: one each.
    let one = || {
        let r = run::prepare_source(&engine, Path::new("bench.lua"), source, opts.clone());
        async move {
            let report = r.expect("bench").run(json!(n)).await.expect("run");
            // Both flows return n.
            run_passed("postgres", &report, Some(&json!(n)));
        }
    };
    one().await;
    let start = Instant::now();
    futures_util::stream::iter((0..runs).map(|_| one()))
        .buffer_unordered(at_once)
        .collect::<Vec<()>>()
        .await;
    start.elapsed().as_secs_f64()
}

fn sqlite() -> Arc<dyn Store> {
    let p = std::env::temp_dir().join(format!("swarm-bench-pg-{}.db", std::process::id()));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
    }
    Arc::new(SqliteStore::open(&p).expect("journal"))
}

fn cleanup() {
    let p = std::env::temp_dir().join(format!("swarm-bench-pg-{}.db", std::process::id()));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
    }
}

pub async fn postgres() {
    let Some(url) = std::env::var("SWARM_BENCH_PG")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        outln!("bench postgres skipped: set $SWARM_BENCH_PG=postgres://user@host:port/db");
        return;
    };
    let open = || crate::store::open(&url).expect("opening $SWARM_BENCH_PG");
    let (n, runs) = (1000, 8);
    let steps = (n * runs) as f64;
    let secs = drive(sqlite(), MAP, n, runs, 4).await;
    line(
        "postgres",
        "sqlite_fanout_steps_per_s",
        steps / secs,
        "steps/s",
    );
    let secs = drive(open(), MAP, n, runs, 4).await;
    line(
        "postgres",
        "pg_1node_fanout_steps_per_s",
        steps / secs,
        "steps/s",
    );
    let nodes: Vec<Arc<dyn Store>> = (0..3).map(|_| open()).collect();
    let start = Instant::now();
    futures_util::future::join_all(
        nodes
            .into_iter()
            .map(|s| tokio::spawn(drive(s, MAP, n, runs, 4))),
    )
    .await;
    let secs = start.elapsed().as_secs_f64();
    line(
        "postgres",
        "pg_3nodes_fanout_steps_per_s",
        3.0 * steps / secs,
        "steps/s",
    );
    let (n, runs) = (100, 20);
    let sqlite_us = drive(sqlite(), SEQ, n, runs, 1).await * 1e6 / (n * runs) as f64;
    line("postgres", "sqlite_seq_step_us", sqlite_us, "us");
    let pg_us = drive(open(), SEQ, n, runs, 1).await * 1e6 / (n * runs) as f64;
    line("postgres", "pg_seq_step_us", pg_us, "us");
    line("postgres", "pg_over_sqlite_step", pg_us / sqlite_us, "x");
    super::serve::runs_started("postgres", "pg_serve_runs_started_per_s", open()).await;
    cleanup();
}
