//! A server whose run spins is still a server: eight Lua agents looping
//! without end on a 2-core box must not starve the control path. While
//! they spin, `/v1/health` answers (each request within a bound a
//! thousand times what it needs, far below the seconds a starved server
//! took), and a cancel over HTTP ends the run. The spin is observed, not
//! timed: the test waits until the engine holds all eight agents' tasks.

mod common;

use common::server::{Client, fresh, serve};
use lua_swarm::auth::Role;
use serde_json::json;
use std::time::{Duration, Instant};

const SPIN: &str = r#"local swarm = require "swarm"
return swarm.blueprint "spin" {
  agents = { spin = swarm.agent.lua { run = function() while true do end end } },
  flow = function()
    local work = {}
    for i = 1, 8 do work[i] = i end
    return swarm.map(work, function(i) return swarm.step("spin", i) end)
  end,
}
"#;

/// Far above what a health check needs (microseconds), far below the
/// 3.6 s a starved server took.
const ANSWERS_WITHIN: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_cancel_answer_while_eight_agents_spin() {
    let s = serve(&fresh("serve-spin", &[("spin.lua", SPIN)]), &[]);
    let op = Client::new(&s, Some(s.token(Role::Operator, None)));
    let started = op.post("/v1/runs", json!({ "blueprint": "spin", "id": "s" }));
    assert_eq!(started.await.0, 201);
    // The root, the flow's map and eight spinning steps are held.
    let guard = Instant::now();
    loop {
        let (_, stats) = op.get("/v1/stats").await;
        if stats["engine"]["tasks"].as_u64().unwrap_or(0) >= 9 {
            eprintln!("spinning: {stats}");
            break;
        }
        assert!(guard.elapsed() < Duration::from_secs(60), "{stats}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..5 {
        let asked = Instant::now();
        let (code, body) = op.get("/v1/health").await;
        let took = asked.elapsed();
        assert_eq!(code, 200, "{body}");
        eprintln!("/v1/health answered in {took:?}");
        assert!(
            took < ANSWERS_WITHIN,
            "/v1/health took {took:?} while agents spun"
        );
    }
    let (code, _) = op.get("/v1/runs/s").await;
    assert_eq!(code, 200);
    let got = op.post("/v1/runs/s/cancel", json!({})).await;
    assert_eq!(got, (200, json!({ "id": "s", "status": "cancelling" })));
    let run = op.until("s", |r| r["status"] != "running").await;
    assert_eq!(run["status"], "cancelled", "{run}");
}
