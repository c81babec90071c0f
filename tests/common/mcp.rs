//! The external parts the MCP tests drive, installed by `.ci/run` into a
//! cache dir: the reference MCP servers (npm) and the official Python MCP
//! SDK (a venv). With `CI` set a missing part fails the test; without it
//! the test prints one line saying how to install the part, and skips.

use std::path::PathBuf;

/// `~/.cache/lua-swarm`, or `$SWARM_PARTS`.
fn cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("SWARM_PARTS") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".cache/lua-swarm")
}

fn found(path: PathBuf, what: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    let how = "install it with `bash .ci/run` (or its MCP lines alone)";
    if std::env::var_os("CI").is_some() {
        panic!("{what} is missing at {}: {how}", path.display());
    }
    eprintln!(
        "skipped: {what} is not installed at {}; {how}",
        path.display()
    );
    None
}

/// The command of a reference server, e.g. `mcp-server-everything`.
pub fn npm_server(bin: &str) -> Option<PathBuf> {
    found(cache().join("npm/node_modules/.bin").join(bin), bin)
}

/// The Python of the venv holding the official `mcp` SDK.
pub fn sdk_python() -> Option<PathBuf> {
    found(
        cache().join("venv/bin/python"),
        "the Python MCP SDK (`mcp`)",
    )
}

/// Runs `tests/mcp/client.py` (the official Python SDK's client) with
/// `args` and returns the JSON it prints; `None` (after saying how to
/// install it) when the SDK is missing.
#[allow(dead_code)]
pub fn sdk_client(args: &[&str]) -> Option<serde_json::Value> {
    let python = sdk_python()?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/client.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed\nstdout:\n{text}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}")))
}

/// Drives `swarm mcp DIR` (stdio, journal `DIR/db/swarm.db`) through
/// `calls` (see tests/mcp/client.py) with the SDK's client.
#[allow(dead_code)]
pub fn sdk_stdio(dir: &std::path::Path, calls: serde_json::Value) -> Option<serde_json::Value> {
    sdk_stdio_as("stdio", dir, calls)
}

/// [`sdk_stdio`] with the client starting as `mode` says: `stdio`
/// (`initialize`) or `stdio-2026` (`server/discover`, 2026-07-28).
#[allow(dead_code)]
pub fn sdk_stdio_as(
    mode: &str,
    dir: &std::path::Path,
    calls: serde_json::Value,
) -> Option<serde_json::Value> {
    let store = format!("sqlite:{}", dir.join("db/swarm.db").display());
    let swarm = env!("CARGO_BIN_EXE_swarm");
    let calls = calls.to_string();
    sdk_client(&[mode, swarm, &dir.display().to_string(), &store, &calls])
}

/// A blueprint whose run waits on a question (`go`), then echoes the
/// answer: the MCP tests' waiting run.
#[allow(dead_code)]
pub const ASK: &str = r#"local swarm = require "swarm"
return swarm.blueprint "ask" {
  agents = { echo = swarm.agent.rust { name = "echo" } },
  flow = function()
    local said = swarm.ask { key = "go", text = "Ship it?" }
    return swarm.step("echo", { said = said })
  end,
}
"#;
