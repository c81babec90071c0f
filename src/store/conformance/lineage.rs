//! Lineage: a fork's record names the run it was forked from, and each
//! journal entry a fork took from its source says how and from where;
//! both read back as written, through another handle, and an entry taken
//! from another run adds nothing to the tokens its run spent.

use super::{Ctx, Db, Outcome, ensure, entry, record};
use crate::store::{ForkOf, Origin, RunRecord, RunStatus, Taken};
use serde_json::json;

/// A fork's record and its taken entries read back as written.
pub(super) async fn a_forks_lineage_reads_back_as_written(db: Db) -> Outcome {
    let (s, peer) = (db.open(), db.open());
    let owner = crate::store::Owner::new();
    s.create_run(&record("src", 1000), &owner)
        .await
        .ctx("create_run src")?;
    let fork = ForkOf {
        run: "src".into(),
        at: "3/2:1".into(),
        reuse: true,
    };
    let forked = RunRecord {
        fork: Some(fork.clone()),
        ..record("f1", 2000)
    };
    let fence = s.create_run(&forked, &owner).await.ctx("create_run f1")?;
    let taken = |pos: &str, how, tokens| crate::store::JournalEntry {
        kind: "llm_turn".into(),
        from: Some(Box::new(Origin {
            how,
            run: "src".into(),
            pos: pos.into(),
            tokens,
        })),
        ..entry("f1", pos, json!({ "pos": pos }), 1)
    };
    let written = [
        taken("1", Taken::Copied, 0),
        taken("2", Taken::Edited, 0),
        taken("5~t1", Taken::Reused, 18),
        crate::store::JournalEntry {
            kind: "llm_turn".into(),
            tokens: 18,
            ..entry("f1", "6~t1", json!("live"), 1)
        },
    ];
    for e in &written {
        s.append(e.clone()).await.ctx("append")?;
    }
    s.set_status("f1", RunStatus::Pass, None, Some(&fence))
        .await
        .ctx("set_status")?;
    let r = peer.run("f1").await.ctx("run")?.ok_or("run f1 is gone")?;
    ensure!(
        r.fork.as_ref() == Some(&fork),
        "f1's fork reads back as {:?}, not {fork:?}",
        r.fork
    );
    ensure!(
        r.tokens == 18,
        "f1 spent {} tokens by its record, not the 18 of its one live turn",
        r.tokens
    );
    let src = peer.run("src").await.ctx("run")?.ok_or("run src is gone")?;
    ensure!(
        src.fork.is_none(),
        "src reads back as a fork: {:?}",
        src.fork
    );
    let listed = peer.runs(None).await.ctx("runs")?;
    let forks: Vec<&str> = listed
        .iter()
        .filter(|r| r.fork.as_ref().is_some_and(|f| f.run == "src"))
        .map(|r| r.id.as_str())
        .collect();
    ensure!(forks == ["f1"], "the forks of src listed are {forks:?}");
    let mut read = peer.journal("f1").await.ctx("journal")?;
    read.sort_by(|a, b| a.pos.cmp(&b.pos));
    for (got, want) in read.iter().zip(&written) {
        ensure!(
            got.from == want.from && got.tokens == want.tokens,
            "entry {} reads back from {:?} with {} tokens, not {:?} with {}",
            want.pos,
            got.from,
            got.tokens,
            want.from,
            want.tokens
        );
    }
    ensure!(read.len() == 4, "f1 has {} entries, not 4", read.len());
    Ok(())
}

/// A run moves to another version of its code (its blueprint and helper
/// hashes) only under the ownership that holds it: a released or stale
/// fence is refused and changes nothing.
pub(super) async fn a_version_moves_only_under_its_fence(db: Db) -> Outcome {
    use crate::store::{StoreError, Version};
    let (s, peer) = (db.open(), db.open());
    let a = crate::store::Owner::new();
    let fence = s
        .create_run(&record("v", 1000), &a)
        .await
        .ctx("create_run")?;
    let v2 = Version {
        hash: "b1ue2".into(),
        helpers: [("lib/util.lua".to_string(), "def456".to_string())].into(),
    };
    s.set_version("v", &v2, &fence).await.ctx("set_version")?;
    let r = peer.run("v").await.ctx("run")?.ok_or("run v is gone")?;
    ensure!(
        (r.hash.as_str(), &r.helpers) == (v2.hash.as_str(), &v2.helpers),
        "run v reads back at {} {:?}, not at the version set",
        r.hash,
        r.helpers
    );
    s.set_status("v", RunStatus::Waiting, None, Some(&fence))
        .await
        .ctx("set_status waiting")?;
    let v3 = Version {
        hash: "b1ue3".into(),
        ..v2.clone()
    };
    let stale = s.set_version("v", &v3, &fence).await;
    ensure!(
        matches!(stale, Err(StoreError::Fenced { .. })),
        "a released fence moved the version: {stale:?}"
    );
    let b = crate::store::Owner::new();
    let taken = peer.claim("v", &b).await.ctx("claim")?;
    peer.set_version("v", &v3, &taken)
        .await
        .ctx("set_version b")?;
    let stale = s.set_version("v", &v2, &fence).await;
    ensure!(
        matches!(stale, Err(StoreError::Fenced { .. })),
        "a stale fence moved the version: {stale:?}"
    );
    let r = s.run("v").await.ctx("run")?.ok_or("run v is gone")?;
    ensure!(r.hash == "b1ue3", "run v is at {}, not b1ue3", r.hash);
    Ok(())
}
