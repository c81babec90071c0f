//! Engine verbs, token rejections, cancellation, senior answers and the event
//! ledger, exercised through the public API.

use lua_swarm::auth::{AuthError, Role, RoleVerbGate, Signer, Verb};
use lua_swarm::engine::{
    AttachOptions, Caller, Engine, EngineConfig, EngineError, EventKind, OutputKind, TaskSpec,
    TaskStatus,
};
use lua_swarm::engine::{Outcome, SpawnCtx, Spawner};
use lua_swarm::spawn::{LayerEnv, LayerRegistry, RustAgent, build_stack};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

fn engine() -> Engine {
    Engine::new(EngineConfig::default(), Signer::random())
}

fn attach(e: &Engine, role: Role) -> lua_swarm::auth::CapToken {
    e.attach(Caller::Host, AttachOptions::new(role.as_str(), role))
        .unwrap()
}

fn echo() -> RustAgent {
    RustAgent::new(|ctx: SpawnCtx| async move { Ok(json!({ "echo": *ctx.input })) })
}

fn auth_err(r: Result<impl std::fmt::Debug, EngineError>) -> AuthError {
    match r {
        Err(EngineError::Auth(a)) => a,
        other => panic!("expected an auth error, got {other:?}"),
    }
}

#[tokio::test]
async fn start_dispatch_read_happy_path() {
    let e = engine();
    let op = attach(&e, Role::Operator);
    let id = e.start_task(&op, TaskSpec::new("echo", json!(7))).unwrap();
    assert_eq!(e.read_task(&op, id).unwrap().status, TaskStatus::Pending);
    let view = e.dispatch_attempt(&op, id, &echo()).await.unwrap();
    assert_eq!(view.status, TaskStatus::Pass);
    assert_eq!(view.attempt, 1);
    assert_eq!(*view.result.unwrap(), json!({"echo": 7}));
    let polled = e.poll_task(&op, id, Duration::from_secs(1)).await.unwrap();
    assert_eq!(polled.status, TaskStatus::Pass);
    // A settled pass cannot be dispatched again.
    let again = e.dispatch_attempt(&op, id, &echo()).await;
    assert!(matches!(again, Err(EngineError::InvalidState { .. })));
}

#[tokio::test]
async fn blocked_task_can_be_dispatched_again_as_a_new_attempt() {
    let e = engine();
    let op = attach(&e, Role::Operator);
    let flaky = RustAgent::new(|ctx: SpawnCtx| async move {
        if ctx.attempt < 2 {
            Err(json!("not yet"))
        } else {
            Ok(json!("done"))
        }
    });
    let id = e
        .start_task(&op, TaskSpec::new("flaky", json!(null)))
        .unwrap();
    let v1 = e.dispatch_attempt(&op, id, &flaky).await.unwrap();
    assert_eq!((v1.status, v1.attempt), (TaskStatus::Blocked, 1));
    let v2 = e.dispatch_attempt(&op, id, &flaky).await.unwrap();
    assert_eq!((v2.status, v2.attempt), (TaskStatus::Pass, 2));
}

