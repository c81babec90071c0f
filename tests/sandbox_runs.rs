//! Every token reaches only its own run: on one shared engine, a run's flow
//! cannot read, poll, cancel, dispatch, parent, question, answer or watch
//! another run's tasks, and a refusal reveals nothing about them.

use lua_swarm::auth::{Role, Signer};
use lua_swarm::engine::{
    AttachOptions, Caller, Engine, EngineConfig, TaskId, TaskSpec, TaskStatus,
};
use lua_swarm::run::{self, RunOptions};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

/// Run B: leaves a pending child task holding a secret, and passes.
const VICTIM: &str = r#"
local swarm = require "swarm"
return swarm.blueprint "victim" {
  agents = { vault = swarm.agent.rust { name = "echo" } },
  flow = function(input)
    local id = swarm.engine.start_task { agent = "vault", input = "secret-of-b" }
    return { child = id, echo = swarm.step("vault", "b-ok") }
  end,
}
"#;

/// Run A: given B's root and child ids, tries every verb on them.
const ATTACKER: &str = r#"
local swarm = require "swarm"
return swarm.blueprint "attacker" {
  agents = { vault = swarm.agent.rust { name = "echo" } },
  flow = function(input)
    local out = {}
    local function try(name, f, ...)
      local ok, err = pcall(f, ...)
      out[name] = ok and "ALLOWED" or (type(err) == "table" and err.code or tostring(err))
      if not ok and type(err) == "table" and tostring(err.message):find("vault") then
        out[name .. "_leak"] = err.message
      end
    end
    for _, id in ipairs({ input.root, input.child }) do
      local tag = id == input.root and "root" or "child"
      try("read_" .. tag, swarm.engine.read_task, id)
      try("poll_" .. tag, swarm.engine.poll_task, id, 0)
      try("cancel_" .. tag, swarm.engine.cancel_task, id)
      try("dispatch_" .. tag, swarm.engine.dispatch, id)
      try("query_" .. tag, swarm.engine.query_senior, id, "mine now?")
      try("parent_" .. tag, swarm.engine.start_task, { agent = "vault", input = 1, parent = id })
    end
    try("read_unknown", swarm.engine.read_task, 999999)
    local foreign = 0
    for _, ev in ipairs(swarm.engine.events(0, { max = 100000 })) do
      if ev.task == input.root or ev.task == input.child then foreign = foreign + 1 end
    end
    out.foreign_events = foreign
    out.own = swarm.step("vault", "a-ok")
    return out
  end,
}
"#;

