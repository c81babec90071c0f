//! The remote-step work queue lives in the journal: two `swarm serve`
//! processes on one journal share it. A step offered by the server that
//! executes its run is claimed, heartbeated and settled through the other
//! one; a claimed step is never handed out again by either; the worker's
//! events reach the run's journal. Real processes, real HTTP on loopback.

mod common;

use common::server::{Client, fresh, serve};
use lua_swarm::auth::Role;
use serde_json::json;

const PAIR: &str = r#"local swarm = require "swarm"
return swarm.blueprint "pair" {
  agents = { gpu = swarm.agent.remote { queue = "shared" } },
  flow = function()
    return swarm.parallel {
      function() return swarm.step("gpu", { n = 1 }) end,
      function() return swarm.step("gpu", { n = 2 }) end,
    }
  end,
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_offered_by_one_server_is_claimed_and_settled_through_another() {
    let dir = fresh("shared-queue", &[("pair.lua", PAIR)]);
    let a = serve(&dir, &[]);
    let b = serve(&dir, &[]);
    let op_a = Client::new(&a, Some(a.token(Role::Operator, None)));
    let op_b = Client::new(&b, Some(b.token(Role::Operator, None)));
    let w_b = Client::new(&b, Some(b.token(Role::Worker, None)));
    let w_a = Client::new(&a, Some(a.token(Role::Worker, None)));
    let (code, body) = op_a
        .post("/v1/runs", json!({ "blueprint": "pair", "input": {} }))
        .await;
    assert_eq!(code, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    // Both steps are claimed through B; A then has none to hand out.
    let mut claims = Vec::new();
    for _ in 0..2 {
        let (code, step) = w_b
            .post("/v1/queues/shared/claim", json!({ "wait_ms": 30000 }))
            .await;
        assert_eq!(code, 200, "{step}");
        assert_eq!(step["run"], json!(id));
        claims.push(step);
    }
    let (code, none) = w_a
        .post("/v1/queues/shared/claim", json!({ "wait_ms": 300 }))
        .await;
    assert_eq!(code, 204, "a claimed step was handed out twice: {none}");
    for step in &claims {
        let claim = step["claim"].as_str().unwrap();
        let (code, beat) = w_b
            .post(&format!("/v1/claims/{claim}/heartbeat"), json!({}))
            .await;
        assert_eq!(code, 200, "{beat}");
        let events = json!({ "task": step["task"],
                             "events": [{ "event": "progress", "data": { "via": "b" } }] });
        let (code, body) = w_b
            .post(&format!("/v1/claims/{claim}/events"), events)
            .await;
        assert_eq!(code, 200, "{body}");
        let n = step["input"]["n"].as_i64().unwrap();
        let result = json!({ "task": step["task"], "ok": true, "value": n * 10 });
        let (code, body) = w_b
            .post(&format!("/v1/claims/{claim}/result"), result.clone())
            .await;
        assert_eq!(code, 200, "{body}");
        // The claim is over on every server.
        let (code, again) = w_a
            .post(&format!("/v1/claims/{claim}/result"), result)
            .await;
        assert_eq!((code, &again["code"]), (409, &json!("claim_done")));
    }
    // The run, executing in A, sees both results and passes; B reads it.
    let run = op_a.until(&id, |r| r["status"] != "running").await;
    assert_eq!(run["status"], "pass", "{run}");
    assert_eq!(run["result"], json!([10, 20]), "{run}");
    let (code, seen) = op_b.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(code, 200, "{seen}");
    assert_eq!(seen["status"], "pass");
    // The worker's events, sent through B, are in the run's journal.
    let events = op_b.events(&id, None).await;
    let remote: Vec<_> = events
        .iter()
        .filter(|(e, _)| e == "remote_output")
        .collect();
    assert_eq!(remote.len(), 2, "{events:?}");
    assert!(remote[0].1.contains("\"via\":\"b\""), "{remote:?}");
}
