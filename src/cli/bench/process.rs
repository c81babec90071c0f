//! The `swarm-run` workload: what a user runs, as whole processes. Each
//! figure starts this same binary with `swarm run` and waits for it: the
//! start-up floor (a 1-step blueprint) and a 1,000-step fan-out, with the
//! journal on (the default) and off, and the start-up again with a journal
//! that already holds 20,000 finished runs (a run's cost must not grow with
//! the history kept); then a 10,000-step fan-out whose on and off runs
//! alternate, so a noisy spell on a 2-core machine lands on both sides of
//! their ratio. Every run's exit status and printed result are checked.
//! Wall times come from runs nobody watches; the peak RSS from separate
//! runs watched by a sampler.

use super::line;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const ONE_STEP: &str = r#"local swarm = require "swarm"
return swarm.blueprint "one" {
  agents = { echo = swarm.agent.rust { name = "echo" } },
  flow = function(input) return swarm.step("echo", input) end,
}
"#;

const FANOUT: &str = r#"local swarm = require "swarm"
return swarm.blueprint "fanout" {
  agents = { echo = swarm.agent.rust { name = "echo" } },
  flow = function(n)
    local items = {}
    for i = 1, n do items[i] = i end
    local out = swarm.map(items, function(i) return swarm.step("echo", i) end, { concurrency = n })
    local sum = 0
    for _, v in ipairs(out) do sum = sum + v end
    return sum
  end,
}
"#;

/// Median wall time (ms) and largest peak RSS (MB) of `swarm run FILE
/// ARGS`, every run checked to exit 0 printing `expect`. The `runs` timed
/// runs are left alone; the RSS comes from `runs / 3 + 1` further runs
/// watched by a sampler, which on a 2-core machine takes CPU the measured
/// process would otherwise have (it added about a millisecond to a 3 ms
/// start-up).
fn measure(file: &Path, db: &Path, args: &[&str], expect: &str, runs: usize) -> (f64, f64) {
    let mut walls: Vec<f64> = (0..runs)
        .map(|_| run_once(file, db, args, expect, false).0)
        .collect();
    let peak_kb = (0..runs / 3 + 1)
        .map(|_| run_once(file, db, args, expect, true).1)
        .max()
        .unwrap_or(0);
    walls.sort_by(f64::total_cmp);
    (walls[walls.len() / 2], peak_kb as f64 / 1024.0)
}

/// One checked `swarm run` on the journal `db`: its wall time (ms) and,
/// when `sample`d, its peak RSS (kB).
fn run_once(file: &Path, db: &Path, args: &[&str], expect: &str, sample: bool) -> (f64, i64) {
    let exe = std::env::current_exe().expect("the swarm binary");
    let start = Instant::now();
    let mut child = Command::new(&exe)
        .arg("run")
        .arg(file)
        .args(args)
        .arg("--json")
        .env("SWARM_DB", db)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn swarm run");
    let stdout = child.stdout.take().expect("stdout");
    let rss_kb = if sample {
        sample_peak_rss(child.id())
    } else {
        0
    };
    let status = child.wait().expect("wait").code().unwrap_or(-1);
    let wall = start.elapsed().as_secs_f64() * 1e3;
    let out = std::io::read_to_string(stdout).unwrap_or_default();
    assert!(
        status == 0 && out.trim() == expect,
        "bench swarm-run: `swarm run {}` exited {status} printing `{}` (expected `{expect}`)",
        file.display(),
        out.trim()
    );
    (wall, rss_kb)
}

