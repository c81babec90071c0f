//! Host work a script causes is paid for before it is done: every host
//! function family that loops or allocates on a count or size the script
//! chooses (the table library, string building, patterns, JSON, logging,
//! `load`) is stopped by the VM's limits, never runs outside them, and
//! never makes the host allocate more than the VM may hold. Each case runs
//! as a Lua agent beside a healthy one (which must pass), and the
//! library's ordinary behaviour is pinned too, so a fix cannot break it.

mod common;

use common::*;
use lua_swarm::lua::{Vm, VmOptions};
use serde_json::json;

/// A small instruction budget and no other limit near it: a host loop
/// that was not charged would run far past it (or forever).
fn budget_opts() -> VmOptions {
    VmOptions {
        instruction_budget: 2_000_000,
        ..VmOptions::default()
    }
}

/// Either limit that a runaway loop may meet first.
fn stopped(r: &serde_json::Value) {
    let code = r["code"].as_str().unwrap_or_default();
    assert!(
        ["instruction_budget", "deadline", "memory_limit"].contains(&code),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_functions_with_a_lying_len_stop_at_the_budget() {
    for body in [
        "local t = setmetatable({}, { __len = function() return 2^53 end })\n table.insert(t, 1, 'x')",
        "local t = setmetatable({}, { __len = function() return 2^53 end })\n table.remove(t, 1)",
        "table.move({}, 1, 1e15, 2)",
        "table.move({}, -2^61, 2^61, 1, {})",
        "local t = setmetatable({}, { __index = tostring })\n return table.concat(t, '', 1, 2^40)",
        "local t = setmetatable({}, { __len = function() return 2^31 - 2 end, __index = tostring })\n table.sort(t)",
    ] {
        let r = blocked_with(body, budget_opts()).await;
        stopped(&r);
    }
    let r = blocked_with("return table.unpack({}, 1, 1e8)", budget_opts()).await;
    assert_err(&r, "lua_error", "too many results to unpack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_library_still_behaves_like_lua() {
    let vm = Vm::new(world().host(), VmOptions::default()).unwrap();
    let out = vm
        .exec(
            r##"
local t = {}
table.insert(t, "b"); table.insert(t, 1, "a"); table.insert(t, 3, "c")
local removed = table.remove(t, 1)
local last = table.remove(t)
local m = table.move({1, 2, 3}, 1, 3, 2)
local sorted = {5, 3, 9, 1}
table.sort(sorted)
local desc = {5, 3, 9, 1}
table.sort(desc, function(a, b) return a > b end)
local proxy = setmetatable({}, { __index = function(_, i) if i <= 3 then return i * 10 end end,
  __len = function() return 3 end })
table.sort(setmetatable({3, 1, 2}, {}))
local ok, err = pcall(table.insert, {}, 5, "x")
local ok2, err2 = pcall(table.insert, {}, 1, 2, 3)
return removed, last, table.concat(t, ","), table.concat(m, ","), table.concat(sorted, " "),
  table.concat(desc, " "), table.concat(proxy, "-"), select("#", table.unpack({1, 2, 3})),
  ok, err, ok2, err2, table.unpack({1, 2, 3}, 2)
"##,
            "tables.lua",
        )
        .await
        .unwrap();
    let v: Vec<String> = out
        .iter()
        .map(|v| v.to_string().unwrap_or_default())
        .collect();
    assert_eq!(v[0], "a");
    assert_eq!(v[1], "c");
    assert_eq!(v[2], "b");
    assert_eq!(v[3], "1,1,2,3");
    assert_eq!(v[4], "1 3 5 9");
    assert_eq!(v[5], "9 5 3 1");
    assert_eq!(v[6], "10-20-30");
    assert_eq!(v[7], "3");
    assert_eq!(v[8], "false");
    assert!(v[9].contains("position out of bounds"), "{}", v[9]);
    assert!(v[11].contains("wrong number of arguments"), "{}", v[11]);
    assert_eq!(&v[12..], ["2", "3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn string_building_is_bounded_by_the_vm_memory() {
    // Nothing repeated any number of times is nothing, at once.
    let vm = Vm::new(world().host(), budget_opts()).unwrap();
    let out = vm
        .exec(
            "return #string.rep('', 2^62), #string.rep('', 2^62, ''), #('ab'):rep(3, ',')",
            "rep.lua",
        )
        .await
        .unwrap();
    let v: Vec<i64> = out.iter().map(|v| v.as_i64().unwrap()).collect();
    assert_eq!(v, [0, 0, 8]);
    for body in [
        "return string.rep('x', 2^40)",
        "return string.rep('', 2^40, 'sep')",
        "local s = ('x'):rep(1e6)\n return (s:gsub('x', ('y'):rep(1000)))",
        "local s = ('x'):rep(1e6)\n return (s:gsub('x', '%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0%0'))",
        "local s = ('x'):rep(1e6)\n return (s:gsub('x', function() return s end))",
    ] {
        let r = blocked_with(body, memory_opts()).await;
        stopped(&r);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_find_is_linear_and_still_correct() {
    let vm = Vm::new(world().host(), VmOptions::default()).unwrap();
    let out = vm
        .exec(
            r#"
local hay = ("a"):rep(200000) .. "b"
local needle = ("a"):rep(5000) .. "b"
local i, j = hay:find(needle, 1, true)
return i, j, ("hello"):find("l", 1, true), ("hello"):find("", 10, true), ("a.b"):find(".", 1, true),
  ("abc"):find("c", -1, true), ("abc"):find("x", 1, true)
"#,
            "find.lua",
        )
        .await
        .unwrap();
    let v: Vec<String> = out
        .iter()
        .map(|v| v.to_string().unwrap_or_else(|_| "nil".into()))
        .collect();
    // (A call inside a list gives one value.)
    assert_eq!(v[0], "195001");
    assert_eq!(v[1], "200001");
    assert_eq!(v[2], "3");
    assert_eq!(v[3], "nil", "an empty needle past the end");
    assert_eq!(v[4], "2");
    assert_eq!(v[5], "3");
    assert_eq!(v[6], "nil");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_grows_only_within_the_vm_memory() {
    for body in [
        // Shared, not cyclic: the JSON tree would double thirty times.
        "local a = { ('x'):rep(100) }\n for i = 1, 40 do a = { a, a } end\n return swarm.json.encode(a)",
        "local a = { ('x'):rep(100) }\n for i = 1, 40 do a = { a, a } end\n return a",
        "return swarm.json.decode('[' .. ('[],'):rep(8e6) .. '[]]')",
        "return swarm.json.decode('{' .. ('\"k\":\"' .. ('v'):rep(1e6) .. '\",'):rep(40) .. '\"z\":1}')",
    ] {
        let r = blocked_with(body, memory_opts()).await;
        stopped(&r);
    }
    // Decoding still gives lists, objects, null and numbers as before.
    let w = world();
    w.agent(
        "dec",
        r#"return function()
  local v = swarm.json.decode('{"a":[1,2.5,null,{"b":[]}],"big":18446744073709551615,"s":"\\u00e9"}')
  return { n = #v.a, null = swarm.json.is_null(v.a[3]), again = swarm.json.encode(v.a), big = v.big > 1e19,
    s = v.s, bad = select(2, swarm.json.decode("[1,"))  ~= nil }
end"#,
        VmOptions::default(),
    );
    let (status, r) = w.run("dec", json!(null)).await;
    assert_eq!(
        (status, r),
        (
            lua_swarm::engine::TaskStatus::Pass,
            json!({"n": 4, "null": true, "again": "[1,2.5,null,{\"b\":[]}]", "big": true, "s": "é", "bad": true})
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn print_and_log_lines_are_cut_not_copied_per_argument() {
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let w = world();
    let mut host = w.host();
    let sink = lines.clone();
    host.print = std::sync::Arc::new(move |l| sink.lock().unwrap().push(l.to_string()));
    let vm = Vm::new(host, VmOptions::default()).unwrap();
    // A million arguments, each the same 1 MB string: a terabyte if each
    // were copied.
    vm.exec(
        "local s = ('x'):rep(1e6)\n local t = {}\n for i = 1, 200000 do t[i] = s end\n print(table.unpack(t))\n swarm.log.info(table.unpack(t))",
        "print.lua",
    )
    .await
    .unwrap();
    let lines = lines.lock().unwrap();
    assert_eq!(lines.len(), 1);
    assert!(lines[0].len() < 70_000, "{}", lines[0].len());
    assert!(lines[0].ends_with("more bytes)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiling_is_charged() {
    let r = blocked_with(
        "local src = ('local x = 1 '):rep(1e6)\n for i = 1, 100 do load(src) end",
        budget_opts(),
    )
    .await;
    stopped(&r);
}
