//! Who runs a run: claims raced by owners on different handles, a stale
//! owner fenced out after a takeover, and a lease that lapses on the
//! store's clock (then the sweep marks the run interrupted).

use super::{
    Ctx, Db, Outcome, Window, dead_owner, ensure, entry, event, granted, joined, neighbour_owner,
    question, record, remote_owner,
};
use crate::store::{Fence, Owner, RunStatus, Store, StoreError, clock};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Creates `id` and leaves it unowned (`interrupted` from outside).
async fn unowned(s: &dyn Store, id: &str) -> Outcome {
    s.create_run(&record(id, 1), &Owner::new())
        .await
        .ctx("create_run")?;
    s.set_status(id, RunStatus::Interrupted, None, None)
        .await
        .ctx("set_status interrupted")
}

/// Two owners on two handles claim an unowned run at once: one gets it,
/// the other is told it is owned; the run names the winner at the
/// winner's epoch. A live owner's run is refused to a third.
pub(super) async fn two_owners_race_and_exactly_one_wins(db: Db) -> Outcome {
    let s = db.open();
    let runs: Vec<String> = (0..16).map(|n| format!("race-{n}")).collect();
    for id in &runs {
        unowned(&*s, id).await?;
    }
    let window = Window::open(db.lease);
    let mut tasks = Vec::new();
    for id in &runs {
        for _ in 0..2 {
            let (h, id) = (db.open(), id.clone());
            tasks.push(tokio::spawn(async move {
                let o = Owner::new();
                let r = h.claim(&id, &o).await;
                (id, o.id, r)
            }));
        }
    }
    let results = joined(tasks).await?;
    let fits = window.fits();
    for id in &runs {
        let of_run: Vec<_> = results.iter().filter(|(r, ..)| r == id).collect();
        let won: Vec<_> = of_run.iter().filter(|(.., r)| r.is_ok()).collect();
        ensure!(!won.is_empty(), "nobody got unowned run {id}: {of_run:?}");
        if fits {
            ensure!(
                won.len() == 1,
                "both owners got run {id} within one lease: {of_run:?}"
            );
            let lost = of_run.iter().find(|(.., r)| r.is_err());
            ensure!(
                matches!(lost, Some((.., Err(StoreError::Owned(_))))),
                "the loser of run {id} was not told it is owned: {lost:?}"
            );
            let (_, winner, fence) = won[0];
            let fence = fence.as_ref().expect("won");
            let r = s.run(id).await.ctx("run")?.ok_or("the raced run is gone")?;
            ensure!(
                r.owner.as_ref() == Some(winner) && r.epoch == fence.epoch && fence.epoch == 3,
                "run {id} after the race: {r:?}; the winner's fence {fence:?}"
            );
        }
        let epochs: HashSet<u64> = won
            .iter()
            .map(|(.., r)| r.as_ref().expect("won").epoch)
            .collect();
        ensure!(
            epochs.len() == won.len(),
            "two owners got run {id} at one epoch: {won:?}"
        );
    }
    // A live owner holds its run against a third.
    let a = Owner::new();
    s.create_run(&record("held", 1), &a)
        .await
        .ctx("create_run")?;
    let window = Window::open(db.lease);
    let third = db.open().claim("held", &Owner::new()).await;
    if window.fits() {
        ensure!(
            matches!(third, Err(StoreError::Owned(_))),
            "a live owner's run was given to another: {third:?}"
        );
    }
    Ok(())
}

