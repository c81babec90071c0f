//! A run-bound token reaches one incarnation of its run: `swarm token
//! --run ID` binds it to the run as it is when minted, so once that run is
//! pruned and its id taken by a new run, the old token (a 30-day senior
//! token, say) reaches nothing. Real `swarm serve` and `swarm token`.

mod common;

use common::server::{Client, fresh, serve};
use lua_swarm::auth::Role;
use serde_json::json;
use std::process::Command;

const ASK: &str = r#"local swarm = require "swarm"
return swarm.blueprint "ask" {
  flow = function() return { said = swarm.ask { key = "go", text = "Continue?" } } end,
}
"#;

fn swarm(args: &[&str], db: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_swarm"))
        .args(args)
        .arg("--db")
        .arg(db)
        .env_remove("SWARM_SECRET")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_bound_token_does_not_reach_a_new_run_that_reuses_the_id() {
    let s = serve(&fresh("tokens-incarnation", &[("ask.lua", ASK)]), &[]);
    let op = Client::new(&s, Some(s.token(Role::Operator, None)));
    let start = json!({ "blueprint": "ask", "id": "r" });
    assert_eq!(op.post("/v1/runs", start.clone()).await.0, 201);
    op.until("r", |r| {
        r["open_questions"]
            .as_array()
            .is_some_and(|q| !q.is_empty())
    })
    .await;
    // A senior token for run r, as the CLI mints it.
    let out = swarm(
        &["token", "--role", "senior", "--run", "r", "--ttl", "30d"],
        &s.db,
    );
    assert!(out.status.success(), "{out:?}");
    let senior = Client::new(
        &s,
        Some(String::from_utf8(out.stdout).unwrap().trim().into()),
    );
    assert_eq!(senior.get("/v1/runs/r").await.0, 200);
    // The run ends and is pruned; a new run takes its id.
    assert_eq!(op.post("/v1/runs/r/cancel", json!({})).await.0, 200);
    op.until("r", |r| r["status"] == "cancelled").await;
    let out = swarm(
        &["prune", "--older-than", "0s", "--status", "cancelled"],
        &s.db,
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(op.post("/v1/runs", start).await.0, 201);
    op.until("r", |r| {
        r["open_questions"]
            .as_array()
            .is_some_and(|q| !q.is_empty())
    })
    .await;
    // The old token reaches nothing of it.
    let (code, body) = senior.get("/v1/runs/r").await;
    assert_eq!(
        (code, &body["code"]),
        (404, &json!("unknown_run")),
        "{body}"
    );
    let answer = json!({ "question": "go", "value": true });
    let (code, _) = senior.post("/v1/runs/r/answers", answer).await;
    assert_eq!(code, 404);
    assert_eq!(senior.get("/v1/runs").await.1["runs"], json!([]));
    // A token for a run that does not exist is refused.
    let out = swarm(&["token", "--role", "senior", "--run", "nope"], &s.db);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no run `nope`"));
}