/// The child's peak RSS (kB): its `VmHWM`, read until it exits. (`wait4`'s
/// `ru_maxrss` would include this bench process's own, which the child
/// inherits across `exec`.) The high-water mark only grows, so the last
/// read is the peak up to the child's last moments, when it only frees.
/// Reads taken before the child has exec'd `swarm run` (its arguments are
/// still this process's) see this process's copy (after a heavy workload,
/// hundreds of MB) and are skipped.
fn sample_peak_rss(pid: u32) -> i64 {
    let path = format!("/proc/{pid}/status");
    let cmdline = format!("/proc/{pid}/cmdline");
    let mut peak = 0;
    loop {
        let Ok(status) = std::fs::read_to_string(&path) else {
            return peak;
        };
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        };
        // Exited: a zombie until waited for.
        if matches!(field("State:").as_deref(), Some("Z" | "X") | None) {
            return peak;
        }
        let args = std::fs::read(&cmdline).unwrap_or_default();
        if args.split(|b| *b == 0).nth(1) == Some(b"run".as_slice()) {
            let hwm = field("VmHWM:").and_then(|kb| kb.parse::<i64>().ok());
            peak = peak.max(hwm.unwrap_or(0));
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

/// The 10,000-step fan-out, journal on and `--no-journal`: median wall
/// times of `runs` alternated pairs, their ratio, and each side's peak RSS.
/// The journal is its own, so the other figures' journal stays small.
fn fanout10k(fan: &Path, db: &Path, runs: usize) {
    const ARGS: [&str; 2] = ["--input", "10000"];
    const SUM: &str = "50005000";
    let off: Vec<&str> = ARGS.into_iter().chain(["--no-journal"]).collect();
    let (mut on_ms, mut off_ms) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        on_ms.push(run_once(fan, db, &ARGS, SUM, false).0);
        off_ms.push(run_once(fan, db, &off, SUM, false).0);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (on, off_median) = (median(on_ms), median(off_ms));
    line("swarm-run", "fanout10k_ms_journal", on, "ms");
    line("swarm-run", "fanout10k_ms_no_journal", off_median, "ms");
    line("swarm-run", "fanout10k_journal_ratio", on / off_median, "x");
    for (journal, args) in [("journal", &ARGS[..]), ("no_journal", &off[..])] {
        let kb = run_once(fan, db, args, SUM, true).1;
        let figure = format!("fanout10k_peak_rss_{journal}");
        line("swarm-run", &figure, kb as f64 / 1024.0, "MB");
    }
}

fn scratch(name: &str, body: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("swarm-bench-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let p = dir.join(name);
    std::fs::write(&p, body).expect("blueprint");
    p
}

/// A journal holding `n` finished runs, each with a journal entry and its
/// events, as a long-used project's has: written through the store, with
/// the runs' writes sharing commits.
fn seed_history(db: &Path, n: usize) {
    use crate::store::{EventRow, Journal, Owner, RunRecord, RunStatus, SqliteStore, Store};
    use futures_util::future::join_all;
    use serde_json::json;
    let store = SqliteStore::open(db).expect("journal");
    let owner = Owner::new();
    let ids: Vec<String> = (0..n).map(|i| format!("old-{i:06}")).collect();
    let records: Vec<RunRecord> = ids
        .iter()
        .map(|id| RunRecord {
            id: id.clone(),
            blueprint: "one".into(),
            path: "/old/one.lua".into(),
            hash: "h".into(),
            input: json!(7),
            status: RunStatus::Pass,
            result: Some(json!(7)),
            pid: None,
            created_ms: 1,
            updated_ms: 1,
            steps: 0,
            tokens: 0,
            owner: None,
            owner_host: None,
            owned_since_ms: None,
            lease_until_ms: None,
            epoch: 0,
            helpers: Default::default(),
            fork: None,
        })
        .collect();
    let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(store);
    let entry = |run: &str| {
        Journal::new(store.clone(), run, Vec::new()).entry(
            "1",
            "step",
            "echo",
            "h".into(),
            true,
            json!(7),
        )
    };
    let events = |run: &str| {
        let run: std::sync::Arc<str> = run.into();
        ["task_created", "attempt_started", "attempt_completed"]
            .map(|kind| EventRow {
                run: run.clone(),
                kind,
                payload: "{}".into(),
                epoch: 0,
            })
            .to_vec()
    };
    let written = crate::store::wait(Box::pin(async {
        let runs = join_all(records.iter().map(|r| store.create_run(r, &owner))).await;
        let entries = join_all(ids.iter().map(|id| store.append(entry(id)))).await;
        let events = join_all(ids.iter().map(|id| store.append_events(events(id)))).await;
        runs.into_iter()
            .map(|r| r.map(drop))
            .chain(entries)
            .chain(events)
            .collect::<Result<(), _>>()
    }));
    written.expect("seeding the journal");
}

pub fn swarm_run() {
    let one = scratch("one.lua", ONE_STEP);
    let fan = scratch("fanout.lua", FANOUT);
    let db = one.with_file_name("journal.db");
    for (journal, flag) in [("journal", None), ("no_journal", Some("--no-journal"))] {
        let mut args = vec!["--input", "7"];
        args.extend(flag);
        let (ms, mb) = measure(&one, &db, &args, "7", 21);
        line("swarm-run", &format!("start_1step_ms_{journal}"), ms, "ms");
        line(
            "swarm-run",
            &format!("start_1step_peak_rss_{journal}"),
            mb,
            "MB",
        );
        let mut args = vec!["--input", "1000"];
        args.extend(flag);
        let (ms, mb) = measure(&fan, &db, &args, "500500", 7);
        line("swarm-run", &format!("fanout1000_ms_{journal}"), ms, "ms");
        line(
            "swarm-run",
            &format!("fanout1000_peak_rss_{journal}"),
            mb,
            "MB",
        );
    }
    let old = one.with_file_name("history.db");
    seed_history(&old, 20_000);
    let (ms, _) = measure(&one, &old, &["--input", "7"], "7", 21);
    line("swarm-run", "start_1step_ms_journal_20k_runs", ms, "ms");
    fanout10k(&fan, &one.with_file_name("fanout10k.db"), 7);
    let _ = std::fs::remove_dir_all(one.parent().expect("scratch dir"));
}
