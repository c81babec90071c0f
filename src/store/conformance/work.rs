//! The remote-step work queue (`store/work.rs`) as several servers on
//! one store see it: claims raced through different handles, results
//! posted through one and read through another.

use super::{Ctx, Db, Outcome, ensure, joined};
use crate::engine::TaskId;
use crate::store::work::{ClaimError, Posted, WorkClaim, WorkItem, WorkState};
use crate::store::{Store, StoreError};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

const QUEUE: &str = "conformance";
const STEPS: u64 = 120;

fn item(task: u64) -> WorkItem {
    WorkItem {
        queue: QUEUE.into(),
        run: None,
        task: TaskId(task),
        attempt: 1,
        agent: "gpu".into(),
        input: json!({ "n": task }),
        profile: json!({}),
    }
}

/// Claims everything on the queue through `h`, until it is empty.
async fn drain(h: Arc<dyn Store>) -> Result<Vec<WorkClaim>, StoreError> {
    let Some(q) = h.work() else {
        return Ok(Vec::new());
    };
    let mut got = Vec::new();
    while let Some(c) = q.claim(QUEUE, None, Duration::from_secs(600)).await? {
        got.push(c);
        tokio::task::yield_now().await;
    }
    Ok(got)
}

/// Steps offered through one handle and claimed by eight workers through
/// four handles at once: each step goes to exactly one claim, with the
/// step as offered; a result posted through another handle settles it
/// for every handle, and a second result on the claim is refused.
pub(super) async fn work_claims_are_never_handed_to_two_workers(db: Db) -> Outcome {
    let handles: Vec<Arc<dyn Store>> = (0..4).map(|_| db.open()).collect();
    ensure!(
        handles.iter().all(|h| h.work().is_some()),
        "the store has no work queue: its runs' remote steps could not be shared"
    );
    let q = |i: usize| handles[i % handles.len()].work().expect("checked");
    let mut offered = HashMap::new();
    for t in 0..STEPS {
        let id = q(0).offer(item(t), None).await.ctx("offer")?;
        ensure!(
            offered.insert(id, t).is_none(),
            "two offers were given id {id}"
        );
    }
    let workers: Vec<_> = (0..8)
        .map(|w| tokio::spawn(drain(handles[w % handles.len()].clone())))
        .collect();
    let (mut seen, mut claims) = (HashSet::new(), HashSet::new());
    let mut all = Vec::new();
    for got in joined(workers).await? {
        for c in got.ctx("claim")? {
            ensure!(seen.insert(c.id), "step {} was handed to two workers", c.id);
            ensure!(
                claims.insert(c.claim.clone()),
                "claim id {} given twice",
                c.claim
            );
            ensure!(
                offered.get(&c.id) == Some(&c.item.task.0) && c.item == item(c.item.task.0),
                "claim of step {} carries {:?}, not the step offered",
                c.id,
                c.item
            );
            all.push(c);
        }
    }
    ensure!(
        seen.len() == offered.len(),
        "{} of {} offered steps were claimed",
        seen.len(),
        offered.len()
    );
    for (i, c) in all.iter().enumerate() {
        let posted = Posted {
            ok: true,
            value: json!(c.item.task.0),
        };
        let r = q(i + 1).post(&c.claim, c.item.task, posted.clone()).await;
        ensure!(
            matches!(r, Ok(Ok(()))),
            "posting step {}'s result through another handle gave {r:?}",
            c.id
        );
        let state = q(i + 2).state(c.id).await.ctx("state")?;
        ensure!(
            state == WorkState::Done(posted.clone()),
            "step {} reads {state:?} through a third handle once settled",
            c.id
        );
        let again = q(i).post(&c.claim, c.item.task, posted).await.ctx("post")?;
        ensure!(
            matches!(again, Err(ClaimError::Done(_))),
            "a second result on claim {} gave {again:?}",
            c.claim
        );
    }
    let waiting = q(3).waiting().await.ctx("waiting")?;
    ensure!(
        waiting.iter().all(|(queue, n)| queue != QUEUE || *n == 0),
        "steps still wait after every one was claimed: {waiting:?}"
    );
    Ok(())
}
