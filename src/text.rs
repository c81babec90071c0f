//! The one escaper of untrusted text bound for a terminal. Agents, models
//! and flows control much of what `swarm` prints (Lua `print`, error
//! messages, a process's stderr tail, a model's answer in `swarm show`);
//! raw ESC, OSC or CSI bytes in it would let them clear the operator's
//! screen, rewrite earlier lines, set the window title or write the
//! clipboard (OSC 52). Every such text passes through [`for_terminal`]
//! before it is printed; `swarm`'s own colours are added around it, never
//! taken from it.
//!
//! It also holds the one "did you mean" rule, for every unknown name a user
//! can type (agents, layers, options, fields, blueprints).

use std::borrow::Cow;
use std::fmt::Write;

/// `s` with every C0 and C1 control character (and DEL) but newline and
/// tab shown as a visible escape (`\x1b`, `\r`, `\u{9b}`), so the text
/// reads the same and moves no cursor.
pub fn for_terminal(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            c if needs_escape(c) && (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// ` (did you mean `x`?)` when one of `known` is a likely misspelling of
/// `name` (edit distance at most 2, or a third of its length); else "".
pub fn did_you_mean<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    known
        .into_iter()
        .filter(|k| *k != name)
        .map(|k| (strsim::levenshtein(k, name), k))
        .filter(|(d, _)| *d <= 2.max(name.chars().count() / 3))
        .min()
        .map(|(_, k)| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}

fn needs_escape(c: char) -> bool {
    c.is_control() && c != '\n' && c != '\t'
}

#[cfg(test)]
mod tests {
    use super::{did_you_mean, for_terminal};

    #[test]
    fn suggestions_for_near_misses_only() {
        assert_eq!(
            did_you_mean("maxx", ["max", "on"]),
            " (did you mean `max`?)"
        );
        assert_eq!(
            did_you_mean("retyr", ["retry", "timeout"]),
            " (did you mean `retry`?)"
        );
        assert_eq!(did_you_mean("zzz", ["retry", "timeout"]), "");
        assert_eq!(did_you_mean("helo", ["hello"]), " (did you mean `hello`?)");
    }

    #[test]
    fn controls_are_shown_not_obeyed() {
        assert_eq!(for_terminal("plain\n\ttext"), "plain\n\ttext");
        assert_eq!(for_terminal("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(for_terminal("\x1b]52;c;aGk=\x07"), "\\x1b]52;c;aGk=\\x07");
        assert_eq!(for_terminal("over\rwrite"), "over\\rwrite");
        assert_eq!(for_terminal("c1\u{9b}31m"), "c1\\u{9b}31m");
        assert_eq!(for_terminal("del\x7f"), "del\\x7f");
        assert_eq!(for_terminal("naïve ✓"), "naïve ✓");
    }
}
