//! A bounded fuzz of the whole sandbox surface: every function a script can
//! reach (the base library, `string`, `table`, `math`, `utf8`, `coroutine`,
//! `os` and every `swarm` module, found by walking them, so a host function
//! added later is fuzzed without a change here) is called with adversarial
//! arguments: huge, negative and fractional counts, NaN and infinities,
//! empty, large and pattern-special strings, tables with lying `__len`,
//! C-function `__index`, raising `__eq`/`__lt`/`__concat`/`__tostring`,
//! functions that raise or spin, coroutines dead, suspended and running.
//!
//! In Lua-agent mode each call is one task of an agent under small
//! limits, and a healthy agent must keep passing beside them; in flow mode
//! each call is one whole run (the flow's VM reaches `swarm.step`, `ask`,
//! `sleep`, `map` and the journaled reads too), and a healthy run must
//! keep passing. The test asserts that every call
//! ends (a hang guard far beyond the limits), with a pass or a typed error
//! code, that the host's memory stays far below what an unbounded host
//! buffer would take, and — by finishing at all — that nothing killed the
//! process. Deterministic: the argument draws come from a fixed seed.

mod common;

use common::*;
use lua_swarm::engine::TaskStatus;
use lua_swarm::lua::VmOptions;
use serde_json::json;
use std::time::{Duration, Instant};

/// Calls per reachable function.
const DRAWS: usize = 6;
/// Runs per function a flow reaches (each a whole run: fewer draws).
const FLOW_DRAWS: usize = 3;
/// Arguments per call, at most.
const ARITY: usize = 4;

