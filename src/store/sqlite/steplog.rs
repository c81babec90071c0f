//! The step log: how a journal entry becomes durable with one `write(2)`
//! instead of one SQLite commit.
//!
//! A flow waits for each step's entry to be durable before it goes on, and
//! a SQLite commit (locks, WAL frames, index pages) cost three times the
//! step itself. So an entry is appended, checksummed, to a file of this
//! process beside the database (`swarm.db-steps-<id>`), which survives the
//! death of the process exactly as a WAL commit with `synchronous = NORMAL`
//! does, and the next SQLite transaction (the event sink commits every few
//! ms, any other write, or [`DUE`] entries) folds the pending entries into
//! the database (`entries.rs`). A file whose entries are all in SQLite is
//! deleted.
//!
//! Each file is `flock`ed by its process while open: a file nobody holds
//! is an orphan of a process that died, and whoever opens the store next
//! (or reads a run's journal) folds it in. A file still held (its process
//! alive, or another process folding it right now) is read, not folded:
//! a run taken over from a stalled owner still sees every step it made.

use crate::store::{JournalEntry, StoreError};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// Pending entries (or bytes of them) past which an append folds them in
/// itself: bounds the memory and the size of one fold's transaction.
const DUE: usize = 1024;
const DUE_BYTES: usize = 1 << 20;

/// This process's step log for one database.
pub(super) struct StepLog {
    /// `<db>-steps-`: every log file of this database starts so.
    prefix: PathBuf,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The file appends go to; opened on the first append after a fold.
    file: Option<Segment>,
    /// Files whose entries a fold took but could not commit yet.
    detached: Vec<Segment>,
    /// Entries appended and not yet committed to SQLite, oldest first.
    pending: Vec<Logged>,
    bytes: usize,
    /// Why the last fold failed, while entries are still pending.
    failed: Option<StoreError>,
}

/// One log file, locked for as long as this process may still write to it
/// or has not yet folded it.
pub(super) struct Segment {
    path: PathBuf,
    file: File,
    len: u64,
}

/// Entries taken for one fold, with the files they came from.
#[derive(Default)]
pub(super) struct Taken {
    pub entries: Vec<Logged>,
    bytes: usize,
    segments: Vec<Segment>,
}

/// Another process's log file found beside the database.
pub(super) struct Found {
    pub path: PathBuf,
    /// Locked by us: its process is gone and the entries are ours to fold.
    pub orphan: Option<File>,
    pub entries: Vec<JournalEntry>,
    /// A record failed its checksum before the end: kept for inspection.
    pub damaged: bool,
}

/// An entry as this process logged it: its record, and what a fold needs
/// to know of it without parsing the record again (a fold writes the
/// record's JSON as it is).
pub(super) struct Logged {
    pub run: String,
    pub pos: String,
    pub kind: String,
    pub tokens: u64,
    epoch: u64,
    record: String,
}

impl Logged {
    pub(super) fn new(e: JournalEntry) -> Logged {
        let record = encode(&e);
        Logged {
            run: e.run,
            pos: e.pos,
            kind: e.kind,
            tokens: e.tokens,
            epoch: e.epoch,
            record,
        }
    }

    /// The ownership epoch it was recorded under.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The entry's JSON text, as the log holds it.
    pub(super) fn json(&self) -> &str {
        &self.record[9..self.record.len() - 1]
    }

    pub(super) fn entry(&self) -> JournalEntry {
        serde_json::from_str(self.json()).expect("an entry this process wrote reads back")
    }
}

impl State {
    fn due(&self) -> bool {
        self.pending.len() >= DUE || self.bytes >= DUE_BYTES
    }
}

/// `<db>-steps-`: every log file of the database at `db` starts so.
fn prefix(db: &Path) -> PathBuf {
    let mut prefix = db.as_os_str().to_owned();
    prefix.push("-steps-");
    PathBuf::from(prefix)
}

