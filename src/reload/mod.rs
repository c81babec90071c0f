//! Hot reload: the live versions of a directory's blueprints, kept current
//! by a file watcher.
//!
//! A blueprint here is a `.lua` file that calls `swarm.blueprint`; other
//! `.lua` files are helpers. A change is evaluated in a fresh sandbox (a
//! full `run::prepare`); on success it becomes the live version (the version
//! number goes up and the content hash — source plus every helper it
//! `require`s — changes); on failure the last good version stays live and
//! the error, with file:line, is reported. A touch that changes nothing is
//! silent. Deleting a blueprint unloads it; it loads again when the file
//! returns. Runs already going keep the version they started with: each run
//! prepares its own copy of the live source.
//!
//! The watcher (notify, with its mini debouncer) watches the directory, not
//! the files, so editors' atomic saves (write a temp file, rename it over
//! the original) are seen as a change of the original's path. inotify also
//! reports mere opens (including our own reads), so a path whose modified
//! time, size and inode are what we last saw is ignored without reading it.

mod watch;

pub use watch::Watch;

use crate::engine::{Engine, EventKind};
use crate::run::{self, Prepared, RunError, RunOptions};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One live version of a blueprint.
#[derive(Debug, Clone)]
pub struct Version {
    pub name: String,
    pub path: PathBuf,
    pub version: u64,
    /// SHA-256 of the source and every required helper, hex.
    pub hash: String,
    pub source: Arc<str>,
    pub deps: Vec<PathBuf>,
    /// The blueprint's `description`, when declared.
    pub description: Option<String>,
    /// The JSON Schema its `input` declares, if any (`run::input`).
    pub input: Option<serde_json::Value>,
}

/// What a (re)load did.
#[derive(Debug, Clone, PartialEq)]
pub enum Reload {
    Loaded {
        name: String,
        path: PathBuf,
        version: u64,
        ms: f64,
    },
    Failed {
        path: PathBuf,
        error: String,
        /// The version still live, if any.
        kept: Option<u64>,
    },
    Unloaded {
        name: String,
        path: PathBuf,
    },
}

/// The live blueprints of one watched directory.
pub struct LiveBlueprints {
    engine: Engine,
    opts: RunOptions,
    live: Mutex<BTreeMap<PathBuf, Version>>,
    /// What each path looked like when last handled: (mtime, size, inode).
    seen: Mutex<BTreeMap<PathBuf, Stamp>>,
    /// Content hash of the last failed attempt per path (not retried).
    failed: Mutex<BTreeMap<PathBuf, String>>,
}

type Stamp = (Option<std::time::SystemTime>, u64, u64);

fn stamp(p: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok(), m.len(), m.ino()))
}

/// `./a/../b.lua` → `b.lua`: one spelling per file for the live table.
fn normal(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if out.file_name().is_some() => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The `.lua` files directly in `dir`, sorted.
fn lua_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| is_lua(p));
    v.sort();
    v
}

/// The blueprint files of `dir`, as `swarm dev DIR` loads them: its `.lua`
/// files that call `swarm.blueprint` (the others are helpers).
pub fn blueprint_files(dir: &Path) -> Vec<PathBuf> {
    lua_files(dir)
        .into_iter()
        .filter(|p| std::fs::read_to_string(p).is_ok_and(|s| is_blueprint(&s)))
        .collect()
}

/// True for files that define a blueprint (rather than helpers).
pub fn is_blueprint(source: &str) -> bool {
    source.contains("swarm.blueprint")
}

fn is_lua(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "lua")
}

