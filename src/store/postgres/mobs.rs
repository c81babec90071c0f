//! Mobs in Postgres: a roster write is one conditional statement on its
//! version (compare and set, whichever node makes it); a conversation's
//! turns are appended under a transaction-scoped advisory lock on the
//! conversation, only at its current length.

use super::{Inner, NOW_MS, PostgresStore, json};
use crate::store::{MobRecord, MobStore, StoreError, StoreFut};
use serde_json::Value;

impl MobStore for PostgresStore {
    fn mob(&self, name: &str) -> StoreFut<'static, Option<MobRecord>> {
        let name = name.to_string();
        self.op(move |s| async move { Ok(s.load_mobs(Some(&name)).await?.into_iter().next()) })
    }

    fn put_mob(&self, name: &str, version: u64, doc: Value) -> StoreFut<'static, bool> {
        let name = name.to_string();
        self.op(move |s| async move { s.put_mob(name, version, doc).await })
    }

    fn mobs(&self) -> StoreFut<'static, Vec<MobRecord>> {
        self.op(move |s| async move { s.load_mobs(None).await })
    }

    fn turns(&self, mob: &str, convo: &str) -> StoreFut<'static, Vec<Value>> {
        let (mob, convo) = (mob.to_string(), convo.to_string());
        self.op(move |s| async move { s.load_turns(&mob, &convo).await })
    }

    fn append_turns(
        &self,
        mob: &str,
        convo: &str,
        at: u64,
        turns: Vec<Value>,
    ) -> StoreFut<'static, bool> {
        let (mob, convo) = (mob.to_string(), convo.to_string());
        self.op(move |s| async move { s.append_turns(mob, convo, at, turns).await })
    }
}

impl Inner {
    async fn load_mobs(&self, name: Option<&str>) -> Result<Vec<MobRecord>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT name, version, doc, updated_ms FROM mobs
                 WHERE $1::text IS NULL OR name = $1 ORDER BY name",
                &[&name],
            )
            .await
            .map_err(|e| self.read_error(e))?;
        rows.iter()
            .map(|r| {
                Ok(MobRecord {
                    name: r.get(0),
                    version: r.get::<_, i64>(1) as u64,
                    doc: json(self, "doc", r.get(2))?.unwrap_or(Value::Null),
                    updated_ms: r.get::<_, i64>(3) as u64,
                })
            })
            .collect()
    }

    async fn put_mob(&self, name: String, version: u64, doc: Value) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let (version, doc) = (version as i64, doc.to_string());
        let sql = if version == 0 {
            format!(
                "INSERT INTO mobs (name, version, doc, updated_ms) VALUES ($1, 1, $2, {NOW_MS})
                 ON CONFLICT (name) DO NOTHING"
            )
        } else {
            format!(
                "UPDATE mobs SET version = version + 1, doc = $2, updated_ms = {NOW_MS}
                 WHERE name = $1 AND version = $3"
            )
        };
        let n = if version == 0 {
            c.execute(&sql, &[&name, &doc]).await
        } else {
            c.execute(&sql, &[&name, &doc, &version]).await
        }
        .map_err(|e| self.write_error(e))?;
        Ok(n == 1)
    }

    async fn load_turns(&self, mob: &str, convo: &str) -> Result<Vec<Value>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT turn FROM mob_turns WHERE mob = $1 AND convo = $2 ORDER BY n",
                &[&mob, &convo],
            )
            .await
            .map_err(|e| self.read_error(e))?;
        rows.iter()
            .map(|r| Ok(json(self, "turn", r.get(0))?.unwrap_or(Value::Null)))
            .collect()
    }

    async fn append_turns(
        &self,
        mob: String,
        convo: String,
        at: u64,
        turns: Vec<Value>,
    ) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.write_error(e))?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('swarm-mob:' || $1 || '/' || $2, 0))",
            &[&mob, &convo],
        )
        .await
        .map_err(|e| self.write_error(e))?;
        let len: i64 = tx
            .query_one(
                "SELECT count(*) FROM mob_turns WHERE mob = $1 AND convo = $2",
                &[&mob, &convo],
            )
            .await
            .map_err(|e| self.write_error(e))?
            .get(0);
        if len as u64 != at {
            return Ok(false);
        }
        for (i, t) in turns.iter().enumerate() {
            tx.execute(
                "INSERT INTO mob_turns (mob, convo, n, turn) VALUES ($1, $2, $3, $4)",
                &[&mob, &convo, &(len + i as i64), &t.to_string()],
            )
            .await
            .map_err(|e| self.write_error(e))?;
        }
        tx.commit().await.map_err(|e| self.write_error(e))?;
        Ok(true)
    }
}