impl StepLog {
    pub(super) fn new(db: &Path) -> StepLog {
        StepLog {
            prefix: prefix(db),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `e` durable: one append to this process's log file. Returns
    /// whether enough is pending that the caller should fold now; fails
    /// when the append failed (the entry is then not durable), or when
    /// SQLite has been refusing the folds (the entry is durable, but the
    /// run should stop until the database is writable again).
    pub(super) fn append(&self, e: JournalEntry) -> Result<bool, StoreError> {
        let logged = Logged::new(e);
        let mut st = self.state();
        if st.file.is_none() {
            st.file = Some(Segment::create(&self.prefix)?);
        }
        let seg = st.file.as_mut().expect("opened above");
        if let Err(err) = seg.append(logged.record.as_bytes()) {
            // A torn record would hide every later one: the next append
            // starts a new file; this one's whole records still fold.
            let seg = st.file.take().expect("opened above");
            st.detached.push(seg);
            return Err(err);
        }
        st.bytes += logged.record.len();
        st.pending.push(logged);
        if let Some(err) = &st.failed {
            return Err(err.clone());
        }
        Ok(st.due())
    }

    /// True when enough is pending that a leader should fold it now.
    pub(super) fn due(&self) -> bool {
        self.state().due()
    }

    /// Takes every pending entry for a fold. The next append opens a new
    /// file, so the taken files hold nothing but what this fold commits.
    pub(super) fn take(&self) -> Taken {
        let mut st = self.state();
        if st.pending.is_empty() {
            return Taken::default();
        }
        let bytes = std::mem::take(&mut st.bytes);
        let mut segments = std::mem::take(&mut st.detached);
        segments.extend(st.file.take());
        Taken {
            entries: std::mem::take(&mut st.pending),
            bytes,
            segments,
        }
    }

    /// The fold committed: its files are deleted.
    pub(super) fn folded(&self, taken: Taken) {
        self.state().failed = None;
        for seg in taken.segments {
            retire(&seg.path, seg.file, false);
        }
    }

    /// The fold failed: its entries are pending again, ahead of newer ones.
    pub(super) fn unfolded(&self, taken: Taken, why: StoreError) {
        let mut st = self.state();
        st.bytes += taken.bytes;
        let newer = std::mem::replace(&mut st.pending, taken.entries);
        st.pending.extend(newer);
        st.detached.extend(taken.segments);
        st.failed = Some(why);
    }

    /// Entries of `run` appended here and not yet in SQLite.
    pub(super) fn pending_of(&self, run: &str) -> Vec<JournalEntry> {
        let st = self.state();
        st.pending
            .iter()
            .filter(|e| e.run == run)
            .map(Logged::entry)
            .collect()
    }

    /// Every other log file of this database, read; orphans come locked.
    /// Held ones only `with_held` (their entries are of no use to a caller
    /// that is not reading a journal).
    pub(super) fn others(&self, with_held: bool) -> Vec<Found> {
        let own: Vec<PathBuf> = {
            let st = self.state();
            st.file
                .iter()
                .chain(&st.detached)
                .map(|s| s.path.clone())
                .collect()
        };
        logs(&self.prefix)
            .filter(|p| !p.to_string_lossy().ends_with(".damaged") && !own.contains(p))
            .filter_map(|p| read_other(p, with_held))
            .collect()
    }
}

/// The log files of the database whose logs are named `prefix*`, kept-aside
/// damaged ones included.
fn logs(prefix: &Path) -> impl Iterator<Item = PathBuf> {
    let dir = match prefix.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let stem = prefix.file_name().unwrap_or_default().to_owned();
    let listing = std::fs::read_dir(&dir).into_iter().flatten().flatten();
    listing.filter_map(move |entry| {
        let name = entry.file_name();
        let ours = name.as_encoded_bytes().starts_with(stem.as_encoded_bytes());
        ours.then(|| dir.join(name))
    })
}

/// Step logs of the database at `db` kept aside because a record in them
/// failed its checksum (`swarm doctor` reports them).
pub fn damaged_logs(db: &Path) -> Vec<PathBuf> {
    logs(&prefix(db))
        .filter(|p| p.to_string_lossy().ends_with(".damaged"))
        .collect()
}

impl Drop for StepLog {
    fn drop(&mut self) {
        // Files with entries still pending stay for the next process.
        let st = self.state();
        if let Some(seg) = st.file.as_ref().filter(|s| s.len == 0) {
            let _ = std::fs::remove_file(&seg.path);
        }
    }
}

impl Segment {
    /// A new file, locked before it appears under the log's name: another
    /// process never finds it unlocked and mistakes it for an orphan.
    fn create(prefix: &Path) -> Result<Segment, StoreError> {
        let mut name = prefix.as_os_str().to_owned();
        name.push(format!("{:016x}", rand::random::<u64>()));
        let path = PathBuf::from(name);
        // Hidden until locked: a dot-name no scan matches.
        let mut hidden = std::ffi::OsString::from(".");
        hidden.push(path.file_name().unwrap_or_default());
        let fresh = path.with_file_name(hidden);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&fresh)
            .and_then(|f| f.try_lock().map(|()| f).map_err(std::io::Error::from))
            .and_then(|f| std::fs::rename(&fresh, &path).map(|()| f))
            .map_err(|e| {
                let _ = std::fs::remove_file(&fresh);
                write_error(&path, &e)
            })?;
        Ok(Segment { path, file, len: 0 })
    }

    fn append(&mut self, line: &[u8]) -> Result<(), StoreError> {
        match self.file.write_all(line) {
            Ok(()) => {
                self.len += line.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.len);
                Err(write_error(&self.path, &e))
            }
        }
    }
}