/// What both modes share: the walk of reachable functions and the pool of
/// adversarial arguments.
const POOL: &str = r#"
local swarm = require "swarm"
-- Every reachable function, by dotted name, sorted (stable indices).
local function reachable()
  local seen, out = {}, {}
  local function walk(prefix, t, depth)
    if depth > 3 or seen[t] then return end
    seen[t] = true
    for k, v in pairs(t) do
      if type(k) == "string" then
        local name = prefix == "" and k or prefix .. "." .. k
        if type(v) == "function" then out[#out + 1] = { name = name, f = v }
        elseif type(v) == "table" and k ~= "_G" then walk(name, v, depth + 1) end
      end
    end
  end
  walk("", getmetatable(_G).__index, 0)
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

local function lying_len() return setmetatable({}, { __len = function() return 2^53 end }) end
local function c_index() return setmetatable({}, { __index = tostring, __len = function() return 2^31 - 2 end }) end
local raising = setmetatable({}, {
  __eq = function() error("eq") end, __lt = function() error("lt") end,
  __le = function() error("le") end, __concat = function() error("concat") end,
  __tostring = function() error("tostring") end, __index = function() error("index") end,
  __call = function() error("call") end, __len = function() error("len") end,
})
local big = ("x"):rep(1 << 20)
local pool = {
  function() return nil end, function() return true end, function() return false end,
  function() return 0 end, function() return -1 end, function() return 1 end, function() return 3 end,
  function() return 2^31 end, function() return 2^53 end, function() return -2^53 end,
  function() return 2^62 end, function() return math.maxinteger end, function() return math.mininteger end,
  function() return 1/0 end, function() return -1/0 end, function() return 0/0 end, function() return 0.5 end,
  function() return 1e308 end, function() return "" end, function() return "x" end, function() return big end,
  function() return "%" end, function() return "(" end, function() return "[" end, function() return "%b()" end,
  function() return ("a*"):rep(30) .. "b" end, function() return ("a"):rep(5000) end,
  function() return "\255\254" end, function() return "1e5" end, function() return "t" end,
  function() return "count" end, function() return "k" end,
  function() return {} end, function() return { 1, 2, 3 } end, function() return { a = { b = {} } } end,
  lying_len, c_index, function() return raising end,
  function() return swarm.json.null end, function() return swarm.json.array() end,
  function() return function() end end, function() return function() error("boom") end end,
  function() return function() while true do end end end,
  function() return function(...) return ... end end,
  function() return coroutine.create(function() end) end,
  function() local co = coroutine.create(function() end) coroutine.resume(co) return co end,
  function() local co = coroutine.create(function() coroutine.yield() end) coroutine.resume(co) return co end,
  function() return coroutine.running() end,
  function() local t = {} t.t = t return t end,
}

local function fuzz(input)
  local fns = reachable()
  if input.list then
    local names = {}
    for i, f in ipairs(fns) do names[i] = f.name end
    return { names = names, pool = #pool }
  end
  local f = fns[input.fn]
  local args = {}
  for i, a in ipairs(input.args) do args[i] = pool[a]() end
  local ok = pcall(f.f, table.unpack(args, 1, #input.args))
  return { name = f.name, ok = ok }
end
"#;

/// Lua-agent mode: each call is one task of an agent.
const AGENT: &str = "return function(task) return fuzz(task.input) end";

/// Flow mode: each call is one run, in the flow's VM (where `swarm.step`,
/// `ask`, `sleep` and the journaled reads live).
const FLOW: &str = r#"
return swarm.blueprint "fuzz" {
  limits = { deadline = "2s", instructions = 50000000, memory = 64000000, journal_entries = 1000 },
  agents = { echo = swarm.agent.rust { name = "echo" } },
  flow = function(input) return fuzz(input) end,
}
"#;

/// Codes a fuzzed call may end with: a limit, or a usage error.
const EXPECTED: &[&str] = &[
    "lua_error",
    "instruction_budget",
    "deadline",
    "memory_limit",
    "bad_value",
    "bad_argument",
    "bad_call",
    "forbidden",
    "no_token",
    "not_owner",
    "cancelled",
];

/// xorshift64*: deterministic draws without a dependency.
struct Draws(u64);

impl Draws {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// Peak resident memory of this process, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reachable_function_survives_adversarial_arguments() {
    let started = Instant::now();
    let w = world();
    let opts = VmOptions {
        memory_limit: 32 << 20,
        instruction_budget: 20_000_000,
        timeout: Some(Duration::from_secs(2)),
        ..VmOptions::default()
    };
    w.agent("fuzz", &format!("{POOL}\n{AGENT}"), opts);
    w.agent("healthy", HEALTHY, VmOptions::default());
    let (s, listed) = w.run("fuzz", json!({"list": true})).await;
    assert_eq!(s, TaskStatus::Pass, "{listed}");
    let names: Vec<String> = serde_json::from_value(listed["names"].clone()).unwrap();
    let pool = listed["pool"].as_u64().unwrap() as usize;
    assert!(names.len() > 120, "reach: {names:?}");
    for must in [
        "table.insert",
        "string.rep",
        "swarm.json.decode",
        "coroutine.resume",
        "load",
    ] {
        assert!(names.iter().any(|n| n == must), "{must} not reached");
    }
    eprintln!("fuzz reach: {} functions: {}", names.len(), names.join(" "));
    let mut draws = Draws(0x5eed_1234_abcd_0001);
    let mut unexpected = Vec::new();
    for (fi, name) in names.iter().enumerate() {
        for _ in 0..DRAWS {
            let arity = draws.below(ARITY + 1);
            let args: Vec<usize> = (0..arity).map(|_| draws.below(pool) + 1).collect();
            let input = json!({"fn": fi + 1, "args": args});
            if std::env::var_os("FUZZ_TRACE").is_some() {
                eprintln!("call {name} {input}");
            }
            let (status, r) = w.run("fuzz", input.clone()).await;
            let code = r["code"].as_str().unwrap_or_default();
            let fine = status == TaskStatus::Pass || EXPECTED.contains(&code);
            if !fine {
                unexpected.push(format!("{name} {input}: {status:?} {r}"));
            }
        }
        // The test's own session outlives the run (the sweep detaches a
        // silent one).
        w.engine.heartbeat(&w.op).unwrap();
        // The host stays responsive: a healthy task passes between them.
        if fi % 16 == 0 {
            let (hs, hr) = w.run("healthy", json!(fi)).await;
            assert_eq!(hs, TaskStatus::Pass, "healthy after {name}: {hr}");
        }
    }
    assert!(unexpected.is_empty(), "{}", unexpected.join("\n"));
    let rss = peak_rss();
    assert!(rss < 3 << 30, "peak host memory {rss} bytes");
    let calls = names.len() * DRAWS;
    eprintln!(
        "fuzz: {calls} calls over {} functions in {:?}, peak RSS {} MiB",
        names.len(),
        started.elapsed(),
        rss >> 20
    );
}

/// Codes a fuzzed flow may end with beyond [`EXPECTED`]: the run's own
/// limits, and a question nobody is there to answer.
const FLOW_EXPECTED: &[&str] = &["run_deadline", "journal_budget", "senior_unanswered"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_function_a_flow_reaches_survives_adversarial_arguments() {
    use lua_swarm::run::{self, RunOptions};
    let started = Instant::now();
    let w = world();
    let source = format!("{POOL}\n{FLOW}");
    let limits = VmOptions {
        memory_limit: 32 << 20,
        instruction_budget: 20_000_000,
        timeout: Some(Duration::from_secs(2)),
        ..VmOptions::default()
    };
    let run = |input: serde_json::Value| {
        let opts = RunOptions {
            flow_vm: limits.clone(),
            vm: limits.clone(),
            ..RunOptions::default()
        };
        let prepared =
            run::prepare_source(&w.engine, std::path::Path::new("fuzz.lua"), &source, opts);
        async move {
            let report = prepared.unwrap().run(input).await.unwrap();
            (report.status, report.result)
        }
    };
    let (s, listed) = run(json!({"list": true})).await;
    assert_eq!(s, TaskStatus::Pass, "{listed}");
    let names: Vec<String> = serde_json::from_value(listed["names"].clone()).unwrap();
    let pool = listed["pool"].as_u64().unwrap() as usize;
    for must in [
        "swarm.step",
        "swarm.ask",
        "swarm.sleep",
        "swarm.map",
        "table.move",
    ] {
        assert!(
            names.iter().any(|n| n == must),
            "{must} not reached: {names:?}"
        );
    }
    let mut draws = Draws(0x5eed_1234_abcd_0002);
    let mut unexpected = Vec::new();
    for (fi, name) in names.iter().enumerate() {
        for _ in 0..FLOW_DRAWS {
            let arity = draws.below(ARITY + 1);
            let args: Vec<usize> = (0..arity).map(|_| draws.below(pool) + 1).collect();
            let input = json!({"fn": fi + 1, "args": args});
            let (status, r) = tokio::time::timeout(HANG_GUARD, run(input.clone()))
                .await
                .unwrap_or_else(|_| panic!("{name} {input} did not end"));
            let code = r["code"].as_str().unwrap_or_default();
            let fine = status == TaskStatus::Pass
                || EXPECTED.contains(&code)
                || FLOW_EXPECTED.contains(&code);
            if !fine {
                unexpected.push(format!("{name} {input}: {status:?} {r}"));
            }
        }
        if fi % 16 == 0 {
            let (hs, hr) = run(json!({"list": true})).await;
            assert_eq!(hs, TaskStatus::Pass, "a healthy run after {name}: {hr}");
        }
    }
    assert!(unexpected.is_empty(), "{}", unexpected.join("\n"));
    let rss = peak_rss();
    assert!(rss < 3 << 30, "peak host memory {rss} bytes");
    eprintln!(
        "flow fuzz: {} runs over {} functions in {:?}, peak RSS {} MiB",
        names.len() * FLOW_DRAWS,
        names.len(),
        started.elapsed(),
        rss >> 20
    );
}
