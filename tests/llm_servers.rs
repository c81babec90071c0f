//! LLM agents against servers as they really are, played by the scripted
//! server on loopback: structured output stepping down from `json_schema`
//! to `json_object` to text when refused (and remembered), a request the
//! server refuses not retried, usage estimated when none is reported (and
//! tripping `limits.tokens`), the `max_tokens` and `turn_timeout` limits,
//! tool-call history sent with `content: ""`, tools offered but unused,
//! tool turns a server cannot stream, the last turn without tools,
//! `max_completion_tokens` for models that refuse `max_tokens`, and the
//! hint for a base URL without `/v1`.

use lua_swarm::auth::{Role, Signer};
use lua_swarm::engine::{
    AttachOptions, Caller, Engine, EngineConfig, Event, EventKind, OutputKind, TaskStatus,
};
use lua_swarm::llm::scripted::{Reply, Scripted};
use lua_swarm::run::{self, RunOptions};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("llm-servers-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const SCHEMA: &str = r#"schema = { type = "object", properties = { ok = { type = "boolean" } }, required = { "ok" } }"#;

/// A blueprint with an LLM agent `model` (plus `fields`), a Lua tool
/// `lookup`, the blueprint fields `extra` and the flow body `flow`.
fn blueprint(d: &Path, url: &str, fields: &str, extra: &str, flow: &str) -> PathBuf {
    let body = format!(
        r#"local swarm = require "swarm"
return swarm.blueprint "s" {{
  {extra}
  agents = {{
    model = swarm.agent.llm {{ base_url = "{url}", model = "m1", system = "Be brief.", {fields} }},
    lookup = swarm.agent.lua {{
      params = {{ type = "object", properties = {{ term = {{ type = "string" }} }} }},
      run = function(task) return "noted" end,
    }},
  }},
  flow = function(input)
    {flow}
  end,
}}
"#
    );
    let p = d.join("s.lua");
    std::fs::write(&p, body).unwrap();
    p
}

async fn run_it(path: &Path) -> (run::RunReport, Vec<Event>) {
    let engine = Engine::new(EngineConfig::default(), Signer::random());
    let r = run::prepare(&engine, path, RunOptions::default()).unwrap();
    let report = tokio::time::timeout(Duration::from_secs(60), r.run(Value::Null))
        .await
        .expect("hang guard")
        .unwrap();
    let tok = engine
        .attach(Caller::Host, AttachOptions::new("t", Role::Observer))
        .unwrap();
    let mut sub = engine.subscribe(&tok, 0).unwrap();
    let events = std::iter::from_fn(|| sub.try_next().unwrap()).collect();
    (report, events)
}

/// The progress outputs of a run's LLM steps under `key`.
fn progress(events: &[Event], key: &str) -> Vec<Value> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::WorkerOutput {
                output: OutputKind::Progress,
                data,
            } => data.get(key).cloned(),
            _ => None,
        })
        .collect()
}

