//! The web page's runs list, run view and forms in a real browser (see
//! `tests/browser.py` and `tests/browser_runs.py` for what each scenario
//! does through the page): paging 105 runs newest first, one event stream
//! per open run (no doubled text), an LLM step's output cell, a question's
//! context and checked answer, the timeline of a parallel run, a run's mob
//! events by member, and
//! starting a run from the form. Each test runs its own `swarm serve`.

mod common;

use common::browser::drive_async;
use common::server::{Client, Serve, fresh, serve};
use lua_swarm::auth::Role;
use lua_swarm::llm::scripted::{Reply, Scripted};
use serde_json::{Value, json};

const ECHO: &str = r#"local swarm = require "swarm"
return swarm.blueprint "NAME" {
  agents = { echo = swarm.agent.lua { run = function(task) return task.input end } },
  flow = function(input) return swarm.step("echo", input) end,
}
"#;

fn echo(name: &str) -> (String, String) {
    (format!("{name}.lua"), ECHO.replace("NAME", name))
}

fn start(blueprints: &[(String, String)], name: &str) -> (Serve, Client, String) {
    let files: Vec<(&str, &str)> = blueprints
        .iter()
        .map(|(f, b)| (f.as_str(), b.as_str()))
        .collect();
    let s = serve(&fresh(&format!("page-{name}"), &files), &[]);
    let op = s.token(Role::Operator, None);
    let c = Client::new(&s, Some(op.clone()));
    (s, c, op)
}

