//! How SQLite's failures become [`StoreError`]s that name the file and
//! what is wrong with it: the one classifier of `rusqlite` errors, and the
//! words for a journal directory that cannot be made.

use super::busy;
use crate::store::StoreError;
use rusqlite::ErrorCode;
use std::path::Path;

/// `e`, from reading (or, with `write`, writing) the journal at `path`, as
/// the store error it is.
pub(super) fn classify(path: &Path, e: &rusqlite::Error, write: bool) -> StoreError {
    let path = path.display().to_string();
    // Every column swarm reads was written by swarm with its type and is
    // NOT NULL where read as a value: a row that reads otherwise is a
    // damaged page SQLite itself did not notice (the file is treated as
    // corrupt: `swarm doctor` names the damage).
    let why = match e {
        rusqlite::Error::InvalidColumnType(_, column, kind) => {
            Some(format!("column `{column}` holds {kind}"))
        }
        rusqlite::Error::FromSqlConversionFailure(_, _, why) => Some(why.to_string()),
        _ => None,
    };
    if let Some(why) = why {
        return StoreError::Corrupt {
            path,
            message: format!("a row is not what swarm wrote: {why}"),
        };
    }
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            path,
            message: e.to_string(),
        },
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => StoreError::Locked {
            path,
            ms: busy().as_millis() as u64,
        },
        Some(ErrorCode::ConstraintViolation) if write => StoreError::Exists {
            path,
            message: e.to_string(),
        },
        _ if write => StoreError::Write {
            path,
            message: e.to_string(),
        },
        _ => StoreError::Read {
            path,
            message: e.to_string(),
        },
    }
}

/// Why the journal's directory `dir` could not be made, in words: an
/// ancestor that is a file is named as such (the OS says only "File
/// exists").
pub(super) fn dir_error(dir: &Path, e: &std::io::Error) -> String {
    let file = dir
        .ancestors()
        .find(|a| std::fs::metadata(a).is_ok_and(|m| !m.is_dir()));
    match file {
        Some(f) => format!(
            "cannot create the directory {}: {} is a file, not a directory",
            dir.display(),
            f.display()
        ),
        None => format!("cannot create the directory {}: {e}", dir.display()),
    }
}
