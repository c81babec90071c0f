//! The role × route table, route by route: every role against every route,
//! on a run that exists (finished) and one that does not. A role that may
//! not do a thing gets 403 whatever the run's state (never a 404 that
//! tells it the run is absent, nor a 409 that tells it the run's state);
//! a role that may gets the state's answer. A token bound to one run reaches
//! no other.

mod common;

use common::server::{Client, fresh, serve};
use lua_swarm::auth::Role;
use serde_json::{Value, json};

const QUICK: &str = r#"local swarm = require 'swarm'
return swarm.blueprint 'quick' {
  agents = { echo = swarm.agent.rust { name = "echo" } },
  flow = function(input) return swarm.step('echo', input) end,
}
"#;

/// What `role` may do on a route, by the one table the server keeps
/// (src/run/service.rs): operator all; senior answer + read; observer read;
/// worker its claims only.
fn allowed(role: Role, action: &str) -> bool {
    match role {
        Role::Operator => true,
        Role::Senior => matches!(action, "answer" | "read"),
        Role::Observer => action == "read",
        Role::Worker => action == "work",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_on_every_route_is_refused_before_the_state_is_told() {
    let s = serve(&fresh("roles", &[("quick.lua", QUICK)]), &[]);
    let op = Client::new(&s, Some(s.token(Role::Operator, None)));
    let (code, run) = op
        .post("/v1/runs", json!({"blueprint": "quick", "input": 1}))
        .await;
    assert_eq!(code, 201, "{run}");
    let done = run["id"].as_str().unwrap().to_string();
    op.until(&done, |r| r["status"] == "pass").await;

    // (method, path, body, action, status for an allowed role: on the
    // finished run, on a run that does not exist)
    type Route<'a> = (&'a str, String, Option<Value>, &'a str, u16, u16);
    let routes: Vec<Route> = vec![
        ("GET", "/v1/runs".into(), None, "read", 200, 200),
        ("GET", "/v1/mobs".into(), None, "read", 200, 200),
        ("GET", "/v1/mobs/{id}".into(), None, "read", 404, 404),
        ("GET", "/v1/runs/{id}".into(), None, "read", 200, 404),
        (
            "GET",
            "/v1/runs/{id}/journal".into(),
            None,
            "read",
            200,
            404,
        ),
        (
            "POST",
            "/v1/runs/{id}/answers".into(),
            Some(json!({"question": "q", "value": 1})),
            "answer",
            404,
            404,
        ),
        (
            "POST",
            "/v1/runs/{id}/messages".into(),
            Some(json!({"topic": "q", "value": 1})),
            "send",
            409,
            404,
        ),
        (
            "POST",
            "/v1/runs/{id}/cancel".into(),
            Some(json!({})),
            "cancel",
            409,
            404,
        ),
        (
            "POST",
            "/v1/runs/{id}/fork".into(),
            Some(json!({})),
            "start",
            201,
            404,
        ),
        (
            "POST",
            "/v1/runs/{id}/resume".into(),
            Some(json!({})),
            "resume",
            409,
            404,
        ),
        (
            "POST",
            "/v1/claims/no-such-claim/heartbeat".into(),
            Some(json!({})),
            "work",
            404,
            404,
        ),
        (
            "POST",
            "/v1/claims/no-such-claim/result".into(),
            Some(json!({"task": 1, "ok": true, "value": 1})),
            "work",
            404,
            404,
        ),
        (
            "POST",
            "/v1/claims/no-such-claim/events".into(),
            Some(json!({"task": 1, "events": []})),
            "work",
            404,
            404,
        ),
        (
            "POST",
            "/v1/queues/nobody/claim".into(),
            Some(json!({"wait_ms": 0})),
            "work",
            204,
            204,
        ),
    ];
    let mut wrong = Vec::new();
    for role in [Role::Operator, Role::Senior, Role::Observer, Role::Worker] {
        let c = Client::new(&s, Some(s.token(role, None)));
        for (method, path, body, action, on_done, on_absent) in &routes {
            for (id, state_answer) in [(done.as_str(), *on_done), ("no-such-run", *on_absent)] {
                let path = path.replace("{id}", id);
                let want = if allowed(role, action) {
                    state_answer
                } else {
                    403
                };
                let (got, reply) = c.call(method, &path, body.clone()).await;
                if got != want {
                    wrong.push(format!(
                        "{role:?} {method} {path}: {got} (want {want}) {reply}"
                    ));
                }
            }
        }
        // Starting a run: operator only; the others change nothing.
        let (got, reply) = c
            .post("/v1/runs", json!({"blueprint": "quick", "input": 2}))
            .await;
        let want = if allowed(role, "start") { 201 } else { 403 };
        if got != want {
            wrong.push(format!(
                "{role:?} POST /v1/runs: {got} (want {want}) {reply}"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "routes out of the table:\n{}",
        wrong.join("\n")
    );

    // A senior token bound to the finished run reaches it and nothing else:
    // another run is as absent to it as one that does not exist.
    let bound = Client::new(&s, Some(s.token(Role::Senior, Some(&done))));
    let (other, _) = op.get("/v1/runs").await;
    assert_eq!(other, 200);
    assert_eq!(bound.get(&format!("/v1/runs/{done}")).await.0, 200);
    let (_, list) = op.get("/v1/runs").await;
    let another = list["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .find(|id| *id != done)
        .expect("the operator's second run");
    for path in [
        format!("/v1/runs/{another}"),
        format!("/v1/runs/{another}/journal"),
    ] {
        let (code, reply) = bound.get(&path).await;
        assert!(code == 404 || code == 403, "{path}: {code} {reply}");
    }
    let (code, reply) = bound
        .post(
            &format!("/v1/runs/{another}/answers"),
            json!({"question": "q", "value": 1}),
        )
        .await;
    assert!(code == 404 || code == 403, "{code} {reply}");
}