#[tokio::test]
async fn worker_verbs_prompt_emit_and_post_result() {
    let e = engine();
    let op = attach(&e, Role::Operator);
    let worker = RustAgent::new(|ctx: SpawnCtx| async move {
        let p = ctx.engine.fetch_prompt(&ctx.token).unwrap();
        assert_eq!(*p.input, json!("hi"));
        ctx.engine
            .emit(&ctx.token, OutputKind::Progress, json!(50))
            .unwrap();
        ctx.engine
            .post_result(&ctx.token, json!("posted"), true)
            .unwrap();
        Ok(json!("returned"))
    });
    let id = e.start_task(&op, TaskSpec::new("w", json!("hi"))).unwrap();
    let v = e.dispatch_attempt(&op, id, &worker).await.unwrap();
    assert_eq!(*v.result.unwrap(), json!("returned"));

    // A worker that only posts: the posted value decides.
    struct PostOnly;
    impl Spawner for PostOnly {
        fn spawn(&self, ctx: SpawnCtx) -> lua_swarm::engine::Worker {
            Box::pin(async move {
                ctx.engine
                    .post_result(&ctx.token, json!("late"), false)
                    .unwrap();
                Ok(Outcome::Exited)
            })
        }
    }
    let id2 = e.start_task(&op, TaskSpec::new("p", json!(null))).unwrap();
    let v2 = e.dispatch_attempt(&op, id2, &PostOnly).await.unwrap();
    assert_eq!(v2.status, TaskStatus::Blocked);
    assert_eq!(*v2.result.unwrap(), json!("late"));

    let mut sub = e.subscribe(&op, 0).unwrap();
    let mut saw_progress = false;
    while let Some(ev) = sub.try_next().unwrap() {
        if let EventKind::WorkerOutput { output, data } = &ev.kind {
            saw_progress |= *output == OutputKind::Progress && **data == json!(50);
        }
    }
    assert!(saw_progress);
}

#[tokio::test]
async fn worker_token_is_revoked_when_the_attempt_settles() {
    let e = engine();
    let op = attach(&e, Role::Operator);
    let (tx, rx) = std::sync::mpsc::channel();
    let keep = RustAgent::new(move |ctx: SpawnCtx| {
        tx.send(ctx.token.clone()).unwrap();
        async { Ok(json!(1)) }
    });
    let id = e.start_task(&op, TaskSpec::new("k", json!(null))).unwrap();
    e.dispatch_attempt(&op, id, &keep).await.unwrap();
    let stale = rx.recv().unwrap();
    assert_eq!(auth_err(e.fetch_prompt(&stale)), AuthError::Revoked);
}

#[tokio::test]
async fn token_rejections_each_have_their_own_error() {
    let e = engine();
    let op = attach(&e, Role::Operator);

    // Bad signature: signed by another secret.
    let other = Engine::new(EngineConfig::default(), Signer::random());
    let foreign = attach(&other, Role::Operator);
    assert_eq!(auth_err(e.heartbeat(&foreign)), AuthError::BadSignature);

    // One tampered field: an observer promoting itself.
    let mut forged = attach(&e, Role::Observer);
    forged.claims.role = Role::Operator;
    assert_eq!(
        auth_err(e.start_task(&forged, TaskSpec::new("x", json!(0)))),
        AuthError::BadSignature
    );
    let mut longer = op.clone();
    longer.claims.expires_at_ms += 1;
    assert_eq!(auth_err(e.heartbeat(&longer)), AuthError::BadSignature);

    // Expired.
    let mut opts = AttachOptions::new("short", Role::Operator);
    opts.ttl = Duration::ZERO;
    let expired = e.attach(Caller::Host, opts).unwrap();
    assert!(matches!(
        auth_err(e.heartbeat(&expired)),
        AuthError::Expired { .. }
    ));

    // Exhausted.
    let mut opts = AttachOptions::new("two-uses", Role::Operator);
    opts.max_uses = Some(2);
    let two = e.attach(Caller::Host, opts).unwrap();
    e.heartbeat(&two).unwrap();
    e.heartbeat(&two).unwrap();
    assert_eq!(auth_err(e.heartbeat(&two)), AuthError::Exhausted);

    // Revoked.
    let gone = attach(&e, Role::Operator);
    e.detach(&gone).unwrap();
    assert_eq!(auth_err(e.heartbeat(&gone)), AuthError::Revoked);

    // Wrong role.
    let obs = attach(&e, Role::Observer);
    assert_eq!(
        auth_err(e.start_task(&obs, TaskSpec::new("x", json!(0)))),
        AuthError::Forbidden {
            role: Role::Observer,
            verb: Verb::StartTask
        }
    );
    let senior = attach(&e, Role::Senior);
    assert!(matches!(
        auth_err(e.cancel_task(&senior, lua_swarm::engine::TaskId(1))),
        AuthError::Forbidden { .. }
    ));
}

