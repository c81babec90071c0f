//! The journal store itself, through its library API and `swarm doctor`:
//! durability when `append` returns, orphaned and damaged step logs, a
//! bounded write-ahead log, events in order, commits shared across chains.

mod common;

use common::dir::{Dir, text};
use rusqlite::Connection;
use serde_json::json;

/// A journal write is durable once `append` returns, awaited or not: the
/// step log holds it at once, another store on the same file reads it
/// before any commit, and closing the store folds it into the database.
#[test]
fn a_journal_write_is_durable_when_append_returns() {
    use lua_swarm::store::{Journal, SqliteStore, Store, wait};
    use std::sync::Arc;
    let dir = Dir::new("dropped-commit").0;
    let db = dir.join("swarm.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).unwrap());
    let j = Journal::new(store.clone(), "r1", Vec::new());
    // Never polled.
    drop(store.append(j.entry("1", "step", "a", "h".into(), true, json!(1))));
    let mut commit = store.append(j.entry("2", "step", "a", "h".into(), true, json!(2)));
    let waker = futures_util::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    assert!(matches!(
        commit.as_mut().poll(&mut cx),
        std::task::Poll::Ready(Ok(()))
    ));
    let positions = |s: &dyn Store| -> Vec<String> {
        let entries = wait(s.journal("r1")).unwrap();
        entries.into_iter().map(|e| e.pos).collect()
    };
    assert_eq!(positions(&*store), ["1", "2"]);
    // Another store (as another process would) reads the live log.
    let other = SqliteStore::open(&db).unwrap();
    assert_eq!(positions(&other), ["1", "2"]);
    drop((j, store));
    let rows: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM journal WHERE run = 'r1'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(rows, 2, "closing the store folds its log into the database");
    let logs = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("-steps-"))
        .count();
    assert_eq!(logs, 0, "a folded log is deleted");
}

/// A step log left by a process that died is folded into the database by
/// the next store opened on it and deleted; a record torn by the death is
/// dropped; a log with a damaged record gives the records before it and
/// is kept aside as `.damaged`, never deleted.
#[test]
fn an_orphaned_step_log_is_folded_in_and_a_damaged_one_kept_aside() {
    use lua_swarm::store::{SqliteStore, Store, wait};
    let d = Dir::new("orphan-log");
    let dir = d.0.clone();
    let db = dir.join("swarm.db");
    drop(SqliteStore::open(&db).unwrap());
    let record = |run: &str, pos: &str| {
        let json = json!({"run": run, "pos": pos, "kind": "step", "key": "a",
            "input_hash": "h", "ok": true, "value": {"n": pos}, "attempts": 1,
            "at_ms": 1, "tokens": 0})
        .to_string();
        format!("{:08x} {json}\n", crc32fast::hash(json.as_bytes()))
    };
    let torn = record("dead", "3");
    let clean = [
        record("dead", "1"),
        record("dead", "2"),
        torn[..20].to_string(),
    ]
    .concat();
    std::fs::write(dir.join("swarm.db-steps-00000000000000aa"), clean).unwrap();
    let bad = record("hurt", "2").replace("step", "stEp");
    let damaged = [record("hurt", "1"), bad, record("hurt", "3")].concat();
    std::fs::write(dir.join("swarm.db-steps-00000000000000bb"), damaged).unwrap();
    let store = SqliteStore::open(&db).unwrap();
    let positions = |run: &str| -> Vec<String> {
        let entries = wait(store.journal(run)).unwrap();
        entries.into_iter().map(|e| e.pos).collect()
    };
    assert_eq!(positions("dead"), ["1", "2"]);
    assert_eq!(positions("hurt"), ["1"]);
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("-steps-"))
        .collect();
    left.sort();
    assert_eq!(left, ["swarm.db-steps-00000000000000bb.damaged"]);
    let rows: i64 = Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM journal", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 3, "the folded records are in the database itself");
    drop(store);
    let out = d.swarm(&["doctor"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("step log") && t.contains("00bb.damaged"), "{t}");
}

