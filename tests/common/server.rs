//! A real `swarm serve` process on an ephemeral loopback port, and a
//! reqwest client for it: shared by the server, worker and browser tests.

use lua_swarm::auth::{Role, Signer};
use lua_swarm::serve::auth::{mint, secret_file};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Serve {
    pub child: Child,
    pub url: String,
    pub dir: PathBuf,
    pub db: PathBuf,
    log: std::sync::mpsc::Receiver<String>,
    /// Every stderr line read so far.
    seen: std::cell::RefCell<Vec<String>>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh directory under the test target holding `blueprints`.
pub fn fresh(name: &str, blueprints: &[(&str, &str)]) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    for (file, body) in blueprints {
        std::fs::write(d.join(file), body).unwrap();
    }
    d
}

/// Starts `swarm serve DIR` on a free port; returns once it listens.
pub fn serve(dir: &Path, extra: &[&str]) -> Serve {
    let db = dir.join("db").join("swarm.db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_swarm"))
        .arg("serve")
        .arg(dir)
        .args(["--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .args(extra)
        .current_dir(dir)
        .env_remove("SWARM_SECRET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, log) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut s = Serve {
        child,
        url: String::new(),
        dir: dir.to_path_buf(),
        db,
        log,
        seen: Default::default(),
    };
    let line = s.wait_log("listening on http://");
    let at = line.find("http://").unwrap();
    s.url = line[at..].split_whitespace().next().unwrap().to_string();
    s
}

impl Serve {
    /// Waits for a stderr line containing `what` (or finds it among the
    /// lines already read).
    pub fn wait_log(&self, what: &str) -> String {
        if let Some(line) = self.seen.borrow().iter().find(|l| l.contains(what)) {
            return line.clone();
        }
        loop {
            match self.log.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    self.seen.borrow_mut().push(line.clone());
                    if line.contains(what) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "no `{what}` from swarm serve: {:?} ({e})",
                    self.seen.borrow()
                ),
            }
        }
    }

    pub fn signer(&self) -> Signer {
        Signer::new(&std::fs::read(secret_file(&self.db)).unwrap())
    }

    pub fn token(&self, role: Role, run: Option<&str>) -> String {
        mint(&self.signer(), role, Duration::from_secs(3600), run)
    }
}

pub struct Client {
    pub http: reqwest::Client,
    pub url: String,
    pub token: Option<String>,
}

impl Client {
    pub fn new(s: &Serve, token: Option<String>) -> Client {
        Client {
            http: reqwest::Client::new(),
            url: s.url.clone(),
            token,
        }
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.url));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = tokio::time::timeout(Duration::from_secs(60), req.send())
            .await
            .expect("hang guard")
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(body)).await
    }

    /// Polls run `id` until `done` says so (a hang guard, not a timer).
    pub async fn until(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let (code, run) = self.get(&format!("/v1/runs/{id}")).await;
            assert_eq!(code, 200, "{run}");
            if done(&run) {
                return run;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "hang guard: {run}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The SSE stream of run `id`, read to its end: (event, data) pairs.
    pub async fn events(&self, id: &str, after: Option<&str>) -> Vec<(String, String)> {
        let mut req = self.http.get(format!("{}/v1/runs/{id}/events", self.url));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(a) = after {
            req = req.header("Last-Event-ID", a);
        }
        let body = tokio::time::timeout(Duration::from_secs(60), async {
            req.send().await.unwrap().text().await.unwrap()
        })
        .await
        .expect("the stream ends after the run's final event");
        let mut out = Vec::new();
        for block in body.split("\n\n") {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_string())
            };
            if let (Some(ev), Some(data)) = (field("event:"), field("data:")) {
                out.push((ev, data));
            }
        }
        out
    }
}
