//! Every kind of bad input to a flow ending in a clear error and a settled
//! run: failing process agents, Lua errors with file:line and one shape,
//! raising layers, syntax errors, and blueprint validation.

mod common;

use common::flow::{engine, run_src, scratch, write};
use lua_swarm::engine::TaskStatus;
use lua_swarm::run::{self, BlueprintError, RunError, RunOptions};
use serde_json::{Value, json};
use std::path::Path;

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

/// A concurrency that is not a whole number ≥ 1 is the caller's mistake,
/// never a silent "no limit" (0, NaN) or default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_that_is_not_a_positive_whole_number_is_refused() {
    let src = r#"local swarm = require 'swarm'
return swarm.blueprint 'conc' {
  flow = function()
    local out, fns = {}, { function() return 1 end, function() return 2 end }
    local calls = {
      function(o) return swarm.map({ 1, 2 }, function(x) return x end, o) end,
      function(o) return swarm.parallel(fns, o) end,
      function(o) return swarm.all_settled(fns, o) end,
    }
    for _, call in ipairs(calls) do
      for _, o in ipairs({ { concurrency = 0 }, { concurrency = -1 }, { concurrency = 0 / 0 },
                           { concurrency = 1.5 }, { concurrency = '4' }, 5 }) do
        local ok, e = pcall(call, o)
        out[#out + 1] = ok and 'passed' or (e.code .. ' ' .. e.message)
      end
      out[#out + 1] = #call({ concurrency = 1 })
    end
    return out
  end,
}
"#;
    let r = run_src("conc", src, Value::Null).await;
    assert_eq!(r.status, TaskStatus::Pass, "{}", r.result);
    let out = r.result.as_array().unwrap();
    assert_eq!(out.len(), 21, "{}", r.result);
    for (i, v) in out.iter().enumerate() {
        if i % 7 == 6 {
            assert_eq!(v, &json!(2), "concurrency 1 still runs every branch");
            continue;
        }
        let v = v.as_str().unwrap();
        assert!(v.starts_with("bad_argument swarm."), "{v}");
        assert!(
            v.contains("concurrency must be a whole number") || v.contains("opts must be a table"),
            "{v}"
        );
    }
}
