//! Events and questions: per-run cursors gapless under concurrent
//! writers and followers, paging, filtering and the tail, and a question
//! answered once however many answer it at once.

use super::{Ctx, Db, Outcome, ensure, event, joined, question, record};
use crate::store::{Owner, Store, StoreError};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const RUNS: usize = 4;
const WRITERS: usize = 16;
const BATCHES: usize = 30;

/// Events writer `w` appends: batches of one to three, each event naming
/// its writer and its number in the writer's order.
fn batches(w: usize) -> impl Iterator<Item = Vec<Value>> {
    let mut n = 0;
    (0..BATCHES).map(move |b| {
        (0..1 + (b + w) % 3)
            .map(|_| {
                n += 1;
                json!({"w": w, "n": n})
            })
            .collect()
    })
}

/// Reads `run`'s events from cursor 0 a few at a time while they are
/// written, until `total` are seen: every page must continue exactly
/// where the cursor stands, and each writer's events come in its order.
async fn follow(s: Arc<dyn Store>, run: String, total: usize) -> Outcome {
    let (mut cursor, mut last) = (0i64, HashMap::<u64, u64>::new());
    while (cursor as usize) < total {
        let page = s.events(&run, cursor, 7).await.ctx("events")?;
        if page.is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        for e in page {
            ensure!(
                e.id == cursor + 1,
                "run {run}: after cursor {cursor} came event {}",
                e.id
            );
            cursor = e.id;
            let (w, n) = (e.payload["w"].as_u64(), e.payload["n"].as_u64());
            let (Some(w), Some(n)) = (w, n) else {
                return Err(format!("run {run}: event {} reads {}", e.id, e.payload));
            };
            let had = last.insert(w, n).unwrap_or(0);
            ensure!(
                n == had + 1,
                "run {run}: writer {w}'s event {n} came after its event {had}"
            );
        }
    }
    Ok(())
}

/// Many writers append events to several runs at once, through two
/// handles, some as the runs' owner and some as no owner, while a
/// follower per run reads from a cursor: each run's ids are 1..n without
/// gap, every follower sees every event once, in each writer's order.
pub(super) async fn event_cursors_are_gapless_under_concurrent_writers(db: Db) -> Outcome {
    let handles = [db.open(), db.open()];
    let a = Owner::new();
    for r in 0..RUNS {
        let run = format!("ev-{r}");
        handles[0]
            .create_run(&record(&run, 1), &a)
            .await
            .ctx("create_run")?;
    }
    let per_run = |r: usize| -> usize {
        (0..WRITERS)
            .filter(|w| w % RUNS == r)
            .map(|w| batches(w).map(|b| b.len()).sum::<usize>())
            .sum()
    };
    let followers: Vec<_> = (0..RUNS)
        .map(|r| tokio::spawn(follow(db.open(), format!("ev-{r}"), per_run(r))))
        .collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (h, run) = (handles[w % 2].clone(), format!("ev-{}", w % RUNS));
            // Half as the run's owner (epoch 1), half as no owner.
            let epoch = (w / RUNS % 2) as u64;
            tokio::spawn(async move {
                for batch in batches(w) {
                    let kind = if batch.len() == 2 { "two" } else { "other" };
                    let rows = batch.iter().map(|p| event(&run, kind, p, epoch)).collect();
                    h.append_events(rows).await?;
                    tokio::task::yield_now().await;
                }
                Ok::<(), StoreError>(())
            })
        })
        .collect();
    for w in joined(writers).await? {
        w.ctx("append_events")?;
    }
    for f in joined(followers).await? {
        f?;
    }
    for r in 0..RUNS {
        let run = format!("ev-{r}");
        let all = handles[1].events(&run, 0, usize::MAX).await.ctx("events")?;
        let ids: Vec<i64> = all.iter().map(|e| e.id).collect();
        let n = per_run(r);
        let want: Vec<i64> = (1..=n as i64).collect();
        ensure!(
            ids == want,
            "run {run} holds event ids {ids:?}, not 1..={n}"
        );
    }
    Ok(())
}

