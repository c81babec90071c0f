//! `swarm replay`: journals replayed against a blueprint with nothing
//! dispatched (the process agent records every call it gets, and gets
//! none). An unchanged or comment-edited blueprint replays `ok`, exit 0;
//! a renamed step diverges at its position with the flow's file:line and
//! both sides, exit 1; a run waiting on a question replays up to it; a
//! passed run whose code now asks for more diverges. `swarm export` /
//! `swarm import` carry a run to another store whole.

mod common;

use common::dir::{Dir, text};
use serde_json::Value;

const RECORDER: &str = r#"import json, sys
doc = json.load(sys.stdin)
with open(sys.argv[1], "a") as f:
    f.write(json.dumps(doc["input"]) + "\n")
print(json.dumps({"n": doc["input"]["i"]}))
"#;

/// Ten steps of `rec`; `AGENT` marks the line that names the agent.
fn ten(agent_expr: &str, extra: &str) -> String {
    format!(
        r#"local swarm = require "swarm"
return swarm.blueprint "ten" {{
  agents = {{
    rec = swarm.agent.process {{ cmd = {{ "python3", "rec.py", "calls.log" }} }},
    other = swarm.agent.process {{ cmd = {{ "python3", "rec.py", "calls.log" }} }},
  }},
  flow = function(input)
    local last
    for i = 1, 10 do
      last = swarm.step({agent_expr}, {{ i = i }}) -- AGENT
    end
    {extra}
    return last
  end,
}}
"#
    )
}

fn line_of(src: &str, marker: &str) -> usize {
    src.lines().position(|l| l.contains(marker)).unwrap() + 1
}

