//! Not a test: the generator of the README's screenshots of the web page
//! (`docs/screens/*.png`), run by `scripts/screenshots.sh`. It lives here
//! to drive the page as the browser tests do: a real `swarm serve`, the
//! scripted OpenAI-compatible server as the model, headless Chromium.
//! Ignored, so `cargo test` does not rewrite the pictures.

mod common;

use common::browser::drive_async;
use common::server::{Client, fresh, serve};
use lua_swarm::auth::Role;
use lua_swarm::llm::scripted::{Reply, Scripted};
use serde_json::json;

const REVIEW: &str = r#"local swarm = require "swarm"
return swarm.blueprint "review" {
  agents = {
    writer = swarm.agent.llm { base_url = "URL", model = "smollm2", system = "You write short release notes." },
    lint = swarm.agent.lua { run = function(task) swarm.time.sleep(300); return { words = 42 } end },
    judge = swarm.agent.lua {
      layers = { "senior_escalation" },
      run = function(task) return nil, "the notes do not say what changed for users" end,
    },
  },
  flow = function(input)
    local draft = swarm.step("writer", { prompt = "Release notes for " .. (input.version or "1.0") })
    local checks = swarm.parallel {
      function() return swarm.step("lint", { text = draft }) end,
      function() return swarm.step("judge", { text = draft }) end,
    }
    return { draft = draft, checks = checks }
  end,
}
"#;

const STORY: &str = r#"local swarm = require "swarm"
return swarm.blueprint "story" {
  agents = { writer = swarm.agent.llm { base_url = "URL", model = "smollm2" } },
  flow = function(input)
    return swarm.step("writer", { prompt = input.topic or "a swarm" })
  end,
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes the README's screenshots: scripts/screenshots.sh"]
async fn readme_screenshots() {
    let text = "Version 1.2 lets a run's page show where the time went: a timeline of every step, \
                nested under its parent, with parallel branches side by side. Questions now say \
                why they were asked and what an answer should look like.";
    // Slow enough that the timeline has something to show.
    let replies = (0..8)
        .map(|_| Reply::Slow(400, Box::new(Reply::Text(text.into()))))
        .collect();
    let scripted = Scripted::start(replies).await.unwrap();
    let blueprints = [
        ("review.lua", REVIEW.replace("URL", &scripted.url)),
        ("story.lua", STORY.replace("URL", &scripted.url)),
    ];
    let files: Vec<(&str, &str)> = blueprints.iter().map(|(f, b)| (*f, b.as_str())).collect();
    let s = serve(&fresh("screenshots", &files), &[]);
    let op = s.token(Role::Operator, None);
    let c = Client::new(&s, Some(op.clone()));
    for (i, topic) in ["bees", "ants", "starlings"].iter().enumerate() {
        let id = format!("story-{}", i + 1);
        let (code, _) = c
            .post(
                "/v1/runs",
                json!({ "blueprint": "story", "id": id, "input": { "topic": topic } }),
            )
            .await;
        assert_eq!(code, 201);
        c.until(&id, |r| r["status"] != "running").await;
    }
    let (code, _) = c
        .post(
            "/v1/runs",
            json!({ "blueprint": "review", "id": "review-1", "input": { "version": "1.2" } }),
        )
        .await;
    assert_eq!(code, 201);
    c.until("review-1", |r| {
        r["open_questions"]
            .as_array()
            .is_some_and(|q| !q.is_empty())
    })
    .await;
    let out = std::env::var("SWARM_SCREENS")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/docs/screens").to_string());
    std::fs::create_dir_all(&out).unwrap();
    drive_async(
        &s.url,
        &s.dir,
        "screens",
        &[&op, &out, "review-1", "story-3"],
    )
    .await;
}
