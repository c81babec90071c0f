//! Protocol revisions, both ways. `swarm mcp` speaks the current revision
//! (2026-07-28: `server/discover`, then requests that carry their own
//! version) and every older one a client asks for with `initialize`
//! (2025-11-25, 2025-06-18, 2024-11-05; an unknown one gets 2025-11-25).
//! The MCP client asks for 2026-07-28 first and falls back to the
//! `initialize` of 2025-11-25: against `swarm mcp` it agrees on
//! 2026-07-28, against the reference server (an older SDK) on what that
//! server speaks, and a tool call works either way.

mod common;

use common::server::fresh;
use lua_swarm::mcp::{McpClient, McpSpec};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

const HELLO: &str = r#"local swarm = require "swarm"
return swarm.blueprint "hello" {
  agents = { echo = swarm.agent.rust { name = "echo" } },
  flow = function(input) return swarm.step("echo", input) end,
}
"#;

/// Sends `requests` (one JSON-RPC message per line) to a fresh `swarm mcp
/// DIR` and returns its answers, one per request that has an id.
fn exchange(dir: &Path, requests: &[Value]) -> Vec<Value> {
    let store = format!("sqlite:{}", dir.join("db/swarm.db").display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_swarm"))
        .args(["mcp", &dir.display().to_string(), "--store", &store])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut answers = Vec::new();
    for r in requests {
        writeln!(stdin, "{r}").unwrap();
        stdin.flush().unwrap();
        if r.get("id").is_none() {
            continue;
        }
        // Answers come in order; notifications between them are skipped.
        loop {
            let line = lines.next().expect("an answer").unwrap();
            let v: Value = serde_json::from_str(&line).unwrap();
            if v.get("id") == r.get("id") {
                answers.push(v);
                break;
            }
        }
    }
    drop(stdin);
    child.wait().unwrap();
    answers
}

fn initialize(version: &str) -> Value {
    json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": version, "capabilities": {},
        "clientInfo": { "name": "t", "version": "1" } } })
}

#[test]
fn the_server_answers_each_revision_a_client_asks_for() {
    let dir = fresh("mcp-versions", &[("hello.lua", HELLO)]);
    for (asked, agreed) in [
        ("2025-11-25", "2025-11-25"),
        ("2025-06-18", "2025-06-18"),
        ("2024-11-05", "2024-11-05"),
        ("1999-01-01", "2025-11-25"),
    ] {
        let got = exchange(&dir, &[initialize(asked)]);
        assert_eq!(
            got[0]["result"]["protocolVersion"], agreed,
            "asked {asked}: {}",
            got[0]
        );
    }
    // 2026-07-28: no handshake; every request names its revision.
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": { "name": "t", "version": "1" },
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    let got = exchange(
        &dir,
        &[
            json!({ "jsonrpc": "2.0", "id": 1, "method": "server/discover",
                    "params": { "_meta": meta } }),
            json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/call",
                    "params": { "name": "run_hello", "arguments": { "x": 1 }, "_meta": meta } }),
        ],
    );
    let versions = got[0]["result"]["supportedVersions"].to_string();
    assert!(
        versions.contains("2026-07-28") && versions.contains("2025-11-25"),
        "{}",
        got[0]
    );
    let r = &got[1]["result"]["structuredContent"];
    assert_eq!(r["status"], "pass", "{}", got[1]);
    assert_eq!(r["result"], json!({ "x": 1 }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_agrees_on_the_newest_revision_each_server_speaks() {
    let dir = fresh("mcp-versions-client", &[("hello.lua", HELLO)]);
    let store = format!("sqlite:{}", dir.join("db/swarm.db").display());
    let ours = McpSpec::new(vec![
        env!("CARGO_BIN_EXE_swarm").to_string(),
        "mcp".into(),
        dir.display().to_string(),
        "--store".into(),
        store,
    ]);
    let client = McpClient::new("swarm", ours);
    assert_eq!(client.protocol().await.unwrap(), "2026-07-28");
    let sink: lua_swarm::spawn::process::Sink = std::sync::Arc::new(|_, _| {});
    let called = client
        .call("run_hello", json!({ "y": 2 }), sink.clone())
        .await;
    let called = called.unwrap();
    assert_eq!(
        called.structured_content.as_ref().unwrap()["result"],
        json!({ "y": 2 })
    );
    client.stop().await;

    let Some(everything) = common::mcp::npm_server("mcp-server-everything") else {
        return;
    };
    let reference = McpClient::new(
        "everything",
        McpSpec::new(vec![everything.display().to_string()]),
    );
    let agreed = reference.protocol().await.unwrap();
    eprintln!("the reference server agreed on {agreed}");
    assert!(
        agreed.as_str() >= "2025-06-18" && agreed.as_str() <= "2026-07-28",
        "agreed on {agreed:?}"
    );
    let echoed = reference
        .call("echo", json!({ "message": "hi" }), sink)
        .await
        .unwrap();
    assert!(format!("{echoed:?}").contains("hi"), "{echoed:?}");
    reference.stop().await;
}
