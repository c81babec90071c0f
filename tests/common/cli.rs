//! The `swarm` binary as the CLI tests run it: from the repository root,
//! with a journal of their own and no stdin.

use std::path::Path;
use std::process::{Command, Output, Stdio};

pub fn swarm() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_swarm"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c.env(
        "SWARM_DB",
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-journal.db"),
    );
    c.stdin(Stdio::null());
    c
}

pub fn scratch(name: &str, file: &str, body: &str) -> String {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(file);
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

/// Asserts the command exited 0, showing its stderr otherwise.
pub fn passed(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `swarm repl ARGS --no-history` fed `input` on stdin, run to its end
/// (asserted successful): (stdout, stderr).
pub fn repl(args: &[&str], input: &str) -> (String, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_swarm"))
        .arg("repl")
        .args(args)
        .arg("--no-history")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
