//! The journal store itself, through its library API and `swarm doctor`:
//! durability when `append` returns, orphaned and damaged step logs, a
//! bounded write-ahead log, events in order and by the page, commits
//! shared across chains.

mod common;

use common::dir::{Dir, text};
use lua_swarm::store::prelude::*;
use rusqlite::Connection;
use serde_json::json;

/// A journal write is durable once `append` returns, awaited or not: the
/// step log holds it at once, another store on the same file reads it
/// before any commit, and closing the store folds it into the database.
#[test]
fn a_journal_write_is_durable_when_append_returns() {
    use lua_swarm::store::{Journal, SqliteStore, wait};
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
        .query_row(
            "SELECT sum(json_array_length(entries)) FROM journal_pages WHERE run = 'r1'",
            [],
            |r| r.get(0),
        )
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
    use lua_swarm::store::{SqliteStore, wait};
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
        .query_row(
            "SELECT sum(json_array_length(entries)) FROM journal_pages",
            [],
            |r| r.get(0),
        )
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
    use lua_swarm::store::{Journal, SqliteStore, wait};
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

/// Events of two runs written in one batch: every event comes back once,
/// in order, with its own run, kind and payload, and the other run's
/// events stay out.
#[test]
fn events_written_in_chunks_read_back_in_order() {
    use lua_swarm::store::{EventRow, SqliteStore, wait};
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
            epoch: 0,
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
    use lua_swarm::store::{EventRow, SqliteStore, wait};
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
                    epoch: 0,
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

fn event_ids(store: &dyn lua_swarm::store::Store, run: &str, after: i64, n: usize) -> Vec<i64> {
    let events = lua_swarm::store::wait(store.events(run, after, n)).unwrap();
    events.into_iter().map(|e| e.id).collect()
}

/// Events are stored a page per batch and run (at most 256 to a page) and
/// read back one by one: ids of a run ascend without gaps across pages
/// and batches, paging starts mid-page, a kind is found in any page, and
/// the tail is counted across pages.
#[test]
fn events_are_stored_by_the_page_and_read_one_by_one() {
    use lua_swarm::store::{EventRow, SqliteStore, wait};
    use std::sync::Arc;
    let dir = Dir::new("event-pages").0;
    let db = dir.join("swarm.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).unwrap());
    let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
    let row = |run: &Arc<str>, i: usize, kind: &'static str| EventRow {
        run: run.clone(),
        kind,
        payload: Arc::from(format!("{{\"i\":{i}}}")),
        epoch: 0,
    };
    let first: Vec<EventRow> = (0..700)
        .map(|i| match i % 7 {
            6 => row(&b, i, "task_created"),
            3 => row(&a, i, "layer_note"),
            _ => row(&a, i, "attempt_started"),
        })
        .collect();
    wait(store.append_events(first)).unwrap();
    wait(
        store.append_events(
            (700..710)
                .map(|i| row(&a, i, "attempt_completed"))
                .collect(),
        ),
    )
    .unwrap();
    let n_a = 700 - 100 + 10;
    assert_eq!(
        event_ids(&*store, "a", 0, 10_000),
        (1..=n_a).collect::<Vec<i64>>()
    );
    assert_eq!(event_ids(&*store, "a", 300, 5), [301, 302, 303, 304, 305]);
    assert_eq!(
        event_ids(&*store, "b", 0, 10_000),
        (1..=100).collect::<Vec<i64>>()
    );
    let all = wait(store.events("a", 0, 10_000)).unwrap();
    let order: Vec<i64> = all
        .iter()
        .map(|e| e.payload["i"].as_i64().unwrap())
        .collect();
    let want: Vec<i64> = (0..710).filter(|i| i % 7 != 6 || *i >= 700).collect();
    assert_eq!(order, want, "a run's events keep their order");
    let notes = wait(store.events_of_kind("a", "layer_note", 10_000)).unwrap();
    assert_eq!(notes.len(), 100);
    assert!(
        notes
            .iter()
            .all(|e| e.kind == "layer_note" && e.payload["i"].as_i64().unwrap() % 7 == 3)
    );
    assert_eq!(
        wait(store.events_of_kind("a", "layer_note", 3))
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        wait(store.event_tail("a", 5)).unwrap(),
        (n_a as u64, n_a - 5)
    );
    assert_eq!(
        wait(store.event_tail("a", 300)).unwrap(),
        (n_a as u64, n_a - 300)
    );
    assert_eq!(
        wait(store.event_tail("a", 10_000)).unwrap(),
        (n_a as u64, 0)
    );
    assert_eq!(wait(store.event_tail("none", 5)).unwrap(), (0, 0));
    let pages: i64 = Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM event_pages WHERE run = 'a'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(pages, 4, "600 events in pages of 256, then a batch of 10");
    // Big events fill a page by bytes (256 KiB) first; one bigger than
    // that has a page of its own.
    let big = |kib: usize| EventRow {
        run: Arc::from("big"),
        kind: "partial",
        payload: Arc::from(format!("\"{}\"", "x".repeat(kib * 1024))),
        epoch: 0,
    };
    wait(store.append_events([100, 100, 100, 300, 100].map(big).to_vec())).unwrap();
    let sizes: Vec<i64> = Connection::open(&db)
        .unwrap()
        .prepare("SELECT last - first + 1 FROM event_pages WHERE run = 'big' ORDER BY first")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(sizes, [2, 1, 1, 1]);
    assert_eq!(event_ids(&*store, "big", 0, 100), [1, 2, 3, 4, 5]);
}

/// A page whose events do not match its id range was not written by
/// swarm: reading it is a corruption error, never a short answer.
#[test]
fn an_event_page_that_does_not_match_its_ids_is_corruption() {
    use lua_swarm::store::{EventRow, SqliteStore, StoreError, wait};
    use std::sync::Arc;
    let dir = Dir::new("event-page-damaged").0;
    let db = dir.join("swarm.db");
    let store = SqliteStore::open(&db).unwrap();
    let rows = (0..3)
        .map(|i| EventRow {
            run: Arc::from("r"),
            kind: "task_created",
            payload: Arc::from(format!("{{\"i\":{i}}}")),
            epoch: 0,
        })
        .collect();
    wait(store.append_events(rows)).unwrap();
    Connection::open(&db)
        .unwrap()
        .execute("UPDATE event_pages SET last = 5", [])
        .unwrap();
    let err = wait(store.events("r", 0, 10)).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
}

/// A journal from before event pages (one row per event, ids shared by
/// all runs) is migrated in place: every event keeps its id, kind and
/// payload, so a client's last-seen cursor still means the same event,
/// and new events continue after the run's last id.
#[test]
fn a_row_per_event_journal_keeps_its_event_ids() {
    use lua_swarm::store::{EventRow, SqliteStore, wait};
    use std::sync::Arc;
    let dir = Dir::new("event-migration").0;
    let db = dir.join("swarm.db");
    let old = Connection::open(&db).unwrap();
    old.execute_batch(JOURNAL_V4).unwrap();
    old.execute_batch(
        "CREATE TABLE runs (id TEXT PRIMARY KEY);
         CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, run TEXT NOT NULL,
                              kind TEXT NOT NULL, payload TEXT NOT NULL);
         CREATE INDEX events_run ON events(run, id);
         INSERT INTO events VALUES (5, 'a', 'task_created', '{\"n\":1}');
         INSERT INTO events VALUES (7, 'b', 'task_created', '{\"n\":2}');
         INSERT INTO events VALUES (9, 'a', 'layer_note', '{\"n\":3}');
         PRAGMA user_version = 3;",
    )
    .unwrap();
    drop(old);
    let store = SqliteStore::open(&db).unwrap();
    let a = wait(store.events("a", 0, 100)).unwrap();
    let seen: Vec<(i64, &str, i64)> = a
        .iter()
        .map(|e| (e.id, e.kind.as_str(), e.payload["n"].as_i64().unwrap()))
        .collect();
    assert_eq!(seen, [(5, "task_created", 1), (9, "layer_note", 3)]);
    assert_eq!(event_ids(&store, "a", 5, 100), [9]);
    assert_eq!(event_ids(&store, "b", 0, 100), [7]);
    assert_eq!(wait(store.event_tail("a", 1)).unwrap(), (2, 5));
    let row = EventRow {
        run: Arc::from("a"),
        kind: "attempt_started",
        payload: Arc::from("{}"),
        epoch: 0,
    };
    wait(store.append_events(vec![row])).unwrap();
    assert_eq!(event_ids(&store, "a", 0, 100), [5, 9, 10]);
    assert_eq!(wait(store.event_tail("a", 2)).unwrap(), (3, 5));
}

/// The `journal` table of schema 1 to 4: a row per entry.
const JOURNAL_V4: &str = "CREATE TABLE journal (
        run TEXT NOT NULL, pos TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL,
        input_hash TEXT NOT NULL, ok INTEGER NOT NULL, value TEXT NOT NULL,
        attempts INTEGER NOT NULL, at_ms INTEGER NOT NULL,
        tokens INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (run, pos)) WITHOUT ROWID;";

