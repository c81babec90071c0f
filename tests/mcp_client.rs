//! MCP servers nobody here wrote, as agents: the reference servers
//! `@modelcontextprotocol/server-everything` and `server-filesystem`
//! (installed by `.ci/run` into a cache dir; see `common::mcp`) driven by
//! flows through `swarm.step`, and by an LLM agent (the scripted
//! OpenAI-compatible server) that names them in its `tools`.

mod common;

use lua_swarm::auth::{Role, Signer};
use lua_swarm::engine::{AttachOptions, Caller, Engine, EngineConfig, Event, EventKind};
use lua_swarm::engine::{OutputKind, TaskStatus};
use lua_swarm::llm::scripted::{Reply, Scripted};
use lua_swarm::run::{self, RunOptions, RunReport};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("mcp-client-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn blueprint(d: &Path, agents: &str, flow: &str) -> PathBuf {
    let body = format!(
        r#"local swarm = require "swarm"
return swarm.blueprint "mcp" {{
  agents = {{
    {agents}
  }},
  flow = function(input)
    {flow}
  end,
}}
"#
    );
    let p = d.join("mcp.lua");
    std::fs::write(&p, body).unwrap();
    p
}

async fn run_it(path: &Path) -> (RunReport, Engine) {
    let engine = Engine::new(EngineConfig::default(), Signer::random());
    let r = run::prepare(&engine, path, RunOptions::default()).unwrap();
    let report = tokio::time::timeout(Duration::from_secs(120), r.run(json!(null)))
        .await
        .expect("hang guard")
        .unwrap();
    (report, engine)
}

