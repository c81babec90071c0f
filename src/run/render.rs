//! A failed run's result as a person reads it: a short chain of causes,
//! outermost first, each with its own file:line and code, the user's own
//! traceback frames, and a process agent's last stderr lines where they
//! explain the failure. `--json` keeps the full structure instead.

use serde_json::Value;
use std::fmt::Write;

/// How many levels of cause are followed, and stderr lines shown.
const MAX_LEVELS: usize = 8;
const STDERR_LINES: usize = 5;

/// The chain of causes in `result` (a blocked task's result: `{ code,
/// error, ... }`, a failed step's error carrying the step's own `result`).
pub fn error_chain(result: &Value) -> String {
    let mut out = String::new();
    let mut level = Some(result);
    for depth in 0..MAX_LEVELS {
        let Some(v) = level else { break };
        let text = match v {
            Value::String(s) => s.clone(),
            v => match v.get("error").and_then(Value::as_str) {
                Some(e) => e.to_string(),
                None => v.to_string(),
            },
        };
        let (head, frames) = match text.split_once("\nstack traceback:") {
            Some((h, f)) => (h.to_string(), Some(f.to_string())),
            None => (text, None),
        };
        let lead = if depth == 0 { "error: " } else { "caused by: " };
        let pad = "  ".repeat(depth);
        let _ = write!(out, "{pad}{lead}{head}");
        if let Some(code) = v.get("code").and_then(Value::as_str)
            && !head.ends_with(&format!("[{code}]"))
        {
            let _ = write!(out, " [{code}]");
        }
        out.push('\n');
        for f in frames
            .iter()
            .flat_map(|f| f.lines())
            .filter(|l| !l.trim().is_empty())
        {
            let _ = writeln!(out, "{pad}    {}", f.trim());
        }
        if let Some(stderr) = v.get("stderr").and_then(Value::as_str) {
            let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            if !lines.is_empty() {
                let _ = writeln!(out, "{pad}  stderr:");
                for l in &lines[lines.len().saturating_sub(STDERR_LINES)..] {
                    let _ = writeln!(out, "{pad}    {l}");
                }
            }
        }
        level = v
            .get("result")
            .filter(|r| r.get("error").is_some() || r.is_string());
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::error_chain;
    use serde_json::json;

    #[test]
    fn a_failed_step_reads_as_a_chain_with_the_users_frames_and_stderr() {
        let r = json!({
            "code": "blocked", "where": "bp.lua:12",
            "error": "bp.lua:12: step `sh` (task t2) blocked: process exited with status 3",
            "result": { "code": "exit_status", "error": "process exited with status 3",
                        "stderr": "starting\nconfig missing: API_KEY\n" },
        });
        let text = error_chain(&r);
        assert_eq!(
            text,
            "error: bp.lua:12: step `sh` (task t2) blocked: process exited with status 3 [blocked]\n  \
             caused by: process exited with status 3 [exit_status]\n    stderr:\n      starting\n      \
             config missing: API_KEY"
        );
        let lua = json!({ "code": "lua_error",
            "error": "bp.lua:6: attempt to index a nil value\nstack traceback:\n\tbp.lua:6: in function <bp.lua:4>" });
        assert_eq!(
            error_chain(&lua),
            "error: bp.lua:6: attempt to index a nil value [lua_error]\n    bp.lua:6: in function <bp.lua:4>"
        );
        assert!(!error_chain(&lua).contains("\\n"));
    }
}
