//! Pooled Lua-agent VMs carry nothing from one task to the next that a task
//! can write: task 1 tries every known way to plant something in the VM,
//! task 2 (same VM) must see exactly the state a fresh VM shows.

mod common;

use common::{World, world};
use lua_swarm::engine::TaskStatus;
use lua_swarm::lua::VmOptions;
use serde_json::{Value, json};

/// Fingerprints everything a task can reach: every table under `_G`
/// (through `pairs`, which frozen tables support), every metatable
/// `getmetatable` shows (strings, host error tables, step errors, JSON
/// arrays), and how core functions behave. Functions print as their
/// address, so a replaced function changes the fingerprint.
const FINGERPRINT: &str = r#"
local out, seen = {}, {}
local function walk(path, v, depth)
  local t = type(v)
  if t ~= "table" then
    out[#out + 1] = path .. "=" .. (t == "function" and tostring(v) or t .. ":" .. tostring(v))
    return
  end
  if seen[v] or depth > 6 then out[#out + 1] = path .. "=<seen>" return end
  seen[v] = true
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  out[#out + 1] = path .. "={" .. table.concat(keys, ",") .. "}"
  for k, x in pairs(v) do
    if k ~= "_G" then walk(path .. "." .. tostring(k), x, depth + 1) end
  end
  local mt = getmetatable(v)
  if mt ~= nil then walk(path .. "<mt>", mt, depth + 1) end
end
local _, host_err = pcall(swarm.engine.read_task, 987654)
local _, step_err = pcall(swarm.step, "no-such-agent", 1)
walk("G", getmetatable(_G).__index, 0)
walk("string<mt>", getmetatable(""), 0)
walk("host_err<mt>", getmetatable(host_err), 0)
walk("step_err<mt>", getmetatable(step_err), 0)
walk("array<mt>", getmetatable(swarm.json.decode("[1]")), 0)
out[#out + 1] = "upper=" .. ("x"):upper() .. string.upper("y")
out[#out + 1] = "tostring=" .. tostring(12) .. (tostring(host_err):gsub("%d+", "N"))
out[#out + 1] = "array_index=" .. tostring(swarm.json.decode("[1]").anything)
out[#out + 1] = "err_index=" .. tostring(host_err.anything)
out[#out + 1] = "globals=" .. tostring(evil) .. tostring(rawget(_G, "evil")) .. tostring(LEAK)
table.sort(out)
return (table.concat(out, "\n"):gsub("[^%g%s]", "?"))
"#;

/// Every known way to plant something, each in its own pcall. Returns the
/// list of attempts that did not raise (for the test's message).
const PLANT: &str = r#"
local evil = function() return "planted" end
local tried, took = 0, {}
local function try(name, f)
  tried = tried + 1
  if pcall(f) then took[#took + 1] = name end
end
local base = getmetatable(_G).__index
local function backing(t) local _, state = pairs(t) return state end
local function poke(t)
  t.upper = evil; t.tostring = evil; t.evil = true; t.print = evil
  t.__index = function() return "planted" end
  t.__tostring = evil
  t.__newindex = function() end
  t.__gc = function() end
end
for name, t in pairs({ string = string, swarm = swarm, engine = swarm.engine,
    json = swarm.json, base = base, table = table, math = math, os = os,
    coroutine = coroutine, utf8 = utf8 }) do
  try(name .. " write", function() poke(t) end)
  try(name .. " rawset", function() rawset(t, "evil", true) end)
  try(name .. " pairs state", function() poke(backing(t)) end)
  try(name .. " next", function() local k, v = next(t) ; poke(v) end)
  try(name .. " metatable", function() poke(getmetatable(t)) end)
  try(name .. " setmetatable", function() setmetatable(t, nil) end)
  try(name .. " iterate values", function()
    for _, v in pairs(t) do if type(v) == "table" then poke(v) end end
    error("no table to poke")
  end)
end
try("raw globals via base._G", function() poke(base._G) end)
try("raw globals via pairs", function()
  for k, v in pairs(base) do if k == "_G" then poke(v) end end
  error("no _G to poke")
end)
try("string metatable", function() poke(getmetatable("")) end)
try("string metatable __index", function() poke(getmetatable("").__index) end)
try("string via a string", function() poke(("").__index) end)
local _, host_err = pcall(swarm.engine.read_task, 987654)
try("error metatable", function() poke(getmetatable(host_err)) end)
try("error metatable rawset", function() rawset(getmetatable(host_err), "__index", evil) end)
local _, step_err = pcall(swarm.step, "no-such-agent", 1)
try("step error metatable", function() poke(getmetatable(step_err)) end)
local arr = swarm.json.decode("[1, 2]")
try("array metatable", function() poke(getmetatable(arr)) end)
try("array metatable rawset", function() rawset(getmetatable(arr), "__index", evil) end)
try("pretty module", function() poke(require("swarm.pretty")) end)
try("require cache", function() package = {} ; poke(require("swarm")) end)
try("finalizer", function()
  setmetatable({}, { __gc = function() LEAK = swarm.worker.input() end })
end)
-- Allowed, and inert: Lua only finalizes objects whose metatable had
-- __gc when it was set.
pcall(function()
  local mt = {} ; setmetatable({}, mt) ; mt.__gc = function() LEAK = 1 end
end)
try("load into base", function() load("evil = true", "x", "t", base)() end)
try("env metatable", function() getmetatable(_ENV).planted = evil end)
try("globals", function() evil = true ; _G.print = evil end)
try("frozen iterator on a fake", function()
  local it = pairs(string)
  it(setmetatable({}, { __index = {} }), nil)
end)
collectgarbage("count")
return { tried = tried, took = took }
"#;

/// The agent: with `kept`, a body with no upvalue but `_ENV` (the host
/// keeps it across tasks, `src/lua/reuse.rs`); otherwise one whose upvalue
/// makes every task evaluate the chunk again.
fn agent_source(plant: bool, kept: bool) -> String {
    if kept {
        return format!(
            "return function(task)\n\
               if task.input == 'plant' and {plant} then\n{PLANT}\nend\n\
               {FINGERPRINT}\n\
             end\n"
        );
    }
    format!(
        "local FINGERPRINT = function()\n{FINGERPRINT}\nend\n\
         return function(task)\n\
           if task.input == 'plant' and {plant} then\n{PLANT}\nend\n\
           return FINGERPRINT()\n\
         end\n"
    )
}

async fn fingerprint(w: &World, name: &str, input: Value) -> String {
    let (s, r) = w.run(name, input).await;
    assert_eq!(s, TaskStatus::Pass, "{r}");
    r.as_str().expect("fingerprint").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_vm_is_pristine_after_every_planting_attempt() {
    for kept in [false, true] {
        let w = world();
        let agent = w.agent("a", &agent_source(true, kept), VmOptions::default());
        // A fresh VM's view, then the planting task, then the same VM again.
        let fresh = fingerprint(&w, "a", json!("look")).await;
        let (s, planted) = w.run("a", json!("plant")).await;
        assert_eq!(s, TaskStatus::Pass, "{planted}");
        assert!(planted["tried"].as_u64().unwrap() > 60, "{planted}");
        // Writes to the task's own environment are allowed; nothing else is.
        let took: Vec<&str> = planted["took"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        assert_eq!(
            took,
            ["env metatable", "globals"],
            "kept {kept}: writes that went through: {took:?}"
        );
        assert_eq!(agent.pooled(), 1, "one VM served every task");
        let after = fingerprint(&w, "a", json!("look")).await;
        let diff: Vec<_> = after
            .lines()
            .zip(fresh.lines())
            .filter(|(a, b)| a != b)
            .take(5)
            .collect();
        assert!(
            after == fresh,
            "kept {kept}: state leaked into the next task: {diff:?}"
        );
        assert_eq!(agent.pooled(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_planted_by_one_task_never_sees_the_next_tasks_input() {
    let w = world();
    // Task 1 tries to make every later JSON array, error and string call
    // report the input of whatever task runs then.
    let src = r#"return function(task)
  if task.input.role == "attacker" then
    local spy = function() SEEN = swarm.worker.input() return SEEN end
    pcall(function() getmetatable(swarm.json.decode("[]")).__index = spy end)
    pcall(function() local _, s = pairs(string) s.len = spy end)
    pcall(function() setmetatable({}, { __gc = spy }) end)
    pcall(function() getmetatable(_G).__index._G.tostring = spy end)
    return "planted"
  end
  local arr = swarm.json.decode("[]")
  return { probe = arr.secret, len = string.len("abc"), str = tostring(1), seen = SEEN }
end"#;
    let agent = w.agent("v", src, VmOptions::default());
    let (_, r) = w.run("v", json!({"role": "attacker"})).await;
    assert_eq!(r, json!("planted"));
    let (s, r) = w
        .run("v", json!({"role": "victim", "secret": "hunter2"}))
        .await;
    assert_eq!(s, TaskStatus::Pass);
    assert_eq!(r, json!({"len": 3, "str": "1"}));
    assert_eq!(agent.pooled(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_tables_still_read_and_iterate() {
    let w = world();
    w.agent(
        "reader",
        r#"return function()
  local n = 0
  for k, v in pairs(string) do if type(v) == "function" then n = n + 1 end end
  local mods = {}
  for k in pairs(swarm) do mods[#mods + 1] = k end
  table.sort(mods)
  local e = select(2, pcall(swarm.engine.read_task, 424242))
  return { fns = n > 10, has_engine = swarm.engine ~= nil, step = type(swarm.step),
           err_name = getmetatable(e).__name, same_mt = getmetatable(e) == getmetatable(
             select(2, pcall(swarm.engine.read_task, 424243))),
           pretty = require("swarm.pretty").pretty({ 1, 2 }) }
end"#,
        VmOptions::default(),
    );
    let (s, r) = w.run("reader", json!(null)).await;
    assert_eq!(s, TaskStatus::Pass, "{r}");
    assert_eq!(
        r,
        json!({"fns": true, "has_engine": true, "step": "function",
               "err_name": "swarm.error", "same_mt": true, "pretty": "{ 1, 2 }"})
    );
}

/// The host modules, the flow library and the blueprint DSL join `swarm`
/// on first read: read first by name or first by `pairs`, they are there,
/// frozen, built once, and the table behind `swarm` stays out of reach.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_of_swarm_built_on_first_read_are_whole_and_frozen() {
    let w = world();
    let probe = |first: &str| {
        format!(
            r#"return function()
  {first}
  local names = {{}}
  for k in pairs(swarm) do names[#names + 1] = k end
  table.sort(names)
  local function refused(f) local ok, e = pcall(f) return not ok and tostring(e) end
  return {{
    names = table.concat(names, " "),
    agent = refused(function() swarm.agent.rust = 1 end),
    engine = refused(function() swarm.engine.start_task = print end),
    same = swarm.time == swarm.time and swarm.json.null == swarm.json.null,
    step = refused(function() swarm.step = nil end),
    rawset = refused(function() rawset(swarm.agent, "x", 1) end),
    mt = getmetatable(swarm),
  }}
end"#
        )
    };
    w.agent(
        "by-name",
        &probe("assert(type(swarm.agent) == 'table')"),
        VmOptions::default(),
    );
    w.agent(
        "by-module",
        &probe("assert(swarm.json.decode('[1]')[1] == 1)"),
        VmOptions::default(),
    );
    w.agent("by-pairs", &probe(""), VmOptions::default());
    for agent in ["by-name", "by-module", "by-pairs"] {
        let (s, r) = w.run(agent, json!(null)).await;
        assert_eq!(s, TaskStatus::Pass, "{agent}: {r}");
        assert_eq!(
            r["names"],
            "agent all_settled any ask blueprint duration engine gate json layer log map mob \
             parallel pstep race recv sleep step time try worker",
            "{agent}"
        );
        assert_eq!(r["same"], true, "{agent}: {r}");
        for (field, what) in [
            ("agent", "swarm.agent"),
            ("engine", "swarm.engine"),
            ("step", "swarm"),
        ] {
            let msg = r[field].as_str().unwrap_or_default();
            assert!(
                msg.contains(&format!("read-only table '{what}'")),
                "{agent} {field}: {r}"
            );
        }
        assert!(r["rawset"].as_str().is_some(), "{agent}: {r}");
        assert_eq!(r["mt"], "locked", "{agent}");
    }
}

/// Bodies kept across tasks (upvalues: `_ENV`, `swarm`, a number, a
/// string, each set back per task) and bodies built afresh per task (a
/// table upvalue; an `_ENV` of their own) all start every task clean,
/// alone and in a blueprint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_and_rebuilt_bodies_start_every_task_clean() {
    let w = world();
    let globals = r#"return function(task)
  local clean = COUNT == nil and getmetatable(_ENV).seen == nil and rawget(_G, "COUNT") == nil
  COUNT = (COUNT or 0) + 1
  getmetatable(_ENV).seen = true
  return clean
end"#;
    let agents = [
        ("globals", globals, json!(true)),
        (
            "number",
            "local n = 0\nreturn function(task) n = n + 1 return n end",
            json!(1),
        ),
        (
            "string",
            "local box = 'empty'\nreturn function(task) local was = box box = task.input return was end",
            json!("empty"),
        ),
        (
            "swarm-local",
            "local swarm = require 'swarm'\nlocal json = swarm.json\n\
             return function(task) local was = SEEN SEEN = 1 return json.encode({ was or 0 }) end",
            json!("[0]"),
        ),
        (
            "table",
            "local seen = {}\nreturn function(task) seen[#seen + 1] = task.input return #seen end",
            json!(1),
        ),
        (
            "own-env",
            "local _ENV = { n = 0 }\nreturn function(task) n = n + 1 return n end",
            json!(1),
        ),
    ];
    for (name, src, _) in &agents {
        w.agent(name, src, VmOptions::default());
    }
    for i in 0..3 {
        for (name, _, want) in &agents {
            let got = w.run(name, json!(format!("secret-{i}"))).await;
            assert_eq!(got, (TaskStatus::Pass, want.clone()), "{name}, task {i}");
        }
    }

    use lua_swarm::run::{self, RunOptions};
    let src = r#"return swarm.blueprint "kept" {
  agents = { probe = swarm.agent.lua { run = function(task)
    local clean = SEEN == nil
    SEEN = task.input
    return { clean = clean, input = task.input, upper = string.upper("a") }
  end } },
  flow = function()
    local out = {}
    for i = 1, 4 do out[i] = swarm.step("probe", i) end
    return out
  end,
}"#;
    let engine =
        lua_swarm::engine::Engine::new(Default::default(), lua_swarm::auth::Signer::random());
    let r = run::prepare_source(
        &engine,
        std::path::Path::new("kept.lua"),
        src,
        RunOptions::default(),
    )
    .unwrap();
    let report = r.run(json!(null)).await.unwrap();
    assert_eq!(report.status, TaskStatus::Pass, "{}", report.result);
    let want: Vec<Value> = (1..=4)
        .map(|i| json!({"clean": true, "input": i, "upper": "A"}))
        .collect();
    assert_eq!(report.result, json!(want));
}

/// A chunk whose top level defines what the body reads as globals (a
/// helper function, a table, a changed environment metatable) is evaluated
/// for every task, so every task finds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_reads_what_the_top_level_made_finds_it_every_task() {
    let w = world();
    for (name, src) in [
        (
            "global-fn",
            "function double(x) return x * 2 end\nreturn function(task) return double(task.input) end",
        ),
        (
            "global-table",
            "FACTOR = { by = 2 }\nreturn function(task) return task.input * FACTOR.by end",
        ),
        (
            "new-env-mt",
            "local base = getmetatable(_ENV).__index\n\
             setmetatable(_ENV, { __index = function(_, k) if k == 'by' then return 2 end return base[k] end })\n\
             return function(task) return task.input * by end",
        ),
        (
            "env-mt",
            "local base = getmetatable(_ENV).__index\n\
             getmetatable(_ENV).__index = function(_, k) if k == 'by' then return 2 end return base[k] end\n\
             return function(task) return task.input * by end",
        ),
    ] {
        w.agent(name, src, VmOptions::default());
        for i in 1..=3 {
            assert_eq!(
                w.run(name, json!(i)).await,
                (TaskStatus::Pass, json!(i * 2)),
                "{name}, task {i}"
            );
        }
    }
}
