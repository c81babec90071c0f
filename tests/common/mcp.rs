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
