//! Lua workloads: `step-lua`, `vm-new`, `verb-call`.

use super::{engine, line};
use crate::auth::Role;
use crate::engine::{AttachOptions, Caller, TaskSpec};
use crate::lua::{Agents, Host, LuaAgent, Vm, VmOptions};
use serde_json::json;
use std::time::Instant;

/// Sequential create+dispatch of a Lua agent returning a constant.
pub async fn step_lua() {
    let engine = engine();
    let agents = Agents::default();
    let host = Host::new(engine.clone(), &agents);
    let agent = LuaAgent::new(
        host,
        "return function() return 1 end",
        "const.lua",
        VmOptions::default(),
    );
    let op = engine
        .attach(Caller::Host, AttachOptions::new("bench", Role::Operator))
        .expect("attach");
    let n = 20_000;
    for warm in [true, false] {
        let start = Instant::now();
        for i in 0..n {
            let id = engine
                .start_task(&op, TaskSpec::new("const", json!(i)))
                .expect("start");
            engine
                .dispatch_attempt(&op, id, &agent)
                .await
                .expect("dispatch");
        }
        if !warm {
            let us = start.elapsed().as_secs_f64() * 1e6 / n as f64;
            line("step-lua", "us_per_step", us, "us");
        }
    }
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
