//! `swarm serve` over the life of a server, as real processes on loopback:
//! a drain that keeps answering `503 draining` until its runs have
//! stopped. Each wait polls with a generous hang guard; none relies on a
//! timer.

mod common;

use common::server::{Client, fresh};
use lua_swarm::auth::{Role, Signer};
use lua_swarm::serve::auth::{mint, secret_file};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HANG_GUARD: Duration = Duration::from_secs(90);

/// A step that writes its pid to `FILE.pids` and waits for `GATE` (both in
/// the blueprint's directory, where process agents run).
fn gated(name: &str, file: &str, gate: &str) -> String {
    format!(
        r#"local swarm = require "swarm"
return swarm.blueprint "{name}" {{
  agents = {{
    echo = swarm.agent.rust {{ name = "echo" }},
    wait = swarm.agent.process {{ shell = 'echo $$ >> {file}.pids; while [ ! -e {gate} ]; do sleep 0.05; done; echo 2' }},
  }},
  flow = function()
    local a = swarm.step("echo", "first")
    return {{ a, swarm.step("wait", {{}}) }}
  end,
}}
"#
    )
}

/// A `swarm serve` process with the environment a test gives it.
struct Served {
    child: Child,
    url: String,
    db: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `swarm serve SERVED` from `cwd` on a free port, journal
/// `cwd/db/swarm.db`; returns once it listens.
fn serve(cwd: &Path, served: &Path, env: &[(&str, &str)], extra: &[&str]) -> Served {
    let db = cwd.join("db").join("swarm.db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_swarm"))
        .arg("serve")
        .arg(served)
        .args(["--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .args(extra)
        .current_dir(cwd)
        .env_remove("SWARM_SECRET")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (lines, stderr) = (log.clone(), child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            lines.lock().unwrap().push(line);
        }
    });
    let mut s = Served {
        child,
        url: String::new(),
        db,
        log,
    };
    let line = s.wait_log("listening on http://");
    let at = line.find("http://").unwrap();
    s.url = line[at..].split_whitespace().next().unwrap().to_string();
    s
}

impl Served {
    fn wait_log(&self, what: &str) -> String {
        poll(&format!("`{what}` from swarm serve"), || {
            self.log
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(what))
                .cloned()
        })
    }

    fn client(&self) -> Client {
        let signer = Signer::new(&std::fs::read(secret_file(&self.db)).unwrap());
        Client {
            http: reqwest::Client::new(),
            url: self.url.clone(),
            token: Some(mint(
                &signer,
                Role::Operator,
                Duration::from_secs(3600),
                None,
            )),
        }
    }
}

/// Polls `f` until it gives a value (a hang guard, not a timer).
fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < HANG_GUARD, "hang guard: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pids(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn alive(pid: &str) -> bool {
    Command::new("kill")
        .args(["-0", pid])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// A raw GET: the status and JSON body, or the transport error's text.
async fn raw_get(c: &Client, path: &str) -> Result<(u16, Value), String> {
    let req = c.http.get(format!("{}{path}", c.url));
    let req = match &c.token {
        Some(t) => req.bearer_auth(t),
        None => req,
    };
    let resp = tokio::time::timeout(HANG_GUARD, req.send())
        .await
        .expect("hang guard")
        .map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_503_draining_until_the_runs_have_stopped() {
    let dir = fresh("serve-drain", &[]);
    std::fs::write(dir.join("slow.lua"), gated("slow", "slow", "open")).unwrap();
    // The journal's lock is held by this test below; the server waits for
    // it as long as the test needs (a generous busy timeout).
    let env = [("SWARM_DB_BUSY_MS", "120000")];
    let mut s = serve(&dir, &dir, &env, &["--drain", "120s"]);
    let op = s.client();
    let (code, body) = op
        .post("/v1/runs", json!({ "blueprint": "slow", "id": "d" }))
        .await;
    assert_eq!(code, 201, "{body}");
    poll("the step started", || pids(&dir.join("slow.pids")).pop());

    // Stopping takes as long as the journal is locked: the run's end is
    // a journal write. Hold the lock, so the drain cannot finish early.
    let lock = rusqlite::Connection::open(&s.db).unwrap();
    lock.busy_timeout(HANG_GUARD).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()
        .unwrap();
    // Every request, API and page, is answered 503 draining: the
    // listener stays open while the run stops.
    let start = Instant::now();
    let drained = loop {
        match raw_get(&op, "/v1/health").await {
            Ok((200, _)) => {}
            Ok(got) => break got,
            Err(e) => panic!("the listener went away while runs were stopping: {e}"),
        }
        assert!(
            start.elapsed() < HANG_GUARD,
            "hang guard: no 503 after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(drained.0, 503, "{}", drained.1);
    assert_eq!(drained.1["code"], "draining", "{}", drained.1);
    assert!(drained.1["message"].as_str().is_some_and(|m| !m.is_empty()));
    for path in ["/", "/v1/runs/d", "/v1/runs", "/v1/nothing"] {
        let (code, body) = raw_get(&op, path).await.unwrap();
        assert_eq!(
            (code, &body["code"]),
            (503, &json!("draining")),
            "{path}: {body}"
        );
    }
    let (code, body) = op.post("/v1/runs", json!({ "blueprint": "slow" })).await;
    assert_eq!((code, &body["code"]), (503, &json!("draining")), "{body}");
    // The run is still stopping: its end is not written, the server lives.
    let status: String = lock
        .query_row("SELECT status FROM runs WHERE id = 'd'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(status, "running");
    assert!(
        s.child.try_wait().unwrap().is_none(),
        "exited before its run stopped"
    );

    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    let exit = poll("the server exits once its run stopped", || {
        s.child.try_wait().unwrap()
    });
    assert!(exit.success(), "{exit}");
    let runs = Command::new(env!("CARGO_BIN_EXE_swarm"))
        .args(["runs", "--json", "--db"])
        .arg(&s.db)
        .output()
        .unwrap();
    let runs: Value = serde_json::from_slice(&runs.stdout).unwrap();
    assert_eq!(runs[0]["status"], "interrupted", "{runs}");
    assert_eq!(runs[0]["result"]["code"], "interrupted", "{runs}");
    for pid in pids(&dir.join("slow.pids")) {
        poll("the step's process was killed", || {
            (!alive(&pid)).then_some(())
        });
    }
}
