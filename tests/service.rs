//! The run service decides who may do what to which run: two real runs in
//! a real journal (started by the `swarm` binary, stopped waiting for an
//! answer), then each role and a run-bound caller try every action.

use lua_swarm::auth::Role;
use lua_swarm::run::RunError;
use lua_swarm::run::service::{self, Answered, Authority, Cancelled};
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
    }
}

fn code<T>(r: Result<T, RunError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) => e.code(),
    }
}

#[test]
fn roles_and_bound_callers_reach_only_what_they_may() {
    let store = journal("roles");
    let rec = |id: &str| service::record(&Authority::local(), &store, id).unwrap();
    let ids = |w: &Authority| -> Vec<String> {
        let runs = service::list(w, &store, None).unwrap();
        runs.into_iter().map(|r| r.id).collect()
    };

    // An observer reads everything and changes nothing.
    let observer = who(Role::Observer, None);
    assert_eq!(ids(&observer), ["a", "b"]);
    assert_eq!(code(service::show(&observer, &store, "b")), "ok");
    assert_eq!(
        code(service::cancel(&observer, &store, &rec("a"))),
        "forbidden"
    );
    let answer = |w: &Authority, id: &str| service::answer(w, &store, &rec(id), "ok?", json!(true));
    assert_eq!(code(answer(&observer, "a")), "forbidden");
    let e = service::cancel(&observer, &store, &rec("a")).unwrap_err();
    assert_eq!(e.to_string(), "role `observer` may not cancel runs");

    // A worker touches runs only through its tasks.
    assert_eq!(
        code(service::list(&who(Role::Worker, None), &store, None)),
        "forbidden"
    );

    // A senior bound to run a: sees and answers a, nothing of b.
    let senior_a = who(Role::Senior, Some("a"));
    assert_eq!(ids(&senior_a), ["a"]);
    assert_eq!(code(service::show(&senior_a, &store, "b")), "unknown_run");
    assert_eq!(code(service::record(&senior_a, &store, "b")), "unknown_run");
    assert_eq!(code(answer(&senior_a, "b")), "unknown_run");
    assert_eq!(
        code(service::cancel(&senior_a, &store, &rec("a"))),
        "forbidden"
    );
    assert_eq!(answer(&senior_a, "a").unwrap(), Answered::NeedsResume);
    let shown = service::show(&senior_a, &store, "a").unwrap();
    assert_eq!(shown.questions[0].answer, Some(json!(true)));
    // b's question is still open: a's answer did not reach it.
    let b = service::show(&Authority::local(), &store, "b").unwrap();
    assert_eq!(b.questions[0].answer, None);

    // An operator bound to a cancels a, cannot reach b.
    let operator_a = who(Role::Operator, Some("a"));
    assert_eq!(
        code(service::cancel(&operator_a, &store, &rec("b"))),
        "unknown_run"
    );
    assert_eq!(
        service::cancel(&operator_a, &store, &rec("a")).unwrap(),
        Cancelled::Now
    );
    assert_eq!(rec("a").status, RunStatus::Cancelled);
    assert_eq!(rec("b").status, RunStatus::Waiting);
    // Finished runs are refused, whoever asks.
    assert_eq!(
        code(service::cancel(&Authority::local(), &store, &rec("a"))),
        "refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_and_start_check_the_callers_authority_first() {
    let store = journal("resume");
    let engine = lua_swarm::engine::Engine::new(
        lua_swarm::engine::EngineConfig::default(),
        lua_swarm::auth::Signer::random(),
    );
    let opts = || lua_swarm::run::RunOptions {
        store: Some(store.clone()),
        ..Default::default()
    };
    let rec = service::record(&Authority::local(), &store, "a").unwrap();
    for w in [who(Role::Senior, None), who(Role::Observer, Some("a"))] {
        let r = service::resume(&w, &engine, &rec, false, opts()).await;
        assert_eq!(code(r), "forbidden", "{w:?}");
    }
    let r = service::resume(
        &who(Role::Operator, Some("b")),
        &engine,
        &rec,
        false,
        opts(),
    )
    .await;
    assert_eq!(code(r), "unknown_run");
    // Nothing was claimed: the run is still waiting, free to resume.
    let now = service::record(&Authority::local(), &store, "a").unwrap();
    assert_eq!((now.status, now.owner), (RunStatus::Waiting, None));
    let path = Path::new(&rec.path);
    let s = service::start(&who(Role::Senior, None), &engine, path, json!(null), opts()).await;
    assert_eq!(code(s), "forbidden");
}

#[test]
fn a_run_id_taken_is_a_typed_conflict_not_a_write_failure() {
    let store = journal("taken");
    let mut rec = service::record(&Authority::local(), &store, "a").unwrap();
    rec.status = RunStatus::Running;
    let err = lua_swarm::store::wait(store.create_run(&rec, &lua_swarm::store::Owner::new()))
        .unwrap_err();
    assert_eq!(err.code(), "store_exists", "{err}");
    // The store goes on writing.
    let before = lua_swarm::store::wait(store.questions("b")).unwrap();
    assert!(!before.is_empty());
    lua_swarm::store::wait(store.request_cancel("b")).unwrap();
}
