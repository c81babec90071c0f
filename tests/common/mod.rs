//! Shared test fixtures. Here, the sandbox tests': an engine with an
//! operator token, Lua agents registered by name, and a healthy agent that
//! must pass beside every attack. In submodules: the CLI (`cli`), headless
//! Chromium on the web page (`browser`), a scratch
//! journal directory (`dir`), library-API runs (`flow`), `swarm serve`
//! (`server`), a throwaway Postgres server (`postgres`).
#![allow(dead_code)]

pub mod browser;
pub mod cli;
pub mod dir;
pub mod flow;
pub mod mcp;
pub mod mob;
pub mod postgres;
pub mod server;

use lua_swarm::auth::{CapToken, Role, Signer};
use lua_swarm::engine::{AttachOptions, Caller, Engine, EngineConfig, TaskSpec, TaskStatus};
use lua_swarm::lua::{Agents, Host, LuaAgent, VmOptions};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Far beyond any limit a test sets: only a hang trips it.
pub const HANG_GUARD: Duration = Duration::from_secs(60);

pub struct World {
    pub engine: Engine,
    pub agents: Agents,
    pub op: CapToken,
}

pub fn world() -> World {
    world_with(EngineConfig::default())
}

pub fn world_with(config: EngineConfig) -> World {
    let engine = Engine::new(config, Signer::random());
    let op = engine
        .attach(Caller::Host, AttachOptions::new("test", Role::Operator))
        .unwrap();
    World {
        engine,
        agents: Agents::default(),
        op,
    }
}

impl World {
    pub fn host(&self) -> Host {
        Host::new(self.engine.clone(), &self.agents)
    }

    pub fn agent(&self, name: &str, src: &str, opts: VmOptions) -> Arc<LuaAgent> {
        let a = Arc::new(LuaAgent::new(
            self.host(),
            src,
            &format!("{name}.lua"),
            opts,
        ));
        self.agents.insert(name, a.clone());
        a
    }

    /// Starts and dispatches one task of `name` with the operator token.
    pub async fn run(&self, name: &str, input: Value) -> (TaskStatus, Value) {
        let id = self
            .engine
            .start_task(&self.op, TaskSpec::new(name, input))
            .unwrap();
        let spawner = self.agents.get(name).unwrap();
        let v = tokio::time::timeout(
            HANG_GUARD,
            self.engine.dispatch_attempt(&self.op, id, spawner.as_ref()),
        )
        .await
        .expect("hang guard")
        .unwrap();
        (
            v.status,
            v.result.map(|r| (*r).clone()).unwrap_or(Value::Null),
        )
    }
}

pub const HEALTHY: &str = r#"
return function(task)
  local n = 0
  for i = 1, 1000 do n = n + i end
  swarm.time.sleep(5)
  return { sum = n, input = task.input }
end
"#;

/// For bombs that loop: a deadline, and no other limit anywhere near it.
pub fn deadline_opts() -> VmOptions {
    VmOptions {
        timeout: Some(Duration::from_millis(300)),
        ..VmOptions::default()
    }
}

/// For bombs that allocate: a small memory limit and no deadline.
pub fn memory_opts() -> VmOptions {
    VmOptions {
        memory_limit: 16 << 20,
        ..VmOptions::default()
    }
}

/// Runs `body` (the inside of an agent function) with a deadline beside a
/// healthy agent; returns the bomb's blocked result.
pub async fn blocked(body: &str) -> Value {
    blocked_with(body, deadline_opts()).await
}

/// Runs `body` with `opts` beside a healthy agent on the same engine,
/// asserts the healthy one passed and the bomb ended blocked.
pub async fn blocked_with(body: &str, opts: VmOptions) -> Value {
    let w = Arc::new(world());
    w.agent("healthy", HEALTHY, VmOptions::default());
    let src = format!("return function(task)\n{body}\nend\n");
    w.agent("bomb", &src, opts);
    let w2 = w.clone();
    let healthy = tokio::spawn(async move { w2.run("healthy", json!(1)).await });
    let started = Instant::now();
    let (status, result) = w.run("bomb", json!(null)).await;
    assert!(started.elapsed() < HANG_GUARD, "bomb stopped late");
    let (hs, hr) = healthy.await.unwrap();
    assert_eq!(hs, TaskStatus::Pass, "healthy run on the same engine: {hr}");
    assert_eq!(hr["sum"], json!(500500));
    assert_eq!(status, TaskStatus::Blocked, "bomb result: {result}");
    result
}

pub fn assert_err(result: &Value, code: &str, needle: &str) {
    let msg = result["error"].as_str().unwrap_or_default();
    assert_eq!(result["code"], json!(code), "{result}");
    assert!(msg.contains(needle), "`{msg}` should mention `{needle}`");
}
