//! What LLM turns spend, against the scripted server on loopback (every
//! turn reports 11 prompt + 7 completion = 18 tokens): the run's token
//! budget, usage in `swarm runs` / `swarm show`, the live line and the
//! total on a real terminal, and a resumed LLM step that sends something
//! other than what its journal recorded.

use lua_swarm::auth::Signer;
use lua_swarm::engine::{Engine, EngineConfig, TaskStatus};
use lua_swarm::llm::scripted::{Reply, Scripted};
use lua_swarm::run::{self, RunOptions};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("llm-usage-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes a blueprint with an LLM agent `model` (plus `fields`) and the
/// given `extra` blueprint fields and flow body.
fn blueprint(d: &Path, url: &str, fields: &str, extra: &str, flow: &str) -> PathBuf {
    let body = format!(
        r#"local swarm = require "swarm"
return swarm.blueprint "u" {{
  {extra}
  agents = {{
    model = swarm.agent.llm {{ base_url = "{url}", model = "m1", {fields} }},
    other = swarm.agent.llm {{ base_url = "{url}", model = "m2" }},
    lookup = swarm.agent.lua {{ run = function(task) return "noted" end }},
  }},
  flow = function(input)
    {flow}
  end,
}}
"#
    );
    let p = d.join("u.lua");
    std::fs::write(&p, body).unwrap();
    p
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `swarm ARGS` with the journal at `db`, off the async runtime.
async fn swarm(db: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_swarm"));
    c.args(args).arg("--db").arg(db).stdin(Stdio::null());
    tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_budget_stops_the_run_even_when_the_flow_catches_the_error() {
    let server = Scripted::start(Vec::new()).await.unwrap();
    let d = dir("budget");
    // 18 tokens a turn: the second turn takes the run past 30.
    let bp = blueprint(
        &d,
        &server.url,
        "",
        "limits = { tokens = 30 },",
        r#"for i = 1, 5 do pcall(swarm.step, "model", "q" .. i) end
    return "kept going""#,
    );
    let engine = Engine::new(EngineConfig::default(), Signer::random());
    let r = run::prepare(&engine, &bp, RunOptions::default()).unwrap();
    let report = tokio::time::timeout(Duration::from_secs(60), r.run(Value::Null))
        .await
        .expect("hang guard")
        .unwrap();
    assert_eq!(report.status, TaskStatus::Blocked, "{}", report.result);
    assert_eq!(report.result["code"], "token_budget", "{}", report.result);
    assert_eq!(
        report.result["error"],
        "the run's token budget of 30 is spent (36 used)"
    );
    assert_eq!(server.count(), 2, "no turn was sent past the budget");
    assert_eq!(report.usage.total.total_tokens, 36);
    assert_eq!(report.usage.by_model["m1"].turns, 2);
}

#[test]
fn a_budget_must_be_a_positive_whole_number() {
    let d = dir("bad-budget");
    let bp = blueprint(
        &d,
        "http://127.0.0.1:9/v1",
        "",
        "limits = { tokens = 1.5 },",
        "return 1",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_swarm"))
        .args(["check", bp.to_str().unwrap()])
        .output()
        .unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("limits.tokens") && t.contains("positive whole number"),
        "{t}"
    );
    assert!(t.contains("u.lua:"), "names the file: {t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_shows_per_run_per_model_and_per_step() {
    let server = Scripted::start(vec![
        Reply::Tools(vec![("c1".into(), "lookup".into(), "{}".into())]),
        Reply::Text("one".into()),
        Reply::Text("two".into()),
    ])
    .await
    .unwrap();
    let d = dir("show");
    let bp = blueprint(
        &d,
        &server.url,
        r#"tools = { "lookup" }"#,
        "",
        r#"return { swarm.step("model", "a"), swarm.step("other", "b") }"#,
    );
    let db = d.join("swarm.db");
    let out = swarm(&db, &["run", bp.to_str().unwrap(), "--run-id", "u1"]).await;
    assert!(out.status.success(), "{}", text(&out));

    let out = swarm(&db, &["runs", "--json"]).await;
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs[0]["tokens"], 54, "{runs}");
    assert_eq!(
        runs[0]["steps"], 2,
        "turns are not counted as steps: {runs}"
    );
    let table = text(&swarm(&db, &["runs"]).await);
    assert!(
        table.contains("TOKENS") && table.contains(" 54 "),
        "{table}"
    );

    let out = swarm(&db, &["show", "u1", "--json"]).await;
    let head: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    let usage = &head["usage"];
    assert_eq!(usage["total"]["total_tokens"], 54, "{usage}");
    assert_eq!(usage["by_model"]["m1"]["turns"], 2, "{usage}");
    assert_eq!(usage["by_model"]["m2"]["total_tokens"], 18, "{usage}");
    assert_eq!(
        usage["by_step"]["1"],
        json!({ "agent": "model", "turns": 2, "prompt_tokens": 22,
                "completion_tokens": 14, "total_tokens": 36 })
    );
    assert_eq!(usage["by_step"]["2"]["agent"], "other");
    let table = text(&swarm(&db, &["show", "u1"]).await);
    assert!(
        table.contains("usage      54 tokens (prompt 33 · completion 21) in 3 turns; m1 36, m2 18"),
        "{table}"
    );
    // The key variable's value never shows; no key was set here, but the
    // journal must not carry request bodies either.
    assert!(!table.contains("\"messages\""), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_shows_the_streaming_text_live_and_the_total_at_the_end() {
    let server = Scripted::start(vec![Reply::Held(
        "Streaming so far".into(),
        " and the rest".into(),
    )])
    .await
    .unwrap();
    let d = dir("pty");
    let bp = blueprint(
        &d,
        &server.url,
        "",
        "",
        r#"return swarm.step("model", "go")"#,
    );
    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pty_run.py");
    let release = server.url.replace("/v1", "/v1/release");
    let mut c = Command::new("python3");
    c.arg(driver)
        .args(["--wait", "Streaming so far", "--post", &release, "--"])
        .arg(env!("CARGO_BIN_EXE_swarm"))
        .args(["run", bp.to_str().unwrap(), "--no-journal"]);
    let out = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    let screen = text(&out);
    // 99: the text never showed while the server held the stream open.
    assert!(out.status.success(), "{screen}");
    assert!(screen.contains("1 running"), "{screen}");
    assert!(
        screen.contains("tokens: 18 tokens (prompt 11 · completion 7) in 1 turn"),
        "{screen}"
    );
    assert!(
        screen.contains("\"Streaming so far and the rest\""),
        "{screen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_llm_step_that_asks_something_else_diverges() {
    let server = Scripted::start(vec![
        Reply::Tools(vec![("c1".into(), "gate".into(), "{}".into())]),
        Reply::Text("final".into()),
    ])
    .await
    .unwrap();
    let d = dir("diverge");
    let (pids, gate) = (d.join("pids"), d.join("gate"));
    let write = |system: &str| {
        let body = format!(
            r#"local swarm = require "swarm"
return swarm.blueprint "dv" {{
  agents = {{
    model = swarm.agent.llm {{ base_url = "{url}", model = "m", system = "{system}", tools = {{ "gate" }} }},
    gate = swarm.agent.process {{ shell = 'echo $$ >> "{pids}"; while [ ! -e "{gate}" ]; do sleep 0.05; done; echo 2' }},
  }},
  flow = function() return swarm.step("model", "go") end,
}}
"#,
            url = server.url,
            pids = pids.display(),
            gate = gate.display(),
        );
        std::fs::write(d.join("dv.lua"), body).unwrap();
    };
    write("Be brief.");
    let bp = d.join("dv.lua");
    let db = d.join("swarm.db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_swarm"))
        .args(["run", bp.to_str().unwrap(), "--run-id", "dv1", "--db"])
        .arg(&db)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Turn 1 is journaled once its tool starts.
    let guard = std::time::Instant::now();
    while !pids.exists() {
        assert!(guard.elapsed() < Duration::from_secs(60), "hang guard");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    for pid in std::fs::read_to_string(&pids).unwrap().split_whitespace() {
        let _ = Command::new("kill").args(["-9", pid]).status();
    }
    std::fs::write(&gate, "").unwrap();
    write("Be verbose.");
    let out = swarm(&db, &["resume", "dv1", "--force"]).await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(3), "{t}");
    assert!(
        t.contains("diverged") && t.contains("an LLM step is not deterministic"),
        "{t}"
    );
    assert_eq!(server.count(), 1, "nothing was sent for a diverged turn");
    let show = text(&swarm(&db, &["runs"]).await);
    assert!(show.contains("diverged"), "{show}");
}
