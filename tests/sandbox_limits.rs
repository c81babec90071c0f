//! No Lua code runs outside the limits: finalizers do not exist for user
//! tables, `__close` handlers and `xpcall` message handlers that run after a
//! limit tripped stop at once, a dropped task's pending handlers find the VM
//! stopped, coroutine switches are charged to the budget, and reused branch
//! coroutines are as limited as new ones.

mod common;

use common::{HANG_GUARD, assert_err, blocked, blocked_with, world};
use lua_swarm::engine::{EngineConfig, TaskSpec, TaskStatus};
use lua_swarm::lua::VmOptions;
use serde_json::json;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_tables_get_no_finalizers() {
    let r = blocked("setmetatable({}, { __gc = function() while true do end end })").await;
    assert_err(&r, "lua_error", "bomb.lua:2");
    assert_err(&r, "lua_error", "finalizers (__gc) are not available");
    // A metatable whose __gc is added later is inert, as in stock Lua.
    let w = world();
    w.agent(
        "late",
        "return function()\n local mt = {}\n setmetatable({}, mt)\n mt.__gc = function() while true do end end\n return 'ok'\n end",
        VmOptions::default(),
    );
    for _ in 0..3 {
        assert_eq!(w.run("late", json!(null)).await.1, json!("ok"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_handlers_after_a_limit_stop_at_once() {
    let r = blocked(
        "local x <close> = setmetatable({}, { __close = function() while true do end end })\n\
         while true do end",
    )
    .await;
    assert_eq!(r["code"], json!("deadline"), "{r}");
    let budget = VmOptions {
        instruction_budget: 1_000_000,
        ..VmOptions::default()
    };
    let r = blocked_with(
        "local x <close> = setmetatable({}, { __close = function() while true do end end })\n\
         while true do end",
        budget,
    )
    .await;
    assert_eq!(r["code"], json!("instruction_budget"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xpcall_handlers_never_run_for_a_tripped_limit() {
    let r = blocked(
        "return xpcall(function() while true do end end, function(e)\n while true do end\n end)",
    )
    .await;
    assert_err(&r, "deadline", "bomb.lua:2");
    // Handlers still run for ordinary errors.
    let w = world();
    w.agent(
        "h",
        "return function()\n return select(2, xpcall(error, function(e) return 'handled ' .. e end, 'x'))\n end",
        VmOptions::default(),
    );
    assert_eq!(w.run("h", json!(null)).await.1, json!("handled x"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_tasks_close_handlers_find_the_vm_stopped() {
    let w = Arc::new(world());
    w.agent(
        "sleeper",
        r#"return function()
  local x <close> = setmetatable({}, { __close = function() while true do end end })
  swarm.worker.emit("progress", "asleep")
  swarm.time.sleep(3600 * 1000)
end"#,
        VmOptions::default(),
    );
    w.agent("healthy", common::HEALTHY, VmOptions::default());
    let id = w
        .engine
        .start_task(&w.op, TaskSpec::new("sleeper", json!(null)))
        .unwrap();
    let w2 = w.clone();
    let run = tokio::spawn(async move {
        let s = w2.agents.get("sleeper").unwrap();
        w2.engine.dispatch_attempt(&w2.op, id, s.as_ref()).await
    });
    // Bounded by the hang guard: wait for the agent to be asleep.
    let mut sub = w.engine.subscribe(&w.op, 0).unwrap();
    loop {
        let ev = tokio::time::timeout(HANG_GUARD, sub.next())
            .await
            .expect("hang guard")
            .unwrap();
        if serde_json::to_value(&ev).unwrap()["kind"] == json!("worker_output") {
            break;
        }
    }
    w.engine.cancel_task(&w.op, id).unwrap();
    let v = tokio::time::timeout(HANG_GUARD, run)
        .await
        .expect("the dropped task's __close handler ran unbounded")
        .unwrap()
        .unwrap();
    assert_eq!(v.status, TaskStatus::Cancelled);
    let (s, _) = w.run("healthy", json!(2)).await;
    assert_eq!(s, TaskStatus::Pass);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coroutine_switches_are_charged() {
    // Counts resumes in progress events until the budget trips.
    let w = world_budget(2_000_000);
    let (s, r) = w.run("spin", json!(null)).await;
    assert_eq!(s, TaskStatus::Blocked);
    assert_eq!(r["code"], json!("instruction_budget"), "{r}");
    let mut sub = w.engine.subscribe(&w.op, 0).unwrap();
    let mut reports = 0;
    while let Some(ev) = sub.try_next().unwrap() {
        if serde_json::to_value(&ev).unwrap()["kind"] == json!("worker_output") {
            reports += 1;
        }
    }
    // One report per 1,000 resumes; at least 100 instructions are charged
    // per resume, so 2e6 instructions allow at most 20 reports.
    assert!(reports <= 20, "{reports} thousand resumes on a 2e6 budget");
}

fn world_budget(budget: u64) -> common::World {
    let w = common::world_with(EngineConfig::default());
    w.agent(
        "spin",
        r#"return function()
  local n = 0
  local co = coroutine.wrap(function() while true do coroutine.yield() end end)
  while true do
    co()
    n = n + 1
    if n % 1000 == 0 then swarm.worker.emit("progress", n) end
  end
end"#,
        VmOptions {
            instruction_budget: budget,
            ..VmOptions::default()
        },
    );
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coroutine_wrap_behaves_like_lua() {
    let w = world();
    w.agent(
        "wrap",
        r#"return function()
  local gen = coroutine.wrap(function(a) local b = coroutine.yield(a + 1) return b * 2 end)
  local first, second = gen(1), gen(10)
  local bad = coroutine.wrap(function() error("inside") end)
  local ok, err = pcall(bad)
  local dead_ok = pcall(bad)
  return { first, second, ok, tostring(err):match("inside") ~= nil, dead_ok }
end"#,
        VmOptions::default(),
    );
    let (s, r) = w.run("wrap", json!(null)).await;
    assert_eq!(s, TaskStatus::Pass, "{r}");
    assert_eq!(r, json!([2, 20, false, true, false]));
}

/// A call that waits (a process step, a sleep) made inside a coroutine of
/// the script's own suspends the whole flow until it is ready, then the
/// coroutine goes on: the script sees the call's value, never mlua's
/// internal "pending" marker (which once came back from `resume`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_calls_inside_a_scripts_own_coroutine_wait_for_the_flow() {
    let src = r#"local swarm = require "swarm"
return swarm.blueprint "co" {
  agents = { seven = swarm.agent.process { cmd = { "sh", "-c", "cat >/dev/null; echo 7" } } },
  flow = function()
    local got = {}
    for x in coroutine.wrap(function()
      for i = 1, 3 do coroutine.yield(swarm.step("seven", i)) end
    end) do
      got[#got + 1] = x
    end
    local co = coroutine.create(function(a)
      swarm.sleep(1)
      local b = coroutine.yield(a + swarm.step("seven", 0))
      return b * 2
    end)
    local ok1, first = coroutine.resume(co, 1)
    local ok2, second = coroutine.resume(co, 10)
    local nested = coroutine.wrap(function()
      return coroutine.wrap(function() return swarm.step("seven", 0) + 1 end)()
    end)()
    return { got, ok1, first, ok2, second, coroutine.status(co), nested }
  end,
}"#;
    let (s, r) = flow_with_budget("co.lua", src).await;
    assert_eq!(s, TaskStatus::Pass, "{r}");
    assert_eq!(r, json!([[7, 7, 7], true, 8, true, 20, "dead", 8]));
}

/// A race's loser waiting inside a coroutine of its own is abandoned at
/// once: the coroutine is closed (its `<close>` handler has run when the
/// race returns) and its pending step collected, so the step's task is
/// cancelled then, not at some later garbage collection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_race_loser_waiting_in_its_own_coroutine_is_closed_at_once() {
    let src = r#"local swarm = require "swarm"
return swarm.blueprint "co_race" {
  agents = { slow = swarm.agent.process { cmd = { "sh", "-c", "exec sleep 3600" } } },
  flow = function()
    local closed = false
    local winner = swarm.race({
      function()
        return coroutine.wrap(function()
          local x <close> = setmetatable({}, { __close = function() closed = true end })
          return swarm.step("slow", 1)
        end)()
      end,
      function() swarm.sleep(1) return "fast" end,
    })
    return { winner, closed }
  end,
}"#;
    let (s, r) = flow_with_budget("co_race.lua", src).await;
    assert_eq!((s, r), (TaskStatus::Pass, json!(["fast", true])));
}

/// Runs a blueprint's flow with a 20M-instruction budget; returns its
/// status and result (hang-guarded).
async fn flow_with_budget(name: &str, src: &str) -> (TaskStatus, serde_json::Value) {
    use lua_swarm::run::{self, RunOptions};
    let engine =
        lua_swarm::engine::Engine::new(EngineConfig::default(), lua_swarm::auth::Signer::random());
    let opts = RunOptions {
        flow_vm: VmOptions {
            instruction_budget: 20_000_000,
            ..VmOptions::default()
        },
        ..RunOptions::default()
    };
    let r = run::prepare_source(&engine, std::path::Path::new(name), src, opts).unwrap();
    let report = tokio::time::timeout(HANG_GUARD, r.run(json!(null)))
        .await
        .expect("hang guard: a flow ran unbounded")
        .unwrap();
    (report.status, report.result)
}

/// Branch coroutines are reused once finished (a VM keeps a pool): a
/// reused one is as limited as a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_branch_coroutines_stay_limited() {
    let src = r#"local swarm = require "swarm"
return swarm.blueprint "reuse" {
  agents = {},
  flow = function()
    local items = {}
    for i = 1, 300 do items[i] = i end
    local out = swarm.map(items, function(i) return i * 2 end)
    assert(out[300] == 600)
    swarm.parallel({ function() while true do end end })
  end,
}"#;
    let (s, r) = flow_with_budget("reuse.lua", src).await;
    assert_eq!(s, TaskStatus::Blocked, "{r}");
    assert_err(&r, "instruction_budget", "reuse.lua:9");
}

/// A race's loser is dropped while it waits; its pending `__close`
/// handler runs as its coroutine is reset for reuse (as `coroutine.close`
/// would run it), inside the flow's limits: a handler that never returns
/// is stopped, not left spinning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_race_losers_close_handler_runs_inside_the_limits() {
    let src = r#"local swarm = require "swarm"
return swarm.blueprint "loser" {
  agents = {},
  flow = function()
    local winner = swarm.race({
      function()
        local x <close> = setmetatable({}, { __close = function() while true do end end })
        swarm.sleep(3600 * 1000)
      end,
      function() return "fast" end,
    })
    return winner
  end,
}"#;
    let (s, r) = flow_with_budget("loser.lua", src).await;
    assert_eq!((s, r), (TaskStatus::Pass, json!("fast")));
}

/// A dropped branch's `<close>` variables are closed, once, as its
/// coroutine is reset: the race's loser sees its handler run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_race_losers_close_variables_are_closed_once() {
    let src = r#"local swarm = require "swarm"
return swarm.blueprint "closed" {
  agents = {},
  flow = function()
    local closed = 0
    local winner = swarm.race({
      function()
        local x <close> = setmetatable({}, { __close = function() closed = closed + 1 end })
        swarm.sleep(3600 * 1000)
      end,
      function() return "fast" end,
    })
    return { winner, closed }
  end,
}"#;
    let (s, r) = flow_with_budget("closed.lua", src).await;
    assert_eq!((s, r), (TaskStatus::Pass, json!(["fast", 1])));
}

/// `ask` without a question it can name (nil, a number, "") is a misuse at
/// the caller's line, not a run left waiting for an answer to `null`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_refuses_a_question_it_cannot_name() {
    let src = r#"local swarm = require "swarm"
return swarm.blueprint "ask" {
  flow = function()
    local out = {}
    for _, q in ipairs({ 5, "", true }) do
      local ok, e = pcall(swarm.ask, q)
      out[#out + 1] = { ok, e.code, e.where }
    end
    local ok, e = pcall(swarm.ask)
    out[#out + 1] = { ok, e.code, e.where }
    return out
  end,
}"#;
    let (s, r) = flow_with_budget("ask.lua", src).await;
    assert_eq!(s, TaskStatus::Pass, "{r}");
    let row = |line: u32| json!([false, "bad_argument", format!("ask.lua:{line}")]);
    assert_eq!(r, json!([row(6), row(6), row(6), row(9)]));
}
