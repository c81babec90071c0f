//! Messages sent into runs, in the memory store: each run's list, in the
//! order they were taken, under the store's one lock (so numbering and the
//! check of a sender's id are one atomic step, as in a transaction).

use super::{MemoryStore, done};
use crate::engine::now_ms;
use crate::store::{MessageRecord, MessageStore, Posted, StoreFut};
use serde_json::Value;

impl MessageStore for MemoryStore {
    fn send_message(
        &self,
        run: &str,
        topic: &str,
        value: Value,
        id: Option<&str>,
    ) -> StoreFut<'static, Posted> {
        let mut st = self.lock();
        let list = st.messages.entry(run.to_string()).or_default();
        if let Some(had) = id.and_then(|id| list.iter().find(|m| m.id.as_deref() == Some(id))) {
            return done(Ok(Posted {
                seq: had.seq,
                duplicate: true,
            }));
        }
        let seq = list.last().map_or(1, |m| m.seq + 1);
        list.push(MessageRecord {
            run: run.to_string(),
            seq,
            topic: topic.to_string(),
            value,
            id: id.map(str::to_string),
            sent_ms: now_ms(),
        });
        done(Ok(Posted {
            seq,
            duplicate: false,
        }))
    }

    fn messages(
        &self,
        run: &str,
        topic: &str,
        after: u64,
        limit: usize,
    ) -> StoreFut<'static, Vec<MessageRecord>> {
        let st = self.lock();
        let found = st.messages.get(run).map_or_else(Vec::new, |list| {
            list.iter()
                .filter(|m| m.seq > after && m.topic == topic)
                .take(limit)
                .cloned()
                .collect()
        });
        done(Ok(found))
    }
}
