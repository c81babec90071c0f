//! LLM agents against a real HTTP server on loopback: the scripted
//! OpenAI-compatible server (`lua_swarm::llm::scripted`) answers from a
//! script and counts requests. Streaming, tool loops, structured output,
//! retries, provider errors, timeouts, cancellation, secrets, and a run
//! killed mid tool loop that resumes without re-sending a finished turn.

use lua_swarm::auth::Signer;
use lua_swarm::engine::{Engine, EngineConfig, EventKind, OutputKind};
use lua_swarm::llm::scripted::{Reply, Scripted};
use lua_swarm::run::{self, RunOptions};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("llm-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A blueprint whose `flow` body is `flow`, with an LLM agent `model`
/// (extra fields `fields`) and tools `lookup` (a Lua agent with params) and
/// `fail` (always blocked).
fn blueprint(d: &Path, url: &str, fields: &str, flow: &str) -> PathBuf {
    let body = format!(
        r#"local swarm = require "swarm"
return swarm.blueprint "llm" {{
  agents = {{
    model = swarm.agent.llm {{ base_url = "{url}", model = "m1", system = "Be brief.", {fields} }},
    lookup = swarm.agent.lua {{
      description = "Look a term up.",
      params = {{ type = "object", properties = {{ term = {{ type = "string" }} }}, required = {{ "term" }} }},
      run = function(task) return "notes on " .. task.input.term end,
    }},
    broken = swarm.agent.rust {{ name = "fail" }},
  }},
  flow = function(input)
    {flow}
  end,
}}
"#
    );
    let p = d.join("llm.lua");
    std::fs::write(&p, body).unwrap();
    p
}

async fn run_it(path: &Path, input: Value) -> (run::RunReport, Engine) {
    let engine = Engine::new(EngineConfig::default(), Signer::random());
    let r = run::prepare(&engine, path, RunOptions::default()).unwrap();
    let report = tokio::time::timeout(Duration::from_secs(60), r.run(input))
        .await
        .expect("hang guard")
        .unwrap();
    (report, engine)
}

/// The last message of a chat request body.
fn last_message(req: &Value) -> Value {
    req["messages"].as_array().unwrap().last().unwrap().clone()
}

fn events(engine: &Engine) -> Vec<lua_swarm::engine::Event> {
    let tok = engine
        .attach(
            lua_swarm::engine::Caller::Host,
            lua_swarm::engine::AttachOptions::new("t", lua_swarm::auth::Role::Observer),
        )
        .unwrap();
    let mut sub = engine.subscribe(&tok, 0).unwrap();
    std::iter::from_fn(|| sub.try_next().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_answer_arrives_whole_with_partials_and_usage() {
    let server = Scripted::start(vec![Reply::Text("Paris is the capital.".into())])
        .await
        .unwrap();
    let d = dir("stream");
    let bp = blueprint(&d, &server.url, "", "return swarm.step('model', input)");
    let (report, engine) = run_it(&bp, json!("Capital of France?")).await;
    assert_eq!(report.result, json!("Paris is the capital."));
    let req = &server.requests()[0];
    assert_eq!(req["model"], "m1");
    assert_eq!(req["stream"], true);
    assert_eq!(req["stream_options"]["include_usage"], true);
    assert_eq!(
        req["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(
        req["messages"][1],
        json!({"role": "user", "content": "Capital of France?"})
    );
    let evs = events(&engine);
    let partial: String = evs
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::WorkerOutput {
                output: OutputKind::Partial,
                data,
            } => data["delta"].as_str().map(str::to_string),
            _ => None,
        })
        .collect();
    assert_eq!(
        partial, "Paris is the capital.",
        "deltas arrive as partial events"
    );
    let usage = evs.iter().find_map(|e| match &e.kind {
        EventKind::WorkerOutput {
            output: OutputKind::Progress,
            data,
        } => data.get("llm").cloned(),
        _ => None,
    });
    let usage = usage.expect("a usage event");
    assert_eq!(
        (
            usage["prompt_tokens"].clone(),
            usage["completion_tokens"].clone()
        ),
        (json!(11), json!(7))
    );
    assert_eq!(usage["model"], "m1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_run_as_child_steps_and_errors_go_back_to_the_model() {
    let server = Scripted::start(vec![
        Reply::Tools(vec![
            ("c1".into(), "lookup".into(), r#"{"term":"lua"}"#.into()),
            ("c2".into(), "lookup".into(), r#"{"term":"rust"}"#.into()),
            ("c3".into(), "nope".into(), "{}".into()),
            ("c4".into(), "lookup".into(), r#"{"term":5}"#.into()),
            ("c5".into(), "broken".into(), r#"{"x":1}"#.into()),
        ]),
        Reply::Text("done".into()),
    ])
    .await
    .unwrap();
    let d = dir("tools");
    let bp = blueprint(
        &d,
        &server.url,
        r#"tools = { "lookup", "broken" }, stream = false"#,
        "return swarm.step('model', { prompt = input })",
    );
    let (report, engine) = run_it(&bp, json!("research")).await;
    assert_eq!(report.result, json!("done"));
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    let offered: Vec<&str> = reqs[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(offered, ["lookup", "broken"]);
    assert_eq!(
        reqs[0]["tools"][0]["function"]["parameters"]["required"],
        json!(["term"])
    );
    let tool_msgs: Vec<&Value> = reqs[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .collect();
    let content = |id: &str| {
        tool_msgs
            .iter()
            .find(|m| m["tool_call_id"] == id)
            .map(|m| m["content"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(content("c1"), "notes on lua");
    assert_eq!(content("c2"), "notes on rust");
    assert!(
        content("c3").starts_with("error: unknown tool `nope`"),
        "{}",
        content("c3")
    );
    assert!(
        content("c4").contains("do not match the parameters"),
        "{}",
        content("c4")
    );
    assert!(content("c5").starts_with("error:"), "{}", content("c5"));
    // The tools ran as child tasks of the step (depth 2), through the engine.
    let created = events(&engine)
        .into_iter()
        .filter(|e| matches!(&e.kind, EventKind::TaskCreated { agent, .. } if &**agent == "lookup"))
        .count();
    assert_eq!(
        created, 2,
        "two valid lookups ran; the invalid ones never started"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_output_is_validated_and_reprompted() {
    let schema = r#"schema = { type = "object", properties = { summary = { type = "string" } }, required = { "summary" } }"#;
    let server = Scripted::start(vec![
        Reply::Text("not json".into()),
        Reply::Text(r#"{"summary": 3}"#.into()),
        Reply::Text(r#"{"summary": "ok"}"#.into()),
    ])
    .await
    .unwrap();
    let d = dir("schema");
    let bp = blueprint(&d, &server.url, schema, "return swarm.step('model', 'go')");
    let (report, _) = run_it(&bp, json!(null)).await;
    assert_eq!(report.result, json!({"summary": "ok"}));
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[0]["response_format"]["type"], "json_schema");
    let last = last_message(&reqs[2]);
    assert!(
        last["content"].as_str().unwrap().contains("does not match"),
        "{last}"
    );

    // Never valid: a typed error carrying the last output.
    server.push((0..3).map(|i| Reply::Text(format!("nope {i}"))));
    let (report, _) = run_it(&bp, json!(null)).await;
    let text = report.result.to_string();
    assert!(
        text.contains("llm_schema") && text.contains("nope 2"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_and_provider_errors_are_not() {
    let server = Scripted::start(vec![
        Reply::Status(429, Some(0)),
        Reply::Status(500, None),
        Reply::Drop("Hal".into()),
        Reply::Malformed,
        Reply::Text("finally".into()),
    ])
    .await
    .unwrap();
    let d = dir("retry");
    let bp = blueprint(&d, &server.url, "", "return swarm.step('model', 'hi')");
    let (report, _) = run_it(&bp, json!(null)).await;
    assert_eq!(report.result, json!("finally"), "never a truncated answer");
    assert_eq!(server.count(), 5);

    server.push([Reply::Status(400, None)]);
    let (report, _) = run_it(&bp, json!(null)).await;
    let text = report.result.to_string();
    assert!(
        text.contains("llm_http") && text.contains("scripted 400"),
        "{text}"
    );
    assert_eq!(server.count(), 6, "a 400 is not retried");

    let bp = blueprint(
        &d,
        &server.url,
        "retries = 1",
        "return swarm.step('model', 'hi')",
    );
    server.push([Reply::Status(503, Some(0)), Reply::Status(503, Some(0))]);
    let (report, _) = run_it(&bp, json!(null)).await;
    assert!(
        report.result.to_string().contains("llm_unavailable"),
        "{}",
        report.result
    );
    assert_eq!(server.count(), 8, "one try and one retry");
}

/// A server that sends without end (streamed or not) fails the turn at the
/// answer cap, at once and without a retry, instead of filling the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_answer_is_cut_at_the_cap_and_not_retried() {
    let server = Scripted::start(vec![Reply::Endless, Reply::Endless])
        .await
        .unwrap();
    let d = dir("runaway");
    for (n, fields) in [(1, ""), (2, "stream = false")] {
        let bp = blueprint(&d, &server.url, fields, "return swarm.step('model', 'hi')");
        let (report, _) = run_it(&bp, json!(null)).await;
        let text = report.result.to_string();
        assert!(
            text.contains("llm_response") && text.contains("passed 16 MiB"),
            "{fields}: {text}"
        );
        assert_eq!(server.count(), n, "{fields}: not retried");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_model_meets_the_timeout_layer_and_the_key_never_leaks() {
    // The reply would take 10 minutes; the timeout layer allows 300 ms.
    let server = Scripted::start(vec![Reply::Slow(
        600_000,
        Box::new(Reply::Text("late".into())),
    )])
    .await
    .unwrap();
    let d = dir("slow");
    // SAFETY: set before this test's runs read them; no other test of this
    // binary reads these names.
    unsafe {
        std::env::set_var("SWARM_TEST_LLM_KEY", "sk-very-secret-value");
        std::env::set_var("SWARM_ALLOW_ENV", "SWARM_TEST_*");
    }
    let bp = blueprint(
        &d,
        &server.url,
        r#"api_key_env = "SWARM_TEST_LLM_KEY", layers = { { "timeout", ms = 300 } }"#,
        "return swarm.step('model', 'hi')",
    );
    let t0 = std::time::Instant::now();
    let (report, engine) = run_it(&bp, json!(null)).await;
    assert!(t0.elapsed() < Duration::from_secs(120), "hang guard only");
    assert!(
        report.result.to_string().contains("timeout"),
        "{}",
        report.result
    );
    let all = serde_json::to_string(&events(&engine)).unwrap() + &report.result.to_string();
    assert!(!all.contains("sk-very-secret"), "the key leaked: {all}");

    // An unset key variable is a clear error naming the variable.
    let bp = blueprint(
        &d,
        &server.url,
        r#"api_key_env = "SWARM_TEST_UNSET_KEY""#,
        "return swarm.step('model', 'hi')",
    );
    let (report, _) = run_it(&bp, json!(null)).await;
    assert!(
        report
            .result
            .to_string()
            .contains("$SWARM_TEST_UNSET_KEY is not set"),
        "{}",
        report.result
    );
}

/// Waits (polling, generous hang guard) until `ok` holds.
fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let t0 = std::time::Instant::now();
    while !ok() {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_mid_tool_loop_resumes_without_resending_a_finished_turn() {
    let server = Scripted::start(vec![
        Reply::Tools(vec![("c1".into(), "mark".into(), "{}".into())]),
        Reply::Tools(vec![("c2".into(), "gate".into(), "{}".into())]),
        Reply::Text("final".into()),
    ])
    .await
    .unwrap();
    let d = dir("kill");
    let (pids, gate, fx) = (d.join("pids"), d.join("gate"), d.join("effects"));
    let body = format!(
        r#"local swarm = require "swarm"
return swarm.blueprint "k" {{
  agents = {{
    model = swarm.agent.llm {{ base_url = "{url}", model = "m", tools = {{ "mark", "gate" }} }},
    mark = swarm.agent.process {{ shell = 'echo ran >> "{fx}"; echo 1' }},
    gate = swarm.agent.process {{ shell = 'echo $$ >> "{pids}"; while [ ! -e "{gate}" ]; do sleep 0.05; done; echo 2' }},
  }},
  flow = function() return swarm.step("model", "go") end,
}}
"#,
        url = server.url,
        fx = fx.display(),
        pids = pids.display(),
        gate = gate.display(),
    );
    let bp = d.join("k.lua");
    std::fs::write(&bp, body).unwrap();
    let db = d.join("swarm.db");
    let swarm = |args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_swarm"));
        c.args(args).arg("--db").arg(&db);
        c.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c
    };
    let mut child = swarm(&["run", bp.to_str().unwrap(), "--run-id", "k1"])
        .spawn()
        .unwrap();
    // Turn 1, its tool call and turn 2 are journaled; the second tool runs.
    wait_for("the second tool to start", || pids.exists());
    child.kill().unwrap();
    child.wait().unwrap();
    for pid in std::fs::read_to_string(&pids).unwrap().split_whitespace() {
        let _ = std::process::Command::new("kill")
            .args(["-9", pid])
            .status();
    }
    assert_eq!(server.count(), 2);
    std::fs::write(&gate, "").unwrap();
    let out = swarm(&["resume", "k1", "--json"]).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("\"final\""), "{text}");
    assert_eq!(server.count(), 3, "only the unfinished turn was sent again");
    let marks = std::fs::read_to_string(&fx).unwrap().lines().count();
    assert_eq!(marks, 1, "the finished tool call did not run again");
    // The resumed request carried the replayed history: both tool results.
    let last = &server.requests()[2]["messages"];
    let tools: Vec<&str> = last
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(tools, ["1", "2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_research_sample_runs_its_critic_loop() {
    let critic =
        |ok: bool, notes: &str| Reply::Text(json!({ "approved": ok, "notes": notes }).to_string());
    let server = Scripted::start(vec![
        Reply::Tools(vec![(
            "c1".into(),
            "lookup".into(),
            r#"{"term":"Lua"}"#.into(),
        )]),
        Reply::Text("facts".into()),
        Reply::Text("draft 1".into()),
        critic(false, "shorter"),
        Reply::Text("draft 2".into()),
        critic(true, "good"),
    ])
    .await
    .unwrap();
    let bp = Path::new(env!("CARGO_MANIFEST_DIR")).join("blueprints/research.lua");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_swarm"))
            .args([
                "run",
                bp.to_str().unwrap(),
                "--no-journal",
                "--json",
                "--input",
                "\"Lua\"",
            ])
            .env("SWARM_LLM_BASE_URL", &server.url)
            .env("SWARM_LLM_MODEL", "scripted")
            .stdin(std::process::Stdio::null())
            .output()
            .map(|o| (o, server))
    })
    .await
    .unwrap()
    .unwrap();
    let (out, server) = out;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(result, json!({ "text": "draft 2", "rounds": 2 }));
    let tool = last_message(&server.requests()[1]);
    assert!(
        tool["content"].as_str().unwrap().contains("PUC-Rio"),
        "{tool}"
    );
}
