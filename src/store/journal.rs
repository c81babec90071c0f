//! One run's journal, as the flow sees it while it runs or replays.
//!
//! Entries recorded by an earlier process are replayed by position; new ones
//! are appended and waited for (group commit). The map of engine resume keys
//! to positions lets the senior desk match answers given with
//! `swarm answer` from another process. A fork's journal also holds what
//! it may reuse of its source's recording ([`Journal::reusing`]); a replay
//! check's journal runs nothing past its entries ([`Journal::checking`]).

use super::{Fence, JournalEntry, Lease, Lost, QuestionRecord, Store, StoreError, Taken};
use crate::engine::now_ms;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub struct Journal {
    /// Unique in this process: tells one execution's journal from the next
    /// without comparing run ids.
    id: u64,
    store: Arc<dyn Store>,
    run: String,
    /// The owner's lease: every write is fenced by it and waits for it
    /// to hold. `None` only for tools and benches that own no run.
    lease: Option<Arc<Lease>>,
    recorded: Mutex<HashMap<String, JournalEntry>>,
    asks: Mutex<HashMap<String, String>>,
    halted: Mutex<Option<(Halt, String)>>,
    /// The position the run halted at, when the halt names one.
    halted_at: Mutex<Option<String>>,
    /// A fork's source and the source's entries it may reuse, by position.
    reuse: Option<(String, Mutex<HashMap<String, JournalEntry>>)>,
    /// A replay check: a call the journal has no entry for halts the
    /// run ([`Halt::Frontier`]) instead of running.
    checking: bool,
    /// Messages sent into the run that its flow received (`inbox.rs`).
    inbox: super::Inbox,
    /// Whether a `swarm.recv` with no message waits for one (a server, a
    /// terminal, `--wait-answers`) or stops the run `waiting`.
    waits: std::sync::atomic::AtomicBool,
    /// Model tokens spent under steps still asking (see [`Journal::spent`]).
    tokens: Mutex<HashMap<String, u64>>,
}

