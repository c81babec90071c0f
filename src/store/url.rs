//! Which store a URL names, and opening it: `sqlite:PATH` (a bare path
//! is one too), `memory:`, or `postgres://…` (`postgresql://…`). Parsed once into a [`Location`]; every
//! face opens its store through it, so none constructs a backend itself.
//!
//! What only SQLite has (a file to measure, `swarm doctor`'s integrity
//! check, step logs kept aside as damaged) is reached through
//! [`Location::sqlite_path`] and [`checkup`], typed as SQLite's, never
//! by constructing the SQLite store in a face.

use super::{MemoryStore, SqliteStore, Store, StoreError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The schemes [`open`] knows, as its errors list them.
#[cfg(feature = "postgres")]
pub const SCHEMES: &str =
    "`sqlite:PATH` (or a bare path), `memory:` and `postgres://user@host:port/db`";
#[cfg(not(feature = "postgres"))]
pub const SCHEMES: &str = "`sqlite:PATH` (or a bare path) and `memory:`";

/// Where a store lives.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite journal file (created, with its directory, when missing).
    Sqlite(PathBuf),
    /// This process's memory: gone when it exits.
    Memory,
    /// A Postgres database many nodes share: the URL as given (it may
    /// hold a password: shown only through `Display`, which drops it).
    #[cfg(feature = "postgres")]
    Postgres(String),
}

impl Location {
    /// Reads a store URL: `sqlite:PATH`, `memory:`, or a bare path (one
    /// whose text does not start `scheme:`). Anything else is refused
    /// with [`StoreError::Unsupported`], naming the schemes there are.
    pub fn parse(url: &str) -> Result<Location, StoreError> {
        let unsupported = |why: &str| StoreError::Unsupported {
            url: url.to_string(),
            message: why.to_string(),
        };
        let Some((scheme, rest)) = scheme(url) else {
            if url.is_empty() {
                return Err(unsupported("it is empty"));
            }
            return Ok(Location::Sqlite(PathBuf::from(url)));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" if rest.is_empty() => Err(unsupported("`sqlite:` needs a file path after it")),
            "sqlite" => Ok(Location::Sqlite(PathBuf::from(rest))),
            "memory" if rest.is_empty() => Ok(Location::Memory),
            "memory" => Err(unsupported("`memory:` takes nothing after it")),
            #[cfg(feature = "postgres")]
            "postgres" | "postgresql" => Ok(Location::Postgres(url.to_string())),
            other => Err(unsupported(&format!("no `{other}` store is built in"))),
        }
    }

    /// Opens the store (a new, empty one for `memory:`).
    pub fn open(&self) -> Result<Arc<dyn Store>, StoreError> {
        Ok(match self {
            Location::Sqlite(path) => Arc::new(SqliteStore::open(path)?),
            Location::Memory => Arc::new(MemoryStore::new()),
            #[cfg(feature = "postgres")]
            Location::Postgres(url) => Arc::new(super::PostgresStore::open(url)?),
        })
    }

    /// Opens the store for commands that mostly read (`runs`, `show`):
    /// as [`Location::open`], except that a SQLite file that cannot be
    /// written (read-only media or mount) opens read-only, every write
    /// then failing with a clear error. The flag says it did.
    pub fn open_for_reading(&self) -> Result<(Arc<dyn Store>, bool), StoreError> {
        match self {
            Location::Sqlite(path) => {
                let store = SqliteStore::open_for_reading(path)?;
                let read_only = store.read_only();
                Ok((Arc::new(store), read_only))
            }
            Location::Memory => Ok((self.open()?, false)),
            #[cfg(feature = "postgres")]
            Location::Postgres(_) => Ok((self.open()?, false)),
        }
    }

    /// The SQLite file, when the store is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Location::Sqlite(path) => Some(path),
            _ => None,
        }
    }
}

/// As [`Display`](std::fmt::Display) for a Postgres URL: a password in it
/// is never printed, not even in a debug dump.
impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Location::Memory => f.write_str("Memory"),
            #[cfg(feature = "postgres")]
            Location::Postgres(_) => write!(f, "Postgres({self})"),
        }
    }
}

impl std::fmt::Display for Location {
    /// A SQLite journal as its path (what messages always named), else
    /// its URL.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "{}", path.display()),
            Location::Memory => f.write_str("memory:"),
            #[cfg(feature = "postgres")]
            Location::Postgres(url) => match super::postgres::config::parse(url) {
                Ok(c) => f.write_str(&super::postgres::redacted(&c)),
                Err(_) => f.write_str("postgres://…"),
            },
        }
    }
}

/// `scheme` and the rest of `url` when it starts with one (a letter,
/// then letters, digits, `+`, `-` or `.`, then `:`), as in RFC 3986. A
/// path such as `./a:b` or `data/a:b` has none.
fn scheme(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    let ok = first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    ok.then_some((scheme, rest))
}

/// Opens the store `url` names (see [`Location::parse`]).
pub fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    Location::parse(url)?.open()
}

/// The SQLite file `url` names; `None` for a store that is not SQLite.
pub fn sqlite_path_of(url: &str) -> Result<Option<PathBuf>, StoreError> {
    Ok(Location::parse(url)?.sqlite_path().map(Path::to_path_buf))
}

/// A SQLite journal opened for `swarm doctor`: through the contract, and
/// what only SQLite can say about its file.
pub struct Checkup {
    pub store: Arc<dyn Store>,
    /// SQLite's own verdict (`PRAGMA integrity_check`): `["ok"]` or the
    /// problems it found.
    pub integrity: Result<Vec<String>, StoreError>,
}

/// Opens the SQLite journal at `path` and checks its file.
pub fn checkup(path: &Path) -> Result<Checkup, StoreError> {
    let store = SqliteStore::open(path)?;
    let integrity = store.integrity();
    Ok(Checkup {
        store: Arc::new(store),
        integrity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_sqlite_files_or_memory_and_nothing_else() {
        let sqlite = |p: &str| Some(Location::Sqlite(PathBuf::from(p)));
        let parse = |url: &str| Location::parse(url).ok();
        assert_eq!(parse("sqlite:.swarm/swarm.db"), sqlite(".swarm/swarm.db"));
        assert_eq!(parse("sqlite:/var/x.db"), sqlite("/var/x.db"));
        assert_eq!(parse("SQLite:x.db"), sqlite("x.db"));
        assert_eq!(parse("x.db"), sqlite("x.db"));
        assert_eq!(parse("./a:b.db"), sqlite("./a:b.db"));
        assert_eq!(parse("data/a:b.db"), sqlite("data/a:b.db"));
        assert_eq!(parse("memory:"), Some(Location::Memory));
        for bad in ["foo:", "memory:x", "sqlite:", ""] {
            let e = Location::parse(bad).unwrap_err();
            assert_eq!(e.code(), "store_unsupported", "{bad}");
            let text = e.to_string();
            assert!(
                text.contains("sqlite:PATH") && text.contains("memory:"),
                "{text}"
            );
        }
        let e = Location::parse("mysql://h/db").unwrap_err().to_string();
        assert!(e.contains("mysql://h/db") && e.contains("`mysql`"), "{e}");
        #[cfg(feature = "postgres")]
        for url in ["postgres://h/db", "postgresql://u:pw@h:5433/db"] {
            assert_eq!(parse(url), Some(Location::Postgres(url.into())));
            let at = Location::Postgres(url.into());
            let shown = format!("{at} {at:?}");
            assert!(!shown.contains("pw"), "{shown}");
        }
    }
}
