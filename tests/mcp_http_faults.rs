//! The size cap of an MCP agent holds over streamable HTTP as it does over
//! stdio: against a server written with the official Python SDK
//! (`tests/mcp/http_server.py`), an answer over the agent's `max_message`
//! (just over it, and far over it) fails its step with `too_large` naming
//! agent and tool, and the next call on the same agent passes (the
//! connection is started again).

mod common;

use common::flow::{run_file, scratch, write};
use lua_swarm::engine::TaskStatus;
use lua_swarm::run::RunOptions;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

const SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/http_server.py");

/// The server, killed when dropped.
struct Server(Child, u16);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the server and reads the port it prints once it listens.
fn start() -> Option<Server> {
    let python = common::mcp::sdk_python()?;
    let mut child = Command::new(python)
        .arg(SERVER)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .strip_prefix("PORT ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("the server said {line:?}"));
    Some(Server(child, port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_over_the_cap_is_too_large_over_http_too() {
    let Some(server) = start() else {
        return;
    };
    let src = format!(
        r#"local swarm = require "swarm"
return swarm.blueprint "capped" {{
  agents = {{ remote = swarm.agent.mcp {{ url = "http://127.0.0.1:{}/mcp", max_message = 100000 }} }},
  flow = function()
    local first = swarm.step("remote.echo", {{ text = "hi" }})
    local near_ok, near = swarm.pstep("remote.huge", {{ n = 150000 }})
    local far_ok, far = swarm.pstep("remote.huge", {{ n = 5000000 }})
    local under = swarm.step("remote.huge", {{ n = 1000 }})
    local after = swarm.step("remote.echo", {{ text = "again" }})
    return {{ first = first, near = near_ok or near.result, far = far_ok or far.result,
              under = #under.result, after = after }}
  end,
}}
"#,
        server.1
    );
    let dir = scratch("mcp-http-cap");
    let path = write(&dir, "capped.lua", &src);
    let r = run_file(&path, json!(null), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(r.status, TaskStatus::Pass, "{}", r.result);
    let r = r.result;
    assert_eq!(r["first"], json!({ "result": "hi" }), "{r}");
    for side in ["near", "far"] {
        assert_eq!(r[side]["code"], "too_large", "{side}: {r}");
        let msg = r[side]["error"].as_str().unwrap();
        assert!(msg.contains("agent `remote`, tool `huge`"), "{msg}");
        assert!(msg.contains("100000"), "{msg}");
    }
    assert_eq!(r["under"], 1000, "{r}");
    assert_eq!(r["after"], json!({ "result": "again" }), "{r}");
}
