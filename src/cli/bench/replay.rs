//! The `replay-check` workload: what checking a journal against a
//! blueprint costs per entry (a run's journal replayed with nothing
//! dispatched), and a check's fixed cost (loading the blueprint). Every
//! check must find the journal `ok` with every entry replayed.

use super::{engine, line, run_passed};
use crate::run::{self, RunOptions, Verdict};
use crate::store::{MemoryStore, Store, wait};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

const SEQ: &str = r#"
local swarm = require "swarm"
return swarm.blueprint "seq" {
  agents = { rust = swarm.agent.rust { name = "echo" } },
  flow = function(n)
    local x = 0
    for i = 1, n do x = swarm.step("rust", { i = i, text = "entry " .. i }) end
    return x
  end,
}
"#;

/// Records a run of `n` steps, then checks its journal: (µs per entry of
/// the check alone, ms of the whole check with the blueprint's loading).
async fn check(n: u64) -> (f64, f64) {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let opts = RunOptions {
        store: Some(store.clone()),
        ..RunOptions::default()
    };
    let path = Path::new("seq.lua");
    let r = run::prepare_source(&engine(), path, SEQ, opts).expect("blueprint");
    let report = r.run(json!(n)).await.expect("run");
    run_passed("replay-check", &report, None);
    let id = report.run_id.expect("a durable run");
    let record = wait(store.run(&id)).expect("read").expect("the run");
    let entries = wait(store.journal(&id)).expect("journal");
    assert_eq!(entries.len() as u64, n, "bench replay-check: the journal");
    let whole = Instant::now();
    let check = run::prepare_source(&engine(), path, SEQ, RunOptions::default()).expect("bp");
    let start = Instant::now();
    let verdict = check.check(&record, entries).await.expect("check");
    let us = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    let ms = whole.elapsed().as_secs_f64() * 1e3;
    let want = Verdict::Ok {
        replayed: n as usize,
        waits_at: None,
    };
    assert_eq!(verdict, want, "bench replay-check: the verdict");
    (us, ms)
}

pub async fn replay_check() {
    let (us, _) = check(20_000).await;
    line("replay-check", "per_entry", us, "us");
    let (_, ms) = check(10).await;
    line("replay-check", "check_10_entries_ms", ms, "ms");
}
