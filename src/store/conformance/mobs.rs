//! Mobs: a roster write lands only on the version it read (of concurrent
//! writers on many handles exactly one wins per version); a conversation
//! grows only at its current length.

use super::{Ctx, Db, Outcome, ensure, joined};
use serde_json::json;

pub(super) async fn mob_rosters_and_conversations_are_compare_and_set(db: Db) -> Outcome {
    let (s, peer) = (db.open(), db.open());
    ensure!(
        s.mob("team").await.ctx("mob")?.is_none(),
        "a new mob exists"
    );
    ensure!(
        s.put_mob("team", 0, json!({"n": 1})).await.ctx("put_mob")?,
        "the first write of a mob was refused"
    );
    ensure!(
        !peer
            .put_mob("team", 0, json!({"n": 2}))
            .await
            .ctx("put_mob")?,
        "a second creation of one mob landed"
    );
    let m = peer
        .mob("team")
        .await
        .ctx("mob")?
        .ok_or("the mob is gone")?;
    ensure!(
        m.version == 1 && m.doc == json!({"n": 1}),
        "read back {m:?}"
    );
    // Eight writers on version 1 at once: exactly one lands.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let h = db.open();
            tokio::spawn(async move { h.put_mob("team", 1, json!({"n": i})).await })
        })
        .collect();
    let mut won = 0;
    for r in joined(tasks).await? {
        won += usize::from(r.ctx("put_mob")?);
    }
    ensure!(won == 1, "{won} of 8 writes on one version landed");
    let m = s.mob("team").await.ctx("mob")?.ok_or("the mob is gone")?;
    ensure!(m.version == 2, "version {} after two writes", m.version);
    s.put_mob("other", 0, json!({})).await.ctx("put_mob")?;
    let names: Vec<String> = peer
        .mobs()
        .await
        .ctx("mobs")?
        .into_iter()
        .map(|m| m.name)
        .collect();
    ensure!(names == ["other", "team"], "mobs lists {names:?}");
    let turn = |t: &str| json!({"role": "user", "content": t});
    ensure!(
        s.append_turns("team", "a#1", 0, vec![turn("1"), turn("2")])
            .await
            .ctx("append_turns")?,
        "appending to an empty conversation was refused"
    );
    ensure!(
        !peer
            .append_turns("team", "a#1", 0, vec![turn("x")])
            .await
            .ctx("append_turns")?,
        "an append at a stale length landed"
    );
    ensure!(
        peer.append_turns("team", "a#1", 2, vec![turn("3")])
            .await
            .ctx("append_turns")?,
        "an append at the current length was refused"
    );
    let got = s.turns("team", "a#1").await.ctx("turns")?;
    ensure!(
        got == [turn("1"), turn("2"), turn("3")],
        "the conversation reads {got:?}"
    );
    let other = s.turns("team", "b#1").await.ctx("turns")?;
    ensure!(other.is_empty(), "another conversation reads {other:?}");
    Ok(())
}
