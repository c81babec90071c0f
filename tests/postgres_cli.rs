//! The command line on a Postgres store: `swarm run`, `runs`, `show`,
//! `answer`, `resume`, `cancel`, `prune` and `doctor` with
//! `--store postgres://…`, against a throwaway server
//! (`common/postgres.rs`); and a database migrated by a newer swarm is
//! refused with a message naming both schema versions.

mod common;

use common::postgres::Postgres;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn swarm(dir: &Path, store: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_swarm"))
        .args(args)
        .args(["--store", store])
        .current_dir(dir)
        .env_remove("SWARM_STORE")
        .stdin(Stdio::null())
        .output()
        .expect("running swarm")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn scratch() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("postgres-cli");
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("echo.lua"),
        "local swarm = require 'swarm'\n\
         return swarm.blueprint 'echo' {\n\
           agents = { twice = swarm.agent.lua { run = function(t) return t.input * 2 end } },\n\
           flow = function(input) return swarm.step('twice', input.n) + swarm.step('twice', 1) end,\n\
         }\n",
    )
    .unwrap();
    std::fs::write(
        d.join("ask.lua"),
        "local swarm = require 'swarm'\n\
         return swarm.blueprint 'ask' {\n\
           flow = function() return { said = swarm.ask { key = 'go', text = 'Continue?' } } end,\n\
         }\n",
    )
    .unwrap();
    d
}

#[test]
fn every_command_works_on_a_postgres_store() {
    let Some(pg) = Postgres::start("cli") else {
        return;
    };
    let store = pg.database("cli");
    let d = scratch();
    let run = swarm(
        &d,
        &store,
        &[
            "run",
            "echo.lua",
            "--run-id",
            "e1",
            "--input",
            r#"{"n": 20}"#,
            "--json",
        ],
    );
    assert!(run.status.success(), "{}", text(&run));
    assert!(text(&run).contains("42"), "{}", text(&run));
    let runs = swarm(&d, &store, &["runs"]);
    assert!(
        runs.status.success() && text(&runs).contains("e1"),
        "{}",
        text(&runs)
    );
    let show = swarm(&d, &store, &["show", "e1"]);
    assert!(
        show.status.success() && text(&show).contains("pass"),
        "{}",
        text(&show)
    );

    // A question: the run stops waiting, is answered, and resumed.
    let asked = swarm(&d, &store, &["run", "ask.lua", "--run-id", "q1"]);
    assert!(!asked.status.success(), "{}", text(&asked));
    assert!(text(&asked).contains("swarm answer q1"), "{}", text(&asked));
    let answered = swarm(&d, &store, &["answer", "q1", "go", "yes"]);
    assert!(answered.status.success(), "{}", text(&answered));
    let resumed = swarm(&d, &store, &["resume", "q1"]);
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert!(text(&resumed).contains("yes"), "{}", text(&resumed));

    // A run waiting for its answer in another process is cancelled.
    let mut waiting = Command::new(env!("CARGO_BIN_EXE_swarm"))
        .args([
            "run",
            "ask.lua",
            "--run-id",
            "c1",
            "--wait-answers",
            "--store",
            &store,
        ])
        .current_dir(&d)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        let shown = text(&swarm(&d, &store, &["show", "c1"]));
        if shown.contains("`go`: (unanswered)") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "hang guard: {shown}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let cancel = swarm(&d, &store, &["cancel", "c1"]);
    assert!(cancel.status.success(), "{}", text(&cancel));
    let status = waiting.wait().unwrap();
    assert!(!status.success());
    let show = swarm(&d, &store, &["show", "c1"]);
    assert!(text(&show).contains("cancelled"), "{}", text(&show));

    let doctor = swarm(&d, &store, &["doctor"]);
    assert!(doctor.status.success(), "{}", text(&doctor));
    assert!(text(&doctor).contains("3 ("), "{}", text(&doctor));
    let prune = swarm(&d, &store, &["prune", "--older-than", "0s"]);
    assert!(prune.status.success(), "{}", text(&prune));
    let runs = swarm(&d, &store, &["runs"]);
    assert!(
        !text(&runs).contains("e1") && !text(&runs).contains("c1"),
        "{}",
        text(&runs)
    );

    // A database a newer swarm migrated is refused, not guessed at.
    pg.sql("cli", "UPDATE swarm_schema SET version = 99");
    let refused = swarm(&d, &store, &["runs"]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("schema version 99, newer than this swarm"),
        "{}",
        text(&refused)
    );
}
