//! Mobs in SQLite: a roster is one row whose version a write must still
//! find (compare and set inside the write transaction); a conversation's
//! turns are rows numbered from 0, appended only at its current length.

use super::{SqliteStore, done, json};
use crate::engine::now_ms;
use crate::store::{MobRecord, MobStore, StoreFut};
use rusqlite::{OptionalExtension, params};
use serde_json::Value;

fn mob_row(r: &rusqlite::Row) -> rusqlite::Result<MobRecord> {
    Ok(MobRecord {
        name: r.get(0)?,
        version: r.get::<_, i64>(1)? as u64,
        doc: json(r, 2)?.unwrap_or(Value::Null),
        updated_ms: r.get::<_, i64>(3)? as u64,
    })
}

impl MobStore for SqliteStore {
    fn mob(&self, name: &str) -> StoreFut<'static, Option<MobRecord>> {
        done(self.read(|c| {
            c.prepare_cached("SELECT name, version, doc, updated_ms FROM mobs WHERE name = ?1")?
                .query_row([name], mob_row)
                .optional()
        }))
    }

    fn put_mob(&self, name: &str, version: u64, doc: Value) -> StoreFut<'static, bool> {
        let (name, doc) = (name.to_string(), doc.to_string());
        self.write_with(move |tx| {
            let now: i64 = tx
                .prepare_cached("SELECT version FROM mobs WHERE name = ?1")?
                .query_row([&name], |r| r.get(0))
                .optional()?
                .unwrap_or(0);
            if now as u64 != version {
                return Ok(false);
            }
            tx.prepare_cached(
                "INSERT INTO mobs (name, version, doc, updated_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO UPDATE SET version = ?2, doc = ?3, updated_ms = ?4",
            )?
            .execute(params![name, now + 1, doc, now_ms() as i64])?;
            Ok(true)
        })
    }

    fn mobs(&self) -> StoreFut<'static, Vec<MobRecord>> {
        done(self.read(|c| {
            c.prepare_cached("SELECT name, version, doc, updated_ms FROM mobs ORDER BY name")?
                .query_map([], mob_row)?
                .collect()
        }))
    }

    fn turns(&self, mob: &str, convo: &str) -> StoreFut<'static, Vec<Value>> {
        done(self.read(|c| {
            c.prepare_cached("SELECT turn FROM mob_turns WHERE mob = ?1 AND convo = ?2 ORDER BY n")?
                .query_map([mob, convo], |r| Ok(json(r, 0)?.unwrap_or(Value::Null)))?
                .collect()
        }))
    }

    fn append_turns(
        &self,
        mob: &str,
        convo: &str,
        at: u64,
        turns: Vec<Value>,
    ) -> StoreFut<'static, bool> {
        let (mob, convo) = (mob.to_string(), convo.to_string());
        self.write_with(move |tx| {
            let len: i64 = tx
                .prepare_cached("SELECT count(*) FROM mob_turns WHERE mob = ?1 AND convo = ?2")?
                .query_row([&mob, &convo], |r| r.get(0))?;
            if len as u64 != at {
                return Ok(false);
            }
            let mut put = tx.prepare_cached(
                "INSERT INTO mob_turns (mob, convo, n, turn) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (i, t) in turns.iter().enumerate() {
                put.execute(params![mob, convo, len + i as i64, t.to_string()])?;
            }
            Ok(true)
        })
    }
}
