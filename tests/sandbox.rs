//! The sandbox, pinned: every escape and every bomb ends in a clear, typed
//! error with file:line within its deadline, while a healthy run on the same
//! engine completes.

mod common;

use common::{World, assert_err, blocked, blocked_with, memory_opts, world};
use lua_swarm::auth::Role;
use lua_swarm::engine::{AttachOptions, Caller, TaskSpec, TaskStatus};
use lua_swarm::lua::{LuaError, Vm, VmOptions};
use serde_json::{Value, json};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_is_absent() {
    let r = blocked("return io.open('/etc/passwd')").await;
    assert_err(&r, "lua_error", "bomb.lua:2");
    assert_err(&r, "lua_error", "io");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn os_execute_and_exit_are_absent() {
    let r = blocked("return os.execute('true')").await;
    assert_err(&r, "lua_error", "bomb.lua:2");
    let r = blocked("os.exit(1)").await;
    assert_err(&r, "lua_error", "bomb.lua:2");
    let r = blocked("return os.getenv('HOME')").await;
    assert_err(&r, "lua_error", "getenv");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_io_and_package_loadlib_fail() {
    let r = blocked("return require 'io'").await;
    assert_err(&r, "lua_error", "module 'io' not found");
    assert_err(&r, "lua_error", "bomb.lua:2");
    let r = blocked("return package.loadlib('libc.so.6', 'system')").await;
    assert_err(&r, "lua_error", "package");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_chunks_cannot_be_made_or_loaded() {
    let r = blocked("return load(string.dump(function() end))").await;
    assert_err(&r, "lua_error", "dump");
    let r = blocked("local f, err = load('\\27Lua\\84\\0')\n assert(f == nil)\n error(err)").await;
    assert_err(&r, "lua_error", "binary chunk");
    let r = blocked("local f, err = load('return 1', 'x', 'b')\n error(err)").await;
    assert_err(&r, "lua_error", "binary chunk");
}

/// A raised value that is not a string (a plain table, a number, nil)
/// names the line that raised it, while the script's own `pcall` and
/// coroutines still get the value itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_string_errors_name_their_line_and_stay_values_to_the_script() {
    let r = blocked("error({ code = 5, why = 'nope' })").await;
    assert_err(&r, "lua_error", r#"bomb.lua:2: {"code":5,"why":"nope"}"#);
    let r = blocked("error(42)").await;
    assert_err(&r, "lua_error", "bomb.lua:2: 42");
    let r = blocked("local x = 1\n error()").await;
    assert_err(&r, "lua_error", "bomb.lua:3: (error object is a nil value)");
    let r =
        blocked("error(setmetatable({}, { __tostring = function() return 'mine\\nmore' end }))")
            .await;
    assert_err(&r, "lua_error", "bomb.lua:2: mine\nmore");
    // A host function's own refusal (an argument it cannot take).
    let r = blocked("local x = 1\n return swarm.json.decode({})").await;
    assert_err(&r, "lua_error", "bomb.lua:3: bad argument #1");
    let r = blocked(
        "local ok, e = pcall(error, { code = 5 })
         assert(not ok and e.code == 5)
         local co = coroutine.wrap(function() error({ code = 6 }) end)
         local ok2, e2 = pcall(co)
         assert(not ok2 and e2.code == 6, tostring(e2))
         error('caught as values')",
    )
    .await;
    assert_err(&r, "lua_error", "bomb.lua:7: caught as values");
}

/// A returned value JSON cannot hold is refused naming the function that
/// returned it (no frame of it is left), not "(in a tail call)".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_that_is_not_json_names_the_function_that_returned_it() {
    let r = blocked("return { f = print }").await;
    assert_err(
        &r,
        "bad_value",
        "bomb.lua:1: the agent's result is not JSON-shaped",
    );
    let msg = r["error"].as_str().unwrap();
    assert!(!msg.contains("tail call"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_is_absent() {
    let r = blocked("return debug.getinfo(1)").await;
    assert_err(&r, "lua_error", "debug");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn string_metatable_and_library_are_read_only() {
    let w = world();
    w.agent(
        "vandal",
        r#"return function()
  assert(getmetatable("") == "locked")
  local ok1 = pcall(function() string.upper = function() return "pwned" end end)
  local ok2 = pcall(rawset, string, "upper", function() return "pwned" end)
  local ok3 = pcall(setmetatable, string, nil)
  return { ok1, ok2, ok3, ("x"):upper() }
end"#,
        VmOptions::default(),
    );
    w.agent(
        "other",
        "return function() return ('x'):upper() end",
        VmOptions::default(),
    );
    let (s, r) = w.run("vandal", json!(null)).await;
    assert_eq!(s, TaskStatus::Pass);
    assert_eq!(r, json!([false, false, false, "X"]));
    let (_, r) = w.run("other", json!(null)).await;
    assert_eq!(r, json!("X"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_modules_are_read_only() {
    let r = blocked("swarm.engine.start_task = function() end").await;
    assert_err(&r, "lua_error", "read-only table 'swarm.engine'");
    assert_err(&r, "lua_error", "bomb.lua:2");
    let r = blocked("rawset(swarm.engine, 'start_task', print)").await;
    assert_err(&r, "lua_error", "read-only");
    let r = blocked("swarm.gate = {}").await;
    assert_err(&r, "lua_error", "read-only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_g_and_env_reaches_nothing() {
    let w = world();
    w.agent(
        "sneaky",
        r#"return function(task)
  if task.input == 1 then
    local base = getmetatable(_G).__index
    assert(getmetatable(base) == "locked")
    assert(not pcall(function() base.print = nil end))
    assert(not pcall(rawset, base, "tostring", nil))
    _G.tostring = function() return "pwned" end
    leaked = "yes"
    _ENV = { }
    return "ok"
  end
  return { leaked = leaked or "no", tostring = tostring(1) }
end"#,
        VmOptions::default(),
    );
    let (s1, r1) = w.run("sneaky", json!(1)).await;
    assert_eq!((s1, r1), (TaskStatus::Pass, json!("ok")));
    let (_, r2) = w.run("sneaky", json!(2)).await;
    assert_eq!(r2, json!({"leaked": "no", "tostring": "1"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loops_stop_at_the_deadline() {
    let r = blocked("while true do end").await;
    assert_err(&r, "deadline", "bomb.lua:2");
    let r = blocked(
        "local co = coroutine.create(function()\n while true do end\n end)\n return coroutine.resume(co)",
    )
    .await;
    assert_err(&r, "deadline", "bomb.lua:3");
    let r = blocked("swarm.time.sleep(1)\n while true do end").await;
    assert_err(&r, "deadline", "bomb.lua:3");
    let r = blocked("while true do pcall(function() while true do end end) end").await;
    assert_err(&r, "deadline", "bomb.lua:2");
    let r = blocked("local w = coroutine.wrap(function() while true do end end)\n w()").await;
    assert_err(&r, "deadline", "bomb.lua:2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instruction_budget_is_enforced() {
    let w = world();
    let opts = VmOptions {
        instruction_budget: 100_000,
        ..VmOptions::default()
    };
    w.agent(
        "spin",
        "return function()\n for i = 1, 1e9 do end\n end",
        opts,
    );
    let (s, r) = w.run("spin", json!(null)).await;
    assert_eq!(s, TaskStatus::Blocked);
    assert_err(&r, "instruction_budget", "spin.lua:2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_recursion_is_a_clear_error() {
    let r = blocked_with(
        "local function f(n) return 1 + f(n + 1) end\n return f(1)",
        memory_opts(),
    )
    .await;
    // The Lua stack grows until either Lua's own stack limit or the VM's
    // memory limit stops it; both name the recursing line. No deadline: on
    // a loaded machine it could come first (limits must not race).
    let msg = r["error"].as_str().unwrap();
    assert!(msg.contains("bomb.lua:2"), "{r}");
    assert!(
        msg.contains("stack overflow") || r["code"] == json!("memory_limit"),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bombs_hit_the_memory_limit() {
    let r = blocked_with("return ('x'):rep(1e9)", memory_opts()).await;
    assert_err(&r, "memory_limit", "bomb.lua:2");
    let r = blocked_with(
        "local t = {}\n for i = 1, 1e9 do t[i] = ('x'):rep(1000) .. i end",
        memory_opts(),
    )
    .await;
    assert_err(&r, "memory_limit", "bomb.lua:3");
    let r = blocked_with(
        "local s = 'x'\n while true do s = s .. s end",
        memory_opts(),
    )
    .await;
    assert_eq!(r["code"], json!("memory_limit"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catastrophic_patterns_stop_at_the_deadline() {
    let r = blocked(r#"return string.find(("a"):rep(1e5), ("a*"):rep(20) .. "b")"#).await;
    assert_err(&r, "deadline", "bomb.lua:2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collectgarbage_is_limited_to_count() {
    let r =
        blocked("assert(type(collectgarbage('count')) == 'number')\n collectgarbage('stop')").await;
    assert_err(&r, "lua_error", "bomb.lua:3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_vm_reuse_leaks_nothing_between_tasks() {
    let w = world();
    let agent = w.agent(
        "counter",
        r#"local calls = 0
return function(task)
  calls = calls + 1
  counter_global = (counter_global or 0) + 1
  local t = setmetatable({}, { __index = function() return "meta" end })
  shared = shared or t
  return { calls = calls, global = counter_global, meta = shared.anything }
end"#,
        VmOptions::default(),
    );
    for _ in 0..3 {
        let (s, r) = w.run("counter", json!(null)).await;
        assert_eq!(s, TaskStatus::Pass);
        assert_eq!(r, json!({"calls": 1, "global": 1, "meta": "meta"}));
    }
    assert_eq!(agent.pooled(), 1, "the same VM served every task");
}

async fn session(w: &World, role: Role) -> Vm {
    let vm = Vm::new(w.host(), VmOptions::default()).unwrap();
    let tok = w
        .engine
        .attach(Caller::Host, AttachOptions::new(role.as_str(), role))
        .unwrap();
    vm.set_token(Some(tok));
    vm
}

const GATE_PROBE: &str = r#"
local me = swarm.gate.whoami()
local ok, err = pcall(swarm.engine.start_task, { agent = "healthy", input = 1 })
local rok, rerr = pcall(swarm.engine.resume, "no-such-key", "x")
return me.role, ok, ok or err.code, ok or err.message, ok or err.where,
       rok, rok or rerr.code, swarm.gate.can("start_task"), swarm.gate.can("subscribe")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_gate_from_lua_for_every_role() {
    let w = world();
    w.agent("healthy", common::HEALTHY, VmOptions::default());
    let cases = [
        (Role::Operator, true, "forbidden", true),
        (Role::Observer, false, "forbidden", false),
        (Role::Senior, false, "unknown_resume_key", false),
    ];
    for (role, can_start, resume_code, can_start_flag) in cases {
        let vm = session(&w, role).await;
        let out = vm.exec(GATE_PROBE, "gate.lua").await.unwrap();
        let v: Vec<String> = out.iter().map(|v| v.to_string().unwrap()).collect();
        assert_eq!(v[0], role.as_str());
        assert_eq!(v[1], can_start.to_string(), "{role} start_task: {v:?}");
        if !can_start {
            assert_eq!(v[2], "forbidden");
            assert!(
                v[3].contains(role.as_str()) && v[3].contains("start_task"),
                "{v:?}"
            );
            assert_eq!(v[4], "gate.lua:3");
        }
        let expected_resume = if role == Role::Operator {
            "forbidden"
        } else {
            resume_code
        };
        assert_eq!(v[6], expected_resume, "{role} resume: {v:?}");
        assert_eq!(v[7], can_start_flag.to_string());
        assert_eq!(v[8], "true");
    }
    // Worker: inside an agent, resume and subscribe are refused.
    w.agent(
        "probe",
        r#"return function()
  local ok, err = pcall(swarm.engine.resume, "k", 1)
  return { role = swarm.gate.whoami().role, code = err.code, where = err.where,
           subscribe = swarm.gate.can("subscribe"), post = swarm.gate.can("post_result") }
end"#,
        VmOptions::default(),
    );
    let (_, r) = w.run("probe", json!(null)).await;
    assert_eq!(
        r,
        json!({"role": "worker", "code": "forbidden", "where": "probe.lua:2",
               "subscribe": false, "post": true})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_flow_starts_and_dispatches_lua_agents() {
    let w = world();
    w.agent(
        "double",
        r#"return function(task)
  swarm.worker.emit("progress", { half = true })
  if task.input < 0 then return nil, "negative" end
  return task.input * 2
end"#,
        VmOptions::default(),
    );
    let vm = session(&w, Role::Operator).await;
    let out = vm
        .exec(
            r#"
local e = swarm.engine
local id = e.start_task({ agent = "double", input = 21 })
local view = e.dispatch(id)
local bad = e.start_task({ agent = "double", input = -1 })
local bview = e.dispatch(bad)
local events = e.events(0)
local kinds = {}
for _, ev in ipairs(events) do kinds[#kinds + 1] = ev.kind end
return view.status, view.result, bview.status, bview.result, table.concat(kinds, ",")
"#,
            "flow.lua",
        )
        .await
        .unwrap();
    let v: Vec<String> = out.iter().map(|v| v.to_string().unwrap()).collect();
    assert_eq!(v[..4], ["pass", "42", "blocked", "negative"]);
    assert!(
        v[4].contains("worker_output") && v[4].contains("attempt_completed"),
        "{}",
        v[4]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_handles_null_and_empty_arrays() {
    let w = world();
    let vm = session(&w, Role::Observer).await;
    let out = vm
        .exec(
            r#"
local json = swarm.json
local v = json.decode('{"a":null,"b":[],"c":[1,2],"d":{}}')
assert(json.is_null(v.a))
local back = json.encode(v)
local bad, err = json.decode("{oops")
return back, bad == nil, err ~= nil, json.encode({ list = json.array(), none = json.null })
"#,
            "json.lua",
        )
        .await
        .unwrap();
    let v: Vec<String> = out.iter().map(|v| v.to_string().unwrap()).collect();
    let back: Value = serde_json::from_str(&v[0]).unwrap();
    assert_eq!(back, json!({"a": null, "b": [], "c": [1, 2], "d": {}}));
    assert_eq!(v[1..3], ["true", "true"]);
    let enc: Value = serde_json::from_str(&v[3]).unwrap();
    assert_eq!(enc, json!({"list": [], "none": null}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lua_errors_are_typed_with_file_and_line() {
    let w = world();
    let vm = session(&w, Role::Operator).await;
    match vm.exec("local x = 1\nerror('boom')", "oops.lua").await {
        Err(LuaError::Runtime(m)) => assert!(m.contains("oops.lua:2: boom"), "{m}"),
        other => panic!("{other:?}"),
    }
    match vm.exec("local x = = 1", "syntax.lua").await {
        Err(LuaError::Syntax { message: m, .. }) => assert!(m.contains("syntax.lua:1"), "{m}"),
        other => panic!("{other:?}"),
    }
    match vm.exec("swarm.engine.read_task(999)", "missing.lua").await {
        // A host error raised in Lua and not caught stays typed data.
        Err(LuaError::Raised(r)) => {
            assert_eq!(r.code, "unknown_task");
            assert_eq!(r.value["where"], "missing.lua:1");
            assert_eq!(r.text, "missing.lua:1: no task 999 [unknown_task]");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_task_stops_its_running_lua() {
    let w = Arc::new(world());
    w.agent(
        "spin",
        "return function()\n while true do end\n end",
        VmOptions::default(),
    );
    let id = w
        .engine
        .start_task(&w.op, TaskSpec::new("spin", json!(null)))
        .unwrap();
    let w2 = w.clone();
    let run = tokio::spawn(async move {
        let s = w2.agents.get("spin").unwrap();
        w2.engine
            .dispatch_attempt(&w2.op, id, s.as_ref())
            .await
            .unwrap()
    });
    // Wait (bounded by the hang guard) until the spin is really running.
    while w.engine.read_task(&w.op, id).unwrap().status != TaskStatus::Running {
        tokio::task::yield_now().await;
    }
    w.engine.cancel_task(&w.op, id).unwrap();
    let v = tokio::time::timeout(common::HANG_GUARD, run)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v.status, TaskStatus::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patterns_behave_like_lua() {
    let w = world();
    let vm = session(&w, Role::Observer).await;
    let out = vm
        .exec(
            r#"
local r = {}
r[#r+1] = table.concat({ string.find("hello world", "o w") }, ",")
r[#r+1] = table.concat({ string.find("hello", "l+") }, ",")
r[#r+1] = table.concat({ ("key = value"):match("(%w+)%s*=%s*(%w+)") }, ",")
r[#r+1] = select(1, ("hello world"):gsub("o", "0"))
r[#r+1] = select(1, ("abc"):gsub("%w", "%0%0"))
r[#r+1] = select(1, ("$name is $age"):gsub("%$(%w+)", { name = "bob", age = 42 }))
r[#r+1] = select(1, ("abc"):gsub("", "-"))
local words = {}
for w in ("one two  three"):gmatch("%a+") do words[#words+1] = w end
r[#r+1] = table.concat(words, "|")
r[#r+1] = ("THE (quick) fox"):find("%((%a+)%)")
r[#r+1] = ("  trim  "):match("^%s*(.-)%s*$")
r[#r+1] = tostring(("x"):match("()"))
r[#r+1] = select(1, ("hello"):gsub("l", function(c) return c:upper() end))
r[#r+1] = ("f(a(b)c)d"):match("%b()")
r[#r+1] = tostring(("THE END"):find("%f[%a]%a+", 4))
r[#r+1] = tostring(select(2, pcall(string.find, "x", "[a")))
return table.concat(r, ";")
"#,
            "pat.lua",
        )
        .await
        .unwrap();
    let s = out[0].to_string().unwrap();
    let parts: Vec<&str> = s.split(';').collect();
    assert_eq!(
        parts[..14],
        [
            "5,7",
            "3,4",
            "key,value",
            "hell0 w0rld",
            "aabbcc",
            "bob is 42",
            "-a-b-c-",
            "one|two|three",
            "5",
            "trim",
            "1",
            "heLLo",
            "(a(b)c)",
            "5",
        ]
    );
    assert!(
        parts[14].contains("malformed pattern (missing ']')"),
        "{}",
        parts[14]
    );
}