fn engine() -> (Engine, lua_swarm::auth::CapToken) {
    let engine = Engine::new(EngineConfig::default(), Signer::random());
    let op = engine
        .attach(Caller::Host, AttachOptions::new("host", Role::Operator))
        .unwrap();
    (engine, op)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_reaches_only_its_own_run() {
    let (engine, op) = engine();
    let b = run::prepare_source(
        &engine,
        Path::new("victim.lua"),
        VICTIM,
        RunOptions::default(),
    )
    .unwrap();
    let rb = b.run(json!(null)).await.unwrap();
    assert_eq!(rb.status, TaskStatus::Pass, "{}", rb.result);
    let child = rb.result["child"].as_u64().unwrap();
    let a = run::prepare_source(
        &engine,
        Path::new("attacker.lua"),
        ATTACKER,
        RunOptions::default(),
    )
    .unwrap();
    let ra = a
        .run(json!({"root": rb.root.0, "child": child}))
        .await
        .unwrap();
    assert_eq!(ra.status, TaskStatus::Pass, "{}", ra.result);
    let out = &ra.result;
    for verb in ["read", "poll", "cancel", "dispatch", "query", "parent"] {
        for tag in ["root", "child"] {
            let key = format!("{verb}_{tag}");
            assert_eq!(out[&key], json!("not_owner"), "{key}: {out}");
            assert!(out.get(format!("{key}_leak")).is_none(), "{out}");
        }
    }
    // An unknown id and a foreign id answer alike.
    assert_eq!(out["read_unknown"], json!("not_owner"), "{out}");
    assert_eq!(out["foreign_events"], json!(0), "{out}");
    assert_eq!(out["own"], json!("a-ok"));
    // B's pending child is untouched.
    let v = engine.read_task(&op, TaskId(child)).unwrap();
    assert_eq!(v.status, TaskStatus::Pending);
    assert_eq!(*v.input, json!("secret-of-b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_sessions_answer_and_list_only_their_runs_questions() {
    let (engine, op) = engine();
    let a = engine
        .start_task(&op, TaskSpec::new("flow:a", json!(null)))
        .unwrap();
    let b = engine
        .start_task(&op, TaskSpec::new("flow:b", json!(null)))
        .unwrap();
    let key_b = engine.query_senior(&op, b, json!("b's question")).unwrap();
    let key_a = engine.query_senior(&op, a, json!("a's question")).unwrap();
    let mut opts = AttachOptions::new("senior-a", Role::Senior);
    opts.task = Some(a);
    let senior_a = engine.attach(Caller::Host, opts).unwrap();
    let open = engine
        .pending_questions(&senior_a, &HashSet::new(), Duration::ZERO)
        .await
        .unwrap();
    let keys: Vec<&str> = open.iter().map(|q| q.key.as_str()).collect();
    assert_eq!(keys, [key_a.as_str()]);
    let err = engine
        .resume(&senior_a, &key_b, json!("hijack"))
        .unwrap_err();
    assert_eq!(err.code(), "not_owner");
    engine.resume(&senior_a, &key_a, json!("fine")).unwrap();
    // A bound session cannot open an unbound one, nor one bound elsewhere.
    let mut op_a = AttachOptions::new("op-a", Role::Operator);
    op_a.task = Some(a);
    let op_a = engine.attach(Caller::Host, op_a).unwrap();
    let err = engine
        .attach(
            Caller::Token(&op_a),
            AttachOptions::new("escape", Role::Observer),
        )
        .unwrap_err();
    assert_eq!(err.code(), "invalid");
    let mut elsewhere = AttachOptions::new("escape", Role::Observer);
    elsewhere.task = Some(b);
    let err = engine.attach(Caller::Token(&op_a), elsewhere).unwrap_err();
    assert_eq!(err.code(), "not_owner");
    // Its subscription sees only its own run's events.
    let mut sub = engine.subscribe(&op_a, 0).unwrap();
    let mut seen: Vec<Value> = Vec::new();
    while let Some(ev) = sub.try_next().unwrap() {
        seen.push(serde_json::to_value(&ev).unwrap());
    }
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|e| e["task"] == json!(a.0)), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_on_one_engine_journal_only_their_own_events() {
    use lua_swarm::store::{SqliteStore, Store};
    use std::sync::Arc;
    let (engine, _) = engine();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("runs-own-events");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("j.db")).unwrap());
    let src = |name: &str| {
        format!(
            "local swarm = require 'swarm'\nreturn swarm.blueprint '{name}' {{\n  agents = {{ e = swarm.agent.rust {{ name = 'echo' }} }},\n  flow = function() local n = 0 for i = 1, 20 do n = n + swarm.step('e', i) end return n end,\n}}\n"
        )
    };
    let prepare = |name: &str, id: &str| {
        let opts = RunOptions {
            store: Some(store.clone()),
            run_id: Some(id.to_string()),
            ..RunOptions::default()
        };
        run::prepare_source(&engine, Path::new(&format!("{name}.lua")), &src(name), opts).unwrap()
    };
    let (a, b) = (prepare("a", "run-a"), prepare("b", "run-b"));
    let (ra, rb) = tokio::join!(a.run(json!(null)), b.run(json!(null)));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(
        (ra.result.clone(), rb.result.clone()),
        (json!(210), json!(210))
    );
    let tasks = |run: &str| -> HashSet<u64> {
        lua_swarm::store::wait(store.events(run, 0, 100_000))
            .unwrap()
            .iter()
            .filter_map(|e| e.payload.get("task").and_then(Value::as_u64))
            .collect()
    };
    let (ta, tb) = (tasks("run-a"), tasks("run-b"));
    assert!(ta.contains(&ra.root.0) && tb.contains(&rb.root.0));
    assert!(ta.is_disjoint(&tb), "runs journaled each other's events");
    assert_eq!(ta.len(), 21, "a's root and its 20 steps");
}
