//! What an operator expects of durable runs on a bad day, beyond one owner
//! at a time (tests/fencing.rs): a blueprint named by a relative path
//! resumes with its helpers; a cancel of a run nobody executes any more
//! ends it at once, and no later resume runs a step of it; `prune` gives
//! back the space it says; a journal path under a file says so. Real
//! processes and a real SQLite journal.

mod common;

use common::HANG_GUARD;
use common::dir::{Dir, text, wait_exit};
use std::process::{Command, Stdio};

fn swarm_in(cwd: &std::path::Path, db: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_swarm"))
        .args(args)
        .args(["--db", db])
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn a_blueprint_run_by_a_relative_path_resumes_with_its_unchanged_helpers() {
    let d = Dir::new("relative-helpers");
    std::fs::create_dir_all(d.0.join("bp/lib")).unwrap();
    d.file(
        "bp/util.lua",
        "return { twice = function(x) return x * 2 end }\n",
    );
    d.file("bp/lib/more.lua", "return { one = 1 }\n");
    d.file(
        "bp/h.lua",
        "local swarm = require 'swarm'\nlocal util = require 'util'\nlocal more = require 'lib.more'\n\
         return swarm.blueprint 'h' {\n  flow = function() swarm.ask('go'); return util.twice(21) + more.one end,\n}\n",
    );
    let db = d.db();
    let out = swarm_in(&d.0, &db, &["run", "bp/h.lua", "--run-id", "rel"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        swarm_in(&d.0, &db, &["answer", "rel", "go", "yes"])
            .status
            .success()
    );
    // Resumed from another directory: the helpers are the same files.
    let out = swarm_in(&d.0.join("bp"), &db, &["resume", "rel", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "43");
    // A changed helper is still refused, named relative to the blueprint.
    let out = swarm_in(&d.0, &db, &["run", "./bp/h.lua", "--run-id", "rel2"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    d.file("bp/lib/more.lua", "return { one = 2 }\n");
    let out = swarm_in(&d.0, &db, &["resume", "rel2"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("lib/more.lua (was "), "{t}");
}

#[test]
fn cancelling_a_run_whose_owner_is_gone_ends_it_at_once_and_resume_runs_nothing() {
    let d = Dir::new("cancel-orphan");
    let effects = d.0.join("effects");
    let gate = d.0.join("gate");
    let bp = d.file(
        "c.lua",
        &format!(
            "local swarm = require 'swarm'\nreturn swarm.blueprint 'c' {{\n  agents = {{ w = swarm.agent.process {{ shell = 'echo ran >> \"{fx}\"; while [ ! -e \"{gate}\" ]; do sleep 0.02; done; echo 1' }} }},\n  flow = function() swarm.step('w', 1); swarm.step('w', 2); return 'done' end,\n}}\n",
            fx = effects.display(),
            gate = gate.display(),
        ),
    );
    // The owner runs in its own pid namespace, so only its lease frees the
    // run once it is killed (a short one).
    let mut owner = Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child"])
        .arg(env!("CARGO_BIN_EXE_swarm"))
        .args(["run", &bp, "--run-id", "orphan", "--db", &d.db()])
        .env("SWARM_LEASE_MS", "1000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("unshare (util-linux)");
    let t0 = std::time::Instant::now();
    while !effects.exists() {
        assert!(t0.elapsed() < HANG_GUARD, "the step never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    owner.kill().unwrap();
    owner.wait().unwrap();
    // Cancel until the lease has lapsed: before, it is a request to a
    // live owner; after, the run is cancelled at once.
    let t0 = std::time::Instant::now();
    loop {
        let out = d.swarm(&["cancel", "orphan"]);
        assert!(out.status.success(), "{}", text(&out));
        let show = d.swarm(&["show", "orphan", "--json"]);
        let head = String::from_utf8_lossy(&show.stdout);
        let v: serde_json::Value = serde_json::from_str(head.lines().next().unwrap()).unwrap();
        if v["run"]["status"] == "cancelled" {
            break;
        }
        assert!(t0.elapsed() < HANG_GUARD, "never cancelled: {head}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::fs::write(&gate, "").unwrap();
    let out = wait_exit(d.spawn(&["resume", "orphan"]), HANG_GUARD.as_secs());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("already finished (cancelled)"),
        "{}",
        text(&out)
    );
    let ran = std::fs::read_to_string(&effects).unwrap();
    assert_eq!(ran.lines().count(), 1, "a step ran after the cancel");
}

/// The journal's footprint on disk: the database, its write-ahead log and
/// shared-memory index.
fn footprint(db: &str) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .map(|s| std::fs::metadata(format!("{db}{s}")).map_or(0, |m| m.len()))
        .sum()
}

#[test]
fn prune_reports_the_space_it_gave_back_and_the_files_shrink() {
    let d = Dir::new("prune-space");
    // Runs with large results fill the journal.
    let bp = d.file(
        "big.lua",
        "local swarm = require 'swarm'\nreturn swarm.blueprint 'big' {\n  flow = function(n) return string.rep('x', 200000) .. n end,\n}\n",
    );
    for i in 0..20 {
        let out = d.swarm(&["run", &bp, "--input", &i.to_string()]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let before = footprint(&d.db());
    assert!(before > 3_000_000, "{before}");
    let out = d.swarm(&["prune", "--older-than", "0s", "--status", "pass"]);
    assert!(out.status.success(), "{}", text(&out));
    let after = footprint(&d.db());
    assert!(
        after < before / 4,
        "the journal did not shrink: {before} -> {after}"
    );
    // The report's figures are the files' own, in KiB.
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    let kib = |word: &str| -> u64 {
        let at = said
            .find(word)
            .unwrap_or_else(|| panic!("{word} in {said}"))
            + word.len();
        said[at..]
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(said.contains("pruned 20 runs"), "{said}");
    assert_eq!(kib("is"), after / 1024, "{said}");
    assert!(
        kib("was").abs_diff(before / 1024) <= 1,
        "{said} vs {before}"
    );
}

#[test]
fn a_journal_path_under_a_file_says_the_file_is_in_the_way() {
    let d = Dir::new("parent-file");
    std::fs::write(d.0.join("notadir"), "x").unwrap();
    let db = d.0.join("notadir/sub/swarm.db");
    let out = Command::new(env!("CARGO_BIN_EXE_swarm"))
        .args(["runs", "--db", db.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("notadir is a file, not a directory"), "{t}");
    assert!(!t.contains("os error 17"), "{t}");
}