/// A journal from before entry pages (a row per entry) is migrated in
/// place: every entry keeps its fields and types, LLM turns still do not
/// count as steps, and a resumed run replays from it as before.
#[test]
fn a_row_per_entry_journal_becomes_pages_and_keeps_every_entry() {
    use lua_swarm::store::{JournalEntry, SqliteStore, wait};
    let dir = Dir::new("entry-migration").0;
    let db = dir.join("swarm.db");
    drop(SqliteStore::open(&db).unwrap());
    let old = Connection::open(&db).unwrap();
    old.execute_batch(&format!(
        "DROP TABLE journal_pages;
         ALTER TABLE runs DROP COLUMN epoch;
         ALTER TABLE runs DROP COLUMN lease_boot;
         ALTER TABLE runs DROP COLUMN lease_until_boot;
         ALTER TABLE runs DROP COLUMN fork;
         DROP TABLE work;
         DROP TABLE work_ended;
         DROP TABLE messages;
         DROP TABLE mobs;
         DROP TABLE mob_turns;
         {JOURNAL_V4}
         INSERT INTO runs (id, blueprint, path, hash, input, status, created_ms, updated_ms)
             VALUES ('r', 'b', 'b.lua', 'h', 'null', 'pass', 1, 1);
         INSERT INTO journal VALUES ('r', '1', 'step', 'a', 'h1', 1, '{{\"n\":[1,2]}}', 1, 10, 0);
         INSERT INTO journal VALUES ('r', '2', 'step', 'a', 'h2', 0, '\"bad\"', 2, 11, 0);
         INSERT INTO journal VALUES ('r', '2/turn1', 'llm_turn', 'llm', 'h3', 1, 'null', 1, 12, 7);
         INSERT INTO journal VALUES ('s', '1', 'now', 'clock', 'h4', 1, '12.5', 1, 13, 0);
         PRAGMA user_version = 4;"
    ))
    .unwrap();
    drop(old);
    let store = SqliteStore::open(&db).unwrap();
    let entry =
        |run: &str, pos: &str, kind: &str, ok: bool, value, attempts, at_ms, tokens| JournalEntry {
            run: run.into(),
            pos: pos.into(),
            kind: kind.into(),
            key: match kind {
                "step" => "a",
                "llm_turn" => "llm",
                _ => "clock",
            }
            .into(),
            input_hash: format!("h{}", at_ms - 9),
            ok,
            value,
            attempts,
            at_ms,
            tokens,
            epoch: 0,
            from: None,
        };
    assert_eq!(
        wait(store.journal("r")).unwrap(),
        [
            entry("r", "1", "step", true, json!({"n": [1, 2]}), 1, 10, 0),
            entry("r", "2", "step", false, json!("bad"), 2, 11, 0),
            entry("r", "2/turn1", "llm_turn", true, json!(null), 1, 12, 7),
        ]
    );
    assert_eq!(
        wait(store.journal("s")).unwrap(),
        [entry("s", "1", "now", true, json!(12.5), 1, 13, 0)]
    );
    let run = wait(store.run("r")).unwrap().expect("the run");
    assert_eq!(run.steps, 2, "an LLM turn is not a step");
}

