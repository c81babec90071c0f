//! Embedding lua-swarm in a Rust program: register your own Rust agent,
//! load a blueprint from a string, run its flow and read the result.
//!
//!     cargo run --example embed

use lua_swarm::auth::Signer;
use lua_swarm::engine::{Engine, EngineConfig};
use lua_swarm::run::{self, RunOptions};
use lua_swarm::spawn::RustAgent;
use serde_json::json;
use std::path::Path;

const BLUEPRINT: &str = r#"
local swarm = require "swarm"
return swarm.blueprint "embedded" {
  agents = {
    score = swarm.agent.rust { name = "score" },
    label = swarm.agent.lua { run = function(task) return task.input >= 5 and "long" or "short" end },
  },
  flow = function(words)
    return swarm.map(words, function(w)
      local n = swarm.step("score", w)
      return { word = w, score = n, label = swarm.step("label", n) }
    end)
  end,
}
"#;

#[tokio::main]
async fn main() {
    let engine = Engine::new(EngineConfig::default(), Signer::from_env());
    let mut opts = RunOptions::default();
    // A Rust agent: the length of a word.
    opts.rust.insert(
        "score",
        RustAgent::new(|ctx| async move {
            let word = ctx.input.as_str().unwrap_or_default();
            Ok(json!(word.chars().count()))
        }),
    );
    let run = run::prepare_source(&engine, Path::new("embedded.lua"), BLUEPRINT, opts)
        .expect("the blueprint loads");
    let report = run
        .run(json!(["swarm", "lua", "embedding"]))
        .await
        .expect("the run settles");
    println!(
        "{} {}",
        report.status,
        serde_json::to_string_pretty(&report.result).unwrap()
    );
}
