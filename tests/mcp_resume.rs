//! A journaled MCP call is never made twice: a run whose LLM agent (the
//! scripted OpenAI-compatible server) calls a tool of an MCP server
//! written with the official Python SDK (`tests/mcp/counter.py`, which
//! counts its calls in a file) is killed with SIGKILL after the tool
//! returned, while the model's next turn is in flight, and resumed: the
//! tool was called once in all, and the resumed run passes.

mod common;

use lua_swarm::llm::scripted::{Reply, Scripted};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_that_returned_before_sigkill_is_not_called_again_on_resume() {
    let Some(python) = common::mcp::sdk_python() else {
        return;
    };
    let llm = Scripted::start(vec![
        Reply::Tools(vec![(
            "c1".into(),
            "counter_tally".into(),
            r#"{"text": "once"}"#.into(),
        )]),
        Reply::Held("thinking".into(), "never seen".into()),
    ])
    .await
    .unwrap();
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mcp-resume");
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let count = d.join("calls");
    let server = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/counter.py");
    let bp = d.join("resume.lua");
    std::fs::write(
        &bp,
        format!(
            r#"local swarm = require "swarm"
return swarm.blueprint "resume" {{
  agents = {{
    counter = swarm.agent.mcp {{ command = {{ "{python}", "{server}", "{count}" }} }},
    model = swarm.agent.llm {{ base_url = "{url}", model = "m", tools = {{ "counter.tally" }} }},
  }},
  flow = function() return swarm.step("model", "count once") end,
}}
"#,
            python = python.display(),
            count = count.display(),
            url = llm.url,
        ),
    )
    .unwrap();
    let db = d.join("swarm.db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_swarm"))
        .args(["run", bp.to_str().unwrap(), "--run-id", "r1", "--db"])
        .arg(&db)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The second turn is sent once the tool's result is journaled.
    let guard = Instant::now();
    while llm.count() < 2 {
        assert!(guard.elapsed() < Duration::from_secs(60), "hang guard");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 1);

    llm.push([Reply::Text("counted".into())]);
    let (db2, d2) = (db.clone(), d.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_swarm"))
            .args(["resume", "r1", "--json", "--db"])
            .arg(&db2)
            .current_dir(&d2)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(said.contains("counted"), "{said}");
    let calls = std::fs::read_to_string(&count).unwrap().lines().count();
    assert_eq!(calls, 1, "the tool was called once in all");
    // Turn 1 replayed from the journal; only the unfinished turn 2 again.
    assert_eq!(llm.count(), 3);
}
