//! `swarm` as an MCP server, driven by a client nobody here wrote: the
//! official Python MCP SDK (`tests/mcp/client.py`, in the venv `.ci/run`
//! installs). Over stdio (`swarm mcp DIR`): a run tool returns the run's
//! result, a run that asks a question is returned waiting and answered
//! through `answer_question`, errors come back as `{code, message}`. Over
//! `/mcp` in `swarm serve`: without a valid token nothing is served, and
//! each role sees and may call only its tools.

mod common;

use common::mcp::ASK;
use common::server::{fresh, serve};
use lua_swarm::auth::Role;
use serde_json::{Value, json};
use std::path::Path;

const HELLO: &str = r#"local swarm = require "swarm"
return swarm.blueprint "hello" {
  description = "Greets someone.",
  input = { type = "object", properties = { name = { type = "string" } }, required = { "name" } },
  agents = { echo = swarm.agent.rust { name = "echo" } },
  flow = function(input)
    return swarm.step("echo", { greeting = "hello " .. input.name })
  end,
}
"#;

fn client(args: &[&str]) -> Option<Value> {
    common::mcp::sdk_client(args)
}

fn stdio(dir: &Path, calls: Value) -> Option<Value> {
    common::mcp::sdk_stdio(dir, calls)
}

#[test]
fn over_stdio_a_run_tool_returns_the_result_and_errors_carry_codes() {
    let dir = fresh("mcp-server-stdio", &[("hello.lua", HELLO)]);
    let calls = json!([
        ["run_hello", { "name": "Ada" }],
        ["list_runs", {}],
        ["list_blueprints", {}],
        ["show_run", { "id": "no-such-run" }],
        ["check_blueprint", { "path": dir.join("hello.lua") }],
        ["send_to_run", { "id": "no-such-run", "topic": "t", "value": 1 }],
    ]);
    let Some(out) = stdio(&dir, calls) else {
        return;
    };
    let tools: Vec<&str> = out["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for t in [
        "run_hello",
        "list_runs",
        "show_run",
        "answer_question",
        "send_to_run",
        "cancel_run",
        "resume_run",
        "list_blueprints",
        "check_blueprint",
    ] {
        assert!(tools.contains(&t), "{t} in {tools:?}");
    }
    assert_eq!(out["schemas"]["run_hello"]["required"], json!(["name"]));
    let c = &out["calls"];
    assert_eq!(c[0]["error"], false, "{}", c[0]);
    assert_eq!(c[0]["structured"]["status"], "pass");
    assert_eq!(
        c[0]["structured"]["result"],
        json!({ "greeting": "hello Ada" })
    );
    assert!(c[0]["text"].as_str().unwrap().contains(": pass"));
    let id = c[0]["structured"]["id"].as_str().unwrap();
    assert_eq!(c[1]["structured"]["runs"][0]["id"], id);
    assert_eq!(
        c[2]["structured"]["blueprints"][0]["description"],
        "Greets someone."
    );
    assert_eq!(c[3]["error"], true);
    assert_eq!(c[3]["structured"]["code"], "unknown_run", "{}", c[3]);
    assert!(c[3]["structured"]["message"].as_str().is_some());
    assert_eq!(c[4]["structured"]["ok"], true, "{}", c[4]);
    assert_eq!(c[5]["structured"]["code"], "unknown_run", "{}", c[5]);
}

