//! The mob tests' fixtures: a blueprint with LLM agents `lead` and
//! `coder` on the scripted server, a run on a given store, and readers of
//! the requests the scripted server received.

use super::HANG_GUARD;
use lua_swarm::auth::Signer;
use lua_swarm::engine::{Engine, EngineConfig, EventKind};
use lua_swarm::llm::scripted::Reply;
use lua_swarm::run::{self, RunOptions};
use lua_swarm::store::{MemoryStore, Store};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub fn dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("mob-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A blueprint with LLM agents `lead` and `coder` on `url`, limits
/// `limits`, and `flow` as the flow's body.
pub fn blueprint(d: &Path, url: &str, limits: &str, flow: &str) -> PathBuf {
    let body = format!(
        r#"local swarm = require "swarm"
return swarm.blueprint "mob" {{
  agents = {{
    lead = swarm.agent.llm {{ base_url = "{url}", model = "m", system = "You lead.", stream = false }},
    coder = swarm.agent.llm {{ base_url = "{url}", model = "m", system = "You code." }},
  }},
  limits = {{ {limits} }},
  flow = function(input)
    {flow}
  end,
}}
"#
    );
    let p = d.join("mob.lua");
    std::fs::write(&p, body).unwrap();
    p
}

/// Runs the blueprint at `path` on `store` (a mob lives in the store).
pub async fn run_on(store: &Arc<dyn Store>, path: &Path) -> (run::RunReport, Engine) {
    let engine = Engine::new(EngineConfig::default(), Signer::random());
    let opts = RunOptions {
        store: Some(store.clone()),
        ..RunOptions::default()
    };
    let r = run::prepare(&engine, path, opts).unwrap();
    let report = tokio::time::timeout(HANG_GUARD, r.run(Value::Null))
        .await
        .expect("hang guard")
        .unwrap();
    (report, engine)
}

pub fn memory() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

pub fn tool_call(id: &str, to: &str, text: &str) -> Reply {
    let args = json!({ "to": to, "text": text }).to_string();
    Reply::Tools(vec![(id.into(), "send_message".into(), args)])
}

pub fn contents(req: &Value) -> Vec<(String, String)> {
    req["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap_or_default().to_string(),
                m["content"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

pub fn last_user(req: &Value) -> String {
    contents(req)
        .into_iter()
        .rev()
        .find(|(role, _)| role == "user")
        .map(|(_, c)| c)
        .unwrap_or_default()
}

/// The mob events (layer notes of layer `mob`) on the engine's ledger.
pub fn mob_events(engine: &Engine) -> Vec<Value> {
    let tok = engine
        .attach(
            lua_swarm::engine::Caller::Host,
            lua_swarm::engine::AttachOptions::new("t", lua_swarm::auth::Role::Observer),
        )
        .unwrap();
    let mut sub = engine.subscribe(&tok, 0).unwrap();
    std::iter::from_fn(|| sub.try_next().unwrap())
        .filter_map(|e| match e.kind {
            EventKind::LayerNote { layer: "mob", note } => Some((*note).clone()),
            _ => None,
        })
        .collect()
}

pub fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let t0 = std::time::Instant::now();
    while !ok() {
        assert!(t0.elapsed() < HANG_GUARD, "hang guard: {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
