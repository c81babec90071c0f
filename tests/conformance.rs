//! The store contract (`store::conformance`) held against every store
//! this crate has: the memory store and SQLite, each check on a fresh
//! database.
//!
//! Its own harness (`harness = false` in Cargo.toml): SQLite reads its
//! lease length from `$SWARM_LEASE_MS`, which is set here before any
//! thread starts, so leases lapse in a second, not thirty. Arguments
//! that are not flags filter checks by name, as libtest's do.

use lua_swarm::store::conformance::{Backend, CHECKS, Opener};
use lua_swarm::store::{self, MemoryStore, Store};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const LEASE: Duration = Duration::from_millis(1000);

fn memory() -> Backend {
    Backend {
        name: "memory".into(),
        database: Box::new(|| {
            let s: Arc<dyn Store> = Arc::new(MemoryStore::with_lease(LEASE));
            Arc::new(move || s.clone()) as Opener
        }),
        lease: LEASE,
    }
}

/// This process's databases (several runs of this test may overlap).
fn scratch() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("conformance")
        .join(std::process::id().to_string())
}

fn sqlite() -> Backend {
    let dir = scratch();
    let _ = std::fs::remove_dir_all(&dir);
    let n = AtomicUsize::new(0);
    Backend {
        name: "sqlite".into(),
        database: Box::new(move || {
            let path = dir.join(format!("db-{}", n.fetch_add(1, Ordering::Relaxed)));
            let url = format!("sqlite:{}", path.join("swarm.db").display());
            Arc::new(move || store::open(&url).expect("opening the SQLite journal")) as Opener
        }),
        lease: LEASE,
    }
}

fn main() {
    // SAFETY: no other thread exists yet, so none reads the environment
    // while it changes.
    unsafe { std::env::set_var("SWARM_LEASE_MS", LEASE.as_millis().to_string()) };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let backends = [memory(), sqlite()];
    let wanted = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(*f));
    let names = |b: &Backend| -> Vec<String> {
        CHECKS
            .iter()
            .map(|c| format!("{}::{}", b.name, c.name))
            .collect()
    };
    if args.iter().any(|a| a == "--list") {
        for b in &backends {
            names(b)
                .iter()
                .filter(|n| wanted(n))
                .for_each(|n| println!("{n}: test"));
        }
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut failed = Vec::new();
    let mut ran = 0;
    for b in &backends {
        for c in CHECKS {
            let name = format!("{}::{}", b.name, c.name);
            if !wanted(&name) {
                continue;
            }
            ran += 1;
            let started = std::time::Instant::now();
            match rt.block_on(c.run(b)) {
                Ok(()) => println!("check {name} ... ok ({} ms)", started.elapsed().as_millis()),
                Err(e) => {
                    println!("check {name} ... FAILED\n    {e}");
                    failed.push(name);
                }
            }
        }
    }
    println!(
        "\nconformance: {} passed; {} failed",
        ran - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        println!("failed: {}", failed.join(", "));
        std::process::exit(1);
    }
    // Kept when a check failed, to look at.
    let _ = std::fs::remove_dir_all(scratch());
}