fn content_hash(source: &str, deps: &[PathBuf]) -> String {
    let mut h = Sha256::new();
    h.update(source.as_bytes());
    for d in deps {
        h.update(d.display().to_string().as_bytes());
        h.update(std::fs::read(d).unwrap_or_default());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl LiveBlueprints {
    pub fn new(engine: Engine, opts: RunOptions) -> LiveBlueprints {
        LiveBlueprints {
            engine,
            opts,
            live: Mutex::new(BTreeMap::new()),
            seen: Mutex::new(BTreeMap::new()),
            failed: Mutex::new(BTreeMap::new()),
        }
    }

    /// Loads every blueprint of `target` (a directory or one file).
    pub fn scan(&self, target: &Path) -> Vec<Reload> {
        let files: Vec<PathBuf> = if target.is_dir() {
            lua_files(target)
        } else {
            vec![target.to_path_buf()]
        };
        files.iter().flat_map(|f| self.changed(f)).collect()
    }

    /// Handles a change to `path` (created, written, renamed over, deleted).
    pub fn changed(&self, path: &Path) -> Vec<Reload> {
        let path = &normal(path);
        let now = stamp(path);
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if now.is_some() && seen.get(path) == now.as_ref() {
                return Vec::new();
            }
            match now {
                Some(s) => seen.insert(path.clone(), s),
                None => seen.remove(path),
            };
        }
        let mut out = Vec::new();
        let dependents: Vec<PathBuf> = self
            .lock()
            .values()
            .filter(|v| v.deps.iter().any(|d| same_file(d, path)))
            .map(|v| v.path.clone())
            .collect();
        match std::fs::read_to_string(path) {
            Err(_) => {
                if let Some(v) = self.lock().remove(path) {
                    self.engine.announce(EventKind::BlueprintUnloaded {
                        name: Arc::from(v.name.as_str()),
                    });
                    out.push(Reload::Unloaded {
                        name: v.name,
                        path: path.to_path_buf(),
                    });
                }
            }
            Ok(source) if is_blueprint(&source) => out.extend(self.load(path, &source)),
            Ok(_) => {}
        }
        for p in dependents {
            if p != *path
                && let Ok(source) = std::fs::read_to_string(&p)
            {
                out.extend(self.load(&p, &source));
            }
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<PathBuf, Version>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Evaluates `source` in a fresh sandbox; makes it live if it loads and
    /// differs from the live version. `None` when nothing changed.
    fn load(&self, path: &Path, source: &str) -> Option<Reload> {
        let started = Instant::now();
        let (kept, live_deps) = match self.lock().get(path) {
            Some(v) => (Some(v.version), v.deps.clone()),
            None => (None, Vec::new()),
        };
        let before = content_hash(source, &live_deps);
        if self.lock().get(path).is_some_and(|v| v.hash == before) {
            return None;
        }
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        if failed.get(path) == Some(&before) {
            return None;
        }
        let prepared = run::prepare_source(&self.engine, path, source, self.opts.clone());
        let run = match prepared {
            Ok(r) => r,
            Err(e) => {
                failed.insert(path.to_path_buf(), before);
                let error = e.to_string();
                self.engine.announce(EventKind::BlueprintReloadFailed {
                    path: Arc::from(path.display().to_string()),
                    error: Arc::from(error.as_str()),
                });
                return Some(Reload::Failed {
                    path: path.to_path_buf(),
                    error,
                    kept,
                });
            }
        };
        failed.remove(path);
        drop(failed);
        let deps: Vec<PathBuf> = run.required_files().iter().map(|d| normal(d)).collect();
        let hash = content_hash(source, &deps);
        let mut live = self.lock();
        if live.get(path).is_some_and(|v| v.hash == hash) {
            return None;
        }
        let version = kept.map_or(1, |v| v + 1);
        let name = run.blueprint.name.clone();
        live.insert(
            path.to_path_buf(),
            Version {
                name: name.clone(),
                path: path.to_path_buf(),
                version,
                hash: hash.clone(),
                source: Arc::from(source),
                deps,
                description: run.blueprint.description.clone(),
                input: run.blueprint.input_schema().cloned(),
            },
        );
        drop(live);
        self.engine.announce(EventKind::BlueprintLoaded {
            name: Arc::from(name.as_str()),
            version,
            hash: Arc::from(hash.as_str()),
        });
        Some(Reload::Loaded {
            name,
            path: path.to_path_buf(),
            version,
            ms: started.elapsed().as_secs_f64() * 1e3,
        })
    }

    /// The live version of the blueprint named `name`.
    pub fn live(&self, name: &str) -> Option<Version> {
        self.lock().values().find(|v| v.name == name).cloned()
    }

    /// Every live version.
    pub fn versions(&self) -> Vec<Version> {
        self.lock().values().cloned().collect()
    }

    /// A new run of the live version of `name`.
    pub fn prepare(&self, name: &str) -> Result<Prepared, RunError> {
        self.prepare_as(name, None)
    }

    /// A new run of the live version of `name`, journaled as `run_id`
    /// when given.
    pub fn prepare_as(&self, name: &str, run_id: Option<String>) -> Result<Prepared, RunError> {
        let v = self.live(name).ok_or_else(|| {
            let live = self.versions();
            RunError::UnknownBlueprint {
                name: name.to_string(),
                hint: crate::text::did_you_mean(name, live.iter().map(|v| v.name.as_str())),
            }
        })?;
        let mut opts = self.opts.clone();
        opts.run_id = run_id;
        run::prepare_source(&self.engine, &v.path, &v.source, opts)
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    normal(a) == normal(b)
}