fn events(engine: &Engine) -> Vec<Event> {
    let tok = engine
        .attach(Caller::Host, AttachOptions::new("t", Role::Observer))
        .unwrap();
    let mut sub = engine.subscribe(&tok, 0).unwrap();
    std::iter::from_fn(|| sub.try_next().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_tools_are_steps_with_their_results_mapped() {
    let Some(server) = common::mcp::npm_server("mcp-server-everything") else {
        return;
    };
    let d = dir("everything");
    let agents = format!(
        r#"everything = swarm.agent.mcp {{ command = {{ "{}" }}, env = {{ SHOWN = "yes" }},
      tools = {{ "echo", "get-sum", "get-structured-content", "get-tiny-image", "get-env" }} }},"#,
        server.display()
    );
    let flow = r#"
    local env_text = swarm.step("everything.get-env", {}).content[1]
    local _, hidden = swarm.pstep("everything.toggle-simulated-logging", {})
    return {
      echo = swarm.step("everything.echo", { message = "hi" }),
      sum = swarm.step("everything.get-sum", { a = 2, b = 3 }),
      weather = swarm.step("everything.get-structured-content", { location = "Chicago" }),
      image = swarm.step("everything.get-tiny-image", {}),
      env = swarm.json.decode(env_text),
      hidden = hidden.result.code,
    }"#;
    let (r, _) = run_it(&blueprint(&d, &agents, flow)).await;
    assert_eq!(r.status, TaskStatus::Pass, "{}", r.result);
    let v = &r.result;
    assert_eq!(v["echo"], json!({ "content": ["Echo: hi"] }));
    assert_eq!(v["sum"], json!({ "content": ["The sum of 2 and 3 is 5."] }));
    assert_eq!(
        v["weather"]["conditions"], "Light rain / drizzle",
        "structuredContent: {v}"
    );
    let image = v["image"]["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c.is_object())
        .unwrap_or_else(|| panic!("an image item: {v}"));
    assert_eq!(image["type"], "image");
    assert_eq!(image["mimeType"], "image/png");
    // A clean environment: the blueprint's own variable, PATH, and not
    // what the host's process has (cargo's variables).
    assert_eq!(v["env"]["SHOWN"], "yes", "{}", v["env"]);
    assert!(v["env"].get("PATH").is_some());
    assert!(v["env"].get("CARGO_PKG_NAME").is_none(), "{}", v["env"]);
    // Outside the allow-list: no such agent.
    assert_eq!(v["hidden"], "unknown_tool");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_notifications_become_progress_events_of_the_step() {
    let Some(server) = common::mcp::npm_server("mcp-server-everything") else {
        return;
    };
    let d = dir("progress");
    let agents = format!(
        r#"everything = swarm.agent.mcp {{ command = {{ "{}" }} }},"#,
        server.display()
    );
    let flow = r#"return swarm.step("everything.trigger-long-running-operation", { duration = 0.2, steps = 2 })"#;
    let (r, engine) = run_it(&blueprint(&d, &agents, flow)).await;
    assert_eq!(r.status, TaskStatus::Pass, "{}", r.result);
    let progress: Vec<Value> = events(&engine)
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::WorkerOutput {
                output: OutputKind::Progress,
                data,
            } => Some((*data).clone()),
            _ => None,
        })
        .filter(|d| d.get("mcp").is_some())
        .collect();
    assert_eq!(progress.len(), 2, "{progress:?}");
    assert_eq!(progress[1]["mcp"]["progress"], 2.0);
    assert_eq!(progress[1]["mcp"]["total"], 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filesystem_reads_and_lists_a_directory() {
    let Some(server) = common::mcp::npm_server("mcp-server-filesystem") else {
        return;
    };
    let d = dir("filesystem");
    let data = d.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("note.txt"), "hello from a file").unwrap();
    let agents = format!(
        r#"fs = swarm.agent.mcp {{ command = {{ "{}", "{}" }} }},"#,
        server.display(),
        data.display()
    );
    let flow = format!(
        r#"return {{
      text = swarm.step("fs.read_text_file", {{ path = "{0}/note.txt" }}),
      list = swarm.step("fs.list_directory", {{ path = "{0}" }}),
      outside = select(2, swarm.pstep("fs.read_text_file", {{ path = "/etc/hostname" }})).result.code,
    }}"#,
        data.display()
    );
    let (r, _) = run_it(&blueprint(&d, &agents, &flow)).await;
    assert_eq!(r.status, TaskStatus::Pass, "{}", r.result);
    assert_eq!(
        r.result["text"]["content"], "hello from a file",
        "{}",
        r.result
    );
    assert!(
        r.result["list"].to_string().contains("note.txt"),
        "{}",
        r.result
    );
    assert_eq!(r.result["outside"], "tool_error", "{}", r.result);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_llm_agent_calls_mcp_tools_named_by_family() {
    let Some(server) = common::mcp::npm_server("mcp-server-everything") else {
        return;
    };
    let llm = Scripted::start(vec![
        Reply::Tools(vec![(
            "c1".into(),
            "everything_get-sum".into(),
            r#"{"a": 20, "b": 22}"#.into(),
        )]),
        Reply::Text("42".into()),
    ])
    .await
    .unwrap();
    let d = dir("llm");
    let agents = format!(
        r#"everything = swarm.agent.mcp {{ command = {{ "{}" }}, tools = {{ "echo", "get-sum" }} }},
    writer = swarm.agent.llm {{ base_url = "{}", model = "m1", tools = {{ "everything.*" }} }},"#,
        server.display(),
        llm.url
    );
    let (r, _) = run_it(&blueprint(
        &d,
        &agents,
        r#"return swarm.step("writer", "add")"#,
    ))
    .await;
    assert_eq!(r.status, TaskStatus::Pass, "{}", r.result);
    assert_eq!(r.result, json!("42"));
    let reqs = llm.requests();
    let offered: Vec<&str> = reqs[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(offered, ["everything_echo", "everything_get-sum"]);
    let sum_schema = &reqs[0]["tools"][1]["function"]["parameters"];
    assert_eq!(
        sum_schema["properties"]["a"]["type"], "number",
        "{sum_schema}"
    );
    let answer = reqs[1]["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(answer["role"], "tool");
    assert!(
        answer["content"]
            .as_str()
            .unwrap()
            .contains("The sum of 20 and 22 is 42."),
        "{answer}"
    );
}

#[test]
fn the_sample_blueprint_runs_against_the_reference_server() {
    let Some(server) = common::mcp::npm_server("mcp-server-everything") else {
        return;
    };
    let bin = server.parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = common::cli::swarm()
        .args([
            "run",
            "blueprints/mcp.lua",
            "--no-journal",
            "--input",
            r#"{"a": 40, "b": 2}"#,
        ])
        .env("PATH", path)
        .output()
        .unwrap();
    common::cli::passed(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Echo: The sum of 40 and 2 is 42."),
        "{stdout}"
    );
}

#[test]
fn check_lists_each_mcp_agents_tools_and_flags_an_unknown_one() {
    let Some(server) = common::mcp::npm_server("mcp-server-everything") else {
        return;
    };
    let d = dir("check");
    let agents = format!(
        r#"everything = swarm.agent.mcp {{ command = {{ "{}" }}, tools = {{ "echo", "get-sum" }} }},"#,
        server.display()
    );
    let good = blueprint(
        &d,
        &agents,
        r#"return swarm.step("everything.echo", { message = "hi" })"#,
    );
    let out = common::cli::swarm()
        .arg("check")
        .arg(&good)
        .output()
        .unwrap();
    common::cli::passed(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("everything: echo, get-sum"), "{stdout}");

    let bad = blueprint(
        &d,
        &agents,
        r#"return swarm.step("everything.get-sun", { a = 1, b = 2 })"#,
    );
    let out = common::cli::swarm()
        .arg("check")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("mcp.lua:7: swarm.step: no agent named `everything.get-sun`")
            && stderr.contains("did you mean `everything.get-sum`?"),
        "{stderr}"
    );
}