/// Many owners, each on its own handle, claim every run of a mix at once
/// (unowned runs, runs of dead owners, runs held by a live owner in
/// another process here or on another machine): no run is handed to two owners at one epoch; an unowned or
/// orphaned run goes to exactly one; a live owner keeps its run.
pub(super) async fn claims_are_never_handed_to_two_owners(db: Db) -> Outcome {
    let s = db.open();
    let mut kind = HashMap::new();
    for n in 0..8 {
        let id = format!("unowned-{n}");
        unowned(&*s, &id).await?;
        kind.insert(id, "unowned");
        let id = format!("dead-{n}");
        s.create_run(&record(&id, 1), &dead_owner())
            .await
            .ctx("create_run")?;
        kind.insert(id, "dead");
    }
    let window = Window::open(db.lease);
    for n in 0..8 {
        let id = format!("remote-{n}");
        s.create_run(&record(&id, 1), &remote_owner())
            .await
            .ctx("create_run")?;
        kind.insert(id, "remote");
        let id = format!("neighbour-{n}");
        s.create_run(&record(&id, 1), &neighbour_owner())
            .await
            .ctx("create_run")?;
        kind.insert(id, "neighbour");
    }
    let ids: Arc<Vec<String>> = Arc::new(kind.keys().cloned().collect());
    let tasks: Vec<_> = (0..8)
        .map(|c| {
            let (h, ids) = (db.open(), ids.clone());
            tokio::spawn(async move {
                let o = Owner::new();
                let mut out = Vec::new();
                // Each claimant its own order, so they meet everywhere.
                for i in 0..ids.len() {
                    let id = &ids[(i * 5 + c * 3) % ids.len()];
                    out.push((id.clone(), o.id.clone(), h.claim(id, &o).await));
                }
                out
            })
        })
        .collect();
    let results: Vec<_> = joined(tasks).await?.into_iter().flatten().collect();
    let fits = window.fits();
    for (id, what) in &kind {
        let of_run: Vec<_> = results
            .iter()
            .filter(|(r, ..)| r == id)
            .map(|(.., r)| r.clone())
            .collect();
        let won = granted(&of_run);
        let epochs: HashSet<u64> = won.iter().map(|f| f.epoch).collect();
        ensure!(
            epochs.len() == won.len(),
            "run {id} ({what}) was handed to two owners at one epoch: {won:?}"
        );
        for r in &of_run {
            ensure!(
                matches!(r, Ok(_) | Err(StoreError::Owned(_))),
                "a claim of run {id} failed otherwise: {r:?}"
            );
        }
        if fits {
            let want = if matches!(*what, "remote" | "neighbour") {
                0
            } else {
                1
            };
            ensure!(
                won.len() == want,
                "run {id} ({what}) was handed to {} owners within one lease, not {want}",
                won.len()
            );
        }
        if let Some(last) = won.iter().max_by_key(|f| f.epoch) {
            let r = s.run(id).await.ctx("run")?.ok_or("a claimed run is gone")?;
            ensure!(
                r.owner.as_deref() == Some(last.owner.as_str()) && r.epoch == last.epoch,
                "run {id} names {:?} at epoch {}, not its last claimant {last:?}",
                r.owner,
                r.epoch
            );
        }
    }
    Ok(())
}

