//! Host memory is bounded by limits, not by luck: every payload that enters
//! the engine is measured (as JSON, escapes included) against a documented
//! limit before it is kept or encoded, and what the engine keeps of settled
//! tasks and past events is bounded in bytes.

mod common;

use common::{assert_err, blocked_with, memory_opts, world_with};
use lua_swarm::engine::{EngineConfig, TaskSpec, TaskStatus};
use lua_swarm::lua::VmOptions;
use serde_json::json;

fn big_vm() -> VmOptions {
    VmOptions {
        memory_limit: 256 << 20,
        ..VmOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_results_emits_and_inputs_are_typed_errors() {
    // A 20 MiB result is over the 16 MiB payload limit.
    let r = blocked_with("return ('x'):rep(20 * 1024 * 1024)", big_vm()).await;
    assert_err(&r, "payload_too_large", "the result is 20971522 bytes");
    // 4 MiB of NUL bytes is 24 MiB of JSON: the limit counts the escapes.
    let r = blocked_with("return ('\\0'):rep(4 * 1024 * 1024)", big_vm()).await;
    assert_err(&r, "payload_too_large", "over the limit of 16 MiB");
    let r = blocked_with(
        "swarm.worker.emit('progress', ('y'):rep(2 * 1024 * 1024))",
        big_vm(),
    )
    .await;
    // A refused verb raises in the agent, which ends blocked with it: the
    // verb's own code, at the agent's line.
    assert_err(&r, "payload_too_large", "bomb.lua:2");
    assert_err(&r, "payload_too_large", "the emitted payload");
    assert_err(&r, "payload_too_large", "[payload_too_large]");
    assert_eq!(r["where"], "bomb.lua:2", "{r}");
    let r = blocked_with(
        "swarm.engine.start_task { agent = 'healthy', input = ('z'):rep(17 * 1024 * 1024) }",
        big_vm(),
    )
    .await;
    assert_err(&r, "payload_too_large", "the step input");
    assert_err(&r, "payload_too_large", "bomb.lua:2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_encode_does_not_amplify_past_the_vm() {
    // 12 MiB of NUL bytes would encode to 72 MiB: more than a 64 MiB VM has.
    let r = blocked_with(
        "local s = ('\\0'):rep(12 * 1024 * 1024)\n return #swarm.json.encode(s)",
        VmOptions::default(),
    )
    .await;
    assert_err(&r, "memory_limit", "bomb.lua:3");
}

/// One allocation past the limit (a table doubling its array) fails before
/// the hook can see it, leaving no frame: the error still names the
/// function that was running, never `?`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_allocation_past_the_limit_names_its_function() {
    let r = blocked_with(
        "local t = {}\n for i = 1, 1e8 do t[i] = i end",
        memory_opts(),
    )
    .await;
    assert_err(&r, "memory_limit", "bomb.lua:1");
    assert!(!r["error"].as_str().unwrap().starts_with('?'), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settled_tasks_and_events_are_bounded_in_bytes() {
    let w = world_with(EngineConfig {
        task_retention_bytes: 8 << 20,
        ledger_retention_bytes: 4 << 20,
        ..EngineConfig::default()
    });
    w.agent(
        "fat",
        "return function(task)\n swarm.worker.emit('artifact', ('e'):rep(512 * 1024))\n return ('r'):rep(1024 * 1024)\n end",
        VmOptions::default(),
    );
    for i in 0..40 {
        let (s, r) = w.run("fat", json!(i)).await;
        assert_eq!(s, TaskStatus::Pass, "{r}");
    }
    let (live, retained) = w.engine.held_bytes();
    assert_eq!(live, 0);
    assert!(retained <= 8 << 20, "settled tasks hold {retained} bytes");
    // Older events were evicted; read from the oldest one kept.
    let oldest = match w.engine.subscribe(&w.op, 0).unwrap().try_next() {
        Err(lua_swarm::engine::EngineError::EventsEvicted { oldest, .. }) => oldest,
        other => panic!("expected eviction, got {other:?}"),
    };
    let mut sub = w.engine.subscribe(&w.op, oldest - 1).unwrap();
    let mut outputs = 0;
    while let Some(ev) = sub.try_next().unwrap() {
        if serde_json::to_value(&ev).unwrap()["kind"] == json!("worker_output") {
            outputs += 1;
        }
    }
    assert!((1..=8).contains(&outputs), "{outputs} half-MiB events kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsettled_inputs_are_capped() {
    let w = world_with(EngineConfig {
        max_live_bytes: 1 << 20,
        ..EngineConfig::default()
    });
    let chunk = "p".repeat(300 << 10);
    let mut started = 0;
    let err = loop {
        match w
            .engine
            .start_task(&w.op, TaskSpec::new("nobody", json!(chunk)))
        {
            Ok(_) => started += 1,
            Err(e) => break e,
        }
        assert!(started < 10, "no cap");
    };
    assert_eq!(started, 3);
    assert_eq!(err.code(), "engine_full");
    assert!(err.to_string().contains("limit 1 MiB"), "{err}");
}

/// The same at a blueprint's top level: the error names the file.
#[test]
fn a_blueprint_that_allocates_past_the_limit_names_its_file() {
    use lua_swarm::run::{self, RunOptions};
    let engine =
        lua_swarm::engine::Engine::new(EngineConfig::default(), lua_swarm::auth::Signer::random());
    let opts = RunOptions {
        flow_vm: memory_opts(),
        ..RunOptions::default()
    };
    let src = "local t = {}\nfor i = 1, 1e8 do t[i] = i end\nreturn t\n";
    let err = match run::prepare_source(&engine, std::path::Path::new("grow.lua"), src, opts) {
        Ok(_) => panic!("a 1e8-item table fit in 16 MiB"),
        Err(e) => e.to_string(),
    };
    assert!(err.starts_with("grow.lua: memory limit"), "{err}");
}