#[test]
fn over_stdio_a_run_is_forked_with_a_new_input() {
    let dir = fresh("mcp-server-fork", &[("hello.lua", HELLO)]);
    let Some(out) = stdio(&dir, json!([["run_hello", { "name": "Ada" }]])) else {
        return;
    };
    let id = out["calls"][0]["structured"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = stdio(
        &dir,
        json!([
            ["fork_run", { "id": id, "new_id": "f1", "input": { "name": "Bob" } }],
            ["fork_run", { "id": id, "at": "x" }],
        ]),
    )
    .unwrap();
    assert!(
        out["tools"]
            .as_array()
            .unwrap()
            .contains(&json!("fork_run")),
        "{}",
        out["tools"]
    );
    let c = &out["calls"];
    assert_eq!(c[0]["error"], false, "{}", c[0]);
    assert_eq!(c[0]["structured"]["id"], "f1");
    assert_eq!(c[0]["structured"]["status"], "pass", "{}", c[0]);
    assert_eq!(
        c[0]["structured"]["result"],
        json!({ "greeting": "hello Bob" })
    );
    assert_eq!(c[1]["error"], true);
    assert_eq!(c[1]["structured"]["code"], "fork_invalid", "{}", c[1]);
}

#[test]
fn over_stdio_a_run_that_asks_is_returned_waiting_and_answered() {
    let dir = fresh("mcp-server-ask", &[("ask.lua", ASK)]);
    let Some(out) = stdio(&dir, json!([["run_ask", {}]])) else {
        return;
    };
    let started = &out["calls"][0]["structured"];
    assert_eq!(started["status"], "waiting", "{started}");
    assert_eq!(started["open_questions"][0]["name"], "go", "{started}");
    // A second session (a new `swarm mcp`) answers it; the run was left
    // resumable when the first one ended.
    let id = started["id"].as_str().unwrap();
    let out = stdio(
        &dir,
        json!([
            ["answer_question", { "id": id, "question": "go", "value": "yes" }],
            ["resume_run", { "id": id }],
        ]),
    )
    .unwrap();
    let c = &out["calls"];
    assert_eq!(c[0]["error"], false, "{}", c[0]);
    assert_eq!(c[1]["structured"]["status"], "pass", "{}", c[1]);
    assert_eq!(c[1]["structured"]["result"], json!({ "said": "yes" }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_tokens_and_roles_gate_the_tools() {
    if common::mcp::sdk_python().is_none() {
        return;
    }
    let dir = fresh("mcp-server-http", &[("hello.lua", HELLO)]);
    let s = serve(&dir, &[]);
    let url = format!("{}/mcp", s.url);
    let http = |token: String, calls: Value| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            client(&["http", &url, &token, &calls.to_string()]).unwrap()
        })
    };
    // The SDK's client cannot connect without a valid token; on the
    // wire, the refusal is the REST API's `{code, message}`.
    let none = http("-".into(), json!([])).await.unwrap();
    assert!(none.get("failed").is_some(), "{none}");
    let forged = http("not-a-token".into(), json!([])).await.unwrap();
    assert!(forged.get("failed").is_some(), "{forged}");
    let init = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": { "name": "t", "version": "1" } } });
    let refused = reqwest::Client::new()
        .post(&url)
        .header("accept", "application/json, text/event-stream")
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "no_token", "{body}");

    let observer = s.token(Role::Observer, None);
    let seen = http(
        observer,
        json!([["run_hello", { "name": "Eve" }], ["list_runs", {}]]),
    )
    .await
    .unwrap();
    let tools = seen["tools"].to_string();
    assert!(
        !tools.contains("run_hello") && !tools.contains("cancel_run"),
        "{tools}"
    );
    assert!(
        tools.contains("list_runs") && tools.contains("show_run"),
        "{tools}"
    );
    assert!(!tools.contains("answer_question"), "{tools}");
    assert_eq!(
        seen["calls"][0]["structured"]["code"], "forbidden",
        "{seen}"
    );
    assert_eq!(seen["calls"][1]["error"], false);

    let senior = s.token(Role::Senior, None);
    let seen = http(senior, json!([])).await.unwrap();
    let tools = seen["tools"].to_string();
    assert!(
        tools.contains("answer_question") && !tools.contains("run_hello"),
        "{tools}"
    );

    let operator = s.token(Role::Operator, None);
    let ran = http(operator, json!([["run_hello", { "name": "Op" }]]))
        .await
        .unwrap();
    let r = &ran["calls"][0]["structured"];
    assert_eq!(r["status"], "pass", "{ran}");
    assert_eq!(r["result"], json!({ "greeting": "hello Op" }));
}

/// Both ways at once: a blueprint's MCP agent reaches another `swarm
/// serve`'s `/mcp` over streamable HTTP, with a bearer token read from an
/// allow-listed variable that appears nowhere in the run's record.
#[test]
fn an_mcp_agent_over_http_calls_a_served_swarm_with_a_bearer_token() {
    let served = fresh("mcp-server-remote", &[("hello.lua", HELLO)]);
    let s = serve(&served, &[]);
    let token = s.token(Role::Operator, None);
    let dir = fresh(
        "mcp-client-http",
        &[(
            "remote.lua",
            &format!(
                r#"local swarm = require "swarm"
return swarm.blueprint "remote" {{
  agents = {{
    remote = swarm.agent.mcp {{ url = "{}/mcp", bearer_env = "REMOTE_MCP_TOKEN", tools = {{ "run_hello" }} }},
  }},
  flow = function()
    return swarm.step("remote.run_hello", {{ name = "over HTTP" }})
  end,
}}
"#,
                s.url
            ),
        )],
    );
    let db = dir.join("swarm.db");
    let run = |allow: &str| {
        common::cli::swarm()
            .args(["run", "remote.lua", "--run-id", "h1", "--json", "--db"])
            .arg(&db)
            .current_dir(&dir)
            .env("SWARM_ALLOW_ENV", allow)
            .env("REMOTE_MCP_TOKEN", &token)
            .output()
            .unwrap()
    };
    // Not allow-listed: refused when the blueprint's agents are built.
    let refused = run("");
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("REMOTE_MCP_TOKEN") && said.contains("SWARM_ALLOW_ENV"),
        "{said}"
    );

    let out = run("REMOTE_MCP_TOKEN");
    common::cli::passed(&out);
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["status"], "pass", "{result}");
    assert_eq!(result["result"], json!({ "greeting": "hello over HTTP" }));
    let shown = common::cli::swarm()
        .args(["show", "h1", "--json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("hello over HTTP"), "{shown}");
    assert!(!shown.contains(&token), "the token is in the run's record");
}
