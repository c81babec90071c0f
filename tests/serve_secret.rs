//! The server's secret, tried as an attacker sharing the machine would: a
//! secret file planted as a symbolic link to a file the attacker reads,
//! one left readable by others, and a secret too short to guess hard are
//! each refused with a clear error; a fresh one is private. Real `swarm
//! token` processes (they read the same secret `swarm serve` does).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("secret-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn token(d: &Path, secret_env: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_swarm"));
    c.args(["token", "--role", "observer", "--db"])
        .arg(d.join("swarm.db"))
        .env_remove("SWARM_SECRET");
    if let Some(s) = secret_env {
        c.env("SWARM_SECRET", s);
    }
    c.output().unwrap()
}

fn refused(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(needle), "{err}");
    assert!(out.stdout.is_empty(), "a token was minted: {out:?}");
}

#[test]
fn a_planted_link_a_readable_file_and_a_short_secret_are_refused() {
    // A link to a file the planter can read: never followed.
    let d = dir("link");
    let bait = d.join("bait");
    std::fs::write(&bait, "x".repeat(64)).unwrap();
    std::fs::set_permissions(&bait, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&bait, d.join("swarm.secret")).unwrap();
    refused(&token(&d, None), "symbolic link");
    // Readable by others: whoever reads it mints tokens.
    let d = dir("readable");
    let secret = d.join("swarm.secret");
    std::fs::write(&secret, "y".repeat(64)).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    refused(&token(&d, None), "others may read it");
    // Too short, in the file or in the environment.
    std::fs::write(&secret, "short").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    refused(&token(&d, None), "shorter than 32 bytes");
    refused(&token(&d, Some("a")), "at least 32");
}

#[test]
fn a_fresh_secret_is_private_and_stable() {
    let d = dir("fresh");
    let first = token(&d, None);
    assert!(first.status.success(), "{first:?}");
    let meta = std::fs::symlink_metadata(d.join("swarm.secret")).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // No temporary file is left beside it.
    let left: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(token(&d, None).status.success());
}
