//! What `swarm mcp` tells a client about runs beyond tool results, seen by
//! a client nobody here wrote (the official Python SDK,
//! `tests/mcp/client.py`): a run tool called with a progress token
//! reports the run's events as progress before its answer; each run is
//! the resource `swarm://runs/{id}`, listed, readable and subscribable
//! (an answered run's subscriber is told it changed, by
//! `resources/subscribe` or by 2026-07-28's `subscriptions/listen`);
//! unknown runs and
//! unknown URIs are refused with `{code, message}`; over `/mcp`, reads
//! follow the caller's role and run binding, and subscribing (no session
//! there) is refused with a clear code.

mod common;

use common::mcp::{ASK, sdk_client, sdk_stdio};
use common::server::{fresh, serve};
use lua_swarm::auth::Role;
use serde_json::{Value, json};

const FIVE: &str = r#"local swarm = require "swarm"
return swarm.blueprint "five" {
  agents = { echo = swarm.agent.rust { name = "echo" } },
  flow = function()
    local n = 0
    for i = 1, 5 do n = n + swarm.step("echo", { i = i }).i end
    return { sum = n }
  end,
}
"#;

#[test]
fn a_run_tool_reports_progress_and_runs_are_resources() {
    let dir = fresh("mcp-resources", &[("five.lua", FIVE)]);
    let calls = json!([
        { "progress": ["run_five", {}] },
        { "resources": true },
        { "read": "swarm://runs/$0" },
        { "read": "swarm://runs/no-such-run" },
        { "read": "https://example.com/x" },
    ]);
    let Some(out) = sdk_stdio(&dir, calls) else {
        return;
    };
    let c = &out["calls"];
    assert_eq!(
        c[0]["structured"]["result"],
        json!({ "sum": 15 }),
        "{}",
        c[0]
    );
    let id = c[0]["structured"]["id"].as_str().unwrap();

    // Progress: one notification per event, counting up, each naming
    // what happened; the five echo steps among them.
    let progress = c[0]["progress"].as_array().unwrap();
    assert!(progress.len() >= 5, "{progress:?}");
    for (i, p) in progress.iter().enumerate() {
        assert_eq!(p["progress"], json!(i as f64 + 1.0), "{progress:?}");
    }
    let echoes = progress
        .iter()
        .filter(|p| p["message"].as_str().is_some_and(|m| m.contains("echo")))
        .count();
    assert!(echoes >= 5, "{progress:?}");

    let uri = format!("swarm://runs/{id}");
    assert!(
        c[1]["resources"].as_array().unwrap().contains(&json!(uri)),
        "{}",
        c[1]
    );
    assert_eq!(c[1]["mime"][0], "application/json");
    assert_eq!(c[1]["templates"], json!(["swarm://runs/{id}"]));

    let body = &c[2]["body"];
    assert_eq!(c[2]["mime"], "application/json", "{}", c[2]);
    assert_eq!(body["run"]["id"], id);
    assert_eq!(body["run"]["status"], "pass");
    assert_eq!(body["journal"].as_array().unwrap().len(), 5, "{body}");
    assert!(!body["events"].as_array().unwrap().is_empty(), "{body}");

    assert_eq!(c[3]["data"]["code"], "unknown_run", "{}", c[3]);
    assert_eq!(c[4]["data"]["code"], "unknown_resource", "{}", c[4]);
}

#[test]
fn a_subscriber_is_told_when_a_waiting_run_goes_on() {
    let dir = fresh("mcp-subscribe", &[("ask.lua", ASK)]);
    let calls = json!([
        ["run_ask", {}],
        { "subscribe": "swarm://runs/$0" },
        ["answer_question", { "id": "$0", "question": "go", "value": "yes" }],
        { "await_update": "swarm://runs/$0" },
        { "await_status": ["swarm://runs/$0", "pass"] },
        { "subscribe": "swarm://runs/nobody" },
    ]);
    let Some(out) = sdk_stdio(&dir, calls) else {
        return;
    };
    let c = &out["calls"];
    assert_eq!(c[0]["structured"]["status"], "waiting", "{}", c[0]);
    assert_eq!(c[1]["subscribed"], true, "{}", c[1]);
    assert_eq!(c[2]["error"], false, "{}", c[2]);
    assert_eq!(c[3]["updated"], true, "{}", c[3]);
    let journal = c[4]["body"]["journal"].to_string();
    assert!(
        journal.contains("yes"),
        "the answer is journaled: {journal}"
    );
    assert_eq!(c[5]["data"]["code"], "unknown_run", "{}", c[5]);
}

#[test]
fn on_2026_07_28_a_listener_is_told_of_a_run_until_it_ends() {
    let dir = fresh("mcp-listen", &[("ask.lua", ASK)]);
    let answer = json!(["answer_question", { "id": "$0", "question": "go", "value": "yes" }]);
    let calls = json!([
        ["run_ask", {}],
        { "listen": ["swarm://runs/$0", "pass", answer] },
        { "resources": true },
    ]);
    let Some(out) = common::mcp::sdk_stdio_as("stdio-2026", &dir, calls) else {
        return;
    };
    let c = &out["calls"];
    assert_eq!(c[0]["structured"]["status"], "waiting", "{}", c[0]);
    let l = &c[1];
    assert_eq!(l["version"], "2026-07-28", "{l}");
    let id = c[0]["structured"]["id"].as_str().unwrap();
    assert_eq!(l["honored"], json!([format!("swarm://runs/{id}")]), "{l}");
    assert_eq!(l["took"]["error"], false, "{l}");
    assert_eq!(l["body"]["run"]["result"], json!({ "said": "yes" }), "{l}");
    assert!(c[2]["resources"].to_string().contains(id), "{}", c[2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_reads_follow_the_callers_role_and_subscribing_is_refused() {
    if common::mcp::sdk_python().is_none() {
        return;
    }
    let dir = fresh("mcp-resources-http", &[("five.lua", FIVE)]);
    let s = serve(&dir, &[]);
    let url = format!("{}/mcp", s.url);
    let http = |token: String, calls: Value| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            sdk_client(&["http", &url, &token, &calls.to_string()]).unwrap()
        })
    };
    let operator = s.token(Role::Operator, None);
    let ran = http(operator, json!([["run_five", {}], ["run_five", {}]]))
        .await
        .unwrap();
    let ids: Vec<String> = (0..2)
        .map(|i| {
            ran["calls"][i]["structured"]["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();

    let observer = s.token(Role::Observer, None);
    let read = http(
        observer,
        json!([
            { "read": format!("swarm://runs/{}", ids[0]) },
            { "subscribe": format!("swarm://runs/{}", ids[0]) },
        ]),
    )
    .await
    .unwrap();
    assert_eq!(read["calls"][0]["body"]["run"]["status"], "pass", "{read}");
    assert_eq!(read["calls"][1]["data"]["code"], "unsupported", "{read}");

    // A token bound to the first run reads that run; the second is not
    // there for it (as over REST: a bound caller learns of no other run).
    let bound = s.token(Role::Observer, Some(&ids[0]));
    let read = http(
        bound,
        json!([
            { "read": format!("swarm://runs/{}", ids[0]) },
            { "read": format!("swarm://runs/{}", ids[1]) },
        ]),
    )
    .await
    .unwrap();
    assert_eq!(read["calls"][0]["body"]["run"]["id"], ids[0], "{read}");
    assert_eq!(read["calls"][1]["data"]["code"], "unknown_run", "{read}");
    assert!(read["calls"][1].get("body").is_none(), "{read}");
}
