//! The `swarm` binary end to end: exit codes, output, `--answer`,
//! `--events`, error chains, `dev`, and Ctrl-C (SIGINT) cancelling a run
//! cleanly. (`check`, `init`, help and finding the journal: `cli_project.rs`.)

mod common;

use common::cli::{passed, scratch, swarm};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn run_hello_prints_the_result_and_exits_zero() {
    let out = swarm()
        .args([
            "run",
            "blueprints/hello.lua",
            "--input",
            r#"{"name":"cli"}"#,
            "--json",
        ])
        .output()
        .unwrap();
    passed(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["loud"], "HELLO, CLI!");
}

#[test]
fn input_from_a_file_and_events_as_ndjson() {
    let input = scratch("input", "in.json", r#"{"name":"file"}"#);
    let events = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-events.ndjson");
    let out = swarm()
        .args([
            "run",
            "blueprints/hello.lua",
            "--input",
            &format!("@{input}"),
        ])
        .args(["--events-file", &events.display().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Hello, file!"));
    let text = std::fs::read_to_string(events).unwrap();
    let kinds: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for k in [
        "task_created",
        "attempt_started",
        "worker_output",
        "layer_note",
        "attempt_completed",
    ] {
        assert!(kinds.iter().any(|x| x == k), "no {k} in {kinds:?}");
    }
}

#[test]
fn a_failing_flow_exits_one_and_usage_errors_exit_two() {
    let failing = scratch(
        "fail",
        "fail.lua",
        "local swarm = require 'swarm'\nreturn swarm.blueprint 'f' {\n  flow = function() error('nope') end,\n}\n",
    );
    let out = swarm().args(["run", &failing]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("fail.lua:3: nope"));

    let out = swarm()
        .args(["run", "blueprints/hello.lua", "--input", "{oops"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--input is not valid JSON"));

    let out = swarm().args(["run", "no/such/file.lua"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read no/such/file.lua"));

    // A run id must be safe to print in a `swarm resume ID` hint.
    let out = swarm()
        .args(["run", "blueprints/hello.lua", "--run-id", "a b;rm"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("run id `a b;rm` must be"));
}

/// An error inside an agent reaches the terminal as a short chain: what
/// failed at the flow's line, then the cause at the agent's line, with the
/// user's frames and a process agent's stderr; no JSON-in-JSON, no escaped
/// newlines, no frames of the host's own library. `--json` keeps it all.
#[test]
fn agent_failures_read_as_a_chain_of_causes_with_the_users_lines() {
    let bp = scratch(
        "chain",
        "chain.lua",
        r#"local swarm = require 'swarm'
return swarm.blueprint 'chain' {
  agents = {
    bad = swarm.agent.lua { run = function(task)
      local t = nil
      return t.x
    end },
    sh = swarm.agent.process { cmd = { "sh", "-c", "echo starting >&2; echo 'config missing: API_KEY' >&2; exit 3" } },
  },
  flow = function(input)
    local r = swarm.step(input, 1)
    return r
  end,
}
"#,
    );
    let out = swarm()
        .args(["run", &bp, "--no-journal", "--input", r#""bad""#])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines[0].starts_with("error: ")
            && lines[0].contains("chain.lua:11: step `bad`")
            && lines[0].ends_with("[blocked]"),
        "{err}"
    );
    assert!(
        lines[1].contains("caused by: ")
            && lines[1].contains("chain.lua:6: attempt to index a nil value")
            && lines[1].ends_with("[lua_error]"),
        "{err}"
    );
    // The checkout's own path may hold anything (`lua-swarm/`, spaces):
    // only what the host adds to it counts as noise.
    let ours = err.replace(env!("CARGO_MANIFEST_DIR"), "<checkout>");
    for noise in ["\\n", "swarm/", "__mlua_async_poll", "{\""] {
        assert!(!ours.contains(noise), "`{noise}` in:\n{err}");
    }

    let out = swarm()
        .args(["run", &bp, "--no-journal", "--input", r#""sh""#])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("caused by: process exited with status 3 [exit_status]"),
        "{err}"
    );
    assert!(
        err.contains("stderr:") && err.contains("config missing: API_KEY"),
        "{err}"
    );

    let out = swarm()
        .args(["run", &bp, "--no-journal", "--json", "--input", r#""sh""#])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let json = err
        .trim()
        .split_once(": {")
        .map(|(_, j)| format!("{{{j}"))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["code"], "blocked");
    assert_eq!(v["agent"], "sh");
    assert_eq!(v["result"]["code"], "exit_status");
    assert!(
        v["where"].as_str().unwrap().ends_with("chain.lua:11"),
        "{v}"
    );
}

/// `return swarm.step(...)` is a tail call: the library keeps the caller's
/// frame, so errors name the user's line, not "(in a tail call)" or `?`,
/// and the traceback shows no host C frames.
#[test]
fn tail_calls_into_the_library_keep_the_users_line() {
    let bp = scratch(
        "tail",
        "tail.lua",
        r#"local swarm = require 'swarm'
return swarm.blueprint 'tail' {
  agents = {
    bad = swarm.agent.lua { run = function(task)
      return task.input.x.y
    end },
  },
  flow = function(input)
    if input == "direct" then
      return swarm.step("bad", {})
    end
    local step = swarm.step
    return swarm.parallel({ function() return step("bad", {}) end })
  end,
}
"#,
    );
    for (input, line) in [
        ("direct", "tail.lua:10: step `bad`"),
        ("nested", "tail.lua:13: step `bad`"),
    ] {
        let out = swarm()
            .args(["run", &bp, "--no-journal", "--input", &format!("{input:?}")])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.lines().next().unwrap_or("").contains(line),
            "{input}: {err}"
        );
        assert!(
            err.contains("tail.lua:5: attempt to index a nil value"),
            "{err}"
        );
        for noise in ["tail call", "[C]:", "?:"] {
            assert!(!err.contains(noise), "`{noise}` in:\n{err}");
        }
    }
    let unnamed = scratch(
        "tail",
        "unnamed.lua",
        "local swarm = require 'swarm'\nreturn swarm.blueprint {\n  flow = function() return 1 end,\n}\n",
    );
    let out = swarm()
        .args(["run", &unnamed, "--no-journal"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("unnamed.lua:2: swarm.blueprint")
            && err.contains(r#"write swarm.blueprint "name" { ... }"#),
        "{err}"
    );
}

#[test]
fn senior_answers_come_from_the_command_line_or_fail_clearly() {
    let out = swarm()
        .args([
            "run",
            "blueprints/review.lua",
            "--input",
            r#"{"topic":"cli"}"#,
        ])
        .args([
            "--answer",
            r#"escalate:reviewer={"ok":true}"#,
            "--answer",
            "approve=yes",
            "--json",
        ])
        .output()
        .unwrap();
    passed(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["approved"], "yes");

    let out = swarm()
        .args([
            "run",
            "blueprints/review.lua",
            "--input",
            r#"{"topic":"cli"}"#,
        ])
        .output()
        .unwrap();
    // Waiting for an answer is not a failure: exit 3, with what to do next.
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("needs an answer: pass --answer escalate:reviewer=VALUE"),
        "{err}"
    );
    assert!(err.contains("is waiting for an answer"), "{err}");
    assert!(err.contains("continue with `swarm resume"), "{err}");
    // A question whose name needs quoting gets a hint that pastes safely.
    let bp = scratch(
        "quote",
        "q.lua",
        "local swarm = require 'swarm'\nreturn swarm.blueprint 'q' { flow = function() return swarm.ask('How many dollars?') end }\n",
    );
    let out = swarm().args(["run", &bp, "--no-journal"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--answer 'How many dollars?=VALUE'"), "{err}");
}

#[test]
fn sigint_cancels_the_run_and_kills_process_agents() {
    use std::io::BufRead;
    let pidfile = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-sigint-pid");
    let _ = std::fs::remove_file(&pidfile);
    // The agent writes its pid, says so on stderr, then sleeps far longer
    // than any test waits.
    let bp = scratch(
        "sigint",
        "slow.lua",
        &format!(
            "local swarm = require 'swarm'\nreturn swarm.blueprint 's' {{\n  agents = {{ p = swarm.agent.process {{ shell = 'echo $$ > \"{}\"; echo started >&2; exec sleep 600' }} }},\n  flow = function() return swarm.step('p', 1) end,\n}}\n",
            pidfile.display()
        ),
    );
    let mut child = swarm()
        .args(["run", &bp, "--no-journal", "--events"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait (bounded) until the agent is running: its stderr line arrives
    // as an event.
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("\"started\"") {
            break;
        }
    }
    assert!(seen.contains("started"), "{seen}");
    let agent: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    let err = rest.join("\n");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("interrupted") && err.contains("run cancelled"),
        "{err}"
    );
    // The agent's process group was killed with the run.
    let t0 = Instant::now();
    // SAFETY: probing a pid with signal 0 sends nothing.
    while unsafe { libc::kill(agent, 0) } == 0 {
        assert!(
            t0.elapsed() < HANG_GUARD,
            "the process agent outlived the run"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Only a hang trips it.
const HANG_GUARD: Duration = Duration::from_secs(60);

#[test]
fn dev_reruns_the_flow_after_each_successful_reload() {
    use std::io::BufRead;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-dev");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("w.lua");
    let write = |v: &str| {
        let src = format!(
            "local swarm = require 'swarm'\nreturn swarm.blueprint 'w' {{ flow = function() return {v} end }}\n"
        );
        std::fs::write(&file, src).unwrap();
    };
    write("'one'");
    let mut child = swarm()
        .args(["dev", dir.to_str().unwrap(), "--run", "w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let follow = |pipe: Box<dyn std::io::Read + Send>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        rx
    };
    let out = follow(Box::new(child.stdout.take().unwrap()));
    let err = follow(Box::new(child.stderr.take().unwrap()));
    let next = || out.recv_timeout(HANG_GUARD).expect("a result line");
    let mut log = String::new();
    let mut wait_err = |needle: &str| {
        while !log.contains(needle) {
            let line = err.recv_timeout(HANG_GUARD).expect("a status line");
            log.push_str(&line);
            log.push('\n');
        }
    };
    assert_eq!(next(), r#"w v1 → pass "one""#);
    wait_err("✓ w v1");
    write("(");
    wait_err("keeping v1");
    write("'two'");
    assert_eq!(next(), r#"w v2 → pass "two""#);
    child.kill().unwrap();
    let _ = child.wait();
    assert!(
        log.contains("✓ w v1") && log.contains("✗ syntax error") && log.contains("keeping v1"),
        "{log}"
    );
}

#[test]
fn process_agents_get_a_clean_environment() {
    let bp = scratch(
        "env",
        "env.lua",
        r#"local swarm = require "swarm"
return swarm.blueprint "env" {
  agents = {
    show = swarm.agent.process {
      cmd = { "sh", "-c", [[printf '{"secret":"%s","path":"%s","mine":"%s","inherited":"%s","stray":"%s"}' "$SWARM_SECRET" "$PATH" "$MINE" "$PASSED_KEY" "$STRAY_VAR"]] },
      env = { MINE = "declared" },
      inherit = { "PASSED_KEY" },
    },
  },
  flow = function() return swarm.step("show", 1) end,
}"#,
    );
    let out = swarm()
        .args(["run", &bp, "--json", "--no-journal"])
        .env("SWARM_SECRET", "hunter2")
        .env("SWARM_ALLOW_ENV", "PASSED_KEY")
        .env("PASSED_KEY", "given")
        .env("STRAY_VAR", "leaked")
        .output()
        .unwrap();
    passed(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["secret"], "", "SWARM_SECRET reached the agent: {v}");
    assert_eq!(v["stray"], "", "{v}");
    assert_eq!(v["mine"], "declared");
    assert_eq!(v["inherited"], "given");
    assert_ne!(v["path"], "", "PATH is on the allow-list");
}

#[test]
fn deadline_flag_stops_a_run_that_never_ends() {
    let bp = scratch(
        "deadline",
        "forever.lua",
        r#"local swarm = require "swarm"
return swarm.blueprint "forever" {
  flow = function() while true do swarm.sleep(1) end end,
}"#,
    );
    let out = swarm()
        .args(["run", &bp, "--no-journal", "--deadline", "200ms"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("run_deadline") || err.contains("deadline of 200ms"),
        "{err}"
    );
    let out = swarm()
        .args(["run", &bp, "--no-journal", "--deadline", "20"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("give a unit"));
}

#[test]
fn a_process_that_prints_before_its_json_is_told_what_went_wrong() {
    let bp = scratch(
        "badjson",
        "chatty.lua",
        r#"local swarm = require "swarm"
return swarm.blueprint "chatty" {
  agents = { py = swarm.agent.process { shell = [[echo 'debug: loading model'; echo '{"ok": true}']] } },
  flow = function() return swarm.step("py", 1) end,
}"#,
    );
    let out = swarm().args(["run", &bp, "--no-journal"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("debug: loading model"), "{err}");
    assert!(err.contains("print diagnostics to stderr"), "{err}");
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    // `swarm runs | head`: the reader is gone before we write.
    for args in [
        &["check", "blueprints/"][..],
        &["run", "blueprints/hello.lua", "--no-journal"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = swarm().args(args).stdout(writer).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{err}"
        );
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
}

#[test]
fn retries_leave_a_trace_with_their_cause() {
    let db = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-retry.db");
    let _ = std::fs::remove_file(&db);
    let out = swarm()
        .env("SWARM_DB", &db)
        .args([
            "run",
            "blueprints/review.lua",
            "--run-id",
            "retried",
            "--input",
            r#"{"topic":"swarms"}"#,
            "--answer",
            r#"escalate:reviewer={"ok":true}"#,
            "--answer",
            "approve=yes",
        ])
        .output()
        .unwrap();
    passed(&out);
    let out = swarm()
        .env("SWARM_DB", &db)
        .args(["show", "retried"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("retries (1)"), "{text}");
    assert!(
        text.contains("try 1 blocked → retried") && text.contains("writer warm"),
        "{text}"
    );
}

#[test]
fn a_blueprint_reaches_no_host_variable_the_operator_did_not_allow() {
    let agent = |field: &str| {
        format!(
            "local swarm = require \"swarm\"\nreturn swarm.blueprint \"b\" {{\n  agents = {{ a = {field} }},\n  flow = function() return swarm.step(\"a\", 1) end,\n}}\n"
        )
    };
    let llm = |key: &str, url: &str| {
        format!(r#"swarm.agent.llm {{ model = "m", base_url = "{url}", api_key_env = "{key}" }}"#)
    };
    let local = "http://127.0.0.1:9/v1";
    // (name, agent, environment, what the refusal says)
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "inherit",
            r#"swarm.agent.process { cmd = { "true" }, inherit = { "AWS_SECRET_ACCESS_KEY" } }"#
                .into(),
            vec![],
            "$AWS_SECRET_ACCESS_KEY is not one the operator allows",
        ),
        (
            "inherit-api-key",
            r#"swarm.agent.process { cmd = { "true" }, inherit = { "OPENAI_API_KEY" } }"#.into(),
            vec![],
            "$OPENAI_API_KEY is not one the operator allows",
        ),
        (
            "key",
            llm("AWS_SECRET_ACCESS_KEY", local),
            vec![],
            "$AWS_SECRET_ACCESS_KEY is not a variable the operator allows as an API key",
        ),
        (
            "key-list-replaced",
            llm("OPENAI_API_KEY", local),
            vec![("SWARM_LLM_KEYS", "ANTHROPIC_API_KEY")],
            "$OPENAI_API_KEY is not a variable the operator allows as an API key",
        ),
        (
            "secret",
            r#"swarm.agent.process { cmd = { "true" }, inherit = { "SWARM_SECRET" } }"#.into(),
            vec![("SWARM_ALLOW_ENV", "SWARM_SECRET,SWARM_*")],
            "$SWARM_SECRET is the host's own secret",
        ),
        (
            "worker-token",
            r#"swarm.agent.process { cmd = { "true" }, inherit = { "SWARM_TOKEN" } }"#.into(),
            vec![("SWARM_ALLOW_ENV", "*")],
            "$SWARM_TOKEN is the host's own secret",
        ),
        (
            "secret-key",
            llm("SWARM_SECRET", local),
            vec![("SWARM_ALLOW_ENV", "*"), ("SWARM_LLM_KEYS", "*")],
            "$SWARM_SECRET is the host's own secret",
        ),
        (
            "foreign-endpoint",
            llm("OPENAI_API_KEY", "http://127.0.0.1:9.evil.example/v1"),
            vec![("SWARM_LLM_ALLOW", "http://127.0.0.1:9")],
            "is not one the operator allows: $SWARM_LLM_ALLOW",
        ),
    ];
    for (name, field, envs, needle) in cases {
        let bp = scratch(&format!("allow-{name}"), "b.lua", &agent(&field));
        let out = swarm()
            .args(["run", &bp, "--json", "--no-journal"])
            .env("SWARM_SECRET", "hunter2-hunter2-hunter2-hunter2-hunter2")
            .env("SWARM_TOKEN", "worker-token-value")
            .env("AWS_SECRET_ACCESS_KEY", "aws-secret")
            .env("OPENAI_API_KEY", "openai-secret")
            .env_remove("SWARM_ALLOW_ENV")
            .env_remove("SWARM_LLM_KEYS")
            .env_remove("SWARM_LLM_ALLOW")
            .envs(envs)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(2), "{name}: {text}");
        assert!(text.contains(needle), "{name}: {text}");
        for secret in [
            "aws-secret",
            "hunter2",
            "worker-token-value",
            "openai-secret",
        ] {
            assert!(!text.contains(secret), "{name}: {text}");
        }
    }
}
