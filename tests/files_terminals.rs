//! Boundaries of files and terminals, tried as an attacker would: a
//! blueprint's `require` reaches only regular files inside its own
//! directory (no link out, no FIFO that would hold the run, no device, no
//! file too big), and no text an agent, a model or a flow controls reaches
//! the operator's terminal with its control bytes intact (ESC, OSC 52, a
//! bare carriage return), from `print`, an error, a process's stderr tail,
//! `swarm show` or the REPL.

mod common;

use common::cli::swarm;
use std::path::{Path, PathBuf};
use std::process::Output;

fn project(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("files-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn blueprint(dir: &Path, flow: &str) -> String {
    let body = format!(
        "local swarm = require 'swarm'\nreturn swarm.blueprint 'b' {{\n  agents = {{}},\n  flow = function(input)\n{flow}\n  end,\n}}\n"
    );
    let p = dir.join("b.lua");
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

fn run(bp: &str) -> (Output, String) {
    let out = swarm()
        .args(["run", bp, "--no-journal", "--deadline", "60s"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out, text)
}

#[test]
fn require_follows_no_link_out_of_the_blueprint_directory() {
    let outside = project("outside");
    std::fs::write(outside.join("secret.lua"), "return 'TOP-SECRET-VALUE'").unwrap();
    let dir = project("link-out");
    std::os::unix::fs::symlink(outside.join("secret.lua"), dir.join("helper.lua")).unwrap();
    // A linked directory leads out as well as a linked file.
    std::os::unix::fs::symlink(&outside, dir.join("lib")).unwrap();
    for name in ["helper", "lib.secret"] {
        let bp = blueprint(&dir, &format!("    return require '{name}'"));
        let (out, text) = run(&bp);
        assert_ne!(out.status.code(), Some(0), "{text}");
        assert!(
            text.contains("leads outside the blueprint directory"),
            "{name}: {text}"
        );
        assert!(text.contains("b.lua:5"), "names the require's line: {text}");
        assert!(!text.contains("TOP-SECRET-VALUE"), "{text}");
    }
}

#[test]
fn a_link_that_stays_inside_the_directory_is_followed() {
    let dir = project("link-in");
    std::fs::create_dir_all(dir.join("real")).unwrap();
    std::fs::write(dir.join("real/util.lua"), "return { n = 42 }").unwrap();
    std::os::unix::fs::symlink(dir.join("real/util.lua"), dir.join("util.lua")).unwrap();
    let bp = blueprint(&dir, "    return require('util').n");
    let (out, text) = run(&bp);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
}

#[test]
fn a_fifo_a_device_and_a_huge_file_are_refused_without_waiting() {
    let dir = project("special");
    let fifo = dir.join("fifo.lua");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a plain mkfifo(3) on a path we own.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let zero = dir.join("zero.lua");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let big = dir.join("big.lua");
    std::fs::write(&big, "-- ".repeat(2 << 20)).unwrap();
    let cases = [
        ("fifo", "is not a regular file"),
        ("zero", "leads outside the blueprint directory"),
        ("big", "a helper may be at most"),
    ];
    for (name, needle) in cases {
        // Nothing ever writes to the FIFO: a blocking open would hang
        // until the deadline (60 s), so a pass proves it did not block.
        let bp = blueprint(&dir, &format!("    return require '{name}'"));
        let started = std::time::Instant::now();
        let (out, text) = run(&bp);
        assert_ne!(out.status.code(), Some(0), "{text}");
        assert!(text.contains(needle), "{name}: {text}");
        assert!(!text.contains("deadline"), "{name} waited: {text}");
        assert!(started.elapsed().as_secs() < 50, "hang guard only");
    }
}

/// Bytes that would act on a terminal, in the forms a script can send.
const HOSTILE: &str =
    r#"'\27]52;c;SElKQUNL\7' .. '\27[2J' .. 'over\rwrite' .. '\194\155' .. '31m'"#;

fn assert_inert(text: &str, what: &str) {
    assert!(
        !text.contains('\x1b') && !text.contains('\r') && !text.contains('\u{9b}'),
        "{what}: raw control bytes reached the terminal: {text:?}"
    );
    assert!(
        text.contains("\\x1b]52;c;SElKQUNL\\x07"),
        "{what}: {text:?}"
    );
}

#[test]
fn print_errors_and_stderr_tails_reach_the_terminal_escaped() {
    let dir = project("escape");
    std::fs::write(
        dir.join("evil.sh"),
        "printf 'warn \\033[2J\\033]52;c;SElKQUNL\\007\\n' >&2\nexit 3\n",
    )
    .unwrap();
    let body = format!(
        "local swarm = require 'swarm'\nlocal evil = {HOSTILE}\nreturn swarm.blueprint 'b' {{\n  agents = {{\n    sh = swarm.agent.process {{ cmd = {{ 'sh', 'evil.sh' }} }},\n    lua = swarm.agent.lua {{ run = function() error(evil) end }},\n  }},\n  flow = function(input)\n    print(evil)\n    if input == 'sh' then return swarm.step('sh', 1) end\n    if input == 'lua' then return swarm.step('lua', 1) end\n    error(evil)\n  end,\n}}\n"
    );
    let bp = dir.join("b.lua").display().to_string();
    std::fs::write(&bp, body).unwrap();
    for input in ["flow", "lua", "sh"] {
        let out = swarm()
            .args([
                "run",
                &bp,
                "--no-journal",
                "--input",
                &format!("\"{input}\""),
            ])
            .env("RUST_LOG", "info")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{input}: {text}");
        if input == "sh" {
            assert!(!text.contains('\x1b'), "sh: {text:?}");
            assert!(
                text.contains("warn \\x1b[2J\\x1b]52;c;SElKQUNL\\x07"),
                "sh: {text:?}"
            );
        } else {
            assert_inert(&text, input);
        }
    }
}

#[test]
fn swarm_show_prints_a_runs_texts_escaped() {
    let dir = project("show");
    let bp = blueprint(&dir, &format!("    return {{ text = {HOSTILE} }}"));
    let db = dir.join("journal.db");
    let out = swarm()
        .args(["run", &bp, "--run-id", "hostile", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for args in [vec!["show", "hostile"], vec!["runs"]] {
        let out = swarm().args(&args).arg("--db").arg(&db).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {text}");
        assert!(
            !text.contains('\x1b') && !text.contains('\r'),
            "{args:?}: {text:?}"
        );
    }
}
