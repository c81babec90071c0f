//! The journal's schema and its migrations.
//!
//! One schema, versioned with `PRAGMA user_version`: migration N takes a
//! database from version N-1 to N, inside one transaction. A database newer
//! than this binary is refused rather than guessed at.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    // 1: runs, the step journal, persisted events, senior questions.
    r#"
    CREATE TABLE runs (
        id          TEXT PRIMARY KEY,
        blueprint   TEXT NOT NULL,
        path        TEXT NOT NULL,
        hash        TEXT NOT NULL,
        input       TEXT NOT NULL,
        status      TEXT NOT NULL,
        result      TEXT,
        pid         INTEGER,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        created_ms  INTEGER NOT NULL,
        updated_ms  INTEGER NOT NULL
    );
    CREATE INDEX runs_status ON runs(status);
    CREATE TABLE journal (
        run         TEXT NOT NULL,
        pos         TEXT NOT NULL,
        kind        TEXT NOT NULL,
        key         TEXT NOT NULL,
        input_hash  TEXT NOT NULL,
        ok          INTEGER NOT NULL,
        value       TEXT NOT NULL,
        attempts    INTEGER NOT NULL,
        at_ms       INTEGER NOT NULL,
        PRIMARY KEY (run, pos)
    ) WITHOUT ROWID;
    CREATE TABLE events (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        run         TEXT NOT NULL,
        kind        TEXT NOT NULL,
        payload     TEXT NOT NULL
    );
    CREATE INDEX events_run ON events(run, id);
    CREATE TABLE questions (
        run         TEXT NOT NULL,
        pos         TEXT NOT NULL,
        name        TEXT NOT NULL,
        question    TEXT NOT NULL,
        answer      TEXT,
        asked_ms    INTEGER NOT NULL,
        answered_ms INTEGER,
        PRIMARY KEY (run, pos)
    ) WITHOUT ROWID;
    "#,
    // 2: one owner per run, with a lease renewed while it executes.
    r#"
    ALTER TABLE runs ADD COLUMN owner TEXT;
    ALTER TABLE runs ADD COLUMN owner_host TEXT;
    ALTER TABLE runs ADD COLUMN owned_since_ms INTEGER;
    ALTER TABLE runs ADD COLUMN lease_until_ms INTEGER;
    ALTER TABLE runs ADD COLUMN owner_machine TEXT;
    ALTER TABLE runs ADD COLUMN helpers TEXT;
    "#,
    // 3: model tokens spent, per journal entry and per run.
    r#"
    ALTER TABLE journal ADD COLUMN tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN tokens INTEGER NOT NULL DEFAULT 0;
    "#,
    // 4: events kept by the page: one row per run per batch written (a
    // row per event cost more than the event). Ids stay per-run cursors:
    // page events are `first..=last`; old rows become pages of one, so
    // their ids (a client's last-seen cursor) still mean the same event.
    // Pages are large rows, so they live in a rowid table, found through
    // an index that alone answers which pages hold which ids.
    r#"
    CREATE TABLE event_pages (
        id          INTEGER PRIMARY KEY,
        run         TEXT NOT NULL,
        first       INTEGER NOT NULL,
        last        INTEGER NOT NULL,
        kinds       TEXT NOT NULL,
        payload     TEXT NOT NULL
    );
    CREATE INDEX event_pages_run ON event_pages(run, first, last);
    INSERT INTO event_pages (run, first, last, kinds, payload)
        SELECT run, id, id, '[' || json_quote(kind) || ']', '[' || payload || ']' FROM events
        ORDER BY id;
    DROP TABLE events;
    "#,
    // 5: journal entries kept by the page, as events are: one row per run
    // per fold of the step log (`sqlite/entries.rs`). `steps` counts the
    // entries that are steps, so listing runs parses no page.
    r#"
    CREATE TABLE journal_pages (
        id          INTEGER PRIMARY KEY,
        run         TEXT NOT NULL,
        steps       INTEGER NOT NULL,
        entries     TEXT NOT NULL
    );
    CREATE INDEX journal_pages_run ON journal_pages(run, id);
    INSERT INTO journal_pages (run, steps, entries)
        SELECT run, sum(kind NOT IN ('llm_turn', 'llm_tool')),
               json_group_array(json_object(
                   'run', run, 'pos', pos, 'kind', kind, 'key', key,
                   'input_hash', input_hash, 'ok', json(iif(ok, 'true', 'false')),
                   'value', json(value), 'attempts', attempts, 'at_ms', at_ms,
                   'tokens', tokens))
        FROM journal GROUP BY run;
    DROP TABLE journal;
    "#,
    // 6: fenced ownership on one clock. `epoch` grows at every takeover;
    // a lease ends at `lease_until_boot` on the boot clock of boot
    // `lease_boot` (`store/clock.rs`); `lease_until_ms` stays, for people.
    r#"
    ALTER TABLE runs ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN lease_boot TEXT;
    ALTER TABLE runs ADD COLUMN lease_until_boot INTEGER;
    "#,
    // 7: the remote-step work queue (`sqlite/work.rs`), shared by every
    // server on this journal, and the claims that ended (for an hour).
    r#"
    CREATE TABLE work (
        id          INTEGER PRIMARY KEY,
        queue       TEXT NOT NULL,
        run         TEXT,
        task        INTEGER NOT NULL,
        attempt     INTEGER NOT NULL,
        agent       TEXT NOT NULL,
        input       TEXT NOT NULL,
        profile     TEXT NOT NULL,
        state       TEXT NOT NULL,
        claim       TEXT UNIQUE,
        lease_boot  TEXT,
        claim_until_boot INTEGER,
        expiries    INTEGER NOT NULL,
        ok          INTEGER,
        value       TEXT,
        created_ms  INTEGER NOT NULL
    );
    CREATE INDEX work_queued ON work(queue, state, id);
    CREATE TABLE work_ended (
        claim       TEXT PRIMARY KEY,
        why         TEXT NOT NULL,
        ended_ms    INTEGER NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 8: the run a fork was made from (`store::ForkOf` as JSON).
    r#"
    ALTER TABLE runs ADD COLUMN fork TEXT;
    "#,
    // 9: messages sent into runs (`sqlite/messages.rs`), numbered per run;
    // a sender's id is unique per run, so a retried send adds nothing.
    r#"
    CREATE TABLE messages (
        run         TEXT NOT NULL,
        seq         INTEGER NOT NULL,
        topic       TEXT NOT NULL,
        value       TEXT NOT NULL,
        client_id   TEXT,
        sent_ms     INTEGER NOT NULL,
        PRIMARY KEY (run, seq)
    ) WITHOUT ROWID;
    CREATE INDEX messages_topic ON messages(run, topic, seq);
    CREATE UNIQUE INDEX messages_client ON messages(run, client_id) WHERE client_id IS NOT NULL;
    "#,
    // 10: mobs (`sqlite/mobs.rs`): each roster one versioned document, and
    // each member's conversation a turn per row.
    r#"
    CREATE TABLE mobs (
        name        TEXT PRIMARY KEY,
        version     INTEGER NOT NULL,
        doc         TEXT NOT NULL,
        updated_ms  INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE mob_turns (
        mob         TEXT NOT NULL,
        convo       TEXT NOT NULL,
        n           INTEGER NOT NULL,
        turn        TEXT NOT NULL,
        PRIMARY KEY (mob, convo, n)
    ) WITHOUT ROWID;
    "#,
];

/// The schema version this binary writes.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Why migrating failed: SQLite said no (classified by its error code by
/// the caller), or the file is newer than this binary.
#[derive(Debug)]
pub enum MigrateError {
    Sql(rusqlite::Error),
    Newer(i64),
}

impl From<rusqlite::Error> for MigrateError {
    fn from(e: rusqlite::Error) -> Self {
        MigrateError::Sql(e)
    }
}

fn version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// Brings `conn` up to [`VERSION`]. Several processes may open a new
/// database at once: the version is re-read inside an IMMEDIATE transaction
/// (the write lock), so exactly one of them migrates.
pub fn migrate(conn: &mut Connection) -> Result<(), MigrateError> {
    if version(conn)? == VERSION {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let current = version(&tx)?;
    if current > VERSION {
        return Err(MigrateError::Newer(current));
    }
    for sql in MIGRATIONS.iter().skip(current as usize) {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", VERSION)?;
    Ok(tx.commit()?)
}