async fn run(c: &Client, body: Value) -> String {
    let (code, started) = c.post("/v1/runs", body).await;
    assert_eq!(code, 201, "{started}");
    started["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runs_list_pages_newest_first_filters_and_follows_new_runs() {
    let (s, c, op) = start(&[echo("quick"), echo("other")], "paging");
    let ids: Vec<String> = (1..=105).map(|i| format!("r{i:03}")).collect();
    for (i, id) in ids.iter().enumerate() {
        run(&c, json!({ "blueprint": "quick", "id": id, "input": i })).await;
    }
    for id in &ids {
        let r = c.until(id, |r| r["status"] != "running").await;
        assert_eq!(r["status"], "pass", "{r}");
    }
    drive_async(&s.url, &s.dir, "paging", &[&op, "105", "quick", "other"]).await;
}

const LLM: &str = r#"local swarm = require "swarm"
return swarm.blueprint "llm" {
  agents = { model = swarm.agent.llm { base_url = "URL", model = "m1", retries = 0 } },
  flow = function(input) return swarm.step("model", { prompt = "Tell a story." }) end,
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resubmitted_token_mid_stream_does_not_double_the_text() {
    let (first, rest) = (
        "Once upon a time, ",
        "a swarm of agents wrote this on their own.",
    );
    let scripted = Scripted::start(vec![Reply::Held(first.into(), rest.into())])
        .await
        .unwrap();
    let bp = ("llm.lua".to_string(), LLM.replace("URL", &scripted.url));
    let (s, c, op) = start(&[bp], "stream");
    let id = run(&c, json!({ "blueprint": "llm", "id": "held" })).await;
    let release = format!("{}/release", scripted.url);
    let Some(found) = drive_async(&s.url, &s.dir, "stream", &[&op, &id, &release]).await else {
        return;
    };
    let (_, journal) = c.get(&format!("/v1/runs/{id}/journal")).await;
    let entries = journal["entries"].as_array().unwrap();
    let turn = entries
        .iter()
        .find(|e| e["kind"] == "llm_turn")
        .expect("a journaled turn");
    let step = entries
        .iter()
        .find(|e| e["kind"] == "step")
        .expect("a journaled step");
    let text = turn["value"]["message"]["content"].as_str().unwrap();
    assert_eq!(text, format!("{first}{rest}"));
    assert_eq!(
        found[0]["streamed"], text,
        "the streamed text, as the journal has it"
    );
    assert_eq!(
        found[0]["shown"], step["value"],
        "the cell shows the recorded result"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_llm_step_shows_its_text_and_usage_and_a_traceback_reads_as_lines() {
    let story = format!("Once upon a time {}", "a swarm of small agents ".repeat(80));
    // The second run's server reports no usage: its tokens are counted
    // here, and the page says so.
    let replies = vec![
        Reply::Text(story.clone()),
        Reply::Bare("A short answer.".into()),
    ];
    let scripted = Scripted::start(replies).await.unwrap();
    let crash = r#"local swarm = require "swarm"
local function deeper() error("the flow broke here") end
return swarm.blueprint "crash" {
  agents = { echo = swarm.agent.lua { run = function(task) return task.input end } },
  flow = function() deeper() end,
}
"#;
    let bps = [
        ("llm.lua".to_string(), LLM.replace("URL", &scripted.url)),
        ("crash.lua".to_string(), crash.to_string()),
    ];
    let (s, c, op) = start(&bps, "llm");
    let id = run(&c, json!({ "blueprint": "llm", "id": "story" })).await;
    c.until(&id, |r| r["status"] != "running").await;
    let bare = run(&c, json!({ "blueprint": "llm", "id": "bare" })).await;
    c.until(&bare, |r| r["status"] != "running").await;
    let failed = run(&c, json!({ "blueprint": "crash", "id": "crash" })).await;
    let ended = c.until(&failed, |r| r["status"] != "running").await;
    assert!(ended["result"].to_string().contains("\\n"), "{ended}");
    drive_async(&s.url, &s.dir, "llm", &[&op, &id, &failed, &bare]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_says_why_it_was_asked_and_checks_the_answer_and_a_run_cancels() {
    let bp = r#"local swarm = require "swarm"
return swarm.blueprint "review" {
  agents = {
    judge = swarm.agent.lua {
      layers = { "senior_escalation" },
      run = function(task) return nil, "the draft is too vague to judge" end,
    },
  },
  flow = function()
    local verdict = swarm.step("judge", { draft = "tbd" })
    local n = swarm.ask { key = "size", text = "How many reviewers?",
                          queue = "docs", schema = { type = "integer", minimum = 1 } }
    return { verdict = verdict, reviewers = n }
  end,
}
"#;
    let (s, c, op) = start(&[("review.lua".to_string(), bp.to_string())], "question");
    let id = run(&c, json!({ "blueprint": "review", "id": "q" })).await;
    let other = run(&c, json!({ "blueprint": "review", "id": "q2" })).await;
    if drive_async(&s.url, &s.dir, "question", &[&op, &id, &other])
        .await
        .is_none()
    {
        return;
    }
    let r = c.until(&id, |r| r["status"] != "running").await;
    assert_eq!(r["status"], "pass", "{r}");
    assert_eq!(r["result"]["reviewers"], 3);
    assert_eq!(
        r["result"]["verdict"]["override"],
        json!({ "ok": true, "why": "fine" })
    );
    let r = c.until(&other, |r| r["status"] != "running").await;
    assert_eq!(r["status"], "cancelled", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_mob_events_are_shown_by_member() {
    let bp = r#"local swarm = require "swarm"
return swarm.blueprint "team" {
  agents = { coder = swarm.agent.lua { run = function(task) return "x" end } },
  flow = function()
    local mob = swarm.mob("page")
    local lead = mob:spawn { id = "lead", agent = "coder" }
    local c = mob:spawn { id = "c1", agent = "coder", wire = { "lead" } }
    c:tell("lead", "tokenizer done")
    mob:post("lead", "hello", { from = "user" })
    c:retire()
    return "ok"
  end,
}
"#;
    let (s, c, op) = start(&[("team.lua".to_string(), bp.to_string())], "mob");
    let id = run(&c, json!({ "blueprint": "team", "id": "mob" })).await;
    let r = c.until(&id, |r| r["status"] != "running").await;
    assert_eq!(r["status"], "pass", "{r}");
    drive_async(&s.url, &s.dir, "mob", &[&op, &id]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeline_of_a_parallel_run_shows_its_branches_overlapping() {
    // Each branch waits for the other to have started: they overlap by
    // construction, whatever the machine's load (the loop is a hang guard).
    let meet = |me: &str, other: &str| {
        format!(
            r#"swarm.agent.process {{ shell = "touch {me}; i=0; while [ ! -e {other} ] && [ $i -lt 6000 ]; do sleep 0.01; i=$((i+1)); done; echo '\"{me}\"'" }}"#
        )
    };
    let bp = format!(
        r#"local swarm = require "swarm"
return swarm.blueprint "fan" {{
  agents = {{
    left = {}, right = {},
    flaky = swarm.agent.lua {{
      layers = {{ {{ "retry", max = 2, backoff_ms = 50 }} }},
      run = function(task) if task.retry == 0 then return nil, "flaky" end return "steady" end,
    }},
  }},
  flow = function()
    local both = swarm.parallel {{
      function() return swarm.step("left", {{}}) end,
      function() return swarm.step("right", {{}}) end,
    }}
    return {{ both = both, then_ = swarm.step("flaky", {{}}) }}
  end,
}}
"#,
        meet("left", "right"),
        meet("right", "left")
    );
    let (s, c, op) = start(&[("fan.lua".to_string(), bp)], "timeline");
    let id = run(&c, json!({ "blueprint": "fan", "id": "fan" })).await;
    let r = c.until(&id, |r| r["status"] != "running").await;
    assert_eq!(r["status"], "pass", "{r}");
    drive_async(&s.url, &s.dir, "timeline", &[&op, &id]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_starts_from_the_form_with_an_operator_token_only() {
    let (s, c, op) = start(&[echo("greet")], "start");
    let observer = s.token(Role::Observer, None);
    if drive_async(&s.url, &s.dir, "start", &[&op, &observer])
        .await
        .is_none()
    {
        return;
    }
    let r = c.until("from-form", |r| r["status"] != "running").await;
    assert_eq!(r["status"], "pass", "{r}");
    assert_eq!(r["result"], json!({ "name": "Ada" }));
    let r = c.until("from-schema", |r| r["status"] != "running").await;
    assert_eq!(
        r["result"],
        json!({ "name": "Grace", "times": 2, "loud": false })
    );
}