#[tokio::test]
async fn worker_may_touch_only_its_own_task_and_children() {
    let e = engine();
    let op = attach(&e, Role::Operator);
    let other = e.start_task(&op, TaskSpec::new("other", json!(0))).unwrap();
    let nosy = RustAgent::new(move |ctx: SpawnCtx| async move {
        let own = ctx.engine.read_task(&ctx.token, ctx.task).map(|v| v.id);
        let theirs = ctx.engine.read_task(&ctx.token, other).map(|v| v.id);
        let child = ctx
            .engine
            .start_task(&ctx.token, TaskSpec::new("echo", json!(1)));
        let child_read = child
            .clone()
            .and_then(|c| ctx.engine.read_task(&ctx.token, c).map(|v| v.parent));
        Ok(json!({
            "own": own.is_ok(),
            "theirs": theirs.err().map(|e| e.code()),
            "child_parent": child_read.ok().flatten().map(|p| p.0),
        }))
    });
    let id = e.start_task(&op, TaskSpec::new("nosy", json!(0))).unwrap();
    let v = e.dispatch_attempt(&op, id, &nosy).await.unwrap();
    let r = v.result.unwrap();
    assert_eq!(r["own"], json!(true));
    assert_eq!(r["theirs"], json!("not_owner"));
    assert_eq!(r["child_parent"], json!(id.0));
}

#[tokio::test]
async fn spawn_depth_is_limited() {
    let cfg = EngineConfig {
        max_depth: 1,
        ..EngineConfig::default()
    };
    let e = Engine::new(cfg, Signer::random());
    let op = attach(&e, Role::Operator);
    let root = e.start_task(&op, TaskSpec::new("r", json!(0))).unwrap();
    let mut child = TaskSpec::new("c", json!(0));
    child.parent = Some(root);
    let c = e.start_task(&op, child).unwrap();
    let mut grandchild = TaskSpec::new("g", json!(0));
    grandchild.parent = Some(c);
    assert_eq!(
        auth_err(e.start_task(&op, grandchild)),
        AuthError::DepthExceeded { depth: 2, limit: 1 }
    );
}

