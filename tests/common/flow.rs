//! Blueprints run through the library API on an engine of their own: the
//! flow tests' fixture (scratch files, a run with a hang guard).

use lua_swarm::auth::Signer;
use lua_swarm::engine::{Engine, EngineConfig};
use lua_swarm::run::{self, RunError, RunOptions, RunReport};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub fn engine() -> Engine {
    Engine::new(EngineConfig::default(), Signer::random())
}

/// A fresh directory under the target dir for one test's files.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("flows-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn write(dir: &Path, file: &str, body: &str) -> PathBuf {
    let p = dir.join(file);
    std::fs::write(&p, body).unwrap();
    p
}

pub async fn run_file(path: &Path, input: Value, opts: RunOptions) -> Result<RunReport, RunError> {
    let e = engine();
    let r = run::prepare(&e, path, opts)?;
    tokio::time::timeout(Duration::from_secs(60), r.run(input))
        .await
        .expect("the run must not hang")
}

pub async fn run_src(name: &str, src: &str, input: Value) -> RunReport {
    let dir = scratch(name);
    let path = write(&dir, &format!("{name}.lua"), src);
    run_file(&path, input, RunOptions::default()).await.unwrap()
}
