//! The file watcher behind `swarm dev`: notify with the mini debouncer,
//! watching directories (never files, so atomic saves are seen) and passing
//! on `.lua` paths only.

use super::{LiveBlueprints, Reload, is_lua};
use notify_debouncer_mini::notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// A running watch; dropping it stops watching.
pub struct Watch {
    _debouncer: Debouncer<RecommendedWatcher>,
    pub reloads: mpsc::UnboundedReceiver<Reload>,
}

impl Watch {
    /// Watches `target` (a directory, or a file's directory) and applies
    /// every debounced change to `dev`, reporting what it did.
    pub fn start(
        dev: Arc<LiveBlueprints>,
        target: &Path,
        debounce: Duration,
    ) -> Result<Watch, String> {
        let dir = if target.is_dir() {
            target.to_path_buf()
        } else {
            target
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
        };
        let (tx, rx) = mpsc::unbounded_channel();
        // Report paths the way the user named them: relative to the current
        // directory when the watched directory was given relative.
        let cwd = (!dir.is_absolute())
            .then(|| std::env::current_dir().ok())
            .flatten();
        let handler = move |res: DebounceEventResult| match res {
            Ok(events) => {
                let paths: BTreeSet<PathBuf> = events
                    .into_iter()
                    .map(|e| match &cwd {
                        Some(c) => e
                            .path
                            .strip_prefix(c)
                            .map_or(e.path.clone(), Path::to_path_buf),
                        None => e.path,
                    })
                    .filter(|p| is_lua(p))
                    .collect();
                for p in paths {
                    for r in dev.changed(&p) {
                        let _ = tx.send(r);
                    }
                }
            }
            Err(e) => tracing::warn!(%e, "file watcher error"),
        };
        let mut debouncer =
            new_debouncer(debounce, handler).map_err(|e| format!("cannot watch: {e}"))?;
        debouncer
            .watcher()
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
        Ok(Watch {
            _debouncer: debouncer,
            reloads: rx,
        })
    }
}
