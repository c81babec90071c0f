//! Messages sent into runs, in SQLite: one row each, numbered per run
//! inside the write transaction (writes are serialised, so the next
//! number is the run's last plus one), a sender's id checked in the same
//! transaction. Reads go to the reader connection, so a message another
//! process committed is seen at the next read.

use super::{SqliteStore, done, json};
use crate::engine::now_ms;
use crate::store::{MessageRecord, MessageStore, Posted, StoreFut};
use rusqlite::{OptionalExtension, params};
use serde_json::Value;

impl MessageStore for SqliteStore {
    fn send_message(
        &self,
        run: &str,
        topic: &str,
        value: Value,
        id: Option<&str>,
    ) -> StoreFut<'static, Posted> {
        let (run, topic, id) = (run.to_string(), topic.to_string(), id.map(str::to_string));
        let value = value.to_string();
        self.write_with(move |tx| {
            if let Some(id) = &id {
                let had = tx
                    .prepare_cached("SELECT seq FROM messages WHERE run = ?1 AND client_id = ?2")?
                    .query_row(params![run, id], |r| r.get::<_, i64>(0))
                    .optional()?;
                if let Some(seq) = had {
                    return Ok(Posted {
                        seq: seq as u64,
                        duplicate: true,
                    });
                }
            }
            let seq: i64 = tx
                .prepare_cached("SELECT coalesce(max(seq), 0) + 1 FROM messages WHERE run = ?1")?
                .query_row([&run], |r| r.get(0))?;
            tx.prepare_cached(
                "INSERT INTO messages (run, seq, topic, value, client_id, sent_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![run, seq, topic, value, id, now_ms() as i64])?;
            Ok(Posted {
                seq: seq as u64,
                duplicate: false,
            })
        })
    }

    fn messages(
        &self,
        run: &str,
        topic: &str,
        after: u64,
        limit: usize,
    ) -> StoreFut<'static, Vec<MessageRecord>> {
        done(self.read(|c| {
            c.prepare_cached(
                "SELECT run, seq, topic, value, client_id, sent_ms FROM messages
                 WHERE run = ?1 AND topic = ?2 AND seq > ?3 ORDER BY seq LIMIT ?4",
            )?
            .query_map(
                params![
                    run,
                    topic,
                    after as i64,
                    limit.min(i64::MAX as usize) as i64
                ],
                |r| {
                    Ok(MessageRecord {
                        run: r.get(0)?,
                        seq: r.get::<_, i64>(1)? as u64,
                        topic: r.get(2)?,
                        value: json(r, 3)?.unwrap_or(Value::Null),
                        id: r.get(4)?,
                        sent_ms: r.get::<_, i64>(5)? as u64,
                    })
                },
            )?
            .collect()
        }))
    }
}
