//! Messages sent into runs: numbered per run in the order taken, with no
//! gaps and no number twice under concurrent senders on many handles; a
//! sender's id adds a message once; read by topic from a number on;
//! deleted with their run by prune.

use super::{Ctx, Db, Outcome, ensure, joined, record};
use crate::store::{Owner, Prune, RunStatus};
use serde_json::json;

pub(super) async fn messages_are_numbered_once_in_order(db: Db) -> Outcome {
    let (s, peer) = (db.open(), db.open());
    s.create_run(&record("m", 1), &Owner::new())
        .await
        .ctx("create_run")?;
    let a1 = s.send_message("m", "a", json!({"n": 1}), None).await;
    let b1 = peer.send_message("m", "b", json!("b-one"), None).await;
    let a2 = peer.send_message("m", "a", json!(2), Some("x")).await;
    let seqs = [a1, b1, a2].map(|r| r.map(|p| (p.seq, p.duplicate)));
    let seqs: Vec<_> = seqs
        .into_iter()
        .map(|r| r.ctx("send_message"))
        .collect::<Result<_, _>>()?;
    ensure!(
        seqs == [(1, false), (2, false), (3, false)],
        "three messages were numbered {seqs:?}, not 1, 2, 3"
    );
    let again = s
        .send_message("m", "a", json!("retry"), Some("x"))
        .await
        .ctx("send_message again")?;
    ensure!(
        again.seq == 3 && again.duplicate,
        "a retry with the sender's id got {again:?}, not message 3 marked duplicate"
    );
    let on_a = peer.messages("m", "a", 0, 100).await.ctx("messages")?;
    let got: Vec<_> = on_a.iter().map(|m| (m.seq, m.value.clone())).collect();
    ensure!(
        got == [(1, json!({"n": 1})), (3, json!(2))],
        "topic `a` reads {got:?}"
    );
    ensure!(
        on_a[1].id.as_deref() == Some("x") && on_a[0].id.is_none() && on_a[1].topic == "a",
        "the sender's ids or topics read back wrong: {on_a:?}"
    );
    let after = s.messages("m", "a", 1, 100).await.ctx("messages")?;
    ensure!(
        after.len() == 1 && after[0].seq == 3,
        "topic `a` after 1 reads {after:?}"
    );
    let one = s.messages("m", "a", 0, 1).await.ctx("messages")?;
    ensure!(one.len() == 1 && one[0].seq == 1, "limit 1 read {one:?}");
    let other = s.messages("m-nope", "a", 0, 100).await.ctx("messages")?;
    ensure!(other.is_empty(), "a run with no messages reads {other:?}");
    concurrent_senders(&db).await?;
    pruned_with_their_run(&db).await
}

/// Eight handles send at once, two of them with one id: every number
/// from 1 up is used once, and the id's message is stored once.
async fn concurrent_senders(db: &Db) -> Outcome {
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let h = db.open();
            tokio::spawn(async move {
                let id = (i >= 6).then_some("same");
                h.send_message("c", "t", json!(i), id).await
            })
        })
        .collect();
    let mut seqs = Vec::new();
    let mut duplicates = 0;
    for r in joined(tasks).await? {
        let p = r.ctx("send_message")?;
        duplicates += usize::from(p.duplicate);
        if !p.duplicate {
            seqs.push(p.seq);
        }
    }
    seqs.sort_unstable();
    ensure!(
        seqs == (1..=7).collect::<Vec<u64>>() && duplicates == 1,
        "eight concurrent sends (two with one id) were numbered {seqs:?} with {duplicates} \
         duplicates, not 1-7 and one"
    );
    let all = db.open().messages("c", "t", 0, 100).await.ctx("messages")?;
    ensure!(all.len() == 7, "{} messages stored, not 7", all.len());
    Ok(())
}

async fn pruned_with_their_run(db: &Db) -> Outcome {
    let s = db.open();
    let f = s
        .create_run(&record("gone", 1), &Owner::new())
        .await
        .ctx("create_run")?;
    s.send_message("gone", "t", json!(1), None)
        .await
        .ctx("send_message")?;
    s.set_status("gone", RunStatus::Pass, None, Some(&f))
        .await
        .ctx("set_status")?;
    let pruned = s
        .prune(&Prune {
            before_ms: crate::engine::now_ms() + 3_600_000,
            statuses: vec![RunStatus::Pass],
            keep_last: 0,
        })
        .await
        .ctx("prune")?;
    ensure!(
        pruned.contains(&"gone".to_string()),
        "prune kept {pruned:?}"
    );
    let left = s.messages("gone", "t", 0, 100).await.ctx("messages")?;
    ensure!(left.is_empty(), "a pruned run's messages remain: {left:?}");
    Ok(())
}
