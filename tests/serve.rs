//! `swarm serve` as a real process on an ephemeral loopback port, driven
//! over real HTTP: runs from start to the SSE `end` event, questions
//! answered over the wire, cancel, every token rejection and every error
//! status, SIGTERM draining, and kill -9 of the server followed by a
//! restart that resumes the run.

use lua_swarm::auth::{Role, Signer};
use lua_swarm::serve::auth::{mint, secret_file};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const BLUEPRINTS: &[(&str, &str)] = &[
    (
        "quick.lua",
        r#"local swarm = require "swarm"
return swarm.blueprint "quick" {
  agents = { echo = swarm.agent.rust { name = "echo" } },
  flow = function(input) return swarm.step("echo", input) end,
}
"#,
    ),
    (
        "ask.lua",
        r#"local swarm = require "swarm"
return swarm.blueprint "ask" {
  flow = function() return { said = swarm.ask { key = "go", text = "Continue?" } } end,
}
"#,
    ),
    (
        "gate.lua",
        r#"local swarm = require "swarm"
return swarm.blueprint "gate" {
  agents = {
    echo = swarm.agent.rust { name = "echo" },
    wait = swarm.agent.process { shell = 'echo $$ >> pids; while [ ! -e open ]; do sleep 0.05; done; echo 2' },
  },
  flow = function()
    local a = swarm.step("echo", "first")
    return { a, swarm.step("wait", {}) }
  end,
}
"#,
    ),
];

mod common;

use common::server::{Client, fresh, serve};