/// A long stream of sequential commits (a flow's steps, each waiting for
/// its own) keeps the write-ahead log bounded: checkpoints must let the
/// log start over while the writer keeps writing, not only when it pauses.
#[test]
fn sequential_commits_keep_the_write_ahead_log_bounded() {
    use lua_swarm::store::{Journal, SqliteStore, Store, wait};
    use std::sync::Arc;
    let dir = Dir::new("wal-bounded").0;
    let db = dir.join("swarm.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).unwrap());
    let j = Journal::new(store.clone(), "long", Vec::new());
    let value = json!("x".repeat(1500));
    let commits = 6000;
    let mut largest = 0;
    for i in 0..commits {
        let e = j.entry(&i.to_string(), "step", "a", "h".into(), true, value.clone());
        wait(store.append(e)).unwrap();
        let wal = std::fs::metadata(dir.join("swarm.db-wal")).map_or(0, |m| m.len());
        largest = largest.max(wal);
    }
    // Every commit writes at least one 4 KiB page: unchecked, the log
    // would pass 24 MB. SQLite checkpoints at ~1,000 pages (~4 MB).
    assert!(
        largest < 12 << 20,
        "the WAL reached {largest} bytes over {commits} commits"
    );
    assert_eq!(wait(store.journal("long")).unwrap().len(), commits);
}

/// Events are written a few dozen rows per statement: every row of an odd
/// count (chunks of 32, 16, 8, 4, 2, 1) comes back once, in order, with
/// its own run, kind and payload, and other runs' rows stay out.
#[test]
fn events_written_in_chunks_read_back_in_order() {
    use lua_swarm::store::{EventRow, SqliteStore, Store, wait};
    use std::sync::Arc;
    let dir = Dir::new("event-chunks").0;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("swarm.db")).unwrap());
    let (a, b): (Arc<str>, Arc<str>) = (Arc::from("run-a"), Arc::from("run-b"));
    let rows: Vec<EventRow> = (0..95)
        .map(|i| EventRow {
            run: if i % 5 == 4 { b.clone() } else { a.clone() },
            kind: if i % 2 == 0 {
                "task_created"
            } else {
                "attempt_completed"
            },
            payload: Arc::from(format!("{{\"n\":{i}}}")),
        })
        .collect();
    wait(store.append_events(rows)).unwrap();
    let got = wait(store.events("run-a", 0, 1000)).unwrap();
    let want: Vec<i64> = (0..95).filter(|i| i % 5 != 4).collect();
    let seen: Vec<i64> = got
        .iter()
        .map(|e| e.payload["n"].as_i64().unwrap())
        .collect();
    assert_eq!(seen, want);
    assert!(got.windows(2).all(|w| w[0].id < w[1].id), "ids ascend");
    assert!(got.iter().all(|e| {
        let n = e.payload["n"].as_i64().unwrap();
        e.kind
            == if n % 2 == 0 {
                "task_created"
            } else {
                "attempt_completed"
            }
    }));
    assert_eq!(wait(store.events("run-b", 0, 1000)).unwrap().len(), 19);
}

/// Concurrent sequential chains share commits: eight chains of writes
/// that each wait for their own commit before the next (event batches of
/// eight runs on one host; a journal entry needs no commit of its own,
/// see the step log) commit about one transaction per round of the eight,
/// not one per write. All in one task, so the count does not depend on
/// the machine's speed.
#[test]
fn sequential_chains_share_commits() {
    use lua_swarm::store::{EventRow, SqliteStore, Store, wait};
    use std::sync::Arc;
    let dir = Dir::new("shared-commits").0;
    let sqlite = Arc::new(SqliteStore::open(&dir.join("swarm.db")).unwrap());
    let before = sqlite.transactions();
    let store: Arc<dyn Store> = sqlite.clone();
    let (chains, steps) = (8, 50);
    let chain = |c: usize| {
        let store = store.clone();
        async move {
            let run: Arc<str> = Arc::from(format!("r{c}"));
            for s in 0..steps {
                let row = EventRow {
                    run: run.clone(),
                    kind: "task_created",
                    payload: Arc::from(format!("{{\"n\":{s}}}")),
                };
                store.append_events(vec![row]).await.unwrap();
            }
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(futures_util::future::join_all((0..chains).map(chain)));
    let committed = sqlite.transactions() - before;
    for c in 0..chains {
        let events = wait(store.events(&format!("r{c}"), 0, 1000)).unwrap();
        assert_eq!(events.len(), steps, "chain {c}");
    }
    assert!(
        committed <= 2 * steps as u64,
        "{committed} transactions for {} writes in {steps} rounds",
        chains * steps
    );
}
