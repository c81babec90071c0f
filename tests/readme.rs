//! Every command in a `sh` block of the README runs as printed and exits 0.
//! `swarm` resolves to the binary under test; `cargo run --release --` is
//! the same binary (this harness already built it); `cargo test` and
//! `cargo install` are what the harness itself is doing, so they are skipped.

use std::path::Path;
use std::process::Command;

/// The README's `sh` commands, continuation lines joined, comments dropped.
fn commands(readme: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in readme.lines() {
        if line.starts_with("```") {
            in_sh = line.trim() == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        let line = match line.find("  # ") {
            Some(i) => &line[..i],
            None => line,
        };
        match line.trim_end().strip_suffix('\\') {
            Some(part) => pending.push_str(part),
            None => {
                pending.push_str(line);
                let cmd = std::mem::take(&mut pending).trim().to_string();
                if !cmd.is_empty() {
                    out.push(cmd);
                }
            }
        }
    }
    out
}

#[test]
fn every_readme_command_runs_as_printed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let cmds = commands(&readme);
    assert!(cmds.len() >= 8, "found only {cmds:?}");
    let bin = Path::new(env!("CARGO_BIN_EXE_swarm"));
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("readme");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for cmd in cmds {
        if cmd.starts_with("cargo test") || cmd.starts_with("cargo install") {
            continue;
        }
        let shell = match cmd.strip_prefix("cargo run --release -- ") {
            Some(args) => format!("swarm {args}"),
            None => cmd.clone(),
        };
        assert!(
            shell.starts_with("swarm "),
            "unexpected README command: {cmd}"
        );
        let out = Command::new("sh")
            .args(["-c", &shell])
            .current_dir(root)
            .env("PATH", &path)
            .env("SWARM_DB", tmp.join("readme.db"))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "README command failed: {cmd}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