/// A step log adopted from a process that died after its entries were
/// committed, before it deleted the log, adds only what the database
/// lacks: no entry is kept twice and the run's step count stays exact.
#[test]
fn a_step_log_folded_twice_adds_each_entry_once() {
    use lua_swarm::store::{Journal, SqliteStore, wait};
    use std::sync::Arc;
    let dir = Dir::new("fold-twice").0;
    let db = dir.join("swarm.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).unwrap());
    let j = Journal::new(store.clone(), "r", Vec::new());
    let mut lines = String::new();
    for pos in ["1", "2"] {
        let e = j.entry(pos, "step", "a", "h".into(), true, json!(pos));
        let json = serde_json::to_string(&e).unwrap();
        lines += &format!("{:08x} {json}\n", crc32fast::hash(json.as_bytes()));
        wait(store.append(e)).unwrap();
    }
    drop((j, store));
    let e = lua_swarm::store::JournalEntry {
        pos: "3".into(),
        ..serde_json::from_str(lines.lines().next().unwrap().split_at(9).1).unwrap()
    };
    let json = serde_json::to_string(&e).unwrap();
    lines += &format!("{:08x} {json}\n", crc32fast::hash(json.as_bytes()));
    std::fs::write(dir.join("swarm.db-steps-00000000000000cc"), lines).unwrap();
    let store = SqliteStore::open(&db).unwrap();
    let mut positions: Vec<String> = wait(store.journal("r"))
        .unwrap()
        .into_iter()
        .map(|e| e.pos)
        .collect();
    positions.sort();
    assert_eq!(positions, ["1", "2", "3"]);
    let kept: i64 = Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT sum(json_array_length(entries)) FROM journal_pages WHERE run = 'r'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(kept, 3, "each entry once in the database");
}

/// A journal page swarm did not write (text that is not a JSON array of
/// entries, or entries of another run) is a corruption error naming the
/// column when the journal is read, never a short or foreign journal.
#[test]
fn a_damaged_journal_page_is_corruption() {
    use lua_swarm::store::{Journal, SqliteStore, StoreError, wait};
    use std::sync::Arc;
    let cut = |page: &str| page[..page.len() / 2].to_string();
    let foreign = |page: &str| page.replace("\"r\"", "\"q\"");
    for (name, damage) in [
        ("cut", &cut as &dyn Fn(&str) -> String),
        ("foreign", &foreign),
    ] {
        let dir = Dir::new(&format!("entry-page-{name}")).0;
        let db = dir.join("swarm.db");
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).unwrap());
        let j = Journal::new(store.clone(), "r", Vec::new());
        wait(store.append(j.entry("1", "step", "a", "h".into(), true, json!(1)))).unwrap();
        drop((j, store));
        let conn = Connection::open(&db).unwrap();
        let page: String = conn
            .query_row("SELECT entries FROM journal_pages", [], |r| r.get(0))
            .unwrap();
        conn.execute("UPDATE journal_pages SET entries = ?1", [damage(&page)])
            .unwrap();
        let store = SqliteStore::open(&db).unwrap();
        let err = wait(store.journal("r")).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{name}: {err}");
        assert!(err.to_string().contains("`entries`"), "{name}: {err}");
    }
}
