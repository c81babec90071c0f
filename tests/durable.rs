//! Durable runs from the outside: resume after a stop, answers from another
//! process, cancellation, deterministic replay of parallel branches, clock
//! and random reads, and every kind of bad input to the journal.

mod common;

use common::dir::{Dir, text, wait_exit};
use rusqlite::Connection;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

impl Dir {
    /// The run as `swarm show --json` reports it (its head line), if any.
    fn show(&self, run: &str) -> Option<Value> {
        let out = self.swarm(&["show", run, "--json", "--events", "0"]);
        let head = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()?
            .to_string();
        serde_json::from_str(&head).ok()
    }
    fn journal(&self, run: &str) -> Vec<(String, String, Value)> {
        let mut entries: Vec<(String, String, Value)> = self
            .show(run)
            .and_then(|v| v["journal"].as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .map(|e| {
                (
                    e["pos"].as_str().unwrap_or_default().to_string(),
                    e["kind"].as_str().unwrap_or_default().to_string(),
                    e["value"].clone(),
                )
            })
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries
    }
    fn journal_has_run(&self, run: &str) -> bool {
        self.show(run).is_some()
    }
    fn status(&self, run: &str) -> String {
        self.show(run)
            .and_then(|v| v["run"]["status"].as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

fn append_agent() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/agents/append.sh")
        .display()
        .to_string()
}

/// Two parallel steps with side effects, a clock read, a random number, then
/// a senior question: without an answer the run stops as `waiting`.
fn replay_blueprint() -> String {
    format!(
        r#"local swarm = require "swarm"
return swarm.blueprint "replay" {{
  agents = {{
    left = swarm.agent.process {{ cmd = {{ "sh", "{a}", "left.txt" }} }},
    right = swarm.agent.process {{ cmd = {{ "sh", "{a}", "right.txt" }} }},
  }},
  flow = function()
    local both = swarm.parallel {{
      function() return swarm.step("left", 1) + swarm.step("left", 2) end,
      function() return swarm.step("right", 3) end,
    }}
    local now, r = swarm.time.now(), math.random(1000000)
    local go = swarm.ask {{ key = "go", text = "Continue?" }}
    return {{ both = both, now = now, r = r, go = go }}
  end,
}}
"#,
        a = append_agent()
    )
}

#[test]
fn a_stopped_run_resumes_from_its_journal_without_redoing_work() {
    let d = Dir::new("replay");
    let bp = d.file("replay.lua", &replay_blueprint());
    let out = d.swarm(&["run", &bp, "--run-id", "rp"]);
    // Waiting, not failed: exit 3.
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("swarm answer rp go VALUE"),
        "{}",
        text(&out)
    );
    assert_eq!(d.status("rp"), "waiting");

    // Answering an unknown run or question is a clear error.
    let out = d.swarm(&["answer", "nope", "go", "yes"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("no run `nope`"));
    let out = d.swarm(&["answer", "rp", "stop", "yes"]);
    assert!(
        text(&out).contains("has no open question `stop` (open: go)"),
        "{}",
        text(&out)
    );

    assert!(
        d.swarm(&["answer", "rp", "go", r#"{"sure":true}"#])
            .status
            .success()
    );
    let out = d.swarm(&["resume", "rp", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["both"], json!([3, 3]));
    assert_eq!(result["go"], json!({"sure": true}));

    // The clock and random values are the ones journaled the first time.
    let journal = d.journal("rp");
    let find = |kind: &str| {
        journal
            .iter()
            .find(|(_, k, _)| k == kind)
            .unwrap()
            .2
            .clone()
    };
    assert_eq!(result["now"], find("now"));
    assert_eq!(result["r"], find("random"));
    // Branch positions are per branch, so replay is order-independent.
    let positions: Vec<&str> = journal.iter().map(|(p, _, _)| p.as_str()).collect();
    for p in ["1/1:1", "1/1:2", "1/2:1", "2", "3", "4"] {
        assert!(positions.contains(&p), "no position {p} in {positions:?}");
    }
    // No step ran twice.
    let left = std::fs::read_to_string(d.0.join("left.txt")).unwrap();
    let right = std::fs::read_to_string(d.0.join("right.txt")).unwrap();
    assert_eq!((left.as_str(), right.as_str()), ("1\n2\n", "3\n"));

    // Resuming a finished run says so.
    let out = d.swarm(&["resume", "rp"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("already finished (pass)"));
    let out = d.swarm(&["runs", "--json"]);
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs[0]["status"], "pass");
    assert!(d.swarm(&["show", "rp"]).status.success());
}

/// The clock and random numbers are journaled even when the flow reads
/// them before anything else and through functions the blueprint took at
/// its top level (before the flow library had loaded): a resumed run sees
/// the first run's values.
#[test]
fn clock_reads_taken_before_the_flow_library_loads_are_journaled() {
    let d = Dir::new("clock-first");
    let bp = d.file(
        "clock.lua",
        r#"local clock, rand, now = os.clock, math.random, swarm.time.now
return swarm.blueprint "clock" {
  flow = function()
    local first = { os = os.time(), clock = clock(), r = rand(1000000), now = now() }
    local go = swarm.ask("go")
    return { first = first, again = { os = os.time(), r = rand(1000000) }, go = go }
  end,
}
"#,
    );
    assert_eq!(
        d.swarm(&["run", &bp, "--run-id", "ck"]).status.code(),
        Some(3)
    );
    assert!(d.swarm(&["answer", "ck", "go", "true"]).status.success());
    let out = d.swarm(&["resume", "ck", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    let journal = d.journal("ck");
    let kinds: Vec<(&str, &str)> = journal
        .iter()
        .map(|(p, k, _)| (p.as_str(), k.as_str()))
        .collect();
    assert_eq!(
        &kinds[..4],
        [
            ("1", "os.time"),
            ("2", "os.clock"),
            ("3", "random"),
            ("4", "now")
        ],
        "{kinds:?}"
    );
    let first = &result["first"];
    for (i, field) in ["os", "clock", "r", "now"].iter().enumerate() {
        assert_eq!(first[*field], journal[i].2, "{field}: {result}");
    }
    assert_eq!(result["go"], json!(true));
}

#[test]
fn a_changed_blueprint_is_refused_unless_forced_and_divergence_is_caught() {
    let d = Dir::new("changed");
    let v1 = "local swarm = require 'swarm'\nreturn swarm.blueprint 'c' {\n  agents = { a = swarm.agent.rust { name = 'echo' }, b = swarm.agent.rust { name = 'upper' } },\n  flow = function()\n    local x = swarm.step('a', 'x')\n    return swarm.ask('go') and x\n  end,\n}\n";
    let bp = d.file("c.lua", v1);
    assert_eq!(
        d.swarm(&["run", &bp, "--run-id", "c1"]).status.code(),
        Some(3),
        "waiting for `go`"
    );
    d.file(
        "c.lua",
        &v1.replace("swarm.step('a', 'x')", "swarm.step('b', 'x')"),
    );
    let out = d.swarm(&["resume", "c1"]);
    assert_eq!(out.status.code(), Some(2));
    let t = text(&out);
    assert!(
        t.contains("changed since run `c1` started (was ") && t.contains("--force"),
        "{t}"
    );
    // Divergence stops the run as `diverged`, not failed: resumable.
    let out = d.swarm(&["resume", "c1", "--force"]);
    assert_eq!(out.status.code(), Some(3));
    let t = text(&out);
    assert!(
        t.contains("c.lua:5") && t.contains("flow is not deterministic"),
        "{t}"
    );
    assert!(
        t.contains("journal has step(a,") && t.contains("flow asked for step(b,"),
        "{t}"
    );
    assert_eq!(d.status("c1"), "diverged");
    // Reverted, it resumes where it was and finishes.
    d.file("c.lua", v1);
    assert!(d.swarm(&["answer", "c1", "go", "true"]).status.success());
    let out = d.swarm(&["resume", "c1", "--json"]);
    assert!(out.status.success(), "{t}", t = text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "\"x\"");
    assert_eq!(d.status("c1"), "pass");
}

#[test]
fn an_answer_from_another_process_reaches_a_waiting_run() {
    let d = Dir::new("answer");
    let bp = d.file(
        "w.lua",
        "local swarm = require 'swarm'\nreturn swarm.blueprint 'w' {\n  flow = function() return swarm.ask({ key = 'ok?' }) end,\n}\n",
    );
    let mut child = d.spawn(&["run", &bp, "--run-id", "w1", "--wait-answers", "--json"]);
    let t0 = Instant::now();
    loop {
        let out = d.swarm(&["answer", "w1", "ok?", "\"sure\""]);
        if out.status.success() {
            break;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let run = child.wait_with_output().unwrap();
            panic!("{}\nthe run said: {}", text(&out), text(&run));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = wait_exit(child, 15);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "\"sure\"");
}

#[test]
fn swarm_cancel_stops_a_run_in_another_process() {
    let d = Dir::new("cancel");
    let bp = d.file(
        "s.lua",
        "local swarm = require 'swarm'\nreturn swarm.blueprint 's' {\n  agents = { nap = swarm.agent.rust { name = 'sleep' } },\n  flow = function() return swarm.step('nap', { ms = 30000 }) end,\n}\n",
    );
    let child = d.spawn(&["run", &bp, "--run-id", "s1"]);
    let t0 = Instant::now();
    while !d.swarm(&["cancel", "s1"]).status.success() {
        assert!(t0.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(50));
    }
    // The step naps 30 s; a cancelled run ends long before that.
    let out = wait_exit(child, 25);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(d.status("s1"), "cancelled");
    let out = d.swarm(&["cancel", "s1"]);
    assert!(text(&out).contains("already finished (cancelled)"));
}

#[test]
fn a_killed_run_is_marked_interrupted_and_resumable() {
    let d = Dir::new("interrupted");
    // The step waits for a file the test creates only after the kill.
    let gate = d.0.join("go");
    let bp = d.file(
        "k.lua",
        &format!(
            "local swarm = require 'swarm'\nreturn swarm.blueprint 'k' {{\n  agents = {{ wait = swarm.agent.process {{ shell = 'while [ ! -e \"{}\" ]; do sleep 0.05; done; echo 1' }} }},\n  flow = function() swarm.step('wait', 1); return 'done' end,\n}}\n",
            gate.display()
        ),
    );
    let mut child = d.spawn(&["run", &bp, "--run-id", "k1"]);
    let t0 = Instant::now();
    while !d.journal_has_run("k1") {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the run never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::write(&gate, "").unwrap();
    let out = d.swarm(&["runs", "--status", "interrupted", "--json"]);
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs[0]["id"], "k1", "{}", text(&out));
    let out = d.swarm(&["resume", "k1", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "\"done\"");
}

#[test]
fn a_corrupt_journal_is_a_clear_error_and_is_left_alone() {
    let d = Dir::new("corrupt");
    let garbage = b"this is not a database, it only looks like a file".repeat(100);
    std::fs::write(d.db(), &garbage).unwrap();
    let bp = d.file("h.lua", "local swarm = require 'swarm'\nreturn swarm.blueprint 'h' { flow = function() return 1 end }\n");
    for args in [vec!["runs"], vec!["run", bp.as_str()]] {
        let out = d.swarm(&args);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            text(&out).contains("not a usable SQLite database"),
            "{}",
            text(&out)
        );
    }
    assert_eq!(
        std::fs::read(d.db()).unwrap(),
        garbage,
        "the corrupt file was modified"
    );
}

/// A damaged page SQLite does not notice reads back as a row swarm never
/// wrote (a NULL id, a status that does not exist, an event page that
/// does not hold its ids' events): that is corruption, named as such,
/// and nothing writes to the file after.
#[test]
fn a_row_swarm_never_wrote_is_corruption_not_a_read_glitch() {
    // Each damage, and the column the error names.
    let damage = [
        ("UPDATE runs SET status = 'sideways'", "status"),
        ("UPDATE runs SET result = '{half'", "result"),
        ("UPDATE runs SET helpers = '[1]'", "helpers"),
        ("UPDATE runs SET created_ms = 'yesterday'", "created_ms"),
        ("UPDATE event_pages SET payload = 'not json'", "payload"),
        ("UPDATE event_pages SET last = last + 7", "payload"),
    ];
    for (i, (update, column)) in damage.iter().enumerate() {
        let d = Dir::new(&format!("badrow{i}"));
        let bp = d.file("h.lua", "local swarm = require 'swarm'\nreturn swarm.blueprint 'h' { flow = function() return 1 end }\n");
        assert!(d.swarm(&["run", &bp, "--run-id", "r1"]).status.success());
        let db = Connection::open(d.db()).unwrap();
        assert!(db.execute(update, []).unwrap() > 0, "{update}");
        drop(db);
        let out = d.swarm(&["show", "r1"]);
        assert_eq!(out.status.code(), Some(2), "{update}: {}", text(&out));
        assert!(
            text(&out).contains("not a usable SQLite database")
                && text(&out).contains("not what swarm wrote")
                && text(&out).contains(&format!("column `{column}`")),
            "{update}: {}",
            text(&out)
        );
        let before = std::fs::read(d.db()).unwrap();
        let out = d.swarm(&["run", &bp, "--run-id", "r2"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert_eq!(std::fs::read(d.db()).unwrap(), before, "written to after");
    }
}

#[test]
fn a_locked_journal_is_a_clear_error() {
    let d = Dir::new("locked");
    let bp = d.file("h.lua", "local swarm = require 'swarm'\nreturn swarm.blueprint 'h' { flow = function() return 1 end }\n");
    assert!(d.swarm(&["run", &bp]).status.success());
    let holder = Connection::open(d.db()).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let out = d
        .cmd(&["run", &bp])
        .env("SWARM_DB_BUSY_MS", "300")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("locked by another process"),
        "{}",
        text(&out)
    );
    holder.execute_batch("ROLLBACK").unwrap();
}
