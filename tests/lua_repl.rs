//! The sandbox's paid-for host functions and per-task rules in the REPL,
//! the one mode where the operator's VM lives across inputs: nothing
//! repeated is nothing, JSON round-trips through the straight decoder, a
//! host thread cannot be resumed, and an error leaves the session serving.

mod common;

fn repl(input: &str) -> String {
    common::cli::repl(&[], input).0
}

#[test]
fn the_repl_pays_for_host_work_and_keeps_serving() {
    let out = repl(concat!(
        "#string.rep('', 2^62)\n",
        "swarm.json.encode(swarm.json.decode('[1,{\"a\":null}]'))\n",
        "select(2, coroutine.resume(coroutine.running()))\n",
        "string.rep('x', 2^40)\n",
        "table.concat({1, 2, 3}, '-')\n",
        "print('still serving')\n",
    ));
    assert!(out.contains("\n0\n") || out.starts_with("0\n"), "{out}");
    assert!(out.contains(r#"[1,{\"a\":null}]"#), "{out}");
    assert!(out.contains("a thread the host runs"), "{out}");
    assert!(out.contains("1-2-3"), "{out}");
    assert!(out.contains("still serving"), "{out}");
}