fn fresh_here(name: &str) -> PathBuf {
    fresh(&format!("serve-{name}"), BLUEPRINTS)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_goes_from_post_to_the_end_of_its_event_stream() {
    let s = serve(&fresh_here("basic"), &[]);
    let c = Client::new(&s, Some(s.token(Role::Operator, None)));
    let (code, health) = Client::new(&s, None).get("/v1/health").await;
    assert_eq!((code, &health["ok"]), (200, &json!(true)), "{health}");

    let (code, bps) = c.get("/v1/blueprints").await;
    assert_eq!(code, 200);
    let mut names: Vec<&str> = bps["blueprints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["ask", "gate", "quick"]);

    let (code, started) = c
        .post(
            "/v1/runs",
            json!({ "blueprint": "quick", "input": { "n": 1 }, "id": "q1" }),
        )
        .await;
    assert_eq!(code, 201, "{started}");
    assert_eq!(started, json!({ "id": "q1", "status": "running" }));
    let events = c.events("q1", None).await;
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "end", "{events:?}");
    let end: Value = serde_json::from_str(data).unwrap();
    assert_eq!(end, json!({ "status": "pass", "result": { "n": 1 } }));
    assert!(
        events.iter().any(|(e, _)| e == "task_created"),
        "{events:?}"
    );
    // From a cursor: only what came after it.
    let again = c.events("q1", Some("2")).await;
    assert_eq!(again.len(), events.len() - 2, "{again:?}");

    let (_, run) = c.get("/v1/runs/q1").await;
    assert_eq!(run["status"], "pass");
    assert_eq!(run["result"], json!({ "n": 1 }));
    let (_, journal) = c.get("/v1/runs/q1/journal").await;
    assert_eq!(journal["entries"][0]["kind"], "step", "{journal}");

    for i in 2..=3 {
        let (code, _) = c
            .post(
                "/v1/runs",
                json!({ "blueprint": "quick", "id": format!("q{i}") }),
            )
            .await;
        assert_eq!(code, 201);
    }
    let (_, page) = c.get("/v1/runs?blueprint=quick&limit=2").await;
    let ids: Vec<&str> = page["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["q1", "q2"]);
    assert_eq!(page["next"], "q2");
    let (_, rest) = c.get("/v1/runs?blueprint=quick&after=q2").await;
    assert_eq!(rest["runs"][0]["id"], "q3");
    assert_eq!(rest["next"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_token_and_bad_request_gets_its_status_and_code() {
    let s = serve(&fresh_here("errors"), &[]);
    let op = Client::new(&s, Some(s.token(Role::Operator, None)));
    let (code, _) = op
        .post("/v1/runs", json!({ "blueprint": "quick", "id": "a" }))
        .await;
    assert_eq!(code, 201);
    op.until("a", |r| r["status"] == "pass").await;

    let expect = |got: (u16, Value), status: u16, code: &str| {
        assert_eq!(got.0, status, "{}", got.1);
        assert_eq!(got.1["code"], code, "{}", got.1);
        assert!(got.1["message"].as_str().is_some_and(|m| !m.is_empty()));
    };
    let as_token = |t: &str| Client::new(&s, Some(t.to_string()));
    // 401: none, not ours, forged, expired.
    expect(Client::new(&s, None).get("/v1/runs").await, 401, "no_token");
    expect(as_token("nonsense").get("/v1/runs").await, 401, "bad_token");
    let other = mint(
        &Signer::new(b"another secret"),
        Role::Operator,
        Duration::from_secs(60),
        None,
    );
    expect(as_token(&other).get("/v1/runs").await, 401, "bad_signature");
    let expired = mint(&s.signer(), Role::Operator, Duration::ZERO, None);
    expect(as_token(&expired).get("/v1/runs").await, 401, "expired");
    // 403: the role may not; the message names both.
    let observer = as_token(&s.token(Role::Observer, None));
    let got = observer
        .post("/v1/runs", json!({ "blueprint": "quick" }))
        .await;
    assert!(
        got.1["message"]
            .as_str()
            .unwrap()
            .contains("`observer` may not start"),
        "{}",
        got.1
    );
    expect(got, 403, "forbidden");
    expect(
        observer.post("/v1/runs/a/cancel", json!({})).await,
        403,
        "forbidden",
    );
    expect(
        as_token(&s.token(Role::Worker, None))
            .get("/v1/runs/a")
            .await,
        403,
        "forbidden",
    );
    assert_eq!(observer.get("/v1/runs/a").await.0, 200);
    // The role is checked before the run's state: a senior may not resume
    // (403), whatever state the run is in (not 409).
    let senior = as_token(&s.token(Role::Senior, None));
    expect(
        senior.post("/v1/runs/a/resume", json!({})).await,
        403,
        "forbidden",
    );
    // Bound to another run: this one does not exist for it.
    let bound = as_token(&s.token(Role::Operator, Some("elsewhere")));
    expect(bound.get("/v1/runs/a").await, 404, "unknown_run");
    assert_eq!(bound.get("/v1/runs").await.1["runs"], json!([]));
    expect(
        bound
            .post("/v1/runs", json!({ "blueprint": "quick" }))
            .await,
        403,
        "forbidden",
    );
    // 404s.
    expect(op.get("/v1/runs/nope").await, 404, "unknown_run");
    expect(
        op.post("/v1/runs", json!({ "blueprint": "nope" })).await,
        404,
        "unknown_blueprint",
    );
    expect(
        op.post("/v1/runs/a/answers", json!({ "question": "x", "value": 1 }))
            .await,
        404,
        "unknown_question",
    );
    expect(op.get("/v1/nothing").await, 404, "no_route");
    // 409: not in a state for it; an id taken.
    expect(
        op.post("/v1/runs/a/cancel", json!({})).await,
        409,
        "refused",
    );
    expect(
        op.post("/v1/runs/a/resume", json!({})).await,
        409,
        "refused",
    );
    expect(
        op.post("/v1/runs", json!({ "blueprint": "quick", "id": "a" }))
            .await,
        409,
        "run_exists",
    );
    // 400: malformed.
    let raw = reqwest::Client::new()
        .post(format!("{}/v1/runs", s.url))
        .bearer_auth(s.token(Role::Operator, None))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 400);
    let body: Value = raw.json().await.unwrap();
    assert_eq!(body["code"], "bad_request");
    expect(
        op.post("/v1/runs", json!({ "blueprint": "quick", "extra": 1 }))
            .await,
        400,
        "bad_request",
    );
    for bad in ["../x", "..", ".", ".swarm"] {
        expect(
            op.post("/v1/runs", json!({ "blueprint": "quick", "id": bad }))
                .await,
            400,
            "bad_request",
        );
    }
    expect(op.get("/v1/runs?status=sideways").await, 400, "bad_request");
    // A query string or an event cursor that does not parse is JSON too.
    expect(op.get("/v1/runs?limit=-1").await, 400, "bad_request");
    expect(
        op.get("/v1/runs/a/events?after=abc").await,
        400,
        "bad_request",
    );
    let garbage_cursor = reqwest::Client::new()
        .get(format!("{}/v1/runs/a/events", s.url))
        .bearer_auth(s.token(Role::Operator, None))
        .header("last-event-id", "zzz")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage_cursor.status().as_u16(), 400);
    // 405: a route that does not take the method.
    expect(
        op.call("DELETE", "/v1/runs/a", None).await,
        405,
        "bad_method",
    );
    // The scheme is case-insensitive (RFC 7235).
    let lower = reqwest::Client::new()
        .get(format!("{}/v1/runs/a", s.url))
        .header(
            "authorization",
            format!("bearer {}", s.token(Role::Operator, None)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(lower.status().as_u16(), 200);
    // 413: past the body limit.
    let big = "x".repeat(5 << 20);
    expect(
        op.post("/v1/runs", json!({ "blueprint": "quick", "input": big }))
            .await,
        413,
        "body_too_large",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_senior_answers_a_waiting_question_over_http() {
    let s = serve(&fresh_here("answer"), &[]);
    let op = Client::new(&s, Some(s.token(Role::Operator, None)));
    let (code, _) = op
        .post("/v1/runs", json!({ "blueprint": "ask", "id": "w" }))
        .await;
    assert_eq!(code, 201);
    let run = op
        .until("w", |r| {
            r["open_questions"]
                .as_array()
                .is_some_and(|q| !q.is_empty())
        })
        .await;
    assert_eq!(run["open_questions"][0]["name"], "go", "{run}");
    // A senior bound to another run cannot reach it; one bound to it can.
    let stray = Client::new(&s, Some(s.token(Role::Senior, Some("other"))));
    let got = stray
        .post(
            "/v1/runs/w/answers",
            json!({ "question": "go", "value": "yes" }),
        )
        .await;
    assert_eq!(got.0, 404, "{}", got.1);
    let senior = Client::new(&s, Some(s.token(Role::Senior, Some("w"))));
    let got = senior
        .post(
            "/v1/runs/w/answers",
            json!({ "question": "go", "value": "yes" }),
        )
        .await;
    assert_eq!(
        got,
        (200, json!({ "answered": true, "resume_needed": false }))
    );
    let events = op.events("w", None).await;
    let end: Value = serde_json::from_str(&events.last().unwrap().1).unwrap();
    assert_eq!(
        end,
        json!({ "status": "pass", "result": { "said": "yes" } })
    );
}

/// The pids the gate blueprint's waiting step wrote.
fn gate_pids(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("pids"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

async fn until_file(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "hang guard: {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_over_http_stops_a_running_run() {
    let dir = fresh_here("cancel");
    let s = serve(&dir, &[]);
    let op = Client::new(&s, Some(s.token(Role::Operator, None)));
    assert_eq!(
        op.post("/v1/runs", json!({ "blueprint": "gate", "id": "g" }))
            .await
            .0,
        201
    );
    until_file(&dir.join("pids")).await;
    let got = op.post("/v1/runs/g/cancel", json!({})).await;
    assert_eq!(got, (200, json!({ "id": "g", "status": "cancelling" })));
    let run = op.until("g", |r| r["status"] != "running").await;
    assert_eq!(run["status"], "cancelled", "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_kill_9_then_restart_resumes() {
    let dir = fresh_here("restart");
    let s = serve(&dir, &[]);
    let op = Client::new(&s, Some(s.token(Role::Operator, None)));
    assert_eq!(
        op.post("/v1/runs", json!({ "blueprint": "gate", "id": "r" }))
            .await
            .0,
        201
    );
    until_file(&dir.join("pids")).await;
    // SIGTERM: the run stops interrupted and the server exits cleanly.
    let mut s = s;
    Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()
        .unwrap();
    let status = s.child.wait().unwrap();
    assert!(status.success(), "{status}");
    let runs = Command::new(env!("CARGO_BIN_EXE_swarm"))
        .args(["runs", "--json", "--db"])
        .arg(&s.db)
        .output()
        .unwrap();
    let runs: Value = serde_json::from_slice(&runs.stdout).unwrap();
    assert_eq!(runs[0]["status"], "interrupted", "{runs}");

    // A new server resumes it; then kill -9 it mid-step.
    let s2 = serve(&s.dir, &[]);
    s2.wait_log("resumed run r");
    let start = Instant::now();
    while gate_pids(&dir).len() < 2 {
        assert!(start.elapsed() < Duration::from_secs(60), "hang guard");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut s2 = s2;
    s2.child.kill().unwrap();
    s2.child.wait().unwrap();
    for pid in gate_pids(&dir) {
        let _ = Command::new("kill").args(["-9", &pid]).status();
    }
    // The third server resumes it again; the step finishes this time.
    std::fs::write(dir.join("open"), "").unwrap();
    let s3 = serve(&s.dir, &[]);
    s3.wait_log("resumed run r");
    let op = Client::new(&s3, Some(s3.token(Role::Operator, None)));
    let run = op.until("r", |r| r["status"] != "running").await;
    assert_eq!(run["status"], "pass", "{run}");
    assert_eq!(run["result"], json!(["first", 2]));
    // The journaled first step ran once: its entry is the original one.
    let (_, journal) = op.get("/v1/runs/r/journal").await;
    assert_eq!(journal["entries"].as_array().unwrap().len(), 2, "{journal}");
}

#[test]
fn no_auth_is_refused_off_loopback() {
    let dir = fresh_here("open");
    let out = Command::new(env!("CARGO_BIN_EXE_swarm"))
        .arg("serve")
        .arg(&dir)
        .args(["--listen", "0.0.0.0:0", "--no-auth", "--db"])
        .arg(dir.join("swarm.db"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--no-auth") && err.contains("loopback"),
        "{err}"
    );
    // On loopback it serves without tokens.
    let s = serve(&dir, &["--no-auth"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (code, _) = rt.block_on(Client::new(&s, None).get("/v1/runs"));
    assert_eq!(code, 200);
}

#[test]
fn the_secret_file_is_private_and_tokens_come_from_the_cli() {
    use std::os::unix::fs::PermissionsExt;
    let dir = fresh_here("secret");
    let db = dir.join("j").join("swarm.db");
    let out = Command::new(env!("CARGO_BIN_EXE_swarm"))
        .args(["token", "--role", "senior", "--ttl", "1h", "--db"])
        .arg(&db)
        .env_remove("SWARM_SECRET")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let mode = std::fs::metadata(secret_file(&db))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let who = lua_swarm::serve::auth::verify(
        &Signer::new(&std::fs::read(secret_file(&db)).unwrap()),
        token.trim(),
    )
    .unwrap();
    assert_eq!(who.role, Role::Senior);
    // (A run-bound token needs its run to exist: tests/serve_tokens.rs.)
    assert_eq!(who.run, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_in_memory_is_served_without_tokens_and_keeps_nothing_on_disk() {
    let dir = fresh_here("memory");
    // Tokens need a secret another process can read: refused, saying so.
    let out = Command::new(env!("CARGO_BIN_EXE_swarm"))
        .arg("serve")
        .arg(&dir)
        .args(["--listen", "127.0.0.1:0", "--store", "memory:"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("memory:") && err.contains("--no-auth"),
        "{err}"
    );
    let s = serve(&dir, &["--store", "memory:", "--no-auth"]);
    assert!(s.wait_log("listening on").contains("(journal memory:)"));
    let c = Client::new(&s, None);
    let (code, body) = c
        .post("/v1/runs", json!({ "blueprint": "quick", "input": 7 }))
        .await;
    assert_eq!(code, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let run = c.until(&id, |r| r["status"] != "running").await;
    assert_eq!(
        (&run["status"], &run["result"]),
        (&json!("pass"), &json!(7))
    );
    assert!(
        !s.db.exists(),
        "a journal in memory wrote {}",
        s.db.display()
    );
}

/// A raw request to `s`, as a web page or a rebinding attacker would send
/// it: (status, code).
async fn raw(s: &common::server::Serve, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(format!("{}/v1/runs", s.url));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.body(body.to_string()).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_tokens_serves_no_other_origin_and_no_foreign_host() {
    let s = serve(&fresh_here("origin"), &["--no-auth"]);
    let start = r#"{"blueprint":"quick","input":1}"#;
    let json = ("content-type", "application/json");
    // What any page the operator visits can send: a text/plain POST.
    let (code, body) = raw(
        &s,
        &[
            ("content-type", "text/plain"),
            ("origin", "http://evil.example"),
        ],
        start,
    )
    .await;
    assert_eq!(
        (code, &body["code"]),
        (415, &json!("bad_content_type")),
        "{body}"
    );
    let (code, body) = raw(&s, &[("content-type", "text/plain")], start).await;
    assert_eq!(code, 415, "{body}");
    // JSON from another origin (it would need a preflight, but refuse it
    // here all the same), and a rebound host name.
    let (code, body) = raw(&s, &[json, ("origin", "http://evil.example")], start).await;
    assert_eq!(
        (code, &body["code"]),
        (403, &json!("cross_origin")),
        "{body}"
    );
    let (code, body) = raw(&s, &[json, ("host", "evil.example:7777")], start).await;
    assert_eq!(
        (code, &body["code"]),
        (403, &json!("cross_origin")),
        "{body}"
    );
    // Nothing was started by any of them.
    let c = Client::new(&s, None);
    assert_eq!(c.get("/v1/runs").await.1["runs"], json!([]));
    // The page's own requests, and plain clients, go through.
    let port = s.url.rsplit(':').next().unwrap().to_string();
    let own = format!("http://127.0.0.1:{port}");
    let (code, body) = raw(&s, &[json, ("origin", &own)], start).await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = raw(&s, &[json, ("host", &format!("localhost:{port}"))], start).await;
    assert_eq!(code, 201, "{body}");
    // The page says what a browser may do with it.
    let page = reqwest::get(format!("{}/", s.url)).await.unwrap();
    let h = page.headers();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
}

/// With tokens the same rules hold, and the operator can name the hosts a
/// server answers to: a rebound name and another page's origin are refused
/// even with a valid token; an IP address, loopback names and
/// `--allow-host` names are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_tokens_answers_only_to_its_own_host_names() {
    let s = serve(&fresh_here("hosts"), &["--allow-host", "swarm.lan"]);
    let bearer = format!("Bearer {}", s.token(Role::Operator, None));
    let auth = ("authorization", bearer.as_str());
    let json = ("content-type", "application/json");
    let start = r#"{"blueprint":"quick","input":1}"#;
    let port = s.url.rsplit(':').next().unwrap().to_string();
    for host in ["rebound.evil.example", "swarm.lan.evil.example"] {
        let h = format!("{host}:{port}");
        let (code, body) = raw(&s, &[json, auth, ("host", &h)], start).await;
        assert_eq!(
            (code, &body["code"]),
            (403, &json!("cross_origin")),
            "{host}: {body}"
        );
    }
    let (code, body) = raw(&s, &[json, auth, ("origin", "https://evil.example")], start).await;
    assert_eq!(
        (code, &body["code"]),
        (403, &json!("cross_origin")),
        "{body}"
    );
    let c = Client::new(&s, Some(s.token(Role::Operator, None)));
    assert_eq!(c.get("/v1/runs").await.1["runs"], json!([]));
    for host in [
        "swarm.lan",
        "SWARM.LAN",
        "localhost",
        "127.0.0.1",
        "10.1.2.3",
    ] {
        let h = format!("{host}:{port}");
        let (code, body) = raw(&s, &[json, auth, ("host", &h)], start).await;
        assert_eq!(code, 201, "{host}: {body}");
    }
}

/// A keep-alive connection that has had its answer and then sends nothing
/// is closed after the header timeout too (an idle timeout): idle
/// connections cannot pile up to the cap either.
#[test]
fn an_idle_keep_alive_connection_is_closed() {
    use std::io::{Read, Write};
    let s = serve(
        &fresh_here("idle"),
        &["--no-auth", "--header-timeout", "1s"],
    );
    let addr = s.url.trim_start_matches("http://").to_string();
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    c.write_all(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    c.set_read_timeout(Some(common::HANG_GUARD)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("an idle connection was held open: {e}"),
        }
    }
    let reply = String::from_utf8_lossy(&got);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_requests_cannot_take_the_server_off_the_air() {
    use std::io::{Read, Write};
    let s = serve(
        &fresh_here("flood"),
        &[
            "--no-auth",
            "--max-connections",
            "20",
            "--header-timeout",
            "1s",
        ],
    );
    let addr = s.url.trim_start_matches("http://").to_string();
    // Twice the cap of connections that start a request and never finish
    // its headers.
    let mut flood: Vec<std::net::TcpStream> = (0..40)
        .map(|_| {
            let mut c = std::net::TcpStream::connect(&addr).unwrap();
            let _ = c.write_all(b"GET /v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n");
            c
        })
        .collect();
    // Each is closed by the server: past the cap at once, the others when
    // their header time runs out (the read returns end of file).
    for c in &mut flood {
        c.set_read_timeout(Some(common::HANG_GUARD)).unwrap();
        let mut buf = [0u8; 512];
        // A reset is a close too; a read that times out is a connection
        // the server kept holding.
        let n = match c.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) => panic!("a half-open connection was held open: {e}"),
        };
        let reply = String::from_utf8_lossy(&buf[..n]);
        assert!(n == 0 || reply.starts_with("HTTP/1.1 408"), "{reply}");
    }
    // And the server answers again.
    let (code, _) = Client::new(&s, None).get("/v1/runs").await;
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runs_list_pages_newest_first_and_a_caller_learns_its_role() {
    let s = serve(&fresh_here("newest"), &[]);
    let c = Client::new(&s, Some(s.token(Role::Operator, None)));
    for i in 1..=3 {
        let body = json!({ "blueprint": "quick", "id": format!("n{i}") });
        assert_eq!(c.post("/v1/runs", body).await.0, 201);
    }
    let ids = |page: &Value| -> Vec<String> {
        let runs = page["runs"].as_array().unwrap();
        runs.iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, page) = c.get("/v1/runs?order=newest&limit=2").await;
    assert_eq!(ids(&page), ["n3", "n2"], "{page}");
    assert_eq!(page["next"], "n2");
    let (_, rest) = c.get("/v1/runs?order=newest&after=n2").await;
    assert_eq!(ids(&rest), ["n1"], "{rest}");
    assert_eq!(rest["next"], Value::Null);
    let (code, bad) = c.get("/v1/runs?order=sideways").await;
    assert_eq!((code, &bad["code"]), (400, &json!("bad_request")), "{bad}");

    let observer = Client::new(&s, Some(s.token(Role::Observer, Some("n1"))));
    let (code, me) = observer.get("/v1/whoami").await;
    assert_eq!(code, 200, "{me}");
    assert_eq!(me, json!({ "role": "observer", "run": "n1" }));
    let (code, me) = Client::new(&s, None).get("/v1/whoami").await;
    assert_eq!((code, &me["code"]), (401, &json!("no_token")), "{me}");
}