#[tokio::test]
async fn cancel_wakes_pollers_and_stops_the_worker() {
    let e = engine();
    let op = attach(&e, Role::Operator);
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let stopped_tx = Arc::new(std::sync::Mutex::new(Some(stopped_tx)));
    let slow = RustAgent::new(move |ctx: SpawnCtx| {
        let tx = stopped_tx.clone();
        async move {
            ctx.cancel.cancelled().await;
            if let Some(tx) = tx.lock().unwrap().take() {
                let _ = tx.send(());
            }
            Err(json!("cancelled"))
        }
    });
    let id = e.start_task(&op, TaskSpec::new("slow", json!(0))).unwrap();
    let (e2, op2) = (e.clone(), op.clone());
    let dispatch = tokio::spawn(async move { e2.dispatch_attempt(&op2, id, &slow).await });
    let (e3, op3) = (e.clone(), op.clone());
    let poll = tokio::spawn(async move { e3.poll_task(&op3, id, Duration::from_secs(30)).await });
    // Cancel only once the worker is running (bounded by the timeouts below).
    while e.read_task(&op, id).unwrap().status != TaskStatus::Running {
        tokio::task::yield_now().await;
    }
    e.cancel_task(&op, id).unwrap();
    let polled = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(polled.status, TaskStatus::Cancelled);
    let settled = dispatch.await.unwrap().unwrap();
    assert_eq!(settled.status, TaskStatus::Cancelled);
    // The worker saw its cancellation token fire.
    tokio::time::timeout(Duration::from_secs(5), stopped_rx)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn poll_returns_after_hold_when_nothing_happens() {
    let e = engine();
    let op = attach(&e, Role::Operator);
    let id = e.start_task(&op, TaskSpec::new("idle", json!(0))).unwrap();
    let v = e
        .poll_task(&op, id, Duration::from_millis(30))
        .await
        .unwrap();
    assert_eq!(v.status, TaskStatus::Pending);
}

#[tokio::test]
async fn senior_answer_before_and_after_await() {
    let e = engine();
    let op = attach(&e, Role::Operator);
    let senior = attach(&e, Role::Senior);
    let id = e.start_task(&op, TaskSpec::new("ask", json!(0))).unwrap();

    // Awaiting first, answered later.
    let key = e.query_senior(&op, id, json!("ship it?")).unwrap();
    assert_eq!(e.read_task(&op, id).unwrap().status, TaskStatus::Suspended);
    let (e2, op2, k2) = (e.clone(), op.clone(), key.clone());
    let waiter =
        tokio::spawn(async move { e2.await_resume(&op2, &k2, Duration::from_secs(30)).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    e.resume(&senior, &key, json!("yes")).unwrap();
    let answer = waiter.await.unwrap().unwrap();
    assert_eq!(*answer, json!("yes"));
    assert_eq!(e.read_task(&op, id).unwrap().status, TaskStatus::Pending);

    // Answered first; the asker detached and comes back with a new session.
    let key2 = e.query_senior(&op, id, json!("again?")).unwrap();
    e.resume(&senior, &key2, json!("no")).unwrap();
    e.detach(&op).unwrap();
    let back = attach(&e, Role::Operator);
    let a2 = e.await_resume(&back, &key2, Duration::ZERO).await.unwrap();
    assert_eq!(*a2, json!("no"));

    assert!(matches!(
        e.resume(&senior, &key2, json!("x")),
        Err(EngineError::AlreadyAnswered(_))
    ));
    assert!(matches!(
        e.resume(&senior, "nope", json!("x")),
        Err(EngineError::UnknownResumeKey(_))
    ));
    // Operators may not answer.
    let key3 = e.query_senior(&back, id, json!("?")).unwrap();
    assert!(matches!(
        auth_err(e.resume(&back, &key3, json!(1))),
        AuthError::Forbidden { .. }
    ));
    // await_resume times out with a typed error.
    let t = e
        .await_resume(&back, &key3, Duration::from_millis(10))
        .await;
    assert!(matches!(t, Err(EngineError::Timeout { .. })));
}

#[tokio::test]
async fn subscriber_catches_up_then_follows_live_without_gaps() {
    let e = engine();
    let op = attach(&e, Role::Operator);
    for i in 0..10_000 {
        e.start_task(&op, TaskSpec::new("n", json!(i))).unwrap();
    }
    let obs = attach(&e, Role::Observer);
    let mut sub = e.subscribe(&obs, 0).unwrap();
    let mut last = 0;
    let mut created = 0;
    while let Some(ev) = sub.try_next().unwrap() {
        assert_eq!(ev.cursor, last + 1, "cursors are gap-free");
        last = ev.cursor;
        created += matches!(ev.kind, EventKind::TaskCreated { .. }) as usize;
    }
    assert_eq!(created, 10_000);
    let (e2, op2) = (e.clone(), op.clone());
    tokio::spawn(async move {
        for i in 0..100 {
            e2.start_task(&op2, TaskSpec::new("live", json!(i)))
                .unwrap();
            tokio::task::yield_now().await;
        }
    });
    for _ in 0..100 {
        let ev = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ev.cursor, last + 1);
        last = ev.cursor;
    }
}

#[tokio::test]
async fn a_subscriber_behind_the_retention_bound_gets_an_explicit_error() {
    let cfg = EngineConfig {
        ledger_retention: 10,
        ..EngineConfig::default()
    };
    let e = Engine::new(cfg, Signer::random());
    let op = attach(&e, Role::Operator);
    for i in 0..50 {
        e.start_task(&op, TaskSpec::new("n", json!(i))).unwrap();
    }
    let mut sub = e.subscribe(&op, 0).unwrap();
    assert!(matches!(
        sub.try_next(),
        Err(EngineError::EventsEvicted { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_start_and_dispatch_all_succeed() {
    let e = engine();
    let op = attach(&e, Role::Operator);
    let agent: Arc<dyn Spawner> = Arc::new(echo());
    let handles: Vec<_> = (0..10_000)
        .map(|i| {
            let (e, op, agent) = (e.clone(), op.clone(), agent.clone());
            tokio::spawn(async move {
                let id = e.start_task(&op, TaskSpec::new("echo", json!(i)))?;
                e.dispatch_attempt(&op, id, agent.as_ref()).await
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.await.unwrap().unwrap().status, TaskStatus::Pass);
    }
}

#[tokio::test]
async fn settled_tasks_are_evicted_past_retention() {
    let cfg = EngineConfig {
        task_retention: 100,
        ..EngineConfig::default()
    };
    let e = Engine::new(cfg, Signer::random());
    let op = attach(&e, Role::Operator);
    for i in 0..1_000 {
        let id = e.start_task(&op, TaskSpec::new("echo", json!(i))).unwrap();
        e.dispatch_attempt(&op, id, &echo()).await.unwrap();
    }
    assert!(e.tasks_in_memory() <= 101);
}

#[tokio::test]
async fn silent_sessions_are_detached_by_the_sweep() {
    let cfg = EngineConfig {
        heartbeat_timeout: Duration::from_millis(40),
        sweep_every: Duration::from_millis(10),
        ..EngineConfig::default()
    };
    let e = Engine::new(cfg, Signer::random());
    let op = attach(&e, Role::Operator);
    let id = e.start_task(&op, TaskSpec::new("stays", json!(0))).unwrap();
    // Silent from here on (reads are not heartbeats); wait, bounded by a
    // hang guard, for a sweep to notice.
    let t0 = std::time::Instant::now();
    while e.read_task(&op, id).is_ok() && t0.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(auth_err(e.heartbeat(&op)), AuthError::Revoked);
    let back = attach(&e, Role::Operator);
    assert_eq!(e.read_task(&back, id).unwrap().status, TaskStatus::Pending);
}

#[test]
fn gate_narrows_but_never_widens() {
    let g = RoleVerbGate::default();
    assert!(g.allows(Role::Operator, Verb::StartTask));
    assert!(!g.allows(Role::Observer, Verb::StartTask));
    assert!(g.allows(Role::Worker, Verb::PostResult));
    assert!(g.allows(Role::Senior, Verb::Resume));
    let narrow = g
        .narrow(Role::Operator, &[Verb::ReadTask, Verb::PollTask])
        .unwrap();
    assert!(!narrow.allows(Role::Operator, Verb::StartTask));
    assert_eq!(
        g.narrow(Role::Observer, &[Verb::StartTask]),
        Err(AuthError::Widening {
            role: Role::Observer,
            verb: Verb::StartTask
        })
    );
}

#[tokio::test]
async fn narrowed_session_gate_applies_to_its_workers_and_cannot_be_widened() {
    let e = engine();
    let gate = RoleVerbGate::default()
        .narrow(Role::Worker, &[Verb::FetchPrompt, Verb::PostResult])
        .unwrap();
    let mut opts = AttachOptions::new("narrow", Role::Operator);
    opts.gate = Some(gate);
    let op = e.attach(Caller::Host, opts).unwrap();
    let tries_emit = RustAgent::new(|ctx: SpawnCtx| async move {
        let r = ctx.engine.emit(&ctx.token, OutputKind::Progress, json!(1));
        Ok(json!(r.err().map(|e| e.code())))
    });
    let id = e.start_task(&op, TaskSpec::new("w", json!(0))).unwrap();
    let v = e.dispatch_attempt(&op, id, &tries_emit).await.unwrap();
    assert_eq!(*v.result.unwrap(), json!("forbidden"));
    // A narrowed operator cannot hand out the default (wider) table.
    let mut wide = AttachOptions::new("wide", Role::Observer);
    wide.gate = Some(RoleVerbGate::default());
    assert!(matches!(
        auth_err(e.attach(Caller::Token(&op), wide)),
        AuthError::Widening { .. }
    ));
}

#[tokio::test]
async fn layers_come_from_the_registry_and_unknown_keys_are_errors() {
    let reg = LayerRegistry::builtin();
    let e = engine();
    let op = attach(&e, Role::Operator);
    let env = LayerEnv {
        engine: e.clone(),
        token: op.clone(),
    };
    assert!(reg.build("no-such-layer", &Value::Null, &env).is_err());
    let timeout = reg.build("timeout", &json!({"ms": 20}), &env).unwrap();
    let slow: Arc<dyn Spawner> = Arc::new(RustAgent::new(|_ctx: SpawnCtx| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok(json!(1))
    }));
    let stack = build_stack(slow, &[timeout]);
    let id = e.start_task(&op, TaskSpec::new("slow", json!(0))).unwrap();
    let v = e.dispatch_attempt(&op, id, stack.as_ref()).await.unwrap();
    assert_eq!(v.status, TaskStatus::Blocked);
    assert_eq!(*v.result.unwrap(), json!({"error": "timeout"}));
}

#[tokio::test]
async fn worker_handles_resolve_until_the_attempt_settles() {
    let e = engine();
    let op = attach(&e, Role::Operator);
    let (tx, rx) = std::sync::mpsc::channel();
    let agent = RustAgent::new(move |ctx: SpawnCtx| {
        let handle = ctx.engine.worker_handle(&ctx.token).unwrap();
        assert!(handle.len() >= 32, "at least 128 bits as hex");
        let tok = ctx.engine.token_for_handle(&handle).unwrap();
        ctx.engine
            .emit(&tok, OutputKind::Artifact, json!("via handle"))
            .unwrap();
        tx.send(handle).unwrap();
        async { Ok(json!(0)) }
    });
    let id = e.start_task(&op, TaskSpec::new("h", json!(0))).unwrap();
    e.dispatch_attempt(&op, id, &agent).await.unwrap();
    let handle = rx.recv().unwrap();
    assert!(matches!(
        e.token_for_handle(&handle),
        Err(EngineError::UnknownHandle)
    ));
}

#[tokio::test]
async fn events_carry_their_run_and_a_bound_subscriber_keeps_seeing_evicted_children() {
    let cfg = EngineConfig {
        task_retention: 1,
        ..EngineConfig::default()
    };
    let e = Engine::new(cfg, Signer::random());
    let op = attach(&e, Role::Operator);
    let (a, b) = (
        e.start_task(&op, TaskSpec::new("a", json!(1))).unwrap(),
        e.start_task(&op, TaskSpec::new("b", json!(2))).unwrap(),
    );
    // Children of run a settle and are evicted (retention 1) before the
    // bound subscriber reads their events.
    for i in 0..5 {
        let mut spec = TaskSpec::new("kid", json!(i));
        spec.parent = Some(a);
        let child = e.start_task(&op, spec).unwrap();
        e.dispatch_attempt(&op, child, &echo()).await.unwrap();
    }
    let mut spec = TaskSpec::new("kid", json!("b"));
    spec.parent = Some(b);
    let other = e.start_task(&op, spec).unwrap();
    e.dispatch_attempt(&op, other, &echo()).await.unwrap();
    let mut opts = AttachOptions::new("run-a", Role::Observer);
    opts.task = Some(a);
    let bound = e.attach(Caller::Host, opts).unwrap();
    let mut sub = e.subscribe(&bound, 0).unwrap();
    let mut settled = 0;
    while let Some(ev) = sub.try_next().unwrap() {
        assert_eq!(ev.run, Some(a), "only run a's events: {ev:?}");
        settled += matches!(ev.kind, EventKind::AttemptCompleted { .. }) as usize;
    }
    assert_eq!(settled, 5, "every settled child of run a, evicted or not");
    let mut all = e.subscribe(&op, 0).unwrap();
    let created = std::iter::from_fn(|| all.try_next().unwrap())
        .find(|ev| matches!(ev.kind, EventKind::TaskCreated { .. }))
        .unwrap();
    let json = serde_json::to_value(created).unwrap();
    assert_eq!(json["run"], json!(a.0), "events name their run: {json}");
}
