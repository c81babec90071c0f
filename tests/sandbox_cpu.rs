//! Every way of running is charged: runs have an optional wall-clock
//! deadline (a flow sleeping in a loop ends), and concurrently running
//! Lua-agent VMs are capped per spawn depth, with a queue and no deadlock
//! when agents dispatch agents. (Coroutine switches: `sandbox_limits.rs`.)

mod common;

use common::{HANG_GUARD, HEALTHY, world};
use lua_swarm::engine::TaskStatus;
use lua_swarm::lua::{Host, LuaAgent, VmOptions, VmSlots};
use lua_swarm::run::{self, RunOptions};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const SLEEPER: &str = r#"
local swarm = require "swarm"
return swarm.blueprint "sleeper" {
  limits = { deadline = "300ms" },
  agents = { echo = swarm.agent.rust { name = "echo" } },
  flow = function()
    swarm.step("echo", 1)
    while true do swarm.sleep(1) end
  end,
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_deadline_ends_a_flow_that_sleeps_forever() {
    let (engine, _) = engine();
    let r = run::prepare_source(
        &engine,
        Path::new("sleeper.lua"),
        SLEEPER,
        RunOptions::default(),
    )
    .unwrap();
    assert_eq!(r.deadline(), Some(Duration::from_millis(300)));
    let report = tokio::time::timeout(HANG_GUARD, r.run(Value::Null))
        .await
        .expect("the deadline did not end the run")
        .unwrap();
    assert_eq!(report.status, TaskStatus::Blocked);
    assert_eq!(report.result["code"], json!("run_deadline"));
    assert!(
        report.result["error"].as_str().unwrap().contains("300ms"),
        "{}",
        report.result
    );
    // The option and the blueprint compose: the shorter one applies.
    let opts = RunOptions {
        deadline: Some(Duration::from_millis(100)),
        ..RunOptions::default()
    };
    let r = run::prepare_source(&engine, Path::new("sleeper.lua"), SLEEPER, opts).unwrap();
    assert_eq!(r.deadline(), Some(Duration::from_millis(100)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_deadline_is_a_blueprint_error() {
    let (engine, _) = engine();
    let src = SLEEPER.replace("\"300ms\"", "\"soon\"");
    let err = run::prepare_source(&engine, Path::new("bad.lua"), &src, RunOptions::default())
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("limits.deadline") && msg.contains("bad.lua:3"),
        "{msg}"
    );
}

fn engine() -> (lua_swarm::engine::Engine, ()) {
    let w = world();
    (w.engine, ())
}

/// Runs `n` tasks of `agent` at once and returns their results.
async fn burst(w: &Arc<common::World>, agent: &str, n: usize) -> Vec<(TaskStatus, Value)> {
    let mut handles = Vec::new();
    for i in 0..n {
        let w = w.clone();
        let agent = agent.to_string();
        handles.push(tokio::spawn(async move { w.run(&agent, json!(i)).await }));
    }
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

fn capped(w: &common::World, name: &str, src: &str, slots: &VmSlots) {
    let mut host = Host::new(w.engine.clone(), &w.agents);
    host.vm_slots = slots.clone();
    let a = Arc::new(LuaAgent::new(
        host,
        src,
        &format!("{name}.lua"),
        VmOptions::default(),
    ));
    w.agents.insert(name, a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_agent_vms_are_capped_with_a_queue() {
    let w = Arc::new(world());
    let slots = VmSlots::new(2);
    capped(
        &w,
        "busy",
        r#"return function(task)
  swarm.worker.emit("progress", "in")
  swarm.time.sleep(20)
  swarm.worker.emit("progress", "out")
  return task.input
end"#,
        &slots,
    );
    let results = burst(&w, "busy", 12).await;
    assert!(
        results.iter().all(|(s, _)| *s == TaskStatus::Pass),
        "{results:?}"
    );
    // Replay the ledger: never more than 2 agents between "in" and "out".
    let mut sub = w.engine.subscribe(&w.op, 0).unwrap();
    let (mut inside, mut most) = (0i32, 0i32);
    while let Some(ev) = sub.try_next().unwrap() {
        let v = serde_json::to_value(&ev).unwrap();
        match v["data"].as_str() {
            Some("in") => inside += 1,
            Some("out") => inside -= 1,
            _ => {}
        }
        most = most.max(inside);
    }
    assert!(most <= 2, "{most} agent VMs ran at once with 2 slots");
    assert_eq!(slots.available(1), 2, "every slot came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_dispatching_agents_never_deadlock_on_slots() {
    let w = Arc::new(world());
    // One slot per depth; three parents each wait on a child.
    let slots = VmSlots::new(1);
    capped(&w, "child", HEALTHY, &slots);
    capped(
        &w,
        "parent",
        r#"return function(task)
  local id = swarm.engine.start_task { agent = "child", input = task.input }
  local v = swarm.engine.dispatch(id)
  return v.result.sum
end"#,
        &slots,
    );
    let results = tokio::time::timeout(HANG_GUARD, burst(&w, "parent", 3))
        .await
        .expect("deadlock");
    assert!(
        results
            .iter()
            .all(|(s, r)| *s == TaskStatus::Pass && *r == json!(500500)),
        "{results:?}"
    );
}
