//! `swarm doctor`: is the SQLite journal (or the Postgres database)
//! healthy, and what to do if not.
//!
//! Checks SQLite's integrity verdict, the damage marker, runs left running
//! by an owner whose lease has lapsed, step logs kept aside as damaged,
//! and the file's size; prints each
//! finding with a suggested action. Exit 0 when all is well, 1 otherwise.
//! It writes nothing, except the damage marker when it finds damage (so
//! no later process writes into a damaged file).

use super::Db;
use crate::engine::now_ms;
use crate::store::{Checkup, RunStatus, Store, StoreError, checkup, damage_marker, damaged_logs};
use clap::Args;
use std::process::ExitCode;

#[derive(Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    journal: Db,
}

pub fn run(args: DoctorArgs) -> ExitCode {
    let at = match args.journal.resolve(false) {
        Ok(at) => at,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // A shared database: reachable, migrated, and its runs.
    #[cfg(feature = "postgres")]
    if let crate::store::Location::Postgres(_) = at {
        return shared(&at);
    }
    // What the doctor examines is SQLite's file and what lies beside it.
    let Some(path) = at.sqlite_path().map(|p| p.to_path_buf()) else {
        errln!("error: `swarm doctor` checks a SQLite journal file; the store {at} has none");
        return ExitCode::from(2);
    };
    let size = |suffix: &str| {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        std::fs::metadata(p).map_or(0, |m| m.len())
    };
    let bytes = size("") + size("-wal");
    outln!(
        "journal    {} ({} KiB with its WAL)",
        path.display(),
        bytes / 1024
    );
    let mut problems = 0;
    let marker = damage_marker(&path);
    if let Ok(why) = std::fs::read_to_string(&marker) {
        problems += 1;
        outln!("damaged    {} (marker {})", why.trim(), marker.display());
    }
    let Checkup { store, integrity } = match checkup(&path) {
        Ok(c) => c,
        Err(e @ StoreError::Corrupt { .. }) => {
            if problems == 0 {
                outln!("damaged    {e}");
            }
            advise_damaged(&path);
            return ExitCode::from(1);
        }
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match integrity {
        Ok(v) if v == ["ok"] => outln!("integrity  ok"),
        Ok(v) => {
            problems += 1;
            outln!("integrity  {} problem(s): {}", v.len(), v.join("; "));
            let _ = std::fs::write(&marker, format!("integrity_check: {}\n", v.join("; ")));
        }
        Err(e) => {
            problems += 1;
            outln!("integrity  could not be checked: {e}");
        }
    }
    if problems > 0 {
        advise_damaged(&path);
        return ExitCode::from(1);
    }
    problems += runs_report(&*store);
    problems += damaged_step_logs(&path);
    if bytes > 256 << 20 {
        outln!(
            "advice     the journal is large: `swarm prune --older-than 30d` deletes old finished runs"
        );
    }
    if problems == 0 {
        outln!("all well");
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The checkup of a Postgres database: it opens (connects, and its
/// schema is one this swarm knows, migrated if older), and its runs.
#[cfg(feature = "postgres")]
fn shared(at: &crate::store::Location) -> ExitCode {
    let store = match at.open() {
        Ok(s) => s,
        Err(e) => {
            outln!("database   {at}: {e} ({})", e.code());
            return ExitCode::from(1);
        }
    };
    outln!("database   {at}: reachable, schema current");
    if runs_report(&*store) == 0 {
        outln!("all well");
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Counts runs by status and names the ones whose owner is gone; returns
/// how many need attention.
fn runs_report(store: &dyn Store) -> usize {
    let runs = match crate::store::wait(store.runs(None)) {
        Ok(r) => r,
        Err(e) => {
            outln!("runs       could not be read: {e}");
            return 1;
        }
    };
    let mut by_status = std::collections::BTreeMap::<&str, usize>::new();
    for r in &runs {
        *by_status.entry(r.status.as_str()).or_default() += 1;
    }
    let counts: Vec<String> = by_status.iter().map(|(s, n)| format!("{n} {s}")).collect();
    outln!("runs       {} ({})", runs.len(), counts.join(", "));
    let now = now_ms();
    let orphaned: Vec<&str> = runs
        .iter()
        .filter(|r| r.status == RunStatus::Running && r.lease_until_ms.is_none_or(|t| t < now))
        .map(|r| r.id.as_str())
        .collect();
    for id in &orphaned {
        outln!(
            "orphaned   run {id}: running, but its owner's lease has lapsed; `swarm resume {id}` or `swarm cancel {id}`"
        );
    }
    let stopped = runs.iter().filter(|r| r.status.is_resumable()).count();
    if stopped > 0 {
        outln!("advice     {stopped} run(s) wait to be resumed (`swarm runs` shows them with ↻)");
    }
    orphaned.len()
}

/// Step logs kept aside because a record failed its checksum: the records
/// before it are in the journal; the file is left for someone to look at.
fn damaged_step_logs(path: &std::path::Path) -> usize {
    let found = damaged_logs(path);
    for log in &found {
        outln!(
            "damaged    step log {}: a record failed its checksum; the records before it \
             are in the journal, the rest were lost. Look at it, then delete it",
            log.display()
        );
    }
    found.len()
}

fn advise_damaged(path: &std::path::Path) {
    outln!(
        "advice     nothing will be written to this file. Move it aside (`mv {p} {p}.broken`, \
         with its -wal, -shm and -steps-* files and the .damaged marker), salvage what you can with \
         `sqlite3 {p}.broken .recover | sqlite3 recovered.db`, and let the next `swarm run` \
         start a new journal",
        p = path.display()
    );
}