/// Events page by cursor and limit, filter by kind (oldest first), and
/// the tail says how many there are and where the last `n` begin; a
/// later batch continues the ids; payloads read back as written.
pub(super) async fn events_page_filter_and_tail(db: Db) -> Outcome {
    let (s, peer) = (db.open(), db.open());
    let f = s
        .create_run(&record("e", 1), &Owner::new())
        .await
        .ctx("create_run")?;
    let payload = |i: usize| json!({"i": i, "text": "ünïcode ✓", "list": [1, 2.5, null]});
    let rows = (1..=10)
        .map(|i| {
            event(
                "e",
                if i % 2 == 0 { "b" } else { "a" },
                &payload(i),
                f.epoch,
            )
        })
        .collect();
    s.append_events(rows).await.ctx("append_events")?;
    let ids = |page: &[crate::store::EventRecord]| page.iter().map(|e| e.id).collect::<Vec<_>>();
    let page = peer.events("e", 0, 3).await.ctx("events")?;
    ensure!(
        ids(&page) == [1, 2, 3],
        "the first page of 3 is {:?}",
        ids(&page)
    );
    ensure!(
        page[0].payload == payload(1) && page[0].kind == "a" && page[0].run == "e",
        "event 1 reads {:?}",
        page[0]
    );
    let page = peer.events("e", 8, 10).await.ctx("events")?;
    ensure!(ids(&page) == [9, 10], "events after 8 are {:?}", ids(&page));
    let page = peer.events("e", 10, 5).await.ctx("events")?;
    ensure!(
        page.is_empty(),
        "events after the last are {:?}",
        ids(&page)
    );
    let b = peer
        .events_of_kind("e", "b", 3)
        .await
        .ctx("events_of_kind")?;
    ensure!(
        ids(&b) == [2, 4, 6] && b.iter().all(|e| e.kind == "b"),
        "the first 3 events of kind b are {b:?}"
    );
    let tail = peer.event_tail("e", 4).await.ctx("event_tail")?;
    ensure!(tail == (10, 6), "event_tail(4) is {tail:?}, not (10, 6)");
    let tail = peer.event_tail("e", 20).await.ctx("event_tail")?;
    ensure!(tail == (10, 0), "event_tail(20) is {tail:?}, not (10, 0)");
    s.append_events(vec![event("e", "a", &payload(11), f.epoch)])
        .await
        .ctx("append_events")?;
    let page = peer.events("e", 10, 5).await.ctx("events")?;
    ensure!(
        ids(&page) == [11],
        "a later batch continues at {:?}",
        ids(&page)
    );
    let none = peer.events("e-nope", 0, 5).await.ctx("events")?;
    let tail = peer.event_tail("e-nope", 5).await.ctx("event_tail")?;
    ensure!(
        none.is_empty() && tail == (0, 0),
        "no run has events {none:?} and tail {tail:?}"
    );
    Ok(())
}

/// A question asked twice at one position is one question; answers go
/// to the first open question of that name (or at that position); of
/// many concurrent answers to one question exactly one lands.
pub(super) async fn questions_are_answered_once(db: Db) -> Outcome {
    let (s, peer) = (db.open(), db.open());
    let f = s
        .create_run(&record("r", 1), &Owner::new())
        .await
        .ctx("create_run")?;
    for (pos, name) in [
        ("1", "approve"),
        ("1", "approve"),
        ("2", "approve"),
        ("3", "other"),
    ] {
        s.ask(question("r", pos, name), Some(&f)).await.ctx("ask")?;
    }
    let asked = peer.questions("r").await.ctx("questions")?;
    let positions: Vec<&str> = asked.iter().map(|q| q.pos.as_str()).collect();
    ensure!(
        positions == ["1", "2", "3"] && asked.iter().all(|q| q.answer.is_none()),
        "three questions asked (one twice) read {asked:?}"
    );
    ensure!(
        asked[0].question == question("r", "1", "approve").question,
        "a question reads back as {:?}",
        asked[0].question
    );
    // Eight answers at once to two open questions named `approve`.
    let answers: Vec<_> = (0..8)
        .map(|i| {
            let h = db.open();
            tokio::spawn(async move { (i, h.answer("r", "approve", json!(i)).await) })
        })
        .collect();
    let mut landed = Vec::new();
    for (i, r) in joined(answers).await? {
        if r.ctx("answer")? {
            landed.push(json!(i));
        }
    }
    ensure!(
        landed.len() == 2,
        "of 8 answers to 2 open questions, {} landed",
        landed.len()
    );
    let asked = s.questions("r").await.ctx("questions")?;
    let (first, second) = (asked[0].answer.clone(), asked[1].answer.clone());
    ensure!(
        first.is_some_and(|a| landed.contains(&a)) && second.is_some_and(|a| landed.contains(&a)),
        "the two questions hold answers {:?} and {:?}, not the two that landed ({landed:?})",
        asked[0].answer,
        asked[1].answer
    );
    ensure!(
        !s.answer("r", "approve", json!("late"))
            .await
            .ctx("answer")?,
        "an answer landed with no open question of its name"
    );
    ensure!(
        peer.answer("r", "3", json!("by position"))
            .await
            .ctx("answer")?,
        "a question cannot be answered by its position"
    );
    ensure!(
        !s.answer("r", "3", json!("again")).await.ctx("answer")?,
        "a question was answered twice"
    );
    ensure!(
        !s.answer("r-nope", "approve", json!(1))
            .await
            .ctx("answer")?,
        "a question of no run was answered"
    );
    // Two answers at once to one question: exactly one lands.
    for round in 0..8 {
        let pos = format!("once-{round}");
        s.ask(question("r", &pos, &pos), Some(&f))
            .await
            .ctx("ask")?;
        let pair: Vec<_> = [db.open(), db.open()]
            .into_iter()
            .enumerate()
            .map(|(i, h)| {
                let pos = pos.clone();
                tokio::spawn(async move { (i, h.answer("r", &pos, json!(i)).await) })
            })
            .collect();
        let mut won = Vec::new();
        for (i, r) in joined(pair).await? {
            if r.ctx("answer")? {
                won.push(i);
            }
        }
        ensure!(
            won.len() == 1,
            "two answers at once to {pos}: {} landed",
            won.len()
        );
        let q = s.questions("r").await.ctx("questions")?;
        let held = q
            .iter()
            .find(|q| q.pos == pos)
            .and_then(|q| q.answer.clone());
        ensure!(
            held == Some(json!(won[0])),
            "{pos} holds {held:?}, not the answer that landed ({})",
            won[0]
        );
    }
    Ok(())
}
