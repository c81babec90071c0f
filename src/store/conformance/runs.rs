//! Runs, their status and their journal: recorded as given, status
//! writes fenced by ownership, a position kept by the later epoch, cancel
//! requests, and prune sparing every run that may still go on.

use super::{Ctx, Db, Outcome, dead_owner, ensure, entry, event, question, record};
use crate::store::{Fence, Owner, Prune, RunRecord, RunStatus, StoreError};
use serde_json::json;
use std::collections::HashMap;

fn ids(runs: Vec<RunRecord>) -> Vec<String> {
    runs.into_iter().map(|r| r.id).collect()
}

/// A run reads back as it was recorded, owned by its creator at epoch 1;
/// runs are listed in order of creation (then id) and by status; an id is
/// recorded once; a settled run counts its steps and tokens.
pub(super) async fn runs_are_recorded_as_given(db: Db) -> Outcome {
    let (s, peer) = (db.open(), db.open());
    let a = Owner::new();
    let mut fences = HashMap::new();
    for (id, created) in [("r-b", 2000), ("r-a", 2000), ("r-c", 1000)] {
        let fence = s
            .create_run(&record(id, created), &a)
            .await
            .ctx("create_run")?;
        let want = Fence {
            owner: a.id.clone(),
            epoch: 1,
        };
        ensure!(fence == want, "create_run gave {fence:?}, not {want:?}");
        fences.insert(id, fence);
    }
    let r = peer.run("r-a").await.ctx("run")?;
    let r = r.ok_or("run r-a is not found (through another handle) once created")?;
    let want = record("r-a", 2000);
    ensure!(
        (
            &r.blueprint,
            &r.path,
            &r.hash,
            &r.input,
            &r.helpers,
            r.created_ms
        ) == (
            &want.blueprint,
            &want.path,
            &want.hash,
            &want.input,
            &want.helpers,
            2000
        ),
        "run r-a reads back as {r:?}, not as recorded ({want:?})"
    );
    ensure!(
        r.status == RunStatus::Running
            && r.epoch == 1
            && r.owner.as_deref() == Some(a.id.as_str())
            && r.owner_host.as_deref() == Some(a.host.as_str())
            && r.pid == Some(a.pid)
            && r.result.is_none()
            && r.lease_until_ms.is_some(),
        "a created run is running, owned by its creator at epoch 1 with a lease: {r:?}"
    );
    let listed = ids(s.runs(None).await.ctx("runs")?);
    ensure!(
        listed == ["r-c", "r-a", "r-b"],
        "runs() lists {listed:?}, not by creation time then id"
    );
    s.set_status("r-b", RunStatus::Waiting, None, Some(&fences["r-b"]))
        .await
        .ctx("set_status waiting")?;
    let waiting = ids(s.runs(Some(RunStatus::Waiting)).await.ctx("runs")?);
    let running = ids(s.runs(Some(RunStatus::Running)).await.ctx("runs")?);
    ensure!(
        waiting == ["r-b"] && running == ["r-c", "r-a"],
        "runs(status) lists waiting {waiting:?} and running {running:?}"
    );
    match s.create_run(&record("r-a", 5000), &Owner::new()).await {
        Err(StoreError::Exists { .. }) => {}
        other => {
            return Err(format!(
                "a second create_run of r-a gave {other:?}, not Exists"
            ));
        }
    }
    ensure!(
        s.run("r-nope").await.ctx("run")?.is_none(),
        "an unknown run is found"
    );
    // Two steps and an LLM turn of the step: two steps, seven tokens.
    for (pos, kind, tokens) in [("1", "step", 0), ("2", "step", 2), ("2.1", "llm_turn", 5)] {
        let e = crate::store::JournalEntry {
            kind: kind.into(),
            tokens,
            ..entry("r-a", pos, json!(pos), 1)
        };
        s.append(e).await.ctx("append")?;
    }
    let result = json!({"answer": 42});
    s.set_status(
        "r-a",
        RunStatus::Pass,
        Some(result.clone()),
        Some(&fences["r-a"]),
    )
    .await
    .ctx("set_status pass")?;
    let r = peer.run("r-a").await.ctx("run")?.ok_or("r-a is gone")?;
    ensure!(
        r.status == RunStatus::Pass
            && r.result.as_ref() == Some(&result)
            && r.owner.is_none()
            && r.lease_until_ms.is_none(),
        "a run settled by its owner is released with its result: {r:?}"
    );
    ensure!(
        (r.steps, r.tokens) == (2, 7),
        "the settled run counts {} steps and {} tokens, not 2 and 7",
        r.steps,
        r.tokens
    );
    Ok(())
}

