//! Nothing survives a task, and nothing a script does reaches past what
//! its token allows: a pooled VM's next task sees neither the tables nor
//! the random numbers of the one before, whatever the script marks on its
//! own tables; coroutines the host drives cannot be taken over; an
//! engine-wide read needs the observer right. Lua agents (pooled VMs),
//! flows and a bare VM (as the REPL runs one).

mod common;

use common::flow::run_src;
use common::*;
use lua_swarm::engine::TaskStatus;
use lua_swarm::lua::{Vm, VmOptions};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_the_script_marks_frozen_is_not_kept_across_tasks() {
    let w = world();
    // A body capturing a table whose metatable claims to be the host's.
    w.agent(
        "keeper",
        r#"local t = setmetatable({}, { __frozen = true, __metatable = "locked" })
return function(task)
  local before = t.v
  t.v = task.input
  rawset(t, "w", 1)
  return { before = before }
end"#,
        VmOptions::default(),
    );
    for i in 0..3 {
        let (s, r) = w.run("keeper", json!(format!("secret {i}"))).await;
        assert_eq!(s, TaskStatus::Pass, "{r}");
        assert_eq!(r, json!({}), "task {i} saw an earlier task's input");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prng_is_reseeded_for_every_task() {
    let w = world();
    w.agent(
        "rng",
        r#"return function(task)
  if task.input == "seed" then math.randomseed(7) return math.random(1, 2^40) end
  if task.input == "predict" then math.randomseed(7) math.random(1, 2^40) return math.random(1, 2^40) end
  return math.random(1, 2^40)
end"#,
        VmOptions::default(),
    );
    let (_, predicted) = w.run("rng", json!("predict")).await;
    let (_, _) = w.run("rng", json!("seed")).await;
    let (s, next) = w.run("rng", json!("draw")).await;
    assert_eq!(s, TaskStatus::Pass);
    assert_ne!(
        next, predicted,
        "the task after a randomseed(7) drew the seeded sequence"
    );
    // A bare VM (the REPL's) reseeds per run too.
    let vm = Vm::new(w.host(), VmOptions::default()).unwrap();
    vm.exec("math.randomseed(7)", "a.lua").await.unwrap();
    let again = vm
        .exec("return math.random(1, 2^40)", "b.lua")
        .await
        .unwrap();
    let seeded = vm
        .exec(
            "math.randomseed(7) math.random(1, 2^40) return math.random(1, 2^40)",
            "c.lua",
        )
        .await
        .unwrap();
    assert_ne!(again[0].as_i64(), seeded[0].as_i64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coroutine_waiting_for_the_host_has_one_resumer() {
    let r = run_src(
        "two_resumers",
        r#"
local swarm = require "swarm"
return swarm.blueprint "two_resumers" {
  agents = { slow = swarm.agent.lua { run = function() swarm.time.sleep(50) return "done" end } },
  flow = function()
    local co = coroutine.create(function() return swarm.step("slow", 1) end)
    local host_thread
    local got = swarm.parallel {
      function() return { coroutine.resume(co) } end,
      function()
        local r = { coroutine.resume(co) }
        local c = pcall(coroutine.close, co)
        return { r[1], r[2], c }
      end,
      function()
        host_thread = coroutine.running()
        swarm.sleep(20)
        return "branch"
      end,
      function()
        swarm.sleep(1)
        local ok, err = coroutine.resume(host_thread)
        local closed = pcall(coroutine.close, host_thread)
        return { ok, err, closed }
      end,
    }
    return got
  end,
}
"#,
        json!(null),
    )
    .await;
    assert_eq!(r.status, TaskStatus::Pass, "{}", r.result);
    assert_eq!(r.result[0], json!([true, "done"]), "{}", r.result);
    assert_eq!(r.result[1][0], json!(false));
    assert!(
        r.result[1][1]
            .as_str()
            .unwrap()
            .contains("waiting for the host"),
        "{}",
        r.result
    );
    assert_eq!(r.result[1][2], json!(false), "closing it is refused");
    assert_eq!(r.result[2], json!("branch"));
    assert_eq!(r.result[3][0], json!(false));
    assert!(
        r.result[3][1]
            .as_str()
            .unwrap()
            .contains("a thread the host runs"),
        "{}",
        r.result
    );
    assert_eq!(r.result[3][2], json!(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yields_are_charged_like_resumes() {
    // A main-thread yield loop returns to the host's poller every time.
    let opts = VmOptions {
        instruction_budget: 1_000_000,
        ..VmOptions::default()
    };
    let r = blocked_with("while true do coroutine.yield() end", opts.clone()).await;
    assert_err(&r, "instruction_budget", "bomb.lua");
    let r = blocked_with(
        "local co = coroutine.wrap(function() while true do coroutine.yield() end end)\n while true do co() end",
        opts,
    )
    .await;
    assert_err(&r, "instruction_budget", "bomb.lua");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_wide_cursor_needs_the_observer_right() {
    let w = world();
    w.agent(
        "peek",
        "return function() return { pcall(swarm.engine.last_cursor) } end",
        VmOptions::default(),
    );
    let (s, r) = w.run("peek", json!(null)).await;
    assert_eq!(s, TaskStatus::Pass);
    assert_eq!(r[0], json!(false), "a worker read the ledger cursor: {r}");
    assert!(r[1].to_string().contains("forbidden"), "{r}");
    // A flow (bound to its run) sees its own run's newest event, which
    // does not move with another run's work.
    let r = run_src(
        "cursor",
        r#"
local swarm = require "swarm"
return swarm.blueprint "cursor" {
  agents = { a = swarm.agent.lua { run = function() return 1 end } },
  flow = function()
    local c = swarm.engine.last_cursor()
    return { c = c }
  end,
}
"#,
        json!(null),
    )
    .await;
    assert_eq!(r.status, TaskStatus::Pass, "{}", r.result);
    assert!(r.result["c"].as_i64().unwrap() > 0);
}
