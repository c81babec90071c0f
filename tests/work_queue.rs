//! The remote-step work queue's contract (`store::work::WorkQueue`), held
//! to the same checks in memory and in SQLite: many claimers racing never
//! get one step twice; a lapsed claim puts its step back and is fenced (a
//! result on it is refused); a withdrawn step's claim ends cancelled; a
//! worker bound to a run sees only its steps; results settle the step.

use lua_swarm::engine::TaskId;
use lua_swarm::store::work::{ClaimError, Posted, WorkItem, WorkQueue, WorkState};
use lua_swarm::store::{MemoryStore, SqliteStore, Store};
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

const HANG_GUARD: Duration = Duration::from_secs(60);

fn stores(name: &str) -> Vec<(&'static str, Arc<dyn Store>)> {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("queue-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    let sqlite = SqliteStore::open(&dir.join("swarm.db")).unwrap();
    vec![
        ("memory", Arc::new(MemoryStore::new()) as Arc<dyn Store>),
        ("sqlite", Arc::new(sqlite)),
    ]
}

fn item(queue: &str, run: Option<&str>, task: u64) -> WorkItem {
    WorkItem {
        queue: queue.into(),
        run: run.map(str::to_string),
        task: TaskId(task),
        attempt: 1,
        agent: "gpu".into(),
        input: json!({ "n": task }),
        profile: json!({}),
    }
}

fn q(s: &Arc<dyn Store>) -> &dyn WorkQueue {
    s.work().expect("every built-in store has a work queue")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_claimers_never_get_one_step_twice() {
    for (name, store) in stores("race") {
        let mut ids = HashSet::new();
        for t in 0..200 {
            ids.insert(q(&store).offer(item("gpu", None, t), None).await.unwrap());
        }
        let claimers: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    while let Some(c) = q(&store)
                        .claim("gpu", None, Duration::from_secs(60))
                        .await
                        .unwrap()
                    {
                        got.push((c.id, c.claim));
                    }
                    got
                })
            })
            .collect();
        let mut seen = HashSet::new();
        let mut claims = HashSet::new();
        for c in claimers {
            for (id, claim) in c.await.unwrap() {
                assert!(seen.insert(id), "{name}: step {id} claimed twice");
                assert!(claims.insert(claim), "{name}: one claim id twice");
            }
        }
        assert_eq!(seen, ids, "{name}: every step claimed once");
        assert!(q(&store).waiting().await.unwrap().is_empty(), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_claim_is_requeued_and_fenced() {
    for (name, store) in stores("lapse") {
        let id = q(&store).offer(item("gpu", None, 7), None).await.unwrap();
        let short = Duration::from_millis(50);
        let first = q(&store).claim("gpu", None, short).await.unwrap().unwrap();
        assert_eq!(first.id, id);
        assert_eq!(first.item, item("gpu", None, 7));
        // The lapse is the store's to judge: poll it under a hang guard.
        let t0 = std::time::Instant::now();
        while q(&store).state(id).await.unwrap() != (WorkState::Claimed { lapsed: true }) {
            assert!(t0.elapsed() < HANG_GUARD, "{name}: the claim never lapsed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(q(&store).lapse(id).await.unwrap(), Some(1), "{name}");
        assert_eq!(
            q(&store).lapse(id).await.unwrap(),
            None,
            "{name}: lapsed once"
        );
        assert_eq!(q(&store).state(id).await.unwrap(), WorkState::Queued);
        let stale = Posted {
            ok: true,
            value: json!("late"),
        };
        let refused = q(&store)
            .post(&first.claim, TaskId(7), stale.clone())
            .await
            .unwrap();
        assert_eq!(
            refused,
            Err(ClaimError::Expired(first.claim.clone())),
            "{name}"
        );
        let renewed = q(&store).renew(&first.claim, short).await.unwrap();
        assert!(matches!(renewed, Err(ClaimError::Expired(_))), "{name}");
        // A new claim settles it; the step's result is the new claim's.
        let second = q(&store)
            .claim("gpu", None, Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        assert_ne!(second.claim, first.claim);
        let other = q(&store)
            .post(&second.claim, TaskId(8), stale)
            .await
            .unwrap();
        assert!(matches!(other, Err(ClaimError::OtherTask { .. })), "{name}");
        let good = Posted {
            ok: true,
            value: json!(14),
        };
        q(&store)
            .post(&second.claim, TaskId(7), good.clone())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(q(&store).state(id).await.unwrap(), WorkState::Done(good));
        let again = q(&store).check(&second.claim).await.unwrap();
        assert_eq!(again, Err(ClaimError::Done(second.claim.clone())), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawn_steps_end_their_claims_and_bound_workers_see_their_run_only() {
    for (name, store) in stores("withdraw") {
        let a = q(&store)
            .offer(item("gpu", Some("run-a"), 1), None)
            .await
            .unwrap();
        let b = q(&store)
            .offer(item("gpu", Some("run-b"), 2), None)
            .await
            .unwrap();
        let lease = Duration::from_secs(60);
        let c = q(&store)
            .claim("gpu", Some("run-b"), lease)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(c.id, b, "{name}: a worker bound to run-b gets run-b's step");
        assert!(
            q(&store)
                .claim("gpu", Some("run-b"), lease)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            q(&store)
                .claim("other", None, lease)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(
            q(&store).waiting().await.unwrap(),
            vec![("gpu".to_string(), 1)]
        );
        q(&store).withdraw(b).await.unwrap();
        assert_eq!(q(&store).state(b).await.unwrap(), WorkState::Gone, "{name}");
        let ended = q(&store).check(&c.claim).await.unwrap();
        assert_eq!(ended, Err(ClaimError::Cancelled(c.claim.clone())), "{name}");
        let unknown = q(&store).check("cnope").await.unwrap();
        assert_eq!(unknown, Err(ClaimError::Unknown("cnope".into())), "{name}");
        q(&store).withdraw(a).await.unwrap();
        assert!(q(&store).waiting().await.unwrap().is_empty(), "{name}");
    }
}