/// Once a run is taken from its (dead) owner through another handle,
/// everything the old owner writes is refused through every handle:
/// renewal, status, questions; its events are not stored; the handle
/// that took the run refuses its journal appends. The new owner's writes
/// go through. The sweep marks a dead owner's run interrupted, fencing
/// it, and leaves finished runs and live owners' runs alone.
pub(super) async fn a_stale_owners_writes_are_refused_after_a_takeover(db: Db) -> Outcome {
    let (s, taker) = (db.open(), db.open());
    let a = dead_owner();
    let fa = s.create_run(&record("r", 1), &a).await.ctx("create_run")?;
    ensure!(
        s.lapsed("r").await.ctx("lapsed")?,
        "a run whose owner is provably dead has not lapsed"
    );
    let b = Owner::new();
    let fb = taker.claim("r", &b).await.ctx("claim from a dead owner")?;
    ensure!(
        fb == Fence {
            owner: b.id.clone(),
            epoch: 2
        },
        "the takeover gave {fb:?}"
    );
    for (name, h) in [("its own handle", &s), ("the taker's handle", &taker)] {
        ensure!(
            !h.renew("r", &fa).await.ctx("renew")?,
            "{name}: the old owner renewed its lease"
        );
        match h
            .set_status("r", RunStatus::Pass, Some(json!("stale")), Some(&fa))
            .await
        {
            Err(StoreError::Fenced { .. }) => {}
            other => return Err(format!("{name}: the old owner's status gave {other:?}")),
        }
        match h.ask(question("r", "q-stale", "stale"), Some(&fa)).await {
            Err(StoreError::Fenced { .. }) => {}
            other => return Err(format!("{name}: the old owner's question gave {other:?}")),
        }
        h.append_events(vec![event("r", "stale", &json!("a"), fa.epoch)])
            .await
            .ctx("append_events by the old owner")?;
    }
    match taker
        .append(entry("r", "9", json!("stale"), fa.epoch))
        .await
    {
        Err(StoreError::Fenced { .. }) => {}
        other => {
            return Err(format!(
                "the taker's handle took the old owner's append: {other:?}"
            ));
        }
    }
    let r = s.run("r").await.ctx("run")?.ok_or("r is gone")?;
    ensure!(
        r.status == RunStatus::Running
            && r.owner.as_deref() == Some(b.id.as_str())
            && r.result.is_none(),
        "the old owner's writes changed the run: {r:?}"
    );
    let questions = s.questions("r").await.ctx("questions")?;
    ensure!(
        questions.is_empty(),
        "the old owner's question is stored: {questions:?}"
    );
    let events = s.events("r", 0, 100).await.ctx("events")?;
    ensure!(
        events.is_empty(),
        "the old owner's events are stored: {events:?}"
    );
    // The new owner writes as an owner.
    ensure!(
        taker.renew("r", &fb).await.ctx("renew")?,
        "the new owner cannot renew"
    );
    s.append_events(vec![event("r", "fresh", &json!("b"), fb.epoch)])
        .await
        .ctx("append_events by the new owner")?;
    s.ask(question("r", "q", "fresh"), Some(&fb))
        .await
        .ctx("ask by the new owner")?;
    let events = taker.events("r", 0, 100).await.ctx("events")?;
    ensure!(
        events.iter().map(|e| e.id).collect::<Vec<_>>() == [1] && events[0].kind == "fresh",
        "the new owner's events read {events:?}"
    );
    sweep_checks(&db).await
}

/// The sweep: a dead owner's run is marked interrupted (fenced, with its
/// cause); finished runs and live owners' runs are not.
async fn sweep_checks(db: &Db) -> Outcome {
    let s = db.open();
    let fd = s
        .create_run(&record("orphan", 1), &dead_owner())
        .await
        .ctx("create_run")?;
    let fp = s
        .create_run(&record("done", 1), &dead_owner())
        .await
        .ctx("create_run")?;
    s.set_status("done", RunStatus::Pass, None, Some(&fp))
        .await
        .ctx("set_status pass")?;
    let window = Window::open(db.lease);
    s.create_run(&record("live", 1), &Owner::new())
        .await
        .ctx("create_run")?;
    let marked = db.open().mark_interrupted().await.ctx("mark_interrupted")?;
    let fits = window.fits();
    ensure!(
        marked.contains(&"orphan".to_string()) && !marked.contains(&"done".to_string()),
        "the sweep marked {marked:?}: not the dead owner's run, or a finished one"
    );
    ensure!(
        !fits || marked == ["orphan"],
        "the sweep marked {marked:?} within a live owner's lease"
    );
    let r = s.run("orphan").await.ctx("run")?.ok_or("orphan is gone")?;
    let code = r.result.as_ref().and_then(|v| v.get("code")).cloned();
    ensure!(
        r.status == RunStatus::Interrupted
            && r.owner.is_none()
            && r.epoch == 2
            && code == Some(json!("owner_lost")),
        "a swept run reads {r:?}, not interrupted at epoch 2 with code owner_lost"
    );
    match s
        .set_status("orphan", RunStatus::Pass, None, Some(&fd))
        .await
    {
        Err(StoreError::Fenced { .. }) => {}
        other => return Err(format!("a swept owner's status write gave {other:?}")),
    }
    let again = s.mark_interrupted().await.ctx("mark_interrupted")?;
    ensure!(
        !again.contains(&"orphan".to_string()),
        "a run was swept twice"
    );
    Ok(())
}