/// A fenced status write applies only while that ownership holds the run
/// (the owner and its epoch), and releases it unless the status is
/// `running`; an unfenced one (a cancel, an operator) grows the epoch and
/// fences the owner out.
pub(super) async fn status_writes_are_fenced(db: Db) -> Outcome {
    let (s, peer) = (db.open(), db.open());
    let a = Owner::new();
    let f1 = s.create_run(&record("r1", 1), &a).await.ctx("create_run")?;
    s.set_status("r1", RunStatus::Running, None, Some(&f1))
        .await
        .ctx("set_status running by its owner")?;
    let wrong = [
        Fence {
            owner: "someone-else".into(),
            epoch: 1,
        },
        Fence {
            owner: a.id.clone(),
            epoch: 2,
        },
    ];
    for f in &wrong {
        for h in [&s, &peer] {
            match h.set_status("r1", RunStatus::Pass, None, Some(f)).await {
                Err(StoreError::Fenced { .. }) => {}
                other => return Err(format!("set_status under {f:?} gave {other:?}, not Fenced")),
            }
        }
    }
    let r = s.run("r1").await.ctx("run")?.ok_or("r1 is gone")?;
    ensure!(
        r.status == RunStatus::Running && r.owner.as_deref() == Some(a.id.as_str()) && r.epoch == 1,
        "refused status writes changed the run: {r:?}"
    );
    let asked = json!("asked");
    s.set_status("r1", RunStatus::Waiting, Some(asked.clone()), Some(&f1))
        .await
        .ctx("set_status waiting")?;
    let r = s.run("r1").await.ctx("run")?.ok_or("r1 is gone")?;
    ensure!(
        r.status == RunStatus::Waiting && r.owner.is_none() && r.epoch == 1,
        "a fenced `waiting` releases the run at the same epoch: {r:?}"
    );
    match peer
        .set_status("r1", RunStatus::Pass, None, Some(&f1))
        .await
    {
        Err(StoreError::Fenced { .. }) => {}
        other => return Err(format!("a released owner's status write gave {other:?}")),
    }
    // Taken again (unowned): a status without a result keeps the last.
    let f2 = peer.claim("r1", &a).await.ctx("claim a released run")?;
    ensure!(f2.epoch == 2, "a claim made epoch {}, not 2", f2.epoch);
    s.set_status("r1", RunStatus::Blocked, None, Some(&f2))
        .await
        .ctx("set_status blocked")?;
    let r = s.run("r1").await.ctx("run")?.ok_or("r1 is gone")?;
    ensure!(
        r.status == RunStatus::Blocked && r.result.as_ref() == Some(&asked),
        "a status written without a result dropped the one recorded: {r:?}"
    );
    // From outside: the epoch grows and the owner can write no more.
    let f = s.create_run(&record("r2", 2), &a).await.ctx("create_run")?;
    peer.set_status("r2", RunStatus::Cancelled, None, None)
        .await
        .ctx("unfenced set_status")?;
    let r = s.run("r2").await.ctx("run")?.ok_or("r2 is gone")?;
    ensure!(
        r.status == RunStatus::Cancelled && r.epoch == 2 && r.owner.is_none(),
        "a status set from outside leaves {r:?}, not cancelled at epoch 2 without owner"
    );
    ensure!(
        !s.renew("r2", &f).await.ctx("renew")?,
        "an owner fenced out by a cancel renewed its lease"
    );
    match s.set_status("r2", RunStatus::Pass, None, Some(&f)).await {
        Err(StoreError::Fenced { .. }) => {}
        other => return Err(format!("a cancelled run's owner wrote a status: {other:?}")),
    }
    match s
        .set_status("r-nope", RunStatus::Pass, None, Some(&f))
        .await
    {
        Err(StoreError::Fenced { .. }) => {}
        other => return Err(format!("a fenced write to no run gave {other:?}")),
    }
    s.set_status("r-nope", RunStatus::Pass, None, None)
        .await
        .ctx("an unfenced write to no run")?;
    Ok(())
}