/// A short, stable hash of a JSON value (keys are sorted by serde_json).
pub fn input_hash(v: &Value) -> String {
    // Streamed into the hasher: hashing never builds the encoded text.
    struct Hasher(Sha256);
    impl std::io::Write for Hasher {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut h = Hasher(Sha256::new());
    let _ = serde_json::to_writer(&mut h, v);
    let digest = h.0.finalize();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(16);
    for b in &digest[..8] {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
    out
}

/// Why a run's journal stopped it (the flow cannot catch either).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    /// A journal write failed (disk full, lock, I/O): resumable once fixed.
    Fault,
    /// The flow asked for something other than its journal recorded:
    /// resumable once the code is fixed or reverted.
    Diverged,
    /// Another owner took the run (or it was ended from outside): this
    /// execution stops and writes nothing more.
    Lost,
    /// A replay check reached a call its journal has no entry for:
    /// nothing past the journal runs in a check.
    Frontier,
    /// The flow waits for a message nobody here waits for (`swarm.recv`
    /// in a run that does not wait): resumable once one is sent.
    Waiting,
}

impl Halt {
    /// The run's status after it stopped this way.
    pub fn status(self) -> super::RunStatus {
        match self {
            Halt::Fault | Halt::Lost | Halt::Frontier => super::RunStatus::Interrupted,
            Halt::Diverged => super::RunStatus::Diverged,
            Halt::Waiting => super::RunStatus::Waiting,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Halt::Fault => "journal_fault",
            Halt::Diverged => "diverged",
            Halt::Lost => "run_lost",
            Halt::Frontier => "replay_frontier",
            Halt::Waiting => "message_awaited",
        }
    }
}

impl Journal {
    /// Stops the run for `why`; the first reason recorded wins.
    pub fn halt(&self, why: Halt, message: String) {
        self.halted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert((why, message));
    }

    /// [`Journal::halt`] at journal position `pos` (a divergence, a
    /// check's frontier), which [`Journal::halted_at`] then names.
    pub fn halt_at(&self, why: Halt, message: String, pos: &str) {
        let mut halted = self.halted.lock().unwrap_or_else(|e| e.into_inner());
        if halted.is_none() {
            *halted = Some((why, message));
            *self.halted_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(pos.to_string());
        }
    }

    /// Why the journal stopped the run, if it did.
    pub fn halted(&self) -> Option<(Halt, String)> {
        self.halted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The position the run halted at, when its halt named one.
    pub fn halted_at(&self) -> Option<String> {
        self.halted_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn new(store: Arc<dyn Store>, run: &str, entries: Vec<JournalEntry>) -> Journal {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Journal {
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            store,
            run: run.to_string(),
            lease: None,
            inbox: super::Inbox::from_journal(&entries),
            recorded: Mutex::new(entries.into_iter().map(|e| (e.pos.clone(), e)).collect()),
            asks: Mutex::new(HashMap::new()),
            halted: Mutex::new(None),
            halted_at: Mutex::new(None),
            reuse: None,
            checking: false,
            waits: std::sync::atomic::AtomicBool::new(true),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// A fork's journal: `entries` are what its source run `from`
    /// recorded past the fork point that a call asking the same may reuse
    /// (see [`Journal::reuse`]).
    pub fn reusing(mut self, from: &str, entries: Vec<JournalEntry>) -> Journal {
        let by_pos = entries.into_iter().map(|e| (e.pos.clone(), e)).collect();
        self.reuse = Some((from.to_string(), Mutex::new(by_pos)));
        self
    }

    /// A replay check's journal: nothing past its entries runs.
    pub fn checking(mut self) -> Journal {
        self.checking = true;
        self
    }

    /// Whether this journal belongs to a replay check.
    pub fn is_check(&self) -> bool {
        self.checking
    }

    /// The source's entry at `pos`, taken for this run, when it recorded
    /// the same call there (kind, key and request hash) and it succeeded:
    /// the caller records it ([`Journal::write`]) instead of running the
    /// call. Each is offered once.
    pub fn reuse(&self, pos: &str, kind: &str, key: &str, hash: &str) -> Option<JournalEntry> {
        let (from, entries) = self.reuse.as_ref()?;
        let mut entries = entries.lock().unwrap_or_else(|e| e.into_inner());
        let e = entries.get(pos)?;
        if !(e.ok && e.kind == kind && e.key == key && e.input_hash == hash) {
            return None;
        }
        let e = entries.remove(pos)?;
        let epoch = self.fence().map_or(0, |f| f.epoch);
        let mut taken = e.taken(&self.run, Taken::Reused, epoch);
        if let Some(o) = taken.from.as_mut() {
            o.run = from.clone();
        }
        taken.at_ms = now_ms();
        Some(taken)
    }

    /// How many entries, and bytes of their values, the run had journaled
    /// before this execution.
    /// (Read before any call replays: it counts what is still recorded.)
    pub fn loaded(&self) -> (u64, u64) {
        let recorded = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = recorded
            .values()
            .map(|e| crate::engine::size::measure(&e.value, usize::MAX).json as u64)
            .sum();
        (recorded.len() as u64, bytes)
    }

    /// The recorded entries no call has replayed yet.
    pub fn unreplayed(&self) -> Vec<JournalEntry> {
        self.recorded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Starts counting the tokens the step at `pos` spends (a mob
    /// member's turn): [`Journal::take_spent`] reads them at its end.
    pub fn count_spent(&self, pos: &str) {
        let mut by_step = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        by_step.insert(pos.to_string(), 0);
    }

    /// Counts `tokens` a model turn at `pos` (`STEP~tN`) spent, or
    /// replayed, towards its step, when that step is counted.
    pub fn spent(&self, pos: &str, tokens: u64) {
        if tokens == 0 {
            return;
        }
        let step = pos.split('~').next().unwrap_or(pos);
        let mut by_step = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = by_step.get_mut(step) {
            *n += tokens;
        }
    }

    /// The tokens counted towards the step at `pos`, forgotten here.
    pub fn take_spent(&self, pos: &str) -> u64 {
        let mut by_step = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        by_step.remove(pos).unwrap_or(0)
    }

    /// Sets whether a `swarm.recv` with no message waits for one (`true`,
    /// the default) or stops the run `waiting` for `swarm send` and
    /// `swarm resume`.
    pub fn waiting_for_messages(self, waits: bool) -> Journal {
        self.waits
            .store(waits, std::sync::atomic::Ordering::Relaxed);
        self
    }

    /// See [`Journal::waiting_for_messages`].
    pub fn waits_for_messages(&self) -> bool {
        self.waits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The messages sent into the run that its flow received.
    pub fn inbox(&self) -> &super::Inbox {
        &self.inbox
    }

    /// The journal of an owned run: writes are fenced by `lease`.
    pub fn owned(mut self, lease: Arc<Lease>) -> Journal {
        self.lease = Some(lease);
        self
    }

    pub fn run(&self) -> &str {
        &self.run
    }

    pub fn lease(&self) -> Option<&Arc<Lease>> {
        self.lease.as_ref()
    }

    /// The fence this execution's writes carry.
    pub fn fence(&self) -> Option<&Fence> {
        self.lease.as_ref().map(|l| l.fence())
    }

    /// Ok while this execution still owns the run: asked before every
    /// step is dispatched and every entry recorded. Once it is not, the
    /// run is halted as lost.
    pub async fn hold(&self) -> Result<(), Lost> {
        let Some(lease) = &self.lease else {
            return Ok(());
        };
        lease.hold().await.inspect_err(|lost| {
            self.halt(Halt::Lost, lost.message.clone());
        })
    }

    /// This journal's number, unique in the process (no two executions of
    /// a run, even of the same run id, share one).
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The entry recorded at `pos` by an earlier execution, if any. Each
    /// position is replayed once, so the entry is handed over, not copied:
    /// memory shrinks as a resumed run catches up.
    pub fn take(&self, pos: &str) -> Option<JournalEntry> {
        self.recorded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(pos)
    }

    /// Whether an earlier execution recorded a call at `pos` that has
    /// not been replayed yet.
    pub fn has(&self, pos: &str) -> bool {
        self.recorded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(pos)
    }

    /// Records a call's outcome, durably (see the step log). New entries
    /// are not kept in memory (no position is asked for twice), so a long
    /// run's memory stays flat.
    pub async fn record(
        &self,
        pos: &str,
        kind: &str,
        key: &str,
        input_hash: String,
        ok: bool,
        value: Value,
    ) -> Result<(), StoreError> {
        self.write(self.entry(pos, kind, key, input_hash, ok, value))
            .await
    }

    /// A new entry of this run, to adjust before [`Journal::write`].
    pub fn entry(
        &self,
        pos: &str,
        kind: &str,
        key: &str,
        input_hash: String,
        ok: bool,
        value: Value,
    ) -> JournalEntry {
        JournalEntry {
            run: self.run.clone(),
            pos: pos.to_string(),
            kind: kind.to_string(),
            key: key.to_string(),
            input_hash,
            ok,
            value,
            attempts: 1,
            at_ms: now_ms(),
            tokens: 0,
            epoch: self.fence().map_or(0, |f| f.epoch),
            from: None,
        }
    }

    /// Writes `entry` durably: the step log holds it when this returns.
    /// Refused, and the run halted as lost, once this execution no longer
    /// owns the run.
    pub async fn write(&self, entry: JournalEntry) -> Result<(), StoreError> {
        self.held().await?;
        self.store
            .append(entry)
            .await
            .inspect_err(|e| self.lost_if_fenced(e))
    }

    /// Records a question the run asks, fenced like every owner write.
    pub async fn ask(&self, q: QuestionRecord) -> Result<(), StoreError> {
        self.held().await?;
        self.store
            .ask(q, self.fence())
            .await
            .inspect_err(|e| self.lost_if_fenced(e))
    }

    /// [`Journal::hold`] before an owner write: a lost run's write is
    /// refused as fenced, never attempted.
    async fn held(&self) -> Result<(), StoreError> {
        self.hold().await.map_err(|_| StoreError::Fenced {
            run: self.run.clone(),
            epoch: self.fence().map_or(0, |f| f.epoch),
        })
    }

    /// A refused write means another ownership holds the run.
    fn lost_if_fenced(&self, e: &StoreError) {
        if let (StoreError::Fenced { .. }, Some(lease)) = (e, &self.lease) {
            let lost = lease.lose(format!("{e}; stopped"));
            self.halt(Halt::Lost, lost.message);
        }
    }

    /// Remembers that engine resume key `key` is the question at `pos`.
    pub fn asked(&self, key: &str, pos: &str) {
        self.asks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), pos.to_string());
    }

    /// The position of the question behind engine resume key `key`.
    pub fn position_of(&self, key: &str) -> Option<String> {
        self.asks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }
}
