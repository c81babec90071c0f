//! Lua workloads: `step-lua`, `vm-new`, `verb-call`.

use super::{engine, line, one_step};
use crate::auth::Role;
use crate::engine::{AttachOptions, Caller, TaskSpec};
use crate::lua::{Agents, Host, LuaAgent, Vm, VmOptions};
use serde_json::json;
use std::time::Instant;

/// Sequential create+dispatch of a Lua agent returning a constant: with the
/// agent's VM pool warm (`us_per_step_pooled`, what a long run pays), and
/// with a new agent per step, so every step builds its VM
/// (`us_per_step_fresh`, what the first step of an agent pays).
pub async fn step_lua() {
    let engine = engine();
    let agents = Agents::default();
    let host = Host::new(engine.clone(), &agents);
    let constant = || {
        let src = "return function() return 1 end";
        LuaAgent::new(host.clone(), src, "const.lua", VmOptions::default())
    };
    let op = engine
        .attach(Caller::Host, AttachOptions::new("bench", Role::Operator))
        .expect("attach");
    let agent = constant();
    let n = 20_000;
    for warm in [true, false] {
        let start = Instant::now();
        for i in 0..n {
            one_step("step-lua", &engine, &op, &agent, json!(i)).await;
        }
        if !warm {
            let us = start.elapsed().as_secs_f64() * 1e6 / n as f64;
            line("step-lua", "us_per_step_pooled", us, "us");
        }
    }
    let n = 2_000;
    let start = Instant::now();
    for i in 0..n {
        one_step("step-lua", &engine, &op, &constant(), json!(i)).await;
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    line("step-lua", "us_per_step_fresh", us, "us");
}

/// Building one sandboxed VM with every module.
pub fn vm_new() {
    let engine = engine();
    let agents = Agents::default();
    let host = Host::new(engine, &agents);
    let n = 2_000;
    let (mut build, mut teardown) = (0.0, 0.0);
    for _ in 0..n {
        let start = Instant::now();
        let vm = Vm::new(host.clone(), VmOptions::default()).expect("vm");
        build += start.elapsed().as_secs_f64();
        let start = Instant::now();
        drop(vm);
        teardown += start.elapsed().as_secs_f64();
    }
    let us = build * 1e6 / n as f64;
    let drop_us = teardown * 1e6 / n as f64;
    line("vm-new", "us_per_vm", us, "us");
    line("vm-new", "us_per_drop", drop_us, "us");
}

/// Lua → engine round trips for non-waiting verbs, timed inside Lua.
pub async fn verb_call() {
    let engine = engine();
    let agents = Agents::default();
    let vm = Vm::new(Host::new(engine.clone(), &agents), VmOptions::default()).expect("vm");
    let op = engine
        .attach(Caller::Host, AttachOptions::new("bench", Role::Operator))
        .expect("attach");
    let id = engine
        .start_task(&op, TaskSpec::new("x", json!(1)))
        .expect("task");
    vm.set_token(Some(op));
    let n = 100_000;
    for (figure, call) in [
        ("ns_per_heartbeat", "swarm.engine.heartbeat()".to_string()),
        (
            "ns_per_read_task",
            format!("swarm.engine.read_task({})", id.0),
        ),
        ("ns_per_empty_loop", "local _ = 1".to_string()),
    ] {
        let src = format!("for i = 1, {n} do {call} end");
        let start = Instant::now();
        vm.exec(&src, "bench.lua").await.expect("lua");
        let ns = start.elapsed().as_secs_f64() * 1e9 / n as f64;
        line("verb-call", figure, ns, "ns");
    }
}

/// `swarm repl` cold start: process start → first answer (`1` piped in),
/// exit included. An upper bound on "cold start to first prompt".
pub fn repl_start() {
    use std::io::Write;
    let exe = std::env::current_exe().expect("own path");
    let mut samples = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        let mut child = std::process::Command::new(&exe)
            .args(["repl", "--no-history"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn swarm repl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"1\n")
            .expect("write");
        let out = child.wait_with_output().expect("repl exits");
        assert_eq!(out.stdout, b"1\n", "unexpected repl output");
        samples.push(start.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(f64::total_cmp);
    line("repl-start", "median_ms", samples[samples.len() / 2], "ms");
    line("repl-start", "max_ms", samples[samples.len() - 1], "ms");
}
