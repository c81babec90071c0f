//! Run-wide budgets and a control path no script can starve: all of a
//! run's Lua VMs share one instruction and one memory budget and its
//! journal one entry and byte budget (each overridable in `limits`); a
//! run's deadline, SIGTERM and the runtime's other tasks are served while
//! every agent spins; `swarm run` has a default deadline (`--deadline
//! none` lifts it). Ordering, not timing: every wait here is a hang guard
//! far beyond what the host needs.

mod common;

use common::dir::{Dir, text, wait_exit};
use common::flow::{engine, scratch, write};
use lua_swarm::engine::TaskStatus;
use lua_swarm::run::{self, RunOptions};
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const SPINNERS: &str = r#"
local swarm = require "swarm"
return swarm.blueprint "spin" {
  agents = { spin = swarm.agent.lua { run = function() local x = 0 while true do x = x + 1 end end } },
  LIMITS
  flow = function()
    return swarm.parallel {
      function() return swarm.step("spin", 1) end, function() return swarm.step("spin", 2) end,
      function() return swarm.step("spin", 3) end, function() return swarm.step("spin", 4) end,
    }
  end,
}
"#;

async fn run_limited(name: &str, limits: &str, opts: RunOptions) -> run::RunReport {
    let dir = scratch(name);
    let path = write(&dir, "spin.lua", &SPINNERS.replace("LIMITS", limits));
    let prepared = run::prepare(&engine(), &path, opts).unwrap();
    tokio::time::timeout(Duration::from_secs(120), prepared.run(json!(null)))
        .await
        .expect("hang guard")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spinning_agents_share_the_run_instruction_budget() {
    // Each agent alone may run 1e9 instructions; together they get 2e7.
    let r = run_limited(
        "run_budget",
        "limits = { instructions = 20000000 },",
        RunOptions::default(),
    )
    .await;
    assert_eq!(r.status, TaskStatus::Blocked, "{}", r.result);
    assert!(
        r.result
            .to_string()
            .contains("the run's instruction budget of 20000000"),
        "{}",
        r.result
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_share_the_run_memory_budget() {
    let dir = scratch("run_memory");
    let path = write(
        &dir,
        "grow.lua",
        r#"
local swarm = require "swarm"
return swarm.blueprint "grow" {
  agents = { grow = swarm.agent.lua { run = function()
    local t = {}
    for i = 1, 2e6 do t[i] = i end
    swarm.time.sleep(200)
    for i = 1, 1e9 do t[#t + 1] = i end
  end } },
  limits = { memory = 100000000 },
  flow = function()
    return swarm.parallel {
      function() return swarm.step("grow", 1) end, function() return swarm.step("grow", 2) end,
      function() return swarm.step("grow", 3) end, function() return swarm.step("grow", 4) end,
    }
  end,
}
"#,
    );
    let prepared = run::prepare(&engine(), &path, RunOptions::default()).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(120), prepared.run(json!(null)))
        .await
        .expect("hang guard")
        .unwrap();
    assert_eq!(r.status, TaskStatus::Blocked, "{}", r.result);
    assert!(
        r.result.to_string().contains("the run's memory budget"),
        "{}",
        r.result
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_keeps_serving_while_every_agent_spins() {
    let done = Arc::new(AtomicBool::new(false));
    let ticker = {
        let done = done.clone();
        tokio::spawn(async move {
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    // Four spinners on two workers, stopped by the run's instruction
    // budget: seconds, against 100 ms of timers.
    let r = run_limited(
        "serving",
        "limits = { instructions = 300000000 },",
        RunOptions::default(),
    )
    .await;
    assert_eq!(r.status, TaskStatus::Blocked);
    assert!(
        done.load(Ordering::SeqCst),
        "the timers did not fire while the agents spun"
    );
    ticker.await.unwrap();
}

fn spinners(d: &Dir) -> String {
    d.file("spin.lua", &SPINNERS.replace("LIMITS", ""))
}

/// Waits until the run has started (its id on stderr), returning the rest.
fn started(child: &mut std::process::Child) {
    let err = child.stderr.take().unwrap();
    let mut lines = BufReader::new(err).lines();
    for line in lines.by_ref() {
        if line.unwrap().starts_with("run ") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
}

#[test]
fn sigterm_stops_a_run_whose_agents_all_spin() {
    let d = Dir::new("sigterm_spin");
    let bp = spinners(&d);
    let mut child = d.spawn(&["run", &bp, "--run-id", "spin"]);
    started(&mut child);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = wait_exit(child, 60);
    assert!(!out.status.success(), "{}", text(&out));
    let show = d.swarm(&["show", "spin", "--json", "--events", "0"]);
    assert!(
        text(&show).contains("interrupted"),
        "the run was not stopped by the signal: {}",
        text(&show)
    );
}

#[test]
fn a_run_deadline_stops_spinning_agents_and_none_lifts_the_default() {
    let d = Dir::new("deadline_spin");
    let bp = spinners(&d);
    let out = wait_exit(d.spawn(&["run", &bp, "--deadline", "1s"]), 60);
    assert!(!out.status.success());
    assert!(text(&out).contains("run_deadline"), "{}", text(&out));
    let out = d.swarm(&["run", &bp, "--deadline", "soon"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let ok = d.file(
        "ok.lua",
        "local swarm = require \"swarm\"\nreturn swarm.blueprint \"ok\" { agents = {}, flow = function() return 1 end }",
    );
    let out = d.swarm(&["run", &ok, "--deadline", "none"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn the_journal_budget_refuses_before_anything_is_stored() {
    let d = Dir::new("journal_budget");
    let bp = d.file(
        "reads.lua",
        r#"local swarm = require "swarm"
return swarm.blueprint "reads" {
  agents = {},
  limits = { journal_entries = 10 },
  flow = function()
    for i = 1, 20 do math.random(100) end
    return "unreachable"
  end,
}"#,
    );
    let out = d.swarm(&["run", &bp, "--run-id", "reads"]);
    assert!(text(&out).contains("journal_budget"), "{}", text(&out));
    // A question too large for the engine is refused before it is stored.
    let big = d.file(
        "big.lua",
        r#"local swarm = require "swarm"
return swarm.blueprint "big" {
  agents = {},
  flow = function()
    for i = 1, 4 do pcall(swarm.ask, { key = "q" .. i, text = ("x"):rep(20 * 2^20) }) end
    return "asked"
  end,
}"#,
    );
    let out = d.swarm(&["run", &big, "--run-id", "big", "--deadline", "none"]);
    assert!(out.status.success(), "{}", text(&out));
    let bytes: u64 = std::fs::read_dir(&d.0)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("swarm.db"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(
        bytes < 8 << 20,
        "refused questions were stored: {bytes} bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_reaches_a_script_waiting_on_the_host() {
    // No Lua runs while it waits, so the hook cannot see the deadline.
    let r = common::blocked("swarm.time.sleep(86400000)").await;
    common::assert_err(&r, "deadline", "bomb.lua:2");
}
