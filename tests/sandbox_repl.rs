//! The paid-work rules hold in the REPL as in flows and Lua agents: a
//! line that makes the host build a string, a pattern's output, a table or
//! a decoded JSON value past the session VM's memory limit is stopped
//! before the host allocates it (the message says so, with the line), and
//! the session goes on: the next line answers. (A line that loops in a
//! host function stops at the line's instruction budget, 1e9: the same
//! rule, tested in flow and agent modes, where the budget can be small.)

mod common;

const LINES: &[(&str, &str)] = &[
    (
        "local s = string.rep('x', 2^40)",
        "string.rep's result would take",
    ),
    (
        "local r = string.rep('a', 1e6):gsub('a', string.rep('b', 1000))",
        "string.gsub's result would take",
    ),
    (
        "local t = {} for i = 1, 1e8 do t[i] = i end",
        "memory limit",
    ),
    (
        "local j = swarm.json.decode('[' .. string.rep('1,', 8e6) .. '1]')",
        "memory limit of 67108864 bytes exceeded",
    ),
];

#[test]
fn host_buffers_a_line_asks_for_are_paid_for_and_the_session_goes_on() {
    let mut input = String::new();
    for (i, (line, _)) in LINES.iter().enumerate() {
        input.push_str(&format!("{line}\nprint('after {i}')\n"));
    }
    let (out, err) = common::cli::repl(&[], &input);
    let all = format!("{out}\n{err}");
    for (i, (line, says)) in LINES.iter().enumerate() {
        assert!(
            all.contains(&format!("after {i}")),
            "the session went on after {line}: {all}"
        );
        assert!(all.contains(says), "{line} is stopped with {says:?}: {all}");
    }
    let located = all.matches("stdin:1:").count();
    assert!(located >= 2, "the messages name the line: {all}");
}