/// A write that failed, named the way SQLite names its own: "full" for a
/// full disk.
fn write_error(path: &Path, e: &std::io::Error) -> StoreError {
    let message = match e.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
            format!("the disk is full ({e})")
        }
        _ => e.to_string(),
    };
    StoreError::Write {
        path: path.display().to_string(),
        message,
    }
}

/// Deletes a folded file (emptied first, so a reader that opened it
/// meanwhile finds nothing to fold twice), or keeps a damaged one aside.
pub(super) fn retire(path: &Path, file: File, damaged: bool) {
    if damaged {
        let mut aside = path.as_os_str().to_owned();
        aside.push(".damaged");
        let _ = std::fs::rename(path, aside);
    } else {
        let _ = file.set_len(0);
        let _ = std::fs::remove_file(path);
    }
    drop(file);
}

fn read_other(path: PathBuf, with_held: bool) -> Option<Found> {
    // Locked at once only when no process holds it: an orphan, ours to fold.
    let orphan = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .ok()
        .filter(|f| f.try_lock().is_ok());
    if orphan.is_none() && !with_held {
        return None;
    }
    let mut text = Vec::new();
    match &orphan {
        Some(f) => (&*f).read_to_end(&mut text).ok()?,
        None => File::open(&path).ok()?.read_to_end(&mut text).ok()?,
    };
    let (entries, damaged) = decode(&text);
    if damaged {
        tracing::warn!(path = %path.display(), "a step log record failed its checksum; the records before it are used");
    }
    Some(Found {
        path,
        orphan,
        entries,
        damaged,
    })
}

/// One record: the CRC-32 of the JSON, in hex, a space, the JSON, a newline.
/// Built in one buffer: the JSON is written after room for the checksum,
/// which is filled in last (formatting the record anew cost a third of
/// encoding the entry).
fn encode(e: &JournalEntry) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut record = Vec::with_capacity(256);
    record.extend_from_slice(b"00000000 ");
    serde_json::to_writer(&mut record, e).expect("a journal entry serialises");
    let crc = crc32fast::hash(&record[9..]);
    for (i, b) in record[..8].iter_mut().enumerate() {
        *b = HEX[(crc >> (28 - 4 * i) & 15) as usize];
    }
    record.push(b'\n');
    String::from_utf8(record).expect("serde_json writes UTF-8")
}

/// The whole records of a file, and whether one before the end was bad.
/// A last record without its newline was being written when its process
/// died or its disk filled: it was never acknowledged, and is dropped.
fn decode(text: &[u8]) -> (Vec<JournalEntry>, bool) {
    let mut entries = Vec::new();
    for line in text.split_inclusive(|b| *b == b'\n') {
        let Some(line) = line.strip_suffix(b"\n") else {
            break;
        };
        let parsed = (line.len() > 9 && line[8] == b' ')
            .then(|| {
                let crc = u32::from_str_radix(std::str::from_utf8(&line[..8]).ok()?, 16).ok()?;
                let json = &line[9..];
                (crc32fast::hash(json) == crc)
                    .then(|| serde_json::from_slice::<JournalEntry>(json).ok())
                    .flatten()
            })
            .flatten();
        match parsed {
            Some(e) => entries.push(e),
            None => return (entries, true),
        }
    }
    (entries, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(pos: &str) -> JournalEntry {
        JournalEntry {
            run: "r".into(),
            pos: pos.into(),
            kind: "step".into(),
            key: "a".into(),
            input_hash: "h".into(),
            ok: true,
            value: json!({"text": "line\nbreak", "n": 1.5}),
            attempts: 1,
            at_ms: 7,
            tokens: 0,
            epoch: 1,
            from: None,
        }
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_dropped() {
        let mut text = [encode(&entry("1")), encode(&entry("2"))]
            .concat()
            .into_bytes();
        assert_eq!(decode(&text), (vec![entry("1"), entry("2")], false));
        let third = encode(&entry("3"));
        text.extend_from_slice(&third.as_bytes()[..third.len() - 5]);
        assert_eq!(decode(&text), (vec![entry("1"), entry("2")], false));
    }

    #[test]
    fn a_flipped_byte_stops_the_read_and_is_reported() {
        let mut text = [
            encode(&entry("1")),
            encode(&entry("2")),
            encode(&entry("3")),
        ]
        .concat()
        .into_bytes();
        let second = encode(&entry("1")).len() + 20;
        text[second] ^= 0x20;
        assert_eq!(decode(&text), (vec![entry("1")], true));
    }
}
