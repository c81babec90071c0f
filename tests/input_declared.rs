//! Declared inputs: a blueprint's `input = { …JSON Schema… }` is checked
//! before anything runs, by every face — `swarm run` (exit 2, the field
//! named, nothing journaled), `POST /v1/runs` (400 `input_invalid`; `GET
//! /v1/blueprints` lists each schema as `input`), the REPL, and the
//! library's `Prepared::start` that they and MCP use — and shown by
//! `swarm check`. A schema that is not one is a blueprint error at
//! its line; without a declaration any input is taken.

mod common;

use common::dir::{Dir, text};
use common::server::{Client, fresh, serve};
use lua_swarm::auth::{Role, Signer};
use lua_swarm::engine::{Engine, EngineConfig};
use lua_swarm::run::{self, RunOptions};
use serde_json::{Value, json};

const GREET: &str = r#"local swarm = require "swarm"
return swarm.blueprint "greet" {
  input = {
    type = "object",
    properties = { name = { type = "string" }, times = { type = "integer", minimum = 1 } },
    required = { "name" },
  },
  flow = function(input) return "hello " .. input.name end,
}
"#;

const OPEN: &str = r#"local swarm = require "swarm"
return swarm.blueprint "open" {
  flow = function(input) return input end,
}
"#;

#[test]
fn swarm_run_refuses_an_input_that_does_not_match_and_records_nothing() {
    let d = Dir::new("input-cli");
    let bp = d.file("greet.lua", GREET);
    let out = d.swarm(&["run", &bp, "--input", r#"{"name": 42}"#]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("input_invalid") || t.contains("does not match"),
        "{t}"
    );
    assert!(t.contains("at /name") && t.contains("\"string\""), "{t}");
    let out = d.swarm(&["run", &bp, "--input", r#""you""#]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("at /: \"you\" is not of type \"object\""), "{t}");
    let out = d.swarm(&["run", &bp, "--input", r#"{}"#]);
    assert!(
        text(&out).contains("\"name\" is a required property"),
        "{}",
        text(&out)
    );
    let out = d.swarm(&["runs"]);
    assert!(
        !text(&out).contains("greet"),
        "nothing was journaled: {}",
        text(&out)
    );

    let out = d.swarm(&["run", &bp, "--input", r#"{"name": "you", "times": 2}"#]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("hello you"), "{}", text(&out));
    // Without a declaration nothing changes.
    let open = d.file("open.lua", OPEN);
    let out = d.swarm(&["run", &open, "--input", r#""anything""#]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn swarm_check_shows_the_declared_input_and_refuses_a_bad_schema() {
    let d = Dir::new("input-check");
    let bp = d.file("greet.lua", GREET);
    let check = |file: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_swarm"))
            .args(["check", file])
            .output()
            .unwrap()
    };
    let out = check(&bp);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("input: object { name*: string, times: integer } (* required)"),
        "{t}"
    );
    let bad = d.file(
        "bad.lua",
        "local swarm = require \"swarm\"\nreturn swarm.blueprint \"bad\" {\n  \
         input = { type = \"nonsense\" },\n  flow = function() end,\n}\n",
    );
    let out = check(&bad);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("bad.lua:2") && t.contains("`input`"), "{t}");
    assert!(t.contains("not a valid JSON Schema"), "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_checks_before_starting_and_exposes_the_schema() {
    let d = Dir::new("input-lib");
    let bp = d.file("greet.lua", GREET);
    let engine = Engine::new(EngineConfig::default(), Signer::random());
    let r = run::prepare(&engine, bp.as_ref(), RunOptions::default()).unwrap();
    let schema = r.blueprint.input_schema().expect("declared");
    assert_eq!(schema["required"], json!(["name"]));
    let err = r
        .start(json!({ "name": "x", "times": 0 }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "input_invalid");
    assert!(err.to_string().contains("at /times"), "{err}");
    let report = r.run(json!({ "name": "x" })).await.unwrap();
    assert_eq!(report.result, json!("hello x"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_v1_runs_answers_400_naming_the_field() {
    let s = serve(&fresh("input-serve", &[("greet.lua", GREET)]), &[]);
    let c = Client::new(&s, Some(s.token(Role::Operator, None)));
    // The list of blueprints carries the schema (the page's start form).
    let (_, list) = c.get("/v1/blueprints").await;
    assert_eq!(
        list["blueprints"][0]["input"]["required"],
        json!(["name"]),
        "{list}"
    );
    let (code, body) = c
        .post(
            "/v1/runs",
            json!({ "blueprint": "greet", "input": { "name": 42 } }),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["code"], "input_invalid");
    assert!(
        body["message"].as_str().unwrap().contains("at /name"),
        "{body}"
    );
    let (_, runs) = c.get("/v1/runs").await;
    assert_eq!(runs["runs"], json!([]), "nothing was recorded: {runs}");
    let (code, body) = c
        .post(
            "/v1/runs",
            json!({ "blueprint": "greet", "input": { "name": "web" } }),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let run: Value = c.until(&id, |r| r["status"] == "pass").await;
    assert_eq!(run["result"], json!("hello web"));
}

#[test]
fn the_repl_refuses_an_input_that_does_not_match_and_keeps_serving() {
    use std::io::Write;
    let d = Dir::new("input-repl");
    let bp = d.file("greet.lua", GREET);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_swarm"))
        .args(["repl", &bp, "--no-history"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let script = "repl.run('greet', { name = 7 })\nrepl.run('greet', { name = 'repl' })\n";
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(script.as_bytes()).unwrap();
    drop(stdin);
    let out = common::dir::wait_exit(child, 60);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        stderr.contains("at /name: 7 is not of type \"string\""),
        "{stderr}"
    );
    assert!(stdout.contains("\"hello repl\""), "{stdout}");
}
