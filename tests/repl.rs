//! `swarm repl` through piped stdin and through a real pseudo-terminal.

mod common;

use common::cli::repl;
use std::path::Path;
use std::process::Command;

#[test]
fn piped_expressions_statements_tables_and_errors() {
    let (out, err) = repl(
        &[],
        "1 + 1\nfunction f(x)\n  return x * 2\nend\nf(21)\n{ b = { c = 2 }, a = 1, 'x' }\nreturn 1, 'two'\nlocal t = {} t.self = t return t\nx = 5\nx\nerror('boom')\nprint('after the error')\n",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "2",
            "42",
            r#"{ "x", a = 1, b = { c = 2 } }"#,
            "1\t\"two\"",
            "{ self = <cycle> }",
            "5",
            "after the error"
        ]
    );
    assert!(err.contains("stdin:1: boom"), "{err}");
}

#[test]
fn piped_blueprints_run_in_the_foreground_and_background() {
    let (out, err) = repl(
        &["blueprints/hello.lua"],
        "repl.run('hello', { name = 'fg' }).loud\nid = repl.spawn('hello', { name = 'bg' })\nrepl.wait(id)\n:runs\n:events 4\nrepl.run('nope')\n",
    );
    assert!(out.contains("loaded `hello`"), "{out}");
    assert!(out.contains("\"HELLO, FG!\""), "{out}");
    assert!(out.contains("[r1] hello → pass"), "{out}");
    assert!(out.contains("r1    hello            pass"), "{out}");
    assert!(out.contains("attempt_completed"), "{out}");
    assert!(err.contains("no blueprint `nope` loaded"), "{err}");
}

#[test]
fn observers_are_refused_start_task() {
    let (out, err) = repl(
        &["--role", "observer"],
        "swarm.gate.whoami().role\nswarm.engine.start_task{ agent = 'x' }\nrepl.run('hello')\n",
    );
    assert_eq!(out.trim(), "\"observer\"");
    assert!(
        err.contains("stdin:1")
            && err.contains("role `observer` may not call `start_task` [forbidden]"),
        "{err}"
    );
    assert!(err.contains("role `observer` may not run flows"), "{err}");
}

#[test]
fn a_real_terminal_session() {
    let history = Path::new(env!("CARGO_TARGET_TMPDIR")).join("repl-history");
    let _ = std::fs::remove_file(&history);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pty_repl.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_swarm"))
        .arg(&history)
        .output()
        .expect("python3 runs the pty driver");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(history.exists(), "history was not written");
}

#[test]
fn misuse_in_the_repl_points_to_what_to_do() {
    let (_, err) = repl(
        &[],
        "swarm.step('greeter', {})\nswarm.engine.start_task('greeter', {})\n",
    );
    assert!(err.contains("swarm.step runs inside a flow"), "{err}");
    assert!(err.contains("repl.run(name, input)"), "{err}");
    assert!(err.contains("stdin:1"), "{err}");
    assert!(
        err.contains("start_task expects a table { agent = name"),
        "{err}"
    );
    assert!(err.contains("got a string"), "{err}");
}

#[test]
fn an_idle_repl_keeps_its_session() {
    use lua_swarm::auth::Role;
    use lua_swarm::engine::EngineConfig;
    use lua_swarm::repl::{Eval, Options, Session};
    use std::time::Duration;
    // Sessions silent for 3 s are swept every 50 ms; the REPL sits in one
    // 7-second evaluation, then uses its token.
    let opts = Options {
        role: Role::Operator,
        blueprints: Vec::new(),
        history: None,
        engine: EngineConfig {
            heartbeat_timeout: Duration::from_secs(3),
            sweep_every: Duration::from_millis(50),
            ..EngineConfig::default()
        },
    };
    let session = Session::new(&opts).unwrap();
    assert!(matches!(
        session.eval("swarm.time.sleep(7000)"),
        Eval::Values(_)
    ));
    // A verb the engine checks (a revoked token would be refused).
    match session.eval("swarm.gate.can('start_task')") {
        Eval::Values(v) => assert_eq!(v, ["true"]),
        Eval::Error(e) => panic!("the REPL lost its session: {e}"),
        Eval::Incomplete => panic!("incomplete"),
    }
    assert_eq!(session.reattached(), 0, "kept alive, never re-attached");
    session.close();
}

#[test]
fn a_detached_repl_reattaches_before_the_next_evaluation() {
    use lua_swarm::repl::{Eval, Options, Session};
    let opts = Options {
        role: lua_swarm::auth::Role::Operator,
        blueprints: Vec::new(),
        history: None,
        engine: Default::default(),
    };
    let session = Session::new(&opts).unwrap();
    assert!(matches!(
        session.eval("swarm.engine.detach()"),
        Eval::Values(_)
    ));
    match session.eval("swarm.gate.can('start_task')") {
        Eval::Values(v) => assert_eq!(v, ["true"]),
        Eval::Error(e) => panic!("the REPL did not re-attach: {e}"),
        Eval::Incomplete => panic!("incomplete"),
    }
    assert_eq!(session.reattached(), 1);
    session.close();
}

/// A run that fails in the REPL reads as the same chain of causes as under
/// `swarm run`: the flow's line, the agent's cause, its stderr; no JSON.
#[test]
fn a_failed_run_reads_as_a_chain_of_causes() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("repl-chain");
    std::fs::create_dir_all(&dir).unwrap();
    let bp = dir.join("chain.lua");
    std::fs::write(
        &bp,
        "local swarm = require 'swarm'\nreturn swarm.blueprint 'chain' {\n  agents = { sh = swarm.agent.process { shell = \"echo 'config missing: KEY' >&2; exit 3\" } },\n  flow = function(x)\n    local r = swarm.step('sh', x)\n    return r\n  end,\n}\n",
    )
    .unwrap();
    let (_, err) = repl(
        &[bp.to_str().unwrap()],
        "repl.run('chain', 1)\nprint('still here')\n",
    );
    assert!(
        err.contains("chain.lua:5: step `sh`")
            && err.contains("caused by: process exited with status 3 [exit_status]")
            && err.contains("config missing: KEY")
            && !err.contains("{\""),
        "{err}"
    );
}

/// Text a script controls reaches the terminal with its control bytes
/// shown, not obeyed: `print`, a returned string's raw form, an error.
#[test]
fn control_bytes_from_the_session_are_escaped() {
    let (out, err) = repl(&[], "print('a\\27[2Jb')\nerror('\\27]52;c;SElKQUNL\\7')\n");
    for text in [&out, &err] {
        assert!(!text.contains('\x1b'), "{text:?}");
    }
    assert!(out.contains("a\\x1b[2Jb"), "{out:?}");
    assert!(err.contains("\\x1b]52;c;SElKQUNL\\x07"), "{err:?}");
}