const REFUSED: &str = "[{'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), \
                       'msg': \"Input should be 'text' or 'json_object'\"}]";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_output_steps_down_when_refused_and_remembers() {
    let server = Scripted::start(vec![
        // json_schema refused as llama-cpp-python does it, json_object
        // refused with a 400: the text mode answers, in prose.
        Reply::Refuse(500, REFUSED.into()),
        Reply::Refuse(400, "response_format json_object is not supported".into()),
        Reply::Text("Here you go: {\"ok\": true}".into()),
        // The next step starts where the last one ended.
        Reply::Text("{\"ok\": false}".into()),
    ])
    .await
    .unwrap();
    let d = dir("fallback");
    let flow = "return { swarm.step('model', 'a'), swarm.step('model', 'b') }";
    let bp = blueprint(&d, &server.url, SCHEMA, "", flow);
    let (report, events) = run_it(&bp).await;
    assert_eq!(report.result, json!([{ "ok": true }, { "ok": false }]));
    let reqs = server.requests();
    assert_eq!(reqs.len(), 4, "a refused format is not retried as is");
    assert_eq!(reqs[0]["response_format"]["type"], "json_schema");
    assert_eq!(reqs[1]["response_format"]["type"], "json_object");
    assert!(reqs[1]["response_format"]["schema"].is_object());
    for r in &reqs[2..] {
        assert!(r.get("response_format").is_none(), "{r}");
        let system = r["messages"][0]["content"].as_str().unwrap();
        assert!(
            system.starts_with("Be brief.") && system.contains("\"required\":[\"ok\"]"),
            "the schema is in the prompt: {system}"
        );
    }
    let notes = progress(&events, "llm_note");
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(
        notes[0]["message"]
            .as_str()
            .unwrap()
            .contains("`json_schema`")
    );
    let modes: Vec<Value> = progress(&events, "llm")
        .iter()
        .map(|l| l["structured"].clone())
        .collect();
    assert_eq!(modes, vec![json!("text"), json!("text")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_object_mode_validates_and_sends_one_failure_back() {
    let server = Scripted::start(vec![
        Reply::Refuse(422, "unknown response_format type json_schema".into()),
        Reply::Text("{\"ok\": \"yes\"}".into()),
        Reply::Text("{\"ok\": true}".into()),
    ])
    .await
    .unwrap();
    let d = dir("object");
    let bp = blueprint(
        &d,
        &server.url,
        SCHEMA,
        "",
        "return swarm.step('model', 'a')",
    );
    let (report, events) = run_it(&bp).await;
    assert_eq!(report.result, json!({ "ok": true }));
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[2]["response_format"]["type"], "json_object");
    let back = reqs[2]["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert!(back["content"].as_str().unwrap().contains("/ok"), "{back}");
    let modes: Vec<Value> = progress(&events, "llm")
        .iter()
        .map(|l| l["structured"].clone())
        .collect();
    assert_eq!(modes, vec![json!("json_object"), json!("json_object")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_server_refuses_is_not_retried_and_says_what() {
    let server = Scripted::start(vec![Reply::Refuse(
        500,
        "1 validation error for CreateChatCompletionRequest: messages.1.content: \
         Input should be a valid string"
            .into(),
    )])
    .await
    .unwrap();
    let d = dir("refused");
    let bp = blueprint(&d, &server.url, "", "", "return swarm.step('model', 'a')");
    let (report, _) = run_it(&bp).await;
    assert_eq!(report.status, TaskStatus::Blocked);
    let err = report.result["result"]["error"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(
        report.result["result"]["code"], "llm_http",
        "{}",
        report.result
    );
    assert!(
        err.contains("refused the request with 500")
            && err.contains("not retried")
            && err.contains("messages.1.content"),
        "{err}"
    );
    assert_eq!(server.count(), 1);

    // A 404 at a base URL without /v1 says where the API usually is.
    let root = server.url.trim_end_matches("/v1");
    let bp = blueprint(&d, root, "", "", "return swarm.step('model', 'a')");
    let (report, _) = run_it(&bp).await;
    let err = report.result["result"]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(err.contains("404") && err.contains("end in /v1"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_estimated_when_none_is_reported_and_trips_the_budget() {
    let long = "word ".repeat(200);
    let server = Scripted::start(vec![Reply::Bare(long.clone()), Reply::Bare(long)])
        .await
        .unwrap();
    let d = dir("estimated");
    let flow = r#"for i = 1, 3 do pcall(swarm.step, "model", "q" .. i) end
    return "kept going""#;
    let bp = blueprint(&d, &server.url, "", "limits = { tokens = 300 },", flow);
    let (report, events) = run_it(&bp).await;
    assert_eq!(report.result["code"], "token_budget", "{}", report.result);
    assert_eq!(server.count(), 2, "the estimate stopped the third turn");
    let total = report.usage.total;
    assert!(
        total.estimated && total.completion_tokens >= 200,
        "{total:?}"
    );
    assert!(report.usage.line().contains("estimated: prompt"));
    let turns = progress(&events, "llm");
    assert!(turns.iter().all(|t| t["estimated"] == true), "{turns:?}");

    // Streamed or not, the same: reported usage is taken as is.
    server.push([Reply::Text("ok".into())]);
    let bp = blueprint(
        &d,
        &server.url,
        "stream = false",
        "",
        "return swarm.step('model', 'a')",
    );
    let (report, _) = run_it(&bp).await;
    assert!(!report.usage.total.estimated);
    assert_eq!(report.usage.total.total_tokens, 18);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tokens_and_turn_timeout_have_defaults_and_clear_codes() {
    let server = Scripted::start(vec![Reply::Cut("and then, and then".into())])
        .await
        .unwrap();
    let d = dir("limits");
    let bp = blueprint(&d, &server.url, "", "", "return swarm.step('model', 'a')");
    let (report, _) = run_it(&bp).await;
    assert_eq!(
        report.result["result"]["code"], "max_tokens",
        "{}",
        report.result
    );
    assert!(
        report.result["result"]["error"]
            .as_str()
            .unwrap()
            .contains("max_tokens (2048)")
    );
    assert_eq!(report.result["result"]["output"], "and then, and then");
    assert_eq!(
        server.requests()[0]["max_tokens"],
        2048,
        "the default is sent"
    );

    // Overridden per agent: 0 sends none; a turn past turn_timeout ends
    // with its own code, not retried. The reply comes 60 s late, far
    // past the 300 ms limit (a hang guard, not a race).
    server.push([Reply::Slow(60_000, Box::new(Reply::Text("late".into())))]);
    let bp = blueprint(
        &d,
        &server.url,
        r#"max_tokens = 0, turn_timeout = "300ms""#,
        "",
        "return swarm.step('model', 'a')",
    );
    let (report, _) = run_it(&bp).await;
    assert_eq!(
        report.result["result"]["code"], "turn_timeout",
        "{}",
        report.result
    );
    assert!(
        report.result["result"]["error"]
            .as_str()
            .unwrap()
            .contains("300ms")
    );
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    assert!(reqs[1].get("max_tokens").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_history_is_sent_with_empty_content_and_unused_tools_are_noted() {
    let server = Scripted::start(vec![
        Reply::Tools(vec![(
            "c1".into(),
            "lookup".into(),
            "{\"term\":\"x\"}".into(),
        )]),
        Reply::Text("done".into()),
        // A second step that never calls its tool.
        Reply::Text("guessed".into()),
    ])
    .await
    .unwrap();
    let d = dir("tools");
    let flow = "return { swarm.step('model', 'a'), swarm.step('model', 'b') }";
    let bp = blueprint(
        &d,
        &server.url,
        r#"tools = { "lookup" }, stream = false"#,
        "",
        flow,
    );
    let (report, events) = run_it(&bp).await;
    assert_eq!(report.result, json!(["done", "guessed"]));
    let reqs = server.requests();
    let assistant = &reqs[1]["messages"][2];
    assert_eq!(assistant["role"], "assistant");
    assert_eq!(assistant["content"], "", "never null: {assistant}");
    let notes = progress(&events, "llm_note");
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0]["code"], "tools_unused");
    assert!(notes[0]["message"].as_str().unwrap().contains("(lookup)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_cannot_stream_tool_turns_gets_them_unstreamed() {
    let server = Scripted::start(vec![
        Reply::Empty,
        Reply::Tools(vec![("c1".into(), "lookup".into(), "{}".into())]),
        Reply::Text("found".into()),
        // The next step starts unstreamed: the server's way was learnt.
        Reply::Text("second".into()),
    ])
    .await
    .unwrap();
    let d = dir("stream-tools");
    let flow = "return { swarm.step('model', 'a'), swarm.step('model', 'b') }";
    let bp = blueprint(&d, &server.url, r#"tools = { "lookup" }"#, "", flow);
    let (report, events) = run_it(&bp).await;
    assert_eq!(
        report.result,
        json!(["found", "second"]),
        "{}",
        report.result
    );
    let reqs = server.requests();
    let streamed: Vec<Value> = reqs.iter().map(|r| r["stream"].clone()).collect();
    assert_eq!(
        streamed,
        vec![json!(true), json!(false), json!(false), json!(false)]
    );
    assert!(reqs[1].get("stream_options").is_none());
    assert!(reqs.iter().all(|r| r["tool_choice"] == "auto"), "{reqs:?}");
    let notes = progress(&events, "llm_note");
    assert_eq!(notes[0]["code"], "stream_fallback", "{notes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_turn_offers_no_tools_so_a_looping_model_answers() {
    let call = || Reply::Tools(vec![("c".into(), "lookup".into(), "{}".into())]);
    let server = Scripted::start(vec![call(), call(), Reply::Text("at last".into())])
        .await
        .unwrap();
    let d = dir("last-turn");
    let fields = r#"tools = { "lookup" }, max_turns = 3"#;
    let bp = blueprint(
        &d,
        &server.url,
        fields,
        "",
        "return swarm.step('model', 'a')",
    );
    let (report, _) = run_it(&bp).await;
    assert_eq!(report.result, json!("at last"));
    let choices: Vec<Value> = server
        .requests()
        .iter()
        .map(|r| r["tool_choice"].clone())
        .collect();
    assert_eq!(choices, vec![json!("auto"), json!("auto"), json!("none")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_refuses_max_tokens_gets_max_completion_tokens() {
    let said = "Unsupported parameter: 'max_tokens' is not supported with this model. \
                Use 'max_completion_tokens' instead.";
    let server = Scripted::start(vec![
        Reply::Refuse(400, said.into()),
        Reply::Text("{\"ok\": true}".into()),
    ])
    .await
    .unwrap();
    let d = dir("completion");
    // With a schema too: the 400 is about max_tokens, not the format.
    let bp = blueprint(
        &d,
        &server.url,
        SCHEMA,
        "",
        "return swarm.step('model', 'a')",
    );
    let (report, events) = run_it(&bp).await;
    assert_eq!(report.result, json!({ "ok": true }));
    let reqs = server.requests();
    assert_eq!(reqs[0]["max_tokens"], 2048);
    assert!(reqs[1].get("max_tokens").is_none());
    assert_eq!(reqs[1]["max_completion_tokens"], 2048);
    assert_eq!(reqs[1]["response_format"]["type"], "json_schema");
    let notes = progress(&events, "llm_note");
    assert_eq!(notes[0]["code"], "max_tokens_renamed", "{notes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_show_marks_estimated_usage_in_words_and_json() {
    let server = Scripted::start(vec![Reply::Bare("an answer".into())])
        .await
        .unwrap();
    let d = dir("show-estimated");
    let bp = blueprint(&d, &server.url, "", "", "return swarm.step('model', 'a')");
    let db = d.join("swarm.db");
    let swarm = |args: Vec<String>| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_swarm"));
        c.args(args).arg("--db").arg(&db);
        tokio::task::spawn_blocking(move || c.output().unwrap())
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let path = bp.to_str().unwrap();
    let out = swarm(s(&["run", path, "--run-id", "e1"])).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = swarm(s(&["show", "e1"])).await.unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("tokens (estimated: prompt"), "{table}");
    assert!(table.contains("1 turns  estimated"), "{table}");
    let out = swarm(s(&["show", "e1", "--json"])).await.unwrap();
    let head = String::from_utf8_lossy(&out.stdout);
    let head: Value = serde_json::from_str(head.lines().next().unwrap()).unwrap();
    assert_eq!(head["usage"]["total"]["estimated"], true, "{head}");
    assert_eq!(head["usage"]["by_step"]["1"]["estimated"], true, "{head}");
}
