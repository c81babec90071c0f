//! Flow workloads: `flow-seq100`, `flow-map100k`, `step-process`.

use super::{engine, line, peak_rss_mb};
use crate::run::{self, RunOptions};
use serde_json::json;
use std::path::Path;
use std::time::Instant;

const SEQ: &str = r#"
local swarm = require "swarm"
return swarm.blueprint "seq" {
  agents = {
    rust = swarm.agent.rust { name = "echo" },
    lua = swarm.agent.lua { run = function(task) return task.input end },
    proc = swarm.agent.process { cmd = { "true" } },
  },
  flow = function(input)
    local x = 0
    for i = 1, input.steps do x = swarm.step(input.agent, i) end
    return x
  end,
}
"#;

const MAP: &str = r#"
local swarm = require "swarm"
return swarm.blueprint "map" {
  agents = { echo = swarm.agent.rust { name = "echo" } },
  flow = function(input)
    local items = {}
    for i = 1, input.n do items[i] = i end
    local out = swarm.map(items, function(i) return swarm.step("echo", i) end,
                          { concurrency = input.n })
    return #out
  end,
}
"#;

async fn per_step(agent: &str, steps: u64, runs: u64) -> f64 {
    let engine = engine();
    let r = run::prepare_source(&engine, Path::new("seq.lua"), SEQ, RunOptions::default())
        .expect("bench blueprint");
    let input = json!({ "agent": agent, "steps": steps });
    let check = |report: crate::run::RunReport| super::run_passed(agent, &report, None);
    check(r.run(input.clone()).await.expect("warm-up run"));
    let start = Instant::now();
    for _ in 0..runs {
        check(r.run(input.clone()).await.expect("run"));
    }
    start.elapsed().as_secs_f64() * 1e6 / (steps * runs) as f64
}

/// A 100-step sequential flow, Rust agent and Lua agent.
pub async fn flow_seq100() {
    line(
        "flow-seq100",
        "us_per_step_rust_agent",
        per_step("rust", 100, 200).await,
        "us",
    );
    line(
        "flow-seq100",
        "us_per_step_lua_agent",
        per_step("lua", 100, 200).await,
        "us",
    );
}

/// `map` over 100,000 items, all in flight at once.
pub async fn flow_map100k() {
    let engine = engine();
    let r = run::prepare_source(&engine, Path::new("map.lua"), MAP, RunOptions::default())
        .expect("bench blueprint");
    super::reset_peak_rss();
    let start = Instant::now();
    let report = r.run(json!({ "n": 100_000 })).await.expect("run");
    let ms = start.elapsed().as_secs_f64() * 1e3;
    assert_eq!(
        report.result,
        json!(100_000),
        "bench flow-map100k: not every item passed ({:?})",
        report.status
    );
    line("flow-map100k", "wall_ms", ms, "ms");
    line(
        "flow-map100k",
        "items",
        report.result.as_f64().unwrap_or(0.0),
        "items",
    );
    line("flow-map100k", "peak_rss", peak_rss_mb(), "MB");
}

/// Per-step cost of a process agent running `true`.
pub async fn step_process() {
    line(
        "step-process",
        "us_per_step",
        per_step("proc", 100, 5).await,
        "us",
    );
}
