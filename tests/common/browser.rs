//! The web page's tests drive headless Chromium with `tests/browser.py`
//! (one scenario per call) against a real `swarm serve`. Chromium is a
//! real part: `.ci/run` installs it, with `CI` set a missing one fails the
//! test, and a plain `cargo test` without it says how to install it and
//! skips.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The browser the driver will use: `$CHROMIUM`, else the first of its
/// usual names on `PATH`.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM").map(PathBuf::from)
        && p.is_file()
    {
        return Some(p);
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |d| d.join(name)))
        .find(|p| p.is_file())
}

/// Runs `scenario` of `tests/browser.py` against the server at `url`
/// (its profile under `dir`) with `args` after the page's URL; returns
/// what it reported (its `RESULT` lines), or None when Chromium is missing
/// outside CI. Blocking: call it from `spawn_blocking`.
pub fn drive(url: &str, dir: &Path, scenario: &str, args: &[&str]) -> Option<Vec<Value>> {
    if chromium().is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "no chromium on PATH: CI must have it (.ci/run installs it)"
        );
        eprintln!(
            "skipped `{scenario}`: no chromium on PATH (apt-get install chromium, or run .ci/run)"
        );
        return None;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(scenario)
        .arg(format!("{url}/"))
        .args(args)
        .env("PROFILE", dir.join(format!("chromium-{scenario}")))
        .output()
        .expect("python3 runs (.ci/run installs it)");
    let said = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let stdout = said(&out.stdout);
    assert!(
        out.status.success(),
        "browser scenario `{scenario}` failed\nstdout:\n{stdout}\nstderr:\n{}",
        said(&out.stderr)
    );
    Some(
        stdout
            .lines()
            .filter_map(|l| l.strip_prefix("RESULT "))
            .map(|l| serde_json::from_str(l).expect("RESULT is JSON"))
            .collect(),
    )
}

/// [`drive`] from async code.
pub async fn drive_async(
    url: &str,
    dir: &Path,
    scenario: &str,
    args: &[&str],
) -> Option<Vec<Value>> {
    let (url, dir, scenario) = (url.to_string(), dir.to_path_buf(), scenario.to_string());
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        drive(&url, &dir, &scenario, &args)
    })
    .await
    .expect("the driver thread")
}
