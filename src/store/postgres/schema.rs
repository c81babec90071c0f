//! The Postgres schema and its migrations, made by `swarm` itself.
//!
//! Versioned in the table `swarm_schema`: migration N takes a database
//! from version N-1 to N. Every node opening the database migrates under
//! one transaction-scoped advisory lock, so of several nodes starting
//! together one migrates and the others find it done. A database newer
//! than this binary is refused rather than guessed at.

use tokio_postgres::Client;

/// The advisory lock key every `swarm` takes to migrate ("SWARM" in ASCII).
const LOCK: i64 = 0x53_57_41_52_4d;

const MIGRATIONS: &[&str] = &[
    // 1: runs with their owner and lease (times in ms on the database's
    // clock), journal entries and events by the page (a row per run per
    // group commit), each run's last event id, questions, and the
    // remote-step work queue with the claims that ended.
    r#"
    CREATE TABLE runs (
        id              text PRIMARY KEY,
        blueprint       text NOT NULL,
        path            text NOT NULL,
        hash            text NOT NULL,
        input           text NOT NULL,
        status          text NOT NULL,
        result          text,
        pid             int8,
        cancel_requested bool NOT NULL DEFAULT false,
        created_ms      int8 NOT NULL,
        updated_ms      int8 NOT NULL,
        owner           text,
        owner_host      text,
        owner_machine   text,
        owned_since_ms  int8,
        lease_until_ms  int8,
        helpers         text,
        epoch           int8 NOT NULL
    );
    CREATE INDEX runs_status ON runs (status, created_ms, id);
    CREATE INDEX runs_created ON runs (created_ms, id);
    CREATE INDEX runs_updated ON runs (updated_ms);
    CREATE TABLE journal_pages (
        id              bigserial PRIMARY KEY,
        run             text NOT NULL,
        steps           int8 NOT NULL,
        tokens          int8 NOT NULL,
        entries         text NOT NULL
    );
    CREATE INDEX journal_pages_run ON journal_pages (run, id);
    CREATE TABLE event_heads (
        run             text PRIMARY KEY,
        last            int8 NOT NULL
    );
    CREATE TABLE event_pages (
        run             text NOT NULL,
        first           int8 NOT NULL,
        last            int8 NOT NULL,
        kinds           text NOT NULL,
        payload         text NOT NULL,
        PRIMARY KEY (run, first)
    );
    CREATE TABLE questions (
        run             text NOT NULL,
        pos             text NOT NULL,
        name            text NOT NULL,
        question        text NOT NULL,
        answer          text,
        asked_ms        int8 NOT NULL,
        answered_ms     int8,
        seq             bigserial,
        PRIMARY KEY (run, pos)
    );
    CREATE TABLE work (
        id              bigserial PRIMARY KEY,
        queue           text NOT NULL,
        run             text,
        task            int8 NOT NULL,
        attempt         int8 NOT NULL,
        agent           text NOT NULL,
        input           text NOT NULL,
        profile         text NOT NULL,
        state           text NOT NULL,
        claim           text UNIQUE,
        claim_until_ms  int8,
        expiries        int8 NOT NULL DEFAULT 0,
        ok              bool,
        value           text,
        created_ms      int8 NOT NULL
    );
    CREATE INDEX work_queued ON work (queue, state, id);
    CREATE TABLE work_ended (
        claim           text PRIMARY KEY,
        why             text NOT NULL,
        ended_ms        int8 NOT NULL
    );
    "#,
    // 2: the run a fork was made from (`store::ForkOf` as JSON).
    r#"
    ALTER TABLE runs ADD COLUMN fork text;
    "#,
    // 3: messages sent into runs (`postgres/messages.rs`), numbered per
    // run; a sender's id is unique per run.
    r#"
    CREATE TABLE messages (
        run             text NOT NULL,
        seq             int8 NOT NULL,
        topic           text NOT NULL,
        value           text NOT NULL,
        client_id       text,
        sent_ms         int8 NOT NULL,
        PRIMARY KEY (run, seq)
    );
    CREATE INDEX messages_topic ON messages (run, topic, seq);
    CREATE UNIQUE INDEX messages_client ON messages (run, client_id) WHERE client_id IS NOT NULL;
    "#,
    // 4: mobs (`postgres/mobs.rs`): each roster one versioned document,
    // each member's conversation a turn per row.
    r#"
    CREATE TABLE mobs (
        name            text PRIMARY KEY,
        version         int8 NOT NULL,
        doc             text NOT NULL,
        updated_ms      int8 NOT NULL
    );
    CREATE TABLE mob_turns (
        mob             text NOT NULL,
        convo           text NOT NULL,
        n               int8 NOT NULL,
        turn            text NOT NULL,
        PRIMARY KEY (mob, convo, n)
    );
    "#,
];

/// The schema version this binary writes.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Why migrating failed.
#[derive(Debug)]
pub enum MigrateError {
    Sql(tokio_postgres::Error),
    /// The database was migrated by a newer `swarm`.
    Newer(i64),
}

impl From<tokio_postgres::Error> for MigrateError {
    fn from(e: tokio_postgres::Error) -> Self {
        MigrateError::Sql(e)
    }
}

/// Brings the database up to [`VERSION`], once among all nodes.
pub async fn migrate(client: &mut Client) -> Result<(), MigrateError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS swarm_schema (version int8 NOT NULL)")
        .await?;
    let current: i64 = tx
        .query_opt("SELECT version FROM swarm_schema", &[])
        .await?
        .map_or(0, |r| r.get(0));
    if current > VERSION {
        return Err(MigrateError::Newer(current));
    }
    if current == VERSION {
        return Ok(tx.commit().await?);
    }
    for sql in MIGRATIONS.iter().skip(current as usize) {
        tx.batch_execute(sql).await?;
    }
    tx.execute("DELETE FROM swarm_schema", &[]).await?;
    tx.execute(
        "INSERT INTO swarm_schema (version) VALUES ($1)",
        &[&VERSION],
    )
    .await?;
    Ok(tx.commit().await?)
}
