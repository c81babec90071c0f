//! The store contract (`store::conformance`) held against Postgres: a
//! throwaway server (`common/postgres.rs`), a fresh database per check,
//! each handle a store of its own (its own pool), as another node would
//! open it.
//!
//! Its own harness (`harness = false` in Cargo.toml), as the other
//! conformance runner: the lease length comes from `$SWARM_LEASE_MS`,
//! set here before any thread starts, and the server is stopped when
//! the checks end. Arguments that are not flags filter checks by name.

mod common;

use common::postgres::Postgres;
use lua_swarm::store;
use lua_swarm::store::conformance::{Backend, CHECKS, Opener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const LEASE: Duration = Duration::from_millis(1000);

fn postgres(pg: Arc<Postgres>) -> Backend {
    let n = AtomicUsize::new(0);
    Backend {
        name: "postgres".into(),
        database: Box::new(move || {
            let url = pg.database(&format!("check{}", n.fetch_add(1, Ordering::Relaxed)));
            Arc::new(move || store::open(&url).expect("opening the Postgres store")) as Opener
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
    let wanted = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(*f));
    if args.iter().any(|a| a == "--list") {
        for c in CHECKS {
            let name = format!("postgres::{}", c.name);
            if wanted(&name) {
                println!("{name}: test");
            }
        }
        return;
    }
    let Some(pg) = Postgres::start("conformance") else {
        return;
    };
    let backend = postgres(Arc::new(pg));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (mut ran, mut failed) = (0, Vec::new());
    for c in CHECKS {
        let name = format!("postgres::{}", c.name);
        if !wanted(&name) {
            continue;
        }
        ran += 1;
        let started = std::time::Instant::now();
        match rt.block_on(c.run(&backend)) {
            Ok(()) => println!("check {name} ... ok ({} ms)", started.elapsed().as_millis()),
            Err(e) => {
                println!("check {name} ... FAILED\n    {e}");
                failed.push(name);
            }
        }
    }
    println!(
        "\npostgres conformance: {} passed; {} failed",
        ran - failed.len(),
        failed.len()
    );
    // The server stops with the backend.
    drop(backend);
    if !failed.is_empty() {
        println!("failed: {}", failed.join(", "));
        std::process::exit(1);
    }
}
