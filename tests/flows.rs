//! Blueprints and flows through the library API: the bundled samples, the
//! flow primitives, middleware layers, recursion, gates and helper files.
//! Bad input and its errors are in `flow_errors.rs`.

mod common;

use common::flow::{run_file, run_src, scratch, write};
use lua_swarm::engine::TaskStatus;
use lua_swarm::run::RunOptions;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("blueprints")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_hello() {
    let r = run_file(
        &sample("hello.lua"),
        json!({"name": "swarm"}),
        RunOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, TaskStatus::Pass);
    assert_eq!(
        r.result,
        json!({"greeting": "Hello, swarm!", "loud": "HELLO, SWARM!", "length": 13})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_review_with_retry_and_senior_escalation() {
    let mut opts = RunOptions::default();
    opts.answers.insert(
        "escalate:reviewer".into(),
        json!({"ok": true, "note": "fine"}),
    );
    opts.answers.insert("approve".into(), json!("yes"));
    let r = run_file(&sample("review.lua"), json!({"topic": "swarms"}), opts)
        .await
        .unwrap();
    assert_eq!(r.status, TaskStatus::Pass, "{}", r.result);
    assert_eq!(r.result["approved"], json!("yes"));
    assert_eq!(
        r.result["review"]["original"]["verdict"],
        json!("too short")
    );
    assert_eq!(r.result["review"]["override"]["note"], json!("fine"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_review_without_an_answer_fails_clearly() {
    let r = run_file(
        &sample("review.lua"),
        json!({"topic": "swarms"}),
        RunOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, TaskStatus::Cancelled);
    assert_eq!(r.result["code"], json!("senior_unanswered"));
    assert!(
        r.result["error"]
            .as_str()
            .unwrap()
            .contains("--answer escalate:reviewer=")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_mapreduce_over_1000_items_through_a_process_agent() {
    let r = run_file(
        &sample("mapreduce.lua"),
        json!({"lines": 1000}),
        RunOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, TaskStatus::Pass, "{}", r.result);
    assert_eq!(r.result, json!({"lines": 1000, "words": 8000}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_race_with_a_timeout() {
    let r = run_file(&sample("race.lua"), Value::Null, RunOptions::default())
        .await
        .unwrap();
    assert_eq!(
        r.result,
        json!({"winner": "quick", "index": 2, "alone": "timeout"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_primitives() {
    let r = run_src(
        "primitives",
        r#"
local swarm = require "swarm"
return swarm.blueprint "primitives" {
  agents = {
    echo = swarm.agent.rust { name = "echo" },
    fail = swarm.agent.rust { name = "fail" },
    nap = swarm.agent.rust { name = "sleep" },
  },
  flow = function(input)
    local settled = swarm.all_settled {
      function() return swarm.step("echo", 1) end,
      function() return swarm.step("fail", "no") end,
    }
    local any = swarm.any {
      function() return swarm.step("fail", "x") end,
      function() return swarm.step("nap", { ms = 20, value = "second" }) end,
    }
    local ok, err = swarm.try(function() return swarm.step("fail", "why") end)
    local doubled = swarm.map({ 1, 2, 3, 4, 5 }, function(n) return swarm.step("echo", n) * 2 end,
                              { concurrency = 2 })
    local t0 = swarm.time.now()
    swarm.sleep(20)
    return {
      settled = { settled[1].ok, settled[1].value, settled[2].ok, settled[2].error.code },
      any = any, try = { ok, err.code, err.result }, doubled = doubled,
      slept = swarm.time.now() - t0 >= 19,
    }
  end,
}"#,
        Value::Null,
    )
    .await;
    assert_eq!(r.status, TaskStatus::Pass, "{}", r.result);
    assert_eq!(r.result["settled"], json!([true, 1, false, "blocked"]));
    assert_eq!(r.result["any"], json!("second"));
    assert_eq!(r.result["try"], json!([false, "blocked", "why"]));
    assert_eq!(r.result["doubled"], json!([2, 4, 6, 8, 10]));
    assert_eq!(r.result["slept"], json!(true));
}

/// `parallel` and `map` answer each branch's value at its own index (nil
/// included), in a table the flow may change; the branch whose failure
/// stopped the others is the one raised, at the user's line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branch_values_keep_their_places_and_the_failure_is_the_one_raised() {
    let r = run_src(
        "places",
        r#"
local swarm = require "swarm"
return swarm.blueprint "places" {
  agents = {
    echo = swarm.agent.rust { name = "echo" },
    fail = swarm.agent.rust { name = "fail" },
  },
  flow = function()
    local holes = swarm.map({ 1, 2, 3, 4 }, function(n)
      if n % 2 == 0 then return nil end
      return swarm.step("echo", n)
    end)
    holes[5] = "mine"
    local par = swarm.parallel {
      function() return "a" end,
      function() return nil end,
      function() return swarm.step("echo", "c") end,
    }
    local ok, err = pcall(swarm.parallel, {
      function() return swarm.step("echo", 1) end,
      function() return swarm.step("fail", "second") end,
    })
    local settled = swarm.all_settled {
      function() return nil end,
      function() error({ code = "mine" }) end,
    }
    return {
      holes = { holes[1], holes[2] == nil, holes[3], holes[4] == nil, holes[5] },
      par = { par[1], par[2] == nil, par[3] },
      raised = { ok, err.code, err.result },
      settled = { settled[1].ok, settled[1].value == nil, settled[2].ok, settled[2].error.code },
    }
  end,
}"#,
        Value::Null,
    )
    .await;
    assert_eq!(r.status, TaskStatus::Pass, "{}", r.result);
    assert_eq!(r.result["holes"], json!([1, true, 3, true, "mine"]));
    assert_eq!(r.result["par"], json!(["a", true, "c"]));
    assert_eq!(r.result["raised"], json!([false, "blocked", "second"]));
    assert_eq!(r.result["settled"], json!([true, true, false, "mine"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lua_layers_rewrite_reject_and_transform_in_declaration_order() {
    let r = run_src(
        "layers",
        r#"
local swarm = require "swarm"
return swarm.blueprint "layers" {
  agents = { echo = swarm.agent.rust { name = "echo" } },
  layers = {
    outer = swarm.layer {
      before = function(ctx, input)
        if input == "forbidden" then return nil, "not allowed" end
        return input .. "+outer"
      end,
      after = function(ctx, r) return { ok = r.ok, value = r.value .. "|outer" } end,
    },
    inner = swarm.layer {
      before = function(ctx, input) return input .. "+inner" end,
      after = function(ctx, r) return { ok = r.ok, value = r.value .. "|inner" } end,
    },
  },
  hints = { layers = { "outer", "audit", "inner" } },
  flow = function()
    local ok, err = swarm.pstep("echo", "forbidden")
    return { swarm.step("echo", "x"), err.result.code, err.result.error, err.result.layer }
  end,
}"#,
        Value::Null,
    )
    .await;
    assert_eq!(
        r.result,
        json!([
            "x+outer+inner|inner|outer",
            "rejected",
            "not allowed",
            "outer"
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursive_swarms_spawn_sub_tasks_within_the_depth_limit() {
    let r = run_src(
        "recursive",
        r#"
local swarm = require "swarm"
return swarm.blueprint "recursive" {
  agents = {
    tree = swarm.agent.lua {
      run = function(task)
        local n = task.input
        if n == 0 then return 1 end
        local left = swarm.step("tree", n - 1)
        local ok, right = swarm.pstep("tree", n - 1)
        return left + (ok and right or 0)
      end,
    },
  },
  flow = function(n)
    local ok, deep = swarm.pstep("tree", 10)
    return { small = swarm.step("tree", 2), deep_ok = ok, deep = not ok and deep.message or nil }
  end,
}"#,
        json!(null),
    )
    .await;
    assert_eq!(r.result["small"], json!(4));
    assert_eq!(r.result["deep_ok"], json!(false));
    assert!(
        r.result["deep"].as_str().unwrap().contains("depth"),
        "{}",
        r.result
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_narrowed_gate_applies_to_the_flow() {
    let r = run_src(
        "narrow",
        r#"
local swarm = require "swarm"
return swarm.blueprint "narrow" {
  gate = { operator = { "start_task", "dispatch", "read_task", "poll_task", "subscribe", "heartbeat" } },
  flow = function()
    local ok, err = pcall(swarm.engine.cancel_task, 1)
    return { ok, err.code, swarm.gate.can("cancel_task") }
  end,
}"#,
        Value::Null,
    )
    .await;
    assert_eq!(r.result, json!([false, "forbidden", false]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blueprints_require_helpers_from_their_own_directory() {
    let dir = scratch("require");
    write(
        &dir,
        "helper.lua",
        "return { greet = function(n) return 'hi ' .. n end }\n",
    );
    let p = write(
        &dir,
        "main.lua",
        "local swarm = require 'swarm'\nlocal helper = require 'helper'\nreturn swarm.blueprint 'r' {\n  flow = function(n) return helper.greet(n) end,\n}\n",
    );
    let r = run_file(&p, json!("bob"), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(r.result, json!("hi bob"));
}
