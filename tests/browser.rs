//! The web page in a real browser: headless Chromium (driven over the
//! DevTools pipe by `tests/browser.py`) loads `GET /` from a real `swarm
//! serve`, takes a token in its form, opens a run waiting on a question,
//! answers it through the page's form, and sees the run pass. The runs
//! list, streams, steps, questions, timeline and new-run form have their
//! own scenarios in `tests/browser_runs.rs`.

mod common;

use common::browser::drive_async;
use common::server::{Client, fresh, serve};
use lua_swarm::auth::Role;
use serde_json::json;

const BLUEPRINTS: &[(&str, &str)] = &[(
    "ask.lua",
    r#"local swarm = require "swarm"
return swarm.blueprint "ask" {
  agents = { echo = swarm.agent.rust { name = "echo" } },
  flow = function()
    local said = swarm.ask { key = "go", text = "Ship it?" }
    return swarm.step("echo", { said = said })
  end,
}
"#,
)];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_answers_a_waiting_question_and_shows_the_run_pass() {
    let s = serve(&fresh("browser", BLUEPRINTS), &[]);
    let c = Client::new(&s, Some(s.token(Role::Operator, None)));
    let (code, started) = c.post("/v1/runs", json!({ "blueprint": "ask" })).await;
    assert_eq!(code, 201, "{started}");
    let id = started["id"].as_str().unwrap().to_string();
    c.until(&id, |r| {
        r["open_questions"]
            .as_array()
            .is_some_and(|q| !q.is_empty())
    })
    .await;

    let (code, page) = Client::new(&s, None).get("/").await;
    assert_eq!(code, 200);
    assert!(
        page.as_str()
            .is_some_and(|p| p.contains("<title>swarm</title>"))
    );

    let senior = s.token(Role::Senior, None);
    let args = [senior.as_str(), id.as_str(), "go", "yes"];
    if drive_async(&s.url, &s.dir, "answer", &args).await.is_none() {
        return;
    }
    let run = c.until(&id, |r| r["status"] != "running").await;
    assert_eq!(run["status"], "pass", "{run}");
    assert_eq!(run["result"], json!({ "said": "yes" }));
}