/// Where two ownerships recorded one position, the later epoch's entry
/// is read, whichever arrived last; the handle that made the takeover
/// refuses the stale owner's append; an entry written by no owner
/// (epoch 0) is kept.
pub(super) async fn a_position_keeps_the_later_epochs_entry(db: Db) -> Outcome {
    let (s, peer) = (db.open(), db.open());
    let a = dead_owner();
    s.create_run(&record("r", 1), &a).await.ctx("create_run")?;
    s.append(entry("r", "1", json!("a1"), 1))
        .await
        .ctx("append")?;
    s.append(entry("r", "2", json!("a2"), 1))
        .await
        .ctx("append")?;
    let b = s
        .claim("r", &Owner::new())
        .await
        .ctx("claim from a dead owner")?;
    ensure!(b.epoch == 2, "the takeover made epoch {}, not 2", b.epoch);
    s.append(entry("r", "2", json!("b2"), 2))
        .await
        .ctx("append at epoch 2")?;
    match s.append(entry("r", "3", json!("a3"), 1)).await {
        Err(StoreError::Fenced { .. }) => {}
        other => {
            return Err(format!(
                "the handle that took the run over took the stale owner's append: {other:?}"
            ));
        }
    }
    // Another handle may not know of the takeover yet: it may refuse or
    // keep the stale entry, but that entry must never win at read.
    match peer.append(entry("r", "2", json!("a2-late"), 1)).await {
        Ok(()) | Err(StoreError::Fenced { .. }) => {}
        Err(e) => return Err(format!("a stale append failed otherwise: {e}")),
    }
    s.append(entry("r", "t", json!("tool"), 0))
        .await
        .ctx("append at epoch 0")?;
    for (name, h) in [("the taker's handle", &s), ("another handle", &peer)] {
        let entries = h.journal("r").await.ctx("journal")?;
        let by_pos: HashMap<&str, &serde_json::Value> =
            entries.iter().map(|e| (e.pos.as_str(), &e.value)).collect();
        ensure!(
            by_pos.len() == entries.len(),
            "{name}: a position is read twice: {entries:?}"
        );
        let want: HashMap<&str, serde_json::Value> =
            [("1", json!("a1")), ("2", json!("b2")), ("t", json!("tool"))].into();
        let got: HashMap<&str, serde_json::Value> =
            by_pos.into_iter().map(|(p, v)| (p, v.clone())).collect();
        ensure!(
            got == want,
            "{name} reads the journal as {got:?}, not {want:?}"
        );
    }
    Ok(())
}

/// A cancel request is seen through every handle until the run stops.
pub(super) async fn cancel_requests_hold_until_the_run_stops(db: Db) -> Outcome {
    let (s, peer) = (db.open(), db.open());
    let f = s
        .create_run(&record("r", 1), &Owner::new())
        .await
        .ctx("create_run")?;
    ensure!(
        !s.cancel_requested("r").await.ctx("cancel_requested")?,
        "a new run has a cancel request"
    );
    peer.request_cancel("r").await.ctx("request_cancel")?;
    ensure!(
        s.cancel_requested("r").await.ctx("cancel_requested")?,
        "a cancel request made through another handle is not seen"
    );
    s.set_status("r", RunStatus::Running, None, Some(&f))
        .await
        .ctx("set_status running")?;
    ensure!(
        peer.cancel_requested("r").await.ctx("cancel_requested")?,
        "`running` written again dropped the cancel request"
    );
    s.set_status("r", RunStatus::Interrupted, None, Some(&f))
        .await
        .ctx("set_status interrupted")?;
    ensure!(
        !peer.cancel_requested("r").await.ctx("cancel_requested")?,
        "a stopped run still has its cancel request"
    );
    peer.request_cancel("r-nope")
        .await
        .ctx("request_cancel of no run")?;
    ensure!(
        !s.cancel_requested("r-nope").await.ctx("cancel_requested")?,
        "no run has a cancel request"
    );
    Ok(())
}