/// Polls `lapsed(run)` until it is true (at most `limit`); the boot-clock
/// time it was first seen so.
async fn lapse_of(s: &dyn Store, run: &str, limit: Duration) -> Result<u64, String> {
    let give_up = clock::boot_ms() + limit.as_millis() as u64;
    loop {
        if s.lapsed(run).await.ctx("lapsed")? {
            return Ok(clock::boot_ms());
        }
        ensure!(
            clock::boot_ms() < give_up,
            "run {run}'s lease did not lapse within {} ms",
            limit.as_millis()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A lease held by renewing does not lapse; one left alone lapses no
/// sooner than its length after its last renewal and within a while of
/// it, by the store's clock; then another owner may take the run and the
/// sweep marks a lapsed run interrupted, fencing its owner.
pub(super) async fn a_lease_lapses_on_the_stores_clock(db: Db) -> Outcome {
    let (s, peer) = (db.open(), db.open());
    let lease = db.lease;
    let a = Owner::new();
    let mut renewed = clock::boot_ms();
    let fa = s.create_run(&record("r", 1), &a).await.ctx("create_run")?;
    for _ in 0..3 {
        tokio::time::sleep(lease / 3).await;
        let window = Window::open(lease);
        ensure!(
            s.renew("r", &fa).await.ctx("renew")?,
            "a live owner cannot renew"
        );
        renewed = window.start;
        let lapsed = peer.lapsed("r").await.ctx("lapsed")?;
        ensure!(
            !window.fits() || !lapsed,
            "a lease renewed just now has lapsed"
        );
    }
    let limit = lease * 2 + Duration::from_secs(10);
    let seen = lapse_of(&*peer, "r", limit).await?;
    let length = lease.as_millis() as u64;
    ensure!(
        seen >= renewed + length,
        "the lease lapsed {} ms after its renewal, sooner than its {length} ms",
        seen - renewed
    );
    let b = Owner::new();
    let fb = peer.claim("r", &b).await.ctx("claim a lapsed run")?;
    ensure!(fb.epoch == 2, "taking a lapsed run made epoch {}", fb.epoch);
    ensure!(
        !s.renew("r", &fa).await.ctx("renew")?,
        "the owner whose lease lapsed renewed after a takeover"
    );
    // Left alone in turn, the new owner is swept.
    lapse_of(&*s, "r", limit).await?;
    let marked = s.mark_interrupted().await.ctx("mark_interrupted")?;
    ensure!(
        marked == ["r"],
        "the sweep marked {marked:?}, not the lapsed run"
    );
    let r = s.run("r").await.ctx("run")?.ok_or("r is gone")?;
    ensure!(
        r.status == RunStatus::Interrupted && r.owner.is_none() && r.epoch == 3,
        "a swept run reads {r:?}"
    );
    match peer.set_status("r", RunStatus::Pass, None, Some(&fb)).await {
        Err(StoreError::Fenced { .. }) => {}
        other => return Err(format!("a swept owner's status write gave {other:?}")),
    }
    match peer.ask(question("r", "q", "q"), Some(&fb)).await {
        Err(StoreError::Fenced { .. }) => {}
        other => return Err(format!("a swept owner's question gave {other:?}")),
    }
    ensure!(
        s.lapsed("r").await.ctx("lapsed")?,
        "an unowned run's lease has not lapsed"
    );
    let fc = s.claim("r", &Owner::new()).await.ctx("claim a swept run")?;
    ensure!(fc.epoch == 4, "taking a swept run made epoch {}", fc.epoch);
    Ok(())
}
