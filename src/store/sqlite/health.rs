//! The journal file's health: the damage marker that keeps every process
//! from writing to a file SQLite reported corrupt, SQLite's integrity
//! verdict, and read-only opening where the file cannot be written.

use super::SqliteStore;
use crate::store::StoreError;
use rusqlite::Connection;
use std::path::{Path, PathBuf};

/// The marker left beside a journal SQLite reported corrupt: every later
/// process refuses to write to it until someone deals with it (see
/// `swarm doctor`).
pub fn damage_marker(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".damaged");
    PathBuf::from(name)
}

impl SqliteStore {
    /// Opens the journal for commands that mostly read (`runs`, `show`,
    /// `doctor`): as [`SqliteStore::open`], or, when the file or its
    /// directory cannot be written (read-only media, a read-only mount),
    /// read-only; every write then fails with a clear error.
    pub fn open_for_reading(path: &Path) -> Result<SqliteStore, StoreError> {
        let err = match SqliteStore::open(path) {
            Ok(s) => return Ok(s),
            Err(e @ StoreError::Corrupt { .. }) => return Err(e),
            Err(e) => e,
        };
        if !path.is_file() {
            return Err(err);
        }
        let ro = |uri: String| {
            let flags =
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI;
            Connection::open_with_flags(uri, flags).and_then(|c| {
                c.query_row("SELECT count(*) FROM runs", [], |_| Ok(()))?;
                Ok(c)
            })
        };
        let uri = format!("file:{}?mode=ro", path.display());
        let open = |u: &str| -> Option<(Connection, Connection)> {
            Some((ro(u.to_string()).ok()?, ro(u.to_string()).ok()?))
        };
        // With no -shm beside it and no way to create one, only an
        // `immutable` open can read a WAL database.
        let Some((writer, reader)) = open(&uri).or_else(|| open(&format!("{uri}&immutable=1")))
        else {
            return Err(err);
        };
        let store = SqliteStore::new(path, writer, reader);
        let _ = store.writes.corrupt.set(StoreError::Write {
            path: path.display().to_string(),
            message: format!("the journal is read-only here ({err})"),
        });
        Ok(store)
    }

    /// True when this store cannot be written (see `open_for_reading`).
    pub fn read_only(&self) -> bool {
        matches!(self.writes.corrupt.get(), Some(StoreError::Write { .. }))
    }

    /// SQLite's own verdict on the file (`PRAGMA integrity_check`): `["ok"]`
    /// or the problems it found.
    pub fn integrity(&self) -> Result<Vec<String>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare("PRAGMA integrity_check")?;
            stmt.query_map([], |r| r.get::<_, String>(0))?.collect()
        })
    }
}