fn calls(d: &Dir) -> usize {
    std::fs::read_to_string(d.0.join("calls.log"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

fn setup(name: &str) -> (Dir, String) {
    let d = Dir::new(&format!("replay-{name}"));
    d.file("rec.py", RECORDER);
    let bp = d.file("ten.lua", &ten("\"rec\"", ""));
    let out = d.swarm(&["run", &bp, "--run-id", "r1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(calls(&d), 10);
    (d, bp)
}

#[test]
fn an_unchanged_or_comment_edited_blueprint_replays_ok() {
    let (d, bp) = setup("same");
    let out = d.swarm(&["replay", "r1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "r1 ok (10 entries replayed)"
    );
    std::fs::write(
        &bp,
        format!("-- a comment\n-- and another\n{}", ten("\"rec\"", "")),
    )
    .unwrap();
    let out = d.swarm(&["replay", "r1", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "ok");
    assert_eq!(v["replayed"], 10);
    assert_eq!(calls(&d), 10, "a replay dispatches nothing");
}

#[test]
fn a_renamed_step_diverges_with_file_line_and_both_sides() {
    let (d, bp) = setup("renamed");
    let src = ten("i == 5 and \"other\" or \"rec\"", "");
    std::fs::write(&bp, &src).unwrap();
    let out = d.swarm(&["replay", "r1"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    let line = line_of(&src, "AGENT");
    assert!(t.contains("r1 diverges at 5: "), "{t}");
    assert!(
        t.contains(&format!("ten.lua:{line}:")),
        "names the line: {t}"
    );
    assert!(t.contains("journal has step(rec,"), "{t}");
    assert!(t.contains("flow asked for step(other,"), "{t}");
    assert_eq!(calls(&d), 10, "a replay dispatches nothing");
    // Checked against another file, the run's own is not needed.
    let fixed = d.file("fixed.lua", &ten("\"rec\"", ""));
    let out = d.swarm(&["replay", "r1", "--blueprint", &fixed]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Several runs: one diverging makes the exit 1, each is named.
    let out = d.swarm(&["replay", "r1", "ghost"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("ghost"), "{}", text(&out));
}

#[test]
fn a_passed_run_whose_code_asks_for_more_diverges() {
    let (d, bp) = setup("more");
    let src = ten("\"rec\"", "swarm.step(\"rec\", { i = 11 }) -- MORE");
    std::fs::write(&bp, &src).unwrap();
    let out = d.swarm(&["replay", "r1"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("r1 diverges at 11: "), "{t}");
    assert!(
        t.contains(&format!("ten.lua:{}:", line_of(&src, "MORE"))),
        "{t}"
    );
    assert!(
        t.contains("past the journal; the run passed without it"),
        "{t}"
    );
    // Fewer calls than the journal holds diverges as well.
    let fewer = ten("\"rec\"", "").replace("for i = 1, 10", "for i = 1, 9");
    std::fs::write(&bp, fewer).unwrap();
    let out = d.swarm(&["replay", "r1"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("r1 diverges at 10: "), "{t}");
    assert!(
        t.contains("the flow ended without asking for step(rec"),
        "{t}"
    );
}

#[test]
fn a_waiting_run_replays_up_to_its_question() {
    let d = Dir::new("replay-waiting");
    d.file("rec.py", RECORDER);
    let bp = d.file(
        "ten.lua",
        &ten("\"rec\"", "local ok = swarm.ask(\"approve\")"),
    );
    let out = d.swarm(&["run", &bp, "--run-id", "w1"]);
    assert_eq!(out.status.code(), Some(3), "waiting: {}", text(&out));
    let out = d.swarm(&["replay", "w1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "w1 ok (10 entries replayed; position 11 would run next)"
    );
}

#[test]
fn a_check_waits_for_no_sleep_it_replays() {
    let d = Dir::new("replay-sleep");
    let bp = d.file(
        "nap.lua",
        r#"local swarm = require "swarm"
return swarm.blueprint "nap" {
  agents = { echo = swarm.agent.rust { name = "echo" } },
  flow = function(input)
    swarm.step("echo", 1)
    swarm.sleep(3600 * 1000)
    return swarm.step("echo", 2)
  end,
}
"#,
    );
    // Stopped by its deadline an hour before its sleep ends.
    let out = d.swarm(&["run", &bp, "--run-id", "s1", "--deadline", "2s"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("deadline"), "{}", text(&out));
    let started = std::time::Instant::now();
    let out = d.swarm(&["replay", "s1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "s1 ok (2 entries replayed; position 3 would run next)"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "it did not wait"
    );
}

#[test]
fn export_then_import_round_trips_a_run() {
    let (d, _) = setup("export");
    let out = d.swarm(&["export", "r1"]);
    assert!(out.status.success(), "{}", text(&out));
    let doc = d.0.join("run.json");
    std::fs::write(&doc, &out.stdout).unwrap();
    let other = d.0.join("other.db").display().to_string();
    let import = |args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_swarm"));
        c.args(args).args(["--db", &other]);
        c.output().unwrap()
    };
    let out = import(&["import", doc.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "imported run r1"
    );
    let out = import(&["import", doc.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an id is taken once: {}",
        text(&out)
    );
    let out = import(&["import", doc.to_str().unwrap(), "--run-id", "r1-copy"]);
    assert!(out.status.success(), "{}", text(&out));
    let head = |db: &str, run: &str| -> Value {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_swarm"));
        let out = c
            .args(["show", run, "--json", "--db", db])
            .output()
            .unwrap();
        let first = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap()
            .to_string();
        serde_json::from_str(&first).unwrap()
    };
    let (a, b) = (head(&d.db(), "r1"), head(&other, "r1-copy"));
    for field in [
        "blueprint",
        "path",
        "hash",
        "input",
        "status",
        "result",
        "steps",
    ] {
        assert_eq!(a["run"][field], b["run"][field], "{field}");
    }
    let strip = |v: &Value| -> Vec<Value> {
        let mut j = v["journal"].as_array().unwrap().clone();
        for e in &mut j {
            let e = e.as_object_mut().unwrap();
            e.remove("run");
            e.remove("epoch");
        }
        j
    };
    assert_eq!(strip(&a), strip(&b));
    assert_eq!(strip(&a).len(), 10);
    let out = import(&["replay", "r1-copy"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the copy replays: {}",
        text(&out)
    );
    let out = import(&["import", d.0.join("ten.lua").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("is not a `swarm export` document"),
        "{}",
        text(&out)
    );
}

/// A run waiting on a question after ten steps, whose flow `require`s a
/// helper: the setting of the upgrade tests.
fn waiting(name: &str) -> (Dir, String) {
    let d = Dir::new(&format!("upgrade-{name}"));
    d.file("rec.py", RECORDER);
    d.file("names.lua", "return { agent = \"rec\" }\n");
    let bp = d.file(
        "ten.lua",
        &with_names(&ten("names.agent", "local ok = swarm.ask(\"approve\")")),
    );
    let out = d.swarm(&["run", &bp, "--run-id", "w1"]);
    assert_eq!(out.status.code(), Some(3), "waiting: {}", text(&out));
    assert_eq!(calls(&d), 10);
    (d, bp)
}

/// `src` with the helper `names.lua` required when the blueprint loads.
fn with_names(src: &str) -> String {
    src.replacen(
        "local swarm = require \"swarm\"",
        "local swarm = require \"swarm\"\nlocal names = require \"names\"",
        1,
    )
}

fn hash_of(d: &Dir, run: &str) -> String {
    let out = d.swarm(&["show", run, "--json", "--events", "0"]);
    let first = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap()
        .to_string();
    let v: Value = serde_json::from_str(&first).unwrap();
    v["run"]["hash"].as_str().unwrap().to_string()
}

#[test]
fn a_compatible_save_upgrades_a_waiting_run_and_resume_runs_nothing_twice() {
    let (d, bp) = waiting("compatible");
    let before = hash_of(&d, "w1");
    // A comment, and a step added after the run's position.
    let src = format!(
        "-- edited\n{}",
        with_names(&ten(
            "names.agent",
            "local ok = swarm.ask(\"approve\")\n    swarm.step(\"rec\", { i = 11 })"
        ))
    );
    std::fs::write(&bp, &src).unwrap();
    let out = d.swarm(&["resume", "w1"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("its journal replays on the new version: `swarm upgrade w1`"),
        "{t}"
    );
    let out = d.swarm(&["upgrade", "w1", "--check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("w1 would upgrade"), "{}", text(&out));
    assert_eq!(hash_of(&d, "w1"), before, "--check changes nothing");
    let out = d.swarm(&["upgrade", "w1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains(&format!("w1 upgraded {} → ", &before[..12])),
        "{t}"
    );
    assert_ne!(hash_of(&d, "w1"), before);
    let show = text(&d.swarm(&["show", "w1", "--all"]));
    let now = hash_of(&d, "w1");
    let line = format!("upgraded   {} → {}", &before[..12], &now[..12]);
    assert!(show.contains(&line), "{show}");
    let out = d.swarm(&["upgrade", "w1"]);
    assert!(text(&out).contains("w1 current"), "{}", text(&out));
    let out = d.swarm(&["resume", "w1", "--answer", "approve=yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(calls(&d), 11, "only the new step ran");
}

#[test]
fn an_incompatible_save_keeps_the_run_and_resume_names_the_divergence() {
    let (d, bp) = waiting("incompatible");
    let before = hash_of(&d, "w1");
    let src = ten(
        "i == 5 and \"other\" or \"rec\"",
        "local ok = swarm.ask(\"approve\")",
    );
    std::fs::write(&bp, &src).unwrap();
    let line = line_of(&src, "AGENT");
    let out = d.swarm(&["upgrade", "w1"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("w1 kept on its version: diverges at 5: "), "{t}");
    assert!(t.contains(&format!("ten.lua:{line}:")), "{t}");
    assert_eq!(hash_of(&d, "w1"), before, "kept on its version");
    let out = d.swarm(&["resume", "w1"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("on the new version it diverges at 5: "), "{t}");
    assert!(
        t.contains("journal has step(rec,") && t.contains("asked for step(other,"),
        "{t}"
    );
    assert_eq!(calls(&d), 10, "nothing ran");
}

#[test]
fn a_helper_edit_triggers_the_check() {
    let (d, _) = waiting("helper");
    d.file("names.lua", "-- a comment\nreturn { agent = \"rec\" }\n");
    let out = d.swarm(&["resume", "w1"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("helper files of run `w1` changed"), "{t}");
    assert!(t.contains("`swarm upgrade w1`"), "{t}");
    let out = d.swarm(&["upgrade", "w1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = d.swarm(&["resume", "w1", "--answer", "approve=yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = d.swarm(&["upgrade", "w1"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a passed run is not upgraded: {}",
        text(&out)
    );
    assert!(text(&out).contains("is pass"), "{}", text(&out));
}

#[test]
fn a_check_stopped_in_one_branch_does_not_pass_the_other_unchecked() {
    let d = Dir::new("replay-parallel");
    d.file("rec.py", RECORDER);
    // Branch 1 sleeps past the run's deadline; branch 2 makes three
    // steps meanwhile, the third through `agent`.
    let flow = |agent: &str| {
        format!(
            r#"local swarm = require "swarm"
return swarm.blueprint "two" {{
  agents = {{
    rec = swarm.agent.process {{ cmd = {{ "python3", "rec.py", "calls.log" }} }},
    other = swarm.agent.process {{ cmd = {{ "python3", "rec.py", "calls.log" }} }},
  }},
  flow = function(input)
    return swarm.parallel {{
      function()
        swarm.sleep(3600 * 1000)
        return swarm.step("rec", {{ i = 10 }})
      end,
      function()
        swarm.step("rec", {{ i = 1 }})
        swarm.step("rec", {{ i = 2 }})
        return swarm.step("{agent}", {{ i = 3 }})
      end,
    }}
  end,
}}
"#
        )
    };
    let bp = d.file("two.lua", &flow("rec"));
    let out = d.swarm(&["run", &bp, "--run-id", "p1", "--deadline", "5s"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("deadline"), "{}", text(&out));
    assert_eq!(calls(&d), 3, "branch 2 ran: {}", text(&out));
    std::fs::write(&bp, flow("other")).unwrap();
    let out = d.swarm(&["replay", "p1"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "branch 2 renamed: {t}");
    assert!(
        t.contains("p1 diverges at 1/2:3: ") || t.contains("p1 not confirmed at 1/2:"),
        "{t}"
    );
    assert!(!t.contains("p1 ok"), "{t}");
    assert_eq!(calls(&d), 3, "nothing ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_llm_step_in_flight_is_not_confirmed() {
    use lua_swarm::llm::scripted::{Reply, Scripted};
    let server = Scripted::start(vec![Reply::Text("a draft".into())])
        .await
        .unwrap();
    let d = Dir::new("replay-llm-in-flight");
    let bp = d.file(
        "w.lua",
        &format!(
            r#"local swarm = require "swarm"
return swarm.blueprint "w" {{
  agents = {{ writer = swarm.agent.llm {{ base_url = "{}", model = "w" }} }},
  flow = function(input) return swarm.step("writer", "topic") end,
}}
"#,
            server.url
        ),
    );
    let run = |args: Vec<String>| {
        let mut c = d.cmd(&args.iter().map(String::as_str).collect::<Vec<_>>());
        tokio::task::spawn_blocking(move || c.output().unwrap())
    };
    let out = run(vec!["run".into(), bp, "--run-id".into(), "l1".into()])
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // The same run as it stood with its turn recorded and the step not:
    // interrupted inside the LLM step.
    let out = run(vec!["export".into(), "l1".into()]).await.unwrap();
    let mut doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["run"]["status"] = "interrupted".into();
    doc["journal"]
        .as_array_mut()
        .unwrap()
        .retain(|e| e["pos"] != "1");
    assert_eq!(doc["journal"][0]["pos"], "1~t1", "{doc}");
    let file = d.0.join("inflight.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let file = file.display().to_string();
    let out = run(vec!["import".into(), file, "--run-id".into(), "l2".into()])
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = run(vec!["replay".into(), "l2".into()]).await.unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("l2 not confirmed at 1: "), "{t}");
    assert!(t.contains("LLM step in flight at 1"), "{t}");
    assert_eq!(server.count(), 1, "the check sent nothing");
}
