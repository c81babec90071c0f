//! The `swarm` binary's project commands end to end: `check` (every error
//! of every file, and what it catches without running), `init`, help
//! texts, and where the journal is found.

mod common;

use common::cli::{passed, scratch, swarm};
use std::path::Path;
use std::process::{Command, Stdio};

#[test]
fn check_reports_every_error_of_every_file() {
    let a = scratch(
        "check",
        "a.lua",
        "local swarm = require 'swarm'\nreturn swarm.blueprint 'a' {\n  flw = function() end,\n  hints = { layers = { swarm.layer { before = print } } },\n}\n",
    );
    // A missing `return` is named with its file.
    let b = scratch(
        "check",
        "b.lua",
        "local swarm = require 'swarm'\nswarm.blueprint 'b' { flow = function() end }\n",
    );
    let out = swarm()
        .args([
            "check",
            "blueprints/hello.lua",
            "blueprints/review.lua",
            &a,
            &b,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("ok blueprints/hello.lua") && stdout.contains("ok blueprints/review.lua")
    );
    assert!(
        stderr.contains("a.lua:3: `flw` unknown field (did you mean `flow`?)"),
        "{stderr}"
    );
    assert!(stderr.contains("a.lua:2: `flow` is required"), "{stderr}");
    // A Lua layer written inline says where it belongs.
    assert!(
        stderr.contains("`hints.layers[1]` must name a layer: declare a swarm.layer"),
        "{stderr}"
    );
    assert!(stderr.contains("must return swarm.blueprint"), "{stderr}");
    assert!(stderr.contains("b.lua: `(return value)`"), "{stderr}");
    assert!(stderr.contains("did you forget `return`"), "{stderr}");
    assert!(stderr.contains("2 of 4 blueprints have errors"), "{stderr}");
}

#[test]
fn check_catches_what_it_can_without_running() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-check-dir");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("util.lua"),
        "return { twice = function(x) return x * 2 end }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("w.lua"),
        "local swarm = require 'swarm'\nlocal util = require 'util'\nreturn swarm.blueprint 'w' {\n  agents = {\n    writer = swarm.agent.rust { name = 'echo' },\n    tool = swarm.agent.process { cmd = { 'no-such-program-xyz' } },\n    model = swarm.agent.llm { model = 'm', api_key_env = 'SWARM_TEST_NO_SUCH_KEY' },\n  },\n  flow = function(i)\n    -- swarm.step('commented', 1) is ignored\n    return swarm.step(\"writre\", util.twice(i))\n  end,\n}\n",
    )
    .unwrap();
    let out = swarm()
        .args(["check", dir.to_str().unwrap()])
        .env("SWARM_ALLOW_ENV", "SWARM_TEST_*")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("w.lua:11: swarm.step: no agent named `writre` (did you mean `writer`?)"),
        "{stderr}"
    );
    assert!(!stderr.contains("commented"), "{stderr}");
    assert!(
        stderr.contains("warning:") && stderr.contains("`no-such-program-xyz` is not on PATH"),
        "{stderr}"
    );
    assert!(
        stderr.contains("w.lua: agent `model`: api_key_env names $SWARM_TEST_NO_SUCH_KEY"),
        "{stderr}"
    );
    // The helper next to it was not checked as a blueprint.
    assert!(!stderr.contains("util.lua"), "{stderr}");
    // Helpers named explicitly are skipped with a note.
    let out = swarm()
        .args([
            "check",
            dir.join("util.lua").to_str().unwrap(),
            "blueprints/hello.lua",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("skipping"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 agents"));
}

#[test]
fn the_journal_is_found_upward_and_created_only_by_run() {
    let base = std::env::temp_dir().join(format!("swarm-find-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (project, deeper, elsewhere) = (base.join("p"), base.join("p/a/b"), base.join("q"));
    for d in [&deeper, &elsewhere] {
        std::fs::create_dir_all(d).unwrap();
    }
    let hello = Path::new(env!("CARGO_MANIFEST_DIR")).join("blueprints/hello.lua");
    let at = |dir: &Path, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_swarm"))
            .current_dir(dir)
            .env_remove("SWARM_DB")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    // Nothing found: a clear error, and nothing created.
    let out = at(&elsewhere, &["runs"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no journal here or in any parent"));
    assert!(!elsewhere.join(".swarm").exists());
    // `run` creates one where it runs; commands below it find it.
    let out = at(
        &project,
        &["run", hello.to_str().unwrap(), "--run-id", "up-1"],
    );
    passed(&out);
    assert!(project.join(".swarm/swarm.db").is_file());
    let out = at(&deeper, &["runs"]);
    passed(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("up-1"));
    assert!(!deeper.join(".swarm").exists());
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn init_makes_a_project_that_runs_and_is_wired_for_the_editor() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-init");
    let _ = std::fs::remove_dir_all(&dir);
    let out = swarm()
        .args(["init", dir.to_str().unwrap()])
        .output()
        .unwrap();
    passed(&out);
    let luarc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(".luarc.json")).unwrap()).unwrap();
    let lib = luarc["workspace.library"][0].as_str().unwrap();
    assert!(dir.join(lib).join("swarm.lua").is_file());
    let out = swarm()
        .current_dir(&dir)
        .args([
            "run",
            "hello.lua",
            "--json",
            "--no-journal",
            "--input",
            r#"{"name":"init"}"#,
        ])
        .output()
        .unwrap();
    passed(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["received"]["input"]["greeting"], "Hello, init!");
    // A second init keeps what is there.
    std::fs::write(dir.join("hello.lua"), "-- mine").unwrap();
    let out = swarm()
        .args(["init", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("kept"));
    assert_eq!(
        std::fs::read_to_string(dir.join("hello.lua")).unwrap(),
        "-- mine"
    );
}

#[test]
fn help_and_flags_say_what_they_take() {
    let out = swarm()
        .args(["runs", "--status", "bogus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("possible values"));
    let help = swarm().args(["bench", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert_eq!(help.matches("flow-map100k").count(), 1, "{help}");
    for w in ["step-lua", "journal", "repl-start"] {
        assert!(help.contains(w), "{help}");
    }
    let help = swarm().args(["show", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(!help.contains("--no-journal"), "{help}");
    assert!(help.contains("The run's id"), "{help}");
    let out = swarm()
        .args([
            "run",
            "blueprints/hello.lua",
            "--events",
            "--events-file",
            "x.ndjson",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
