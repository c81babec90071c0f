//! `swarm serve` over the life of a server, as real processes on loopback:
//! a drain that keeps answering `503 draining` until its runs have
//! stopped, a server that keeps nothing of a finished run in memory, and
//! the background sweep that interrupts a run whose owner was killed (with
//! its cause) and resumes it when the server serves its blueprint. Each
//! wait polls with a generous hang guard; none relies on a timer.

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

const QUICK: &str = r#"local swarm = require "swarm"
return swarm.blueprint "quick" {
  agents = { echo = swarm.agent.rust { name = "echo" } },
  flow = function(input) return swarm.step("echo", input) end,
}
"#;

/// A step that writes its pid to `FILE.pids` and waits for `GATE` (both in
/// the blueprint's directory, where process agents run).
fn gated(name: &str, file: &str, gate: &str) -> String {
    format!(
        r#"local swarm = require "swarm"
return swarm.blueprint "{name}" {{
  agents = {{
    echo = swarm.agent.rust {{ name = "echo" }},
    wait = swarm.agent.process {{ shell = 'echo $$ >> "{file}".pids; while [ ! -e "{gate}" ]; do sleep 0.05; done; echo 2' }},
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

/// What a test starts outside the server (owner processes, and the steps'
/// shell loops named in pid files), killed when the test ends, passed or
/// failed, so a failure leaves no process behind.
struct Reaper {
    children: Vec<Child>,
    pid_files: Vec<PathBuf>,
}

impl Reaper {
    fn kill_all(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for file in &self.pid_files {
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            for pid in pids(file) {
                // Only the loop that wrote it: never a pid reused since.
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmd).contains(&name) {
                    let _ = Command::new("kill").args(["-9", &pid]).status();
                }
            }
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.kill_all();
    }
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
    let _reaper = Reaper {
        children: Vec::new(),
        pid_files: vec![dir.join("slow.pids")],
    };
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
    assert_eq!(runs[0]["result"]["code"], "drained", "{runs}");
    for pid in pids(&dir.join("slow.pids")) {
        poll("the step's process was killed", || {
            (!alive(&pid)).then_some(())
        });
    }
}

/// The server's `GET /v1/stats`.
async fn stats(c: &Client) -> Value {
    let (code, body) = c.get("/v1/stats").await;
    assert_eq!(code, 200, "{body}");
    body
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Starts runs `from..to` of `quick`, eight at a time, and waits for each
/// to pass.
async fn quick_runs(c: &Client, from: usize, to: usize) {
    let ids: Vec<String> = (from..to).map(|i| format!("m{i}")).collect();
    for chunk in ids.chunks(8) {
        let starts = chunk.iter().map(|id| {
            c.post(
                "/v1/runs",
                json!({ "blueprint": "quick", "id": id, "input": { "n": id } }),
            )
        });
        for (code, body) in futures_util::future::join_all(starts).await {
            assert_eq!(code, 201, "{body}");
        }
    }
    for id in &ids {
        let run = c.until(id, |r| r["status"] != "running").await;
        assert_eq!(run["status"], "pass", "{run}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_run_leaves_nothing_in_memory() {
    let dir = fresh("serve-memory", &[("quick.lua", QUICK)]);
    let s = serve(&dir, &dir, &[], &[]);
    let op = s.client();
    let before = stats(&op).await;
    quick_runs(&op, 0, 100).await;
    // What the runs held goes once each has ended (its end is written
    // first, so this polls): no run tracked, no task, session or event.
    let idle = json!({ "tasks": 0, "sessions": before["engine"]["sessions"], "events": 0 });
    let start = Instant::now();
    let after = loop {
        let now = stats(&op).await;
        if now["executing"] == 0 && now["following"] == 0 && now["engine"] == idle {
            break now;
        }
        assert!(
            start.elapsed() < HANG_GUARD,
            "hang guard: still held: {now}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(after["draining"], false, "{after}");

    // And the process does not grow with its history: 800 more runs,
    // a very generous bound (a leak of the old size, ~130 KiB a run,
    // would be ~100 MiB).
    let rss = rss_kib(s.child.id());
    quick_runs(&op, 100, 900).await;
    let grown = rss_kib(s.child.id()).saturating_sub(rss);
    assert!(grown < 20 * 1024, "800 runs grew RSS by {grown} KiB");
}

/// `swarm run FILE` as the owner of run `id`, on the server's journal.
fn owner(cwd: &Path, db: &Path, file: &Path, id: &str, lease: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_swarm"))
        .arg("run")
        .arg(file)
        .args(["--run-id", id, "--db"])
        .arg(db)
        .current_dir(cwd)
        .env("SWARM_LEASE_MS", lease)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_owners_run_is_interrupted_with_its_cause_and_resumed_here() {
    let dir = fresh("serve-orphans", &[]);
    let (served, elsewhere) = (dir.join("served"), dir.join("elsewhere"));
    std::fs::create_dir_all(&served).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    let adopted_bp = served.join("adopted.lua");
    let lost_bp = elsewhere.join("lost.lua");
    std::fs::write(&adopted_bp, gated("adopted", "adopted", "open")).unwrap();
    std::fs::write(&lost_bp, gated("lost", "lost", "never")).unwrap();
    let lease = "1500";
    let s = serve(&dir, &served, &[("SWARM_LEASE_MS", lease)], &[]);
    let op = s.client();

    // Two runs on the server's journal, each owned by its own process.
    let (lost_pids, adopted_pids) = (elsewhere.join("lost.pids"), served.join("adopted.pids"));
    let mut owners = Reaper {
        children: vec![
            owner(&dir, &s.db, &lost_bp, "lost", lease),
            owner(&dir, &s.db, &adopted_bp, "adopted", lease),
        ],
        pid_files: vec![lost_pids.clone(), adopted_pids.clone()],
    };
    for file in [&lost_pids, &adopted_pids] {
        poll("the owner's step started", || pids(file).pop());
    }
    let owner_pids: Vec<u32> = owners.children.iter().map(Child::id).collect();
    // SIGKILL: the owners and their steps die without a word.
    owners.kill_all();

    // A blueprint not served here: interrupted, with its cause, and left.
    let lost = op
        .until("lost", |r| {
            r["status"] == "interrupted" && r["cause"].is_object()
        })
        .await;
    assert_eq!(lost["cause"]["code"], "owner_lost", "{lost}");
    let message = lost["cause"]["message"].as_str().unwrap();
    assert!(message.contains("lease"), "{lost}");
    assert_eq!(lost["pid"], owner_pids[0], "the owner it lost: {lost}");
    assert_eq!(lost["executing_here"], false);

    // A blueprint served here: resumed by the server, without a restart.
    s.wait_log("resumed run adopted");
    std::fs::write(served.join("open"), "").unwrap();
    let adopted = op.until("adopted", |r| r["status"] != "running").await;
    assert_eq!(adopted["status"], "pass", "{adopted}");
    assert_eq!(adopted["result"], json!(["first", 2]));
    let (_, journal) = op.get("/v1/runs/adopted/journal").await;
    assert_eq!(journal["entries"].as_array().unwrap().len(), 2, "{journal}");
    // The first step ran once, in the killed owner: replayed, not re-run.
    assert_eq!(pids(&adopted_pids).len(), 2);
    let (_, lost) = op.get("/v1/runs/lost").await;
    assert_eq!(lost["status"], "interrupted", "{lost}");
}
