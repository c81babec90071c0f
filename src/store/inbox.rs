//! A run's inbox as one execution sees it: which of the messages sent into
//! the run its flow has received already, and a wake-up for the flow's
//! waiting `swarm.recv` when a message arrives through this process.
//!
//! A message is received when the journal entry of the `recv` that took
//! it is recorded (kind `recv`, key the topic, value `{seq, ...}`). So the
//! received set is rebuilt from the journal on resume: a replayed `recv`
//! answers with its recorded message, and a live one takes the first
//! message on its topic that no entry holds. Each message reaches the
//! flow once, in the order the store numbered them.

use super::{JournalEntry, MessageRecord};
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use tokio::sync::Notify;

/// The kind of a journal entry of `swarm.recv`.
pub const RECV: &str = "recv";

#[derive(Default)]
pub struct Inbox {
    taken: Mutex<HashMap<String, Taken>>,
    mail: Notify,
}

/// The messages of one topic taken so far: every one numbered up to
/// `below`, and those in `above`. Numbers are shared by all of a run's
/// topics, so `below` alone stalls where topics interleave; `floor` is
/// what reads of this topic have shown: every message of the topic
/// numbered up to it is taken, so a read starts after it.
#[derive(Default)]
struct Taken {
    below: u64,
    above: BTreeSet<u64>,
    floor: u64,
}

impl Taken {
    fn has(&self, seq: u64) -> bool {
        seq <= self.below || seq <= self.floor || self.above.contains(&seq)
    }

    fn add(&mut self, seq: u64) {
        self.above.insert(seq);
        while self.above.remove(&(self.below + 1)) {
            self.below += 1;
        }
    }
}

impl Inbox {
    /// The inbox of a run whose journal holds `entries`.
    pub fn from_journal(entries: &[JournalEntry]) -> Inbox {
        let inbox = Inbox::default();
        {
            let mut taken = inbox.taken.lock().unwrap_or_else(|e| e.into_inner());
            for e in entries.iter().filter(|e| e.kind == RECV) {
                if let Some(seq) = e.value.get("seq").and_then(|s| s.as_u64()) {
                    taken.entry(e.key.clone()).or_default().add(seq);
                }
            }
        }
        inbox
    }

    /// The number after which `topic`'s messages may not all have been
    /// received: where a read of the store starts.
    pub fn cursor(&self, topic: &str) -> u64 {
        let taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        taken.get(topic).map_or(0, |t| t.below.max(t.floor))
    }

    /// Takes the first of `found` (messages of `topic`, in order, read
    /// from [`Inbox::cursor`] on) not received yet, so no other `recv` of
    /// this execution takes it too.
    pub fn take(&self, topic: &str, found: Vec<MessageRecord>) -> Option<MessageRecord> {
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        let t = taken.entry(topic.to_string()).or_default();
        for m in found {
            let had = t.has(m.seq);
            // Every message of the topic before this one was taken.
            t.floor = t.floor.max(m.seq);
            if !had {
                t.add(m.seq);
                return Some(m);
            }
        }
        None
    }

    /// Tells waiting receivers that a message was sent.
    pub fn wake(&self) {
        self.mail.notify_waiters();
    }

    /// Resolves at the next [`Inbox::wake`] after it was created (create
    /// it, then read the store, then wait: no wake-up falls between).
    pub fn woken(&self) -> tokio::sync::futures::Notified<'_> {
        self.mail.notified()
    }
}
