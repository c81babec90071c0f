//! Where in the user's code something happened: `file:line` of the
//! innermost frame outside the embedded library. A leaf of the Lua layer.

use super::ctx::VmCtx;
use mlua::Lua;

/// `file:line` of the innermost Lua frame at or above `level` that is not
/// in the embedded library. When a tail call (`return swarm.step(...)`)
/// removed the caller's frame, it falls back to where the run's entry
/// function was defined, marked as such; `?` when nothing is known.
pub fn caller_location(lua: &Lua, level: usize) -> String {
    for lvl in level..level + 24 {
        let frame = lua.inspect_stack(lvl, |d| {
            let src = d.source();
            let short = src.short_src.as_deref().unwrap_or("?").to_string();
            // The embedded library and mlua's async trampoline are ours,
            // not the user's.
            let embedded = src
                .source
                .as_deref()
                .is_some_and(|s| s.starts_with("@swarm/") || s == "=__mlua_async_poll");
            (src.what, short, d.current_line(), embedded)
        });
        match frame {
            None => break,
            Some(("C", ..)) | Some((_, _, _, true)) => continue,
            Some((_, short, line, false)) => {
                return match line {
                    Some(l) => format!("{short}:{l}"),
                    None => short,
                };
            }
        }
    }
    lua.app_data_ref::<VmCtx>()
        .and_then(|ctx| defined_at(&ctx.entry()?))
        .map(|at| format!("{at} (in a tail call)"))
        .unwrap_or_else(|| "?".to_string())
}

/// `file:line` where `f` was defined.
pub fn defined_at(f: &mlua::Function) -> Option<String> {
    let info = f.info();
    // A main chunk reports line 0; its first line is the better guess.
    Some(format!("{}:{}", info.short_src?, info.line_defined?.max(1)))
}