/// Prune deletes finished runs only (pass, blocked, cancelled), with
/// their journal, events and questions, whatever statuses it is asked
/// for; `before_ms` and `keep_last` hold; and writes to active runs made
/// while it prunes are all kept.
pub(super) async fn prune_never_touches_an_active_run(db: Db) -> Outcome {
    let (s, peer) = (db.open(), db.open());
    let a = Owner::new();
    let id = |st: RunStatus| format!("p-{st}");
    for st in RunStatus::ALL {
        let run = id(st);
        let f = s.create_run(&record(&run, 1), &a).await.ctx("create_run")?;
        s.append(entry(&run, "1", json!(1), 1))
            .await
            .ctx("append")?;
        s.append_events(vec![event(&run, "e", &json!(1), 1)])
            .await
            .ctx("append_events")?;
        s.ask(question(&run, "q", "q"), Some(&f)).await.ctx("ask")?;
        if st != RunStatus::Running {
            s.set_status(&run, st, None, Some(&f))
                .await
                .ctx("set_status")?;
        }
    }
    for n in 0..30 {
        let run = format!("old-{n:02}");
        let f = s.create_run(&record(&run, 1), &a).await.ctx("create_run")?;
        s.set_status(&run, RunStatus::Pass, None, Some(&f))
            .await
            .ctx("set_status")?;
    }
    let future = crate::engine::now_ms() + 3_600_000;
    let everything = |keep_last| Prune {
        before_ms: future,
        statuses: RunStatus::ALL.to_vec(),
        keep_last,
    };
    let none = peer
        .prune(&Prune {
            before_ms: 0,
            ..everything(0)
        })
        .await
        .ctx("prune before the epoch")?;
    ensure!(
        none.is_empty(),
        "prune deleted {none:?}, all updated after its time"
    );
    // Active runs written to while prune runs.
    let active = [
        RunStatus::Running,
        RunStatus::Waiting,
        RunStatus::Interrupted,
    ];
    let writers: Vec<_> = active
        .iter()
        .map(|st| {
            let (h, run) = (db.open(), id(*st));
            tokio::spawn(async move {
                for n in 0..20 {
                    let pos = format!("w{n}");
                    h.append(entry(&run, &pos, json!(n), 0)).await?;
                    h.append_events(vec![event(&run, "w", &json!(n), 0)])
                        .await?;
                    h.ask(question(&run, &pos, &pos), None).await?;
                }
                Ok::<(), StoreError>(())
            })
        })
        .collect();
    let mut deleted = peer.prune(&everything(0)).await.ctx("prune")?;
    for w in super::joined(writers).await? {
        w.ctx("writing to an active run while pruning")?;
    }
    deleted.sort();
    let want: Vec<String> = (0..30)
        .map(|n| format!("old-{n:02}"))
        .chain(["p-blocked", "p-cancelled", "p-pass"].map(String::from))
        .collect();
    let mut want = want;
    want.sort();
    ensure!(
        deleted == want,
        "prune deleted {deleted:?}, not the finished runs {want:?}"
    );
    for st in RunStatus::ALL {
        let run = id(st);
        let r = s.run(&run).await.ctx("run")?;
        let entries = s.journal(&run).await.ctx("journal")?.len();
        let events = s.events(&run, 0, usize::MAX).await.ctx("events")?.len();
        let questions = s.questions(&run).await.ctx("questions")?.len();
        let written = if active.contains(&st) { 21 } else { 1 };
        if st.is_finished() {
            ensure!(
                r.is_none() && (entries, events, questions) == (0, 0, 0),
                "pruned run {run} left {entries} entries, {events} events, {questions} questions"
            );
        } else {
            ensure!(
                r.is_some_and(|r| r.status == st),
                "prune touched active run {run}"
            );
            ensure!(
                (entries, events, questions) == (written, written, written),
                "active run {run} has {entries} entries, {events} events, {questions} \
                 questions after prune, not {written} of each"
            );
        }
    }
    for n in 1..=3 {
        let run = format!("k{n}");
        let f = s.create_run(&record(&run, 1), &a).await.ctx("create_run")?;
        s.set_status(&run, RunStatus::Pass, None, Some(&f))
            .await
            .ctx("set_status")?;
    }
    let mut kept = peer
        .prune(&Prune {
            statuses: vec![RunStatus::Pass],
            ..everything(1)
        })
        .await
        .ctx("prune keeping the last")?;
    kept.sort();
    ensure!(
        kept == ["k1", "k2"],
        "prune keeping the newest one deleted {kept:?}, not k1 and k2"
    );
    Ok(())
}
