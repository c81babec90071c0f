//! The run service (`Runs`) decides who may do what to which run: two real
//! runs in a real journal (started by the `swarm` binary, stopped waiting
//! for an answer), then each role and a run-bound caller try every action.

use lua_swarm::auth::Role;
use lua_swarm::run::service::{Answered, Authority, Cancelled};
use lua_swarm::run::{RunError, Runs};
use lua_swarm::store::{RunStatus, SqliteStore, Store};
use serde_json::json;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

const WAITS: &str = "local swarm = require 'swarm'\nreturn swarm.blueprint 'w' {\n  flow = function() return swarm.ask({ key = 'ok?' }) end,\n}\n";

/// A journal holding runs `a` and `b`, both waiting for `ok?`.
fn journal(name: &str) -> Arc<dyn Store> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("service-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (bp, db) = (dir.join("w.lua"), dir.join("swarm.db"));
    std::fs::write(&bp, WAITS).unwrap();
    for id in ["a", "b"] {
        let out = Command::new(env!("CARGO_BIN_EXE_swarm"))
            .args(["run", bp.to_str().unwrap(), "--run-id", id, "--db"])
            .arg(&db)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(3),
            "run {id} stops waiting: {out:?}"
        );
    }
    Arc::new(SqliteStore::open(&db).unwrap())
}

fn who(role: Role, run: Option<&str>) -> Authority {
    Authority {
        role,
        run: run.map(str::to_string),
        incarnation: None,
    }
}

fn code<T>(r: Result<T, RunError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) => e.code(),
    }
}

/// The run service over `store`, on an engine of its own.
fn runs(store: &Arc<dyn Store>) -> Arc<Runs> {
    let engine = lua_swarm::engine::Engine::new(
        lua_swarm::engine::EngineConfig::default(),
        lua_swarm::auth::Signer::random(),
    );
    Runs::new(engine, Some(store.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_bound_callers_reach_only_what_they_may() {
    let store = journal("roles");
    let runs = runs(&store);
    let local = Authority::local();
    let ids = async |w: &Authority| -> Vec<String> {
        let listed = runs.list(w, None).await.unwrap();
        listed.into_iter().map(|r| r.id).collect()
    };

    // An observer reads everything and changes nothing.
    let observer = who(Role::Observer, None);
    assert_eq!(ids(&observer).await, ["a", "b"]);
    assert_eq!(code(runs.show(&observer, "b").await), "ok");
    assert_eq!(code(runs.cancel(&observer, "a").await), "forbidden");
    let answer = async |w: &Authority, id: &str| runs.answer(w, id, "ok?", json!(true)).await;
    assert_eq!(code(answer(&observer, "a").await), "forbidden");
    let e = runs.cancel(&observer, "a").await.unwrap_err();
    assert_eq!(e.to_string(), "role `observer` may not cancel runs");

    // A worker touches runs only through its tasks.
    let worker = who(Role::Worker, None);
    assert_eq!(code(runs.list(&worker, None).await), "forbidden");

    // A senior bound to run a: sees and answers a, nothing of b.
    let senior_a = who(Role::Senior, Some("a"));
    assert_eq!(ids(&senior_a).await, ["a"]);
    assert_eq!(code(runs.show(&senior_a, "b").await), "unknown_run");
    assert_eq!(code(runs.record(&senior_a, "b").await), "unknown_run");
    assert_eq!(code(answer(&senior_a, "b").await), "unknown_run");
    assert_eq!(code(runs.cancel(&senior_a, "a").await), "forbidden");
    assert_eq!(answer(&senior_a, "a").await.unwrap(), Answered::NeedsResume);
    let shown = runs.show(&senior_a, "a").await.unwrap();
    assert_eq!(shown.questions[0].answer, Some(json!(true)));
    // b's question is still open: a's answer did not reach it.
    let b = runs.show(&local, "b").await.unwrap();
    assert_eq!(b.questions[0].answer, None);

    // An operator bound to a cancels a, cannot reach b.
    let operator_a = who(Role::Operator, Some("a"));
    assert_eq!(code(runs.cancel(&operator_a, "b").await), "unknown_run");
    assert_eq!(runs.cancel(&operator_a, "a").await.unwrap(), Cancelled::Now);
    let status = async |id: &str| runs.record(&local, id).await.unwrap().status;
    assert_eq!(status("a").await, RunStatus::Cancelled);
    assert_eq!(status("b").await, RunStatus::Waiting);
    // Finished runs are refused, whoever asks.
    assert_eq!(code(runs.cancel(&local, "a").await), "refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_and_start_check_the_callers_authority_first() {
    let store = journal("resume");
    let runs = runs(&store);
    let opts = lua_swarm::run::RunOptions::default;
    for w in [who(Role::Senior, None), who(Role::Observer, Some("a"))] {
        let r = runs.resume(&w, "a", false, opts()).await;
        assert_eq!(code(r), "forbidden", "{w:?}");
    }
    let r = runs
        .resume(&who(Role::Operator, Some("b")), "a", false, opts())
        .await;
    assert_eq!(code(r), "unknown_run");
    // Nothing was claimed: the run is still waiting, free to resume.
    let now = runs.record(&Authority::local(), "a").await.unwrap();
    assert_eq!((now.status, now.owner), (RunStatus::Waiting, None));
    let path = Path::new(&now.path);
    let s = runs
        .start(&who(Role::Senior, None), path, json!(null), opts())
        .await;
    assert_eq!(code(s), "forbidden");
    assert_eq!(runs.active_count(), 0);
}

#[test]
fn a_run_id_taken_is_a_typed_conflict_not_a_write_failure() {
    let store = journal("taken");
    let mut rec = lua_swarm::store::wait(store.run("a")).unwrap().unwrap();
    rec.status = RunStatus::Running;
    let err = lua_swarm::store::wait(store.create_run(&rec, &lua_swarm::store::Owner::new()))
        .unwrap_err();
    assert_eq!(err.code(), "store_exists", "{err}");
    // The store goes on writing.
    let before = lua_swarm::store::wait(store.questions("b")).unwrap();
    assert!(!before.is_empty());
    lua_swarm::store::wait(store.request_cancel("b")).unwrap();
}
