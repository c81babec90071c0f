//! Mobs in the memory store: each roster with its version, each
//! conversation a list; a write checks and writes under the one lock.

use super::{MemoryStore, done};
use crate::engine::now_ms;
use crate::store::{MobRecord, MobStore, StoreFut};
use serde_json::Value;

impl MobStore for MemoryStore {
    fn mob(&self, name: &str) -> StoreFut<'static, Option<MobRecord>> {
        done(Ok(self.lock().mobs.get(name).cloned()))
    }

    fn put_mob(&self, name: &str, version: u64, doc: Value) -> StoreFut<'static, bool> {
        let mut st = self.lock();
        let now = st.mobs.get(name).map_or(0, |m| m.version);
        if now != version {
            return done(Ok(false));
        }
        st.mobs.insert(
            name.to_string(),
            MobRecord {
                name: name.to_string(),
                version: version + 1,
                doc,
                updated_ms: now_ms(),
            },
        );
        done(Ok(true))
    }

    fn mobs(&self) -> StoreFut<'static, Vec<MobRecord>> {
        let mut all: Vec<MobRecord> = self.lock().mobs.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        done(Ok(all))
    }

    fn turns(&self, mob: &str, convo: &str) -> StoreFut<'static, Vec<Value>> {
        let key = (mob.to_string(), convo.to_string());
        done(Ok(self.lock().turns.get(&key).cloned().unwrap_or_default()))
    }

    fn append_turns(
        &self,
        mob: &str,
        convo: &str,
        at: u64,
        turns: Vec<Value>,
    ) -> StoreFut<'static, bool> {
        let mut st = self.lock();
        let list = st
            .turns
            .entry((mob.to_string(), convo.to_string()))
            .or_default();
        if list.len() as u64 != at {
            return done(Ok(false));
        }
        list.extend(turns);
        done(Ok(true))
    }
}
