//! Blueprints and flows through the library API: the bundled samples, the
//! flow primitives, middleware layers, process agents and every kind of bad
//! input ending in a clear error and a settled run.

use lua_swarm::auth::Signer;
use lua_swarm::engine::{Engine, EngineConfig, TaskStatus};
use lua_swarm::run::{self, BlueprintError, RunError, RunOptions, RunReport};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn engine() -> Engine {
    Engine::new(EngineConfig::default(), Signer::random())
}

/// A fresh directory under the target dir for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("flows-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, file: &str, body: &str) -> PathBuf {
    let p = dir.join(file);
    std::fs::write(&p, body).unwrap();
    p
}

async fn run_file(path: &Path, input: Value, opts: RunOptions) -> Result<RunReport, RunError> {
    let e = engine();
    let r = run::prepare(&e, path, opts)?;
    tokio::time::timeout(Duration::from_secs(60), r.run(input))
        .await
        .expect("the run must not hang")
}

async fn run_src(name: &str, src: &str, input: Value) -> RunReport {
    let dir = scratch(name);
    let path = write(&dir, &format!("{name}.lua"), src);
    run_file(&path, input, RunOptions::default()).await.unwrap()
}

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

fn process_blueprint(mode: &str, extra: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/agents/misbehave.sh");
    format!(
        r#"
local swarm = require "swarm"
return swarm.blueprint "proc" {{
  agents = {{ p = swarm.agent.process {{ cmd = {{ "sh", "{}", "{mode}" }} {extra} }} }},
  flow = function() local ok, r = swarm.pstep("p", "in"); return {{ ok = ok, code = r.code, result = r.result or r }} end,
}}"#,
        script.display()
    )
}

