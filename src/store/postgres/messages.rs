//! Messages sent into runs, in Postgres. Senders on many nodes number one
//! run's messages in turn: each send takes a transaction-scoped advisory
//! lock on the run, so the next number (the run's last plus one) is
//! taken and committed before the next sender reads it, and a reader
//! never sees number 5 before number 4 is committed.

use super::{Inner, NOW_MS, PostgresStore, json};
use crate::store::{MessageRecord, MessageStore, Posted, StoreError, StoreFut};
use serde_json::Value;

impl MessageStore for PostgresStore {
    fn send_message(
        &self,
        run: &str,
        topic: &str,
        value: Value,
        id: Option<&str>,
    ) -> StoreFut<'static, Posted> {
        let (run, topic, id) = (run.to_string(), topic.to_string(), id.map(str::to_string));
        self.op(move |s| async move { s.send_message(run, topic, value, id).await })
    }

    fn messages(
        &self,
        run: &str,
        topic: &str,
        after: u64,
        limit: usize,
    ) -> StoreFut<'static, Vec<MessageRecord>> {
        let (run, topic) = (run.to_string(), topic.to_string());
        self.op(move |s| async move { s.load_messages(&run, &topic, after, limit).await })
    }
}

impl Inner {
    async fn send_message(
        &self,
        run: String,
        topic: String,
        value: Value,
        id: Option<String>,
    ) -> Result<Posted, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.write_error(e))?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('swarm-messages:' || $1, 0))",
            &[&run],
        )
        .await
        .map_err(|e| self.write_error(e))?;
        if let Some(id) = &id {
            let had = tx
                .query_opt(
                    "SELECT seq FROM messages WHERE run = $1 AND client_id = $2",
                    &[&run, id],
                )
                .await
                .map_err(|e| self.write_error(e))?;
            if let Some(r) = had {
                tx.commit().await.map_err(|e| self.write_error(e))?;
                return Ok(Posted {
                    seq: r.get::<_, i64>(0) as u64,
                    duplicate: true,
                });
            }
        }
        let sql = format!(
            "INSERT INTO messages (run, seq, topic, value, client_id, sent_ms)
             SELECT $1, coalesce(max(seq), 0) + 1, $2, $3, $4, {NOW_MS}
             FROM messages WHERE run = $1
             RETURNING seq"
        );
        let row = tx
            .query_one(&sql, &[&run, &topic, &value.to_string(), &id])
            .await
            .map_err(|e| self.write_error(e))?;
        tx.commit().await.map_err(|e| self.write_error(e))?;
        // The run's owner, on whichever node, looks at once.
        self.notify(&c, &run).await;
        Ok(Posted {
            seq: row.get::<_, i64>(0) as u64,
            duplicate: false,
        })
    }

    async fn load_messages(
        &self,
        run: &str,
        topic: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "SELECT run, seq, topic, value, client_id, sent_ms FROM messages
                 WHERE run = $1 AND topic = $2 AND seq > $3 ORDER BY seq LIMIT $4",
            )
            .await
            .map_err(|e| self.read_error(e))?;
        let limit = limit.min(i64::MAX as usize) as i64;
        let rows = c
            .query(&stmt, &[&run, &topic, &(after as i64), &limit])
            .await
            .map_err(|e| self.read_error(e))?;
        rows.iter()
            .map(|r| {
                Ok(MessageRecord {
                    run: r.get(0),
                    seq: r.get::<_, i64>(1) as u64,
                    topic: r.get(2),
                    value: json(self, "value", r.get(3))?.unwrap_or(Value::Null),
                    id: r.get(4),
                    sent_ms: r.get::<_, i64>(5) as u64,
                })
            })
            .collect()
    }
}
