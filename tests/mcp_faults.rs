//! Each fault class of an MCP agent against a server that misbehaves on
//! purpose (`tests/mcp/misbehave.py`, raw JSON lines): it fails to start,
//! crashes, hangs, sends what is not JSON-RPC, floods its output, or
//! answers with a message too large. Each gives the step a typed code
//! naming the agent and the tool; the run goes on (the next step of the
//! same flow passes), and a crashed server is started again by the next
//! call.

mod common;

use common::flow::{run_file, scratch, write};
use lua_swarm::engine::TaskStatus;
use lua_swarm::run::RunOptions;
use serde_json::{Value, json};

const SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/misbehave.py");

/// A blueprint whose agent `bad` runs the server in `mode` (`extra`: more
/// fields), and whose flow calls `bad.echo` then the healthy `good.echo`.
fn blueprint(mode: &str, arg: &str, extra: &str) -> String {
    format!(
        r#"local swarm = require "swarm"
return swarm.blueprint "faults" {{
  agents = {{
    bad = swarm.agent.mcp {{ command = {{ "python3", "{SERVER}", "{mode}", "{arg}" }} {extra} }},
    good = swarm.agent.mcp {{ command = {{ "python3", "{SERVER}", "good" }} }},
  }},
  flow = function()
    local ok, err = swarm.pstep("bad.echo", {{ text = "hi" }})
    local after = swarm.step("good.echo", {{ text = "still serving" }})
    return {{ ok = ok, code = not ok and err.result.code or nil,
              error = not ok and err.result.error or nil, value = ok and err or nil,
              after = after }}
  end,
}}
"#
    )
}

async fn run(name: &str, mode: &str, arg: &str, extra: &str) -> Value {
    let dir = scratch(&format!("mcp-{name}"));
    let path = write(&dir, "faults.lua", &blueprint(mode, arg, extra));
    let r = run_file(&path, json!(null), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(r.status, TaskStatus::Pass, "{}", r.result);
    assert_eq!(
        r.result["after"],
        json!({ "content": ["still serving"] }),
        "the run keeps serving after the fault: {}",
        r.result
    );
    r.result
}

/// The step failed with `code`, and its message names agent and tool.
fn failed(r: &Value, code: &str) {
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(r["code"], code, "{r}");
    let msg = r["error"].as_str().unwrap();
    assert!(msg.contains("agent `bad`, tool `echo`"), "{msg}");
}

#[tokio::test]
async fn a_server_that_does_not_start_is_mcp_start() {
    let r = run("nostart", "nostart", "", "").await;
    failed(&r, "mcp_start");
    let msg = r["error"].as_str().unwrap();
    assert!(msg.contains("refusing to start"), "stderr tail: {msg}");
}

#[tokio::test]
async fn a_program_that_does_not_exist_is_mcp_start() {
    let dir = scratch("mcp-missing");
    let src = blueprint("good", "", "").replace("\"python3\", ", "\"no-such-mcp-server\", ");
    let path = write(&dir, "faults.lua", &src);
    let r = run_file(&path, json!(null), RunOptions::default()).await;
    // Both agents use the missing program: the run fails at `good.echo`.
    let r = r.unwrap();
    assert_eq!(r.status, TaskStatus::Blocked, "{}", r.result);
    assert!(r.result.to_string().contains("mcp_start"), "{}", r.result);
}

#[tokio::test]
async fn a_crash_is_mcp_closed_and_the_next_call_restarts_the_server() {
    let dir = scratch("mcp-crash-once");
    let marker = dir.join("crashed");
    let src = blueprint("crash_once", &marker.display().to_string(), "")
        .replace(
            "local after = swarm.step(\"good.echo\"",
            "local again = swarm.step(\"bad.echo\", { text = \"back\" })\n    local after = swarm.step(\"good.echo\"",
        )
        .replace("after = after }", "after = after, again = again }");
    let path = write(&dir, "faults.lua", &src);
    let r = run_file(&path, json!(null), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(r.status, TaskStatus::Pass, "{}", r.result);
    failed(&r.result, "mcp_closed");
    assert!(
        r.result["error"]
            .as_str()
            .unwrap()
            .contains("crashing on purpose"),
        "{}",
        r.result
    );
    assert_eq!(r.result["again"], json!({ "content": ["back"] }));
}

#[tokio::test]
async fn a_hung_call_is_timeout() {
    let r = run("hang", "hang", "", ", timeout = \"1s\"").await;
    failed(&r, "timeout");
}

#[tokio::test]
async fn a_line_that_is_not_json_is_mcp_protocol() {
    let r = run("garbage", "garbage", "", "").await;
    failed(&r, "mcp_protocol");
}

#[tokio::test]
async fn an_answer_over_the_cap_is_too_large() {
    let r = run("huge", "huge", "2000000", ", max_message = 1000000").await;
    failed(&r, "too_large");
}

#[tokio::test]
async fn an_endless_line_is_too_large() {
    let r = run("flood", "flood", "", ", max_message = 1000000").await;
    failed(&r, "too_large");
}

#[tokio::test]
async fn is_error_is_tool_error_with_the_tools_text() {
    let dir = scratch("mcp-is-error");
    let src = blueprint("good", "", "").replace(
        "swarm.pstep(\"bad.echo\", { text = \"hi\" })",
        "swarm.pstep(\"bad.fail\", {})",
    );
    let path = write(&dir, "faults.lua", &src);
    let r = run_file(&path, json!(null), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(r.result["code"], "tool_error", "{}", r.result);
    assert!(r.result["error"].as_str().unwrap().contains("it failed"));
}

#[tokio::test]
async fn arguments_are_checked_against_the_input_schema_before_the_call() {
    let dir = scratch("mcp-bad-args");
    let marker = dir.join("calls");
    let src = blueprint("count", &marker.display().to_string(), "")
        .replace("{ text = \"hi\" }", "{ text = 42 }");
    let path = write(&dir, "faults.lua", &src);
    let r = run_file(&path, json!(null), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(r.result["code"], "bad_arguments", "{}", r.result);
    assert!(
        r.result["error"].as_str().unwrap().contains("/text"),
        "{}",
        r.result
    );
    assert!(!marker.exists(), "the server was not called");
}

#[tokio::test]
async fn a_tool_outside_the_allow_list_is_unknown() {
    let r = run("allow", "good", "", ", tools = { \"fail\" }").await;
    failed(&r, "unknown_tool");
}