async fn process_case(mode: &str, extra: &str) -> Value {
    let r = run_src(
        &format!("proc-{mode}"),
        &process_blueprint(mode, extra),
        Value::Null,
    )
    .await;
    assert_eq!(r.status, TaskStatus::Pass, "{}", r.result);
    r.result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_agent_failures_are_clear() {
    let ok = process_case("stderr", "").await;
    assert_eq!(ok["result"], json!("ok"));
    let crash = process_case("crash", "").await;
    assert_eq!(crash["result"]["code"], json!("exit_status"), "{crash}");
    assert!(
        crash["result"]["error"]
            .as_str()
            .unwrap()
            .contains("killed"),
        "{crash}"
    );
    let bad = process_case("badjson", "").await;
    assert_eq!(bad["result"]["code"], json!("bad_output"), "{bad}");
    let fail = process_case("fail", "").await;
    assert_eq!(fail["result"]["code"], json!("exit_status"));
    assert_eq!(fail["result"]["value"], json!({"why": "bad day"}));
    let slow = process_case("hang", r#", timeout = "200ms""#).await;
    assert_eq!(slow["code"], json!("timeout"), "{slow}");
    // Exited, leaving a background child on its stdout: the result is read
    // and the child killed, without waiting for it (it sleeps 600 s).
    let leftover = process_case("leftover", "").await;
    assert_eq!(leftover["result"], json!("ok"), "{leftover}");
    // A child that left the group cannot be killed: the step stops reading.
    let escaped = process_case("escape", "").await;
    assert_eq!(escaped["result"]["code"], json!("output_held"), "{escaped}");
    let flood = process_case("flood", ", max_output = 100000").await;
    assert_eq!(
        flood["result"]["code"],
        json!("output_too_large"),
        "{flood}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_not_found_is_a_clear_error() {
    let r = run_src(
        "notfound",
        r#"
local swarm = require "swarm"
return swarm.blueprint "nf" {
  agents = { ghost = swarm.agent.process { cmd = { "/no/such/program" } } },
  flow = function() return swarm.step("ghost", 1) end,
}"#,
        Value::Null,
    )
    .await;
    assert_eq!(r.status, TaskStatus::Blocked);
    let e = r.result["error"].as_str().unwrap();
    assert!(
        e.contains("notfound.lua:5") && e.contains("cannot start `/no/such/program`"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_errors_name_file_and_line_with_a_traceback() {
    let r = run_src(
        "flowerr",
        "local swarm = require 'swarm'\nreturn swarm.blueprint 'e' {\n  flow = function()\n    local t = nil\n    return t.x\n  end,\n}\n",
        Value::Null,
    )
    .await;
    assert_eq!(r.status, TaskStatus::Blocked);
    let e = r.result["error"].as_str().unwrap();
    assert!(
        e.contains("flowerr.lua:5:") && e.contains("stack traceback"),
        "{e}"
    );

    let r = run_src(
        "unknownagent",
        "local swarm = require 'swarm'\nreturn swarm.blueprint 'u' {\n  agents = { a = swarm.agent.rust { name = 'echo' } },\n  flow = function() return swarm.step('nope', 1) end,\n}\n",
        Value::Null,
    )
    .await;
    let e = r.result["error"].as_str().unwrap();
    assert!(
        e.contains("unknownagent.lua:4") && e.contains("unknown agent `nope` (known: a)"),
        "{e}"
    );
}

/// Every error a flow can catch has one shape: a table with `code`,
/// `message` and `where` (the user's own file:line), whichever part of the
/// house raised it: a failed step, a host verb, a flow combinator, misuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_a_flow_catches_has_one_shape_at_the_users_line() {
    let src = r#"local swarm = require 'swarm'
return swarm.blueprint 'shape' {
  agents = {
    a = swarm.agent.rust { name = 'echo' },
    bad = swarm.agent.lua { run = function() error('agent broke') end },
  },
  flow = function()
    local out = {}
    local function shape(ok, e)
      assert(not ok, 'expected a failure')
      local mt = getmetatable(e)
      return { code = e.code, where = e.where, message = e.message,
               text = tostring(e), same_mt = mt == getmetatable(out.first_e or e) }
    end
    local ok, e = swarm.pstep('bad', 1)
    out.first_e = e
    out.step = shape(ok, e)
    out.step.agent, out.step.task = e.agent, e.task
    out.unknown = shape(pcall(swarm.step, 'nope', 1))
    out.verb = shape(pcall(swarm.engine.read_task, 999999))
    out.combinator = shape(pcall(swarm.parallel, 'not a list'))
    out.any = shape(pcall(swarm.any, { function() error('x') end }))
    out.sleep = shape(pcall(swarm.sleep, 'soon'))
    out.notjson = shape(pcall(swarm.step, 'a', function() end))
    out.branch = shape(pcall(swarm.parallel, { function() local v = swarm.step('bad', 2); return v end }))
    out.first_e = nil
    return out
  end,
}
"#;
    let r = run_src("shape", src, Value::Null).await;
    assert_eq!(r.status, TaskStatus::Pass, "{}", r.result);
    let lines = [
        ("step", "blocked", 15),
        ("unknown", "unknown_agent", 19),
        ("verb", "not_owner", 20),
        ("combinator", "bad_argument", 21),
        ("any", "all_failed", 22),
        ("sleep", "bad_argument", 23),
        ("notjson", "bad_value", 24),
        ("branch", "blocked", 25),
    ];
    for (what, code, line) in lines {
        let e = &r.result[what];
        assert_eq!(e["same_mt"], json!(true), "{what}: {e}");
        let at = format!("/shape.lua:{line}");
        assert!(e["where"].as_str().unwrap().ends_with(&at), "{what}: {e}");
        let text = e["text"].as_str().unwrap();
        assert_eq!(e["code"], json!(code), "{what}: {e}");
        assert!(
            text.contains(&format!("{at}: ")) && text.ends_with(&format!("[{code}]")),
            "{what}: {text}"
        );
    }
    assert_eq!(r.result["step"]["agent"], json!("bad"));
    assert!(r.result["step"]["task"].as_u64().is_some());
    assert!(
        r.result["step"]["message"]
            .as_str()
            .unwrap()
            .contains("agent broke"),
        "{}",
        r.result["step"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raising_lua_layer_blocks_the_step_clearly() {
    let r = run_src(
        "badlayer",
        "local swarm = require 'swarm'\nreturn swarm.blueprint 'l' {\n  agents = { a = swarm.agent.rust { name = 'echo' } },\n  layers = { boom = swarm.layer { before = function() error('layer exploded') end } },\n  hints = { layers = { 'boom' } },\n  flow = function() local ok, e = swarm.pstep('a', 1); return e.result end,\n}\n",
        Value::Null,
    )
    .await;
    assert_eq!(r.result["code"], json!("layer_error"));
    assert_eq!(r.result["layer"], json!("boom"));
    let error = r.result["error"].as_str().unwrap();
    assert!(
        error.contains("badlayer.lua:4: layer exploded") && !error.contains("runtime error"),
        "{error}"
    );
    // A value the layer returns that JSON cannot hold names the layer.
    let r = run_src(
        "badlayer2",
        "local swarm = require 'swarm'
return swarm.blueprint 'l' {
  agents = { a = swarm.agent.rust { name = 'echo' } },
  layers = { fn = swarm.layer { before = function() return print end } },
  hints = { layers = { 'fn' } },
  flow = function() local ok, e = swarm.pstep('a', 1); return e.result end,
}
",
        Value::Null,
    )
    .await;
    let error = r.result["error"].as_str().unwrap();
    assert!(
        error.contains("badlayer2.lua:4: the layer's input"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syntax_errors_are_blueprint_errors_with_a_line() {
    let dir = scratch("syntax");
    let p = write(
        &dir,
        "broken.lua",
        "local swarm = require 'swarm'\nreturn swarm.blueprint 'x' {\n  flow = function( end,\n}\n",
    );
    match run::prepare(&engine(), &p, RunOptions::default()) {
        Err(RunError::Blueprint(BlueprintError::Lua(e))) => {
            assert!(e.to_string().contains("broken.lua:3"), "{e}");
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("a broken blueprint loaded"),
    }
    // A precompiled chunk is refused, naming the file (Lua's own message
    // would not).
    let p = write(&dir, "compiled.lua", "\x1bLuaT\0\x19");
    match run::prepare(&engine(), &p, RunOptions::default()) {
        Err(RunError::Blueprint(BlueprintError::Lua(e))) => {
            let msg = e.to_string();
            assert!(msg.contains("compiled.lua: a precompiled"), "{msg}");
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("a binary chunk loaded"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_reports_every_problem_with_location_and_field() {
    let dir = scratch("invalid");
    let p = write(
        &dir,
        "invalid.lua",
        r#"local swarm = require "swarm"
return swarm.blueprint "bad" {
  agents = {
    a = swarm.agent.process { cmdd = { "true" } },
    b = swarm.agent.lua { run = 42 },
    c = { "not an agent" },
  },
  hints = { layers = { "audit", "no_such_layer" }, speed = "fast" },
  gate = { observer = { "start_task" }, wizard = { "read_task" } },
  colour = "blue",
  flow = function() end,
}
"#,
    );
    let problems = match run::prepare(&engine(), &p, RunOptions::default()) {
        Err(RunError::Blueprint(BlueprintError::Invalid(p))) => p,
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("an invalid blueprint loaded"),
    };
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    let has = |needle: &str| {
        assert!(
            text.iter().any(|t| t.contains(needle)),
            "no `{needle}` in {text:#?}"
        )
    };
    has("invalid.lua:4: `agents.a.cmdd` unknown field");
    has("invalid.lua:4: `agents.a.cmd` is required");
    has("invalid.lua:5: `agents.b.run` must be a function");
    has("invalid.lua:2: `agents.c` must be swarm.agent");
    has("`hints.layers[2]` unknown layer `no_such_layer`");
    has("`hints.speed` unknown hint");
    has("`gate.wizard` unknown role");
    has("`colour` unknown field");
    // What only the kind's reader can see (a field's contents) is reported
    // the same way, at the constructor's line.
    for (decl, want) in [
        (
            "swarm.agent.process { cmd = { 'true' }, env = { X = {} } }",
            "invalid type",
        ),
        (
            "swarm.agent.llm { extra = { f = function() end } }",
            "function",
        ),
    ] {
        let src = format!(
            "local swarm = require 'swarm'\nreturn swarm.blueprint 'r' {{\n  agents = {{ x = {decl} }},\n  flow = function() end,\n}}\n"
        );
        let p = write(&dir, "reader.lua", &src);
        let err = run::prepare(&engine(), &p, RunOptions::default())
            .err()
            .expect("refused");
        let RunError::Blueprint(BlueprintError::Invalid(_)) = &err else {
            panic!("{err}")
        };
        assert!(
            err.to_string().contains("reader.lua:3: `agents.x`") && err.to_string().contains(want),
            "{err}"
        );
    }
    // The gate widening is checked once the shape is valid.
    let p = write(
        &dir,
        "widen.lua",
        "local swarm = require 'swarm'\nreturn swarm.blueprint 'w' {\n  gate = { observer = { 'start_task' } },\n  flow = function() end,\n}\n",
    );
    match run::prepare(&engine(), &p, RunOptions::default()) {
        Err(RunError::Blueprint(BlueprintError::Invalid(p))) => {
            let t = p[0].to_string();
            assert!(
                t.contains("widen.lua:2: `gate.observer` widens the default gate"),
                "{t}"
            );
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("a widening gate loaded"),
    }
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
