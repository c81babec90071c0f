//! The `replay-check` workload: what checking a journal against a
//! blueprint costs per entry (a run's journal replayed with nothing
//! dispatched), a check's fixed cost (loading the blueprint), and the
//! time to upgrade 1,000 waiting runs (SQLite) after a compatible save.
//! Every check must find the journal `ok` with every entry replayed, and
//! every run must be upgraded.

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

const WAITS: &str = r#"
local swarm = require "swarm"
return swarm.blueprint "waits" {
  agents = { rust = swarm.agent.rust { name = "echo" } },
  flow = function(n)
    for i = 1, n do swarm.step("rust", i) end
    return swarm.ask("approve")
  end,
}
"#;

/// Ms to upgrade `n` runs each waiting on a question after 5 steps, 16 at
/// a time, once a comment is added to their blueprint.
async fn upgrade_waiting(n: usize) -> f64 {
    use crate::run::service::Authority;
    use crate::run::{Runs, Upgraded};
    use futures_util::StreamExt;
    let dir = std::env::temp_dir().join(format!("swarm-bench-upgrade-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let bp = dir.join("waits.lua");
    std::fs::write(&bp, WAITS).expect("blueprint");
    let store = crate::store::SqliteStore::open(&dir.join("swarm.db")).expect("journal");
    let runs = Runs::new(engine(), Some(Arc::new(store)));
    let who = Authority::local();
    let started = futures_util::stream::iter(0..n)
        .map(|_| async {
            let h = runs.start(&who, &bp, json!(5), RunOptions::default()).await;
            h.expect("start")
                .finished()
                .await
                .expect("run")
                .run_id
                .expect("id")
        })
        .buffer_unordered(16)
        .collect::<Vec<String>>()
        .await;
    std::fs::write(&bp, format!("-- edited\n{WAITS}")).expect("save");
    let start = Instant::now();
    let upgraded = futures_util::stream::iter(&started)
        .map(|id| runs.upgrade(&who, id, false, RunOptions::default()))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    for u in upgraded {
        let u = u.expect("upgrade");
        assert!(
            matches!(u, Upgraded::Moved { .. }),
            "bench replay-check: {u:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    ms
}

pub async fn replay_check() {
    let (us, _) = check(20_000).await;
    line("replay-check", "per_entry", us, "us");
    let (_, ms) = check(10).await;
    line("replay-check", "check_10_entries_ms", ms, "ms");
    let ms = upgrade_waiting(1_000).await;
    line("replay-check", "upgrade_1000_waiting_ms", ms, "ms");
}
