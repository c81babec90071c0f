//! The `mcp-stdio` workload: what the host adds to one MCP tool call over
//! stdio. A trivial server (an echo tool, a few lines of Python on raw
//! JSON lines, started with `python3`) is called two ways, sequentially:
//! bare, with the SDK's client and nothing else (the server's own time, as
//! any client sees it: pipes, its parsing, its answer), and as a flow's
//! `swarm.step("t.echo", ...)` (a task, the agent's stack, the stdout
//! guard, the schema check, the result mapping). The difference is the
//! host's overhead per call. Every answer is checked.

use super::{engine, line};
use crate::run::{self, RunOptions};
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, ContentBlock};
use serde_json::json;
use std::path::Path;
use std::time::Instant;

const SERVER: &str = r#"
import json, sys
tool = {"name": "echo", "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}}
for line in sys.stdin:
    m = json.loads(line)
    if "id" not in m:
        continue
    meth = m.get("method")
    if meth == "initialize":
        r = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "t", "version": "0"}}
    elif meth == "tools/list":
        r = {"tools": [tool]}
    elif meth == "tools/call":
        r = {"content": [{"type": "text", "text": m["params"]["arguments"]["text"]}]}
    else:
        r = {}
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": m["id"], "result": r}) + "\n")
    sys.stdout.flush()
"#;

const FLOW: &str = r#"
local swarm = require "swarm"
return swarm.blueprint "mcp" {
  agents = { t = swarm.agent.mcp { command = { "python3", "-c", SERVER } } },
  flow = function(n)
    local last
    for i = 1, n do last = swarm.step("t.echo", { text = "x" .. i }).content[1] end
    return last
  end,
}
"#;

const CALLS: u64 = 2000;

pub async fn mcp_stdio() {
    let w = "mcp-stdio";
    let bare = bare_us(CALLS).await;
    let stepped = step_us(CALLS).await;
    line(w, "bare_call", bare, "us");
    line(w, "step_call", stepped, "us");
    line(w, "host_overhead", stepped - bare, "us");
}

/// Mean µs of one `tools/call` from the SDK's client alone.
async fn bare_us(calls: u64) -> f64 {
    let mut cmd = tokio::process::Command::new("python3");
    cmd.args(["-c", SERVER])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("bench mcp-stdio: python3 is needed");
    let (out, inp) = (
        child.stdout.take().expect("piped"),
        child.stdin.take().expect("piped"),
    );
    let client = ().serve((out, inp)).await.expect("bench mcp-stdio: handshake");
    let call = |i: u64| {
        let args = json!({ "text": format!("x{i}") });
        let params = CallToolRequestParams::new("echo")
            .with_arguments(args.as_object().cloned().unwrap_or_default());
        let peer = client.peer().clone();
        async move {
            let r = peer.call_tool(params).await.expect("bench mcp-stdio: call");
            let text = match r.content.first() {
                Some(ContentBlock::Text(t)) => t.text.clone(),
                _ => String::new(),
            };
            assert_eq!(text, format!("x{i}"), "bench mcp-stdio: a wrong answer");
        }
    };
    call(0).await;
    let start = Instant::now();
    for i in 1..=calls {
        call(i).await;
    }
    start.elapsed().as_secs_f64() * 1e6 / calls as f64
}

/// Mean µs of one `swarm.step` of the same tool in a flow.
async fn step_us(calls: u64) -> f64 {
    let engine = engine();
    let src = FLOW.replace("SERVER", &format!("{SERVER:?}"));
    let r = run::prepare_source(&engine, Path::new("mcp.lua"), &src, RunOptions::default())
        .expect("bench blueprint");
    let warm = r.run(json!(1)).await.expect("warm-up run");
    super::run_passed("mcp-stdio", &warm, Some(&json!("x1")));
    let start = Instant::now();
    let report = r.run(json!(calls)).await.expect("run");
    let us = start.elapsed().as_secs_f64() * 1e6 / calls as f64;
    super::run_passed("mcp-stdio", &report, Some(&json!(format!("x{calls}"))));
    us
}
