//! The accountant of host work a script causes: every host function that
//! loops or allocates in proportion to its arguments asks here *before* it
//! works. Work is charged to the VM's instruction budget (which also checks
//! the deadline and cancellation), bytes are checked against what is left
//! of the VM's memory limit, so no script-sized Rust allocation happens
//! without a prior check and no host loop runs outside the limits.
//! A leaf of the Lua layer (imports only `ctx`, `limits`, `location`).

use super::ctx::VmCtx;
use super::limits::{LimitError, Tripped};
use super::location::caller_location;
use mlua::Lua;

/// Bytes copied per instruction charged: a Lua instruction costs about as
/// much host time as copying this many bytes.
pub(crate) const BYTES_PER_INSTRUCTION: u64 = 64;

/// Charges `n` instructions of host work; a tripped limit is the typed
/// error at the caller's file:line.
pub(crate) fn charge(lua: &Lua, n: u64) -> mlua::Result<()> {
    let Some(ctx) = lua.app_data_ref::<VmCtx>() else {
        return Ok(());
    };
    ctx.limits
        .charge(n)
        .map_err(|t| ctx.limits.error(t, caller_location(lua, 0)))
}

/// Charges the work of handling `bytes` bytes.
pub(crate) fn charge_bytes(lua: &Lua, bytes: usize) -> mlua::Result<()> {
    charge(lua, bytes as u64 / BYTES_PER_INSTRUCTION)
}

/// Bytes left under the VM's memory limit (unlimited outside a sandbox).
pub(crate) fn room(lua: &Lua) -> usize {
    match lua.app_data_ref::<VmCtx>() {
        Some(ctx) => ctx.memory_limit.saturating_sub(lua.used_memory()),
        None => usize::MAX,
    }
}

/// Refuses, as the VM's memory limit, a host buffer of `bytes` that would
/// not fit in what is left of the VM's memory; otherwise charges the work
/// of filling it. `what` names the buffer ("string.rep's result").
pub(crate) fn reserve(lua: &Lua, what: &str, bytes: usize) -> mlua::Result<()> {
    let room = room(lua);
    if bytes > room {
        return Err(over(lua, what, bytes, room));
    }
    charge_bytes(lua, bytes)
}

/// The memory-limit error for a host buffer of `bytes` (or more) where
/// `room` was left; trips the VM so no `pcall` can swallow it.
pub(crate) fn over(lua: &Lua, what: &str, bytes: usize, room: usize) -> mlua::Error {
    if let Some(ctx) = lua.app_data_ref::<VmCtx>() {
        ctx.limits.trip(Tripped::Memory);
    }
    mlua::Error::external(LimitError {
        kind: Tripped::Memory,
        what: format!(
            "{what} would take {bytes} bytes, more than the {room} bytes left under the VM's memory limit"
        ),
        location: caller_location(lua, 0),
    })
}

/// A byte buffer that grows only within what is left of the VM's memory,
/// charging as it grows: for host functions whose output size depends on
/// the script (gsub, print).
pub(crate) struct Buffer<'a> {
    lua: &'a Lua,
    what: &'static str,
    cap: usize,
    charged: usize,
    pub bytes: Vec<u8>,
}

impl<'a> Buffer<'a> {
    /// At most what is left of the VM's memory (`limit` lowers it).
    pub(crate) fn new(lua: &'a Lua, what: &'static str, limit: Option<usize>) -> Buffer<'a> {
        let cap = room(lua).min(limit.unwrap_or(usize::MAX));
        Buffer {
            lua,
            what,
            cap,
            charged: 0,
            bytes: Vec::new(),
        }
    }

    /// Appends `b`, refusing past the cap before allocating.
    pub(crate) fn extend(&mut self, b: &[u8]) -> mlua::Result<()> {
        let len = self.bytes.len().saturating_add(b.len());
        if len > self.cap {
            return Err(over(self.lua, self.what, len, self.cap));
        }
        if self.bytes.try_reserve(b.len()).is_err() {
            return Err(over(self.lua, self.what, len, self.cap));
        }
        self.bytes.extend_from_slice(b);
        if len - self.charged >= 4096 {
            charge_bytes(self.lua, len - self.charged)?;
            self.charged = len;
        }
        Ok(())
    }

    pub(crate) fn push(&mut self, b: u8) -> mlua::Result<()> {
        self.extend(&[b])
    }
}

/// Longest line `print` and `swarm.log` pass on; the rest is cut, saying
/// how much.
pub(crate) const LINE_MAX: usize = 64 << 10;

/// `args` as one line of text separated by `sep` (as `print` writes them),
/// at most [`LINE_MAX`] bytes: a script cannot make the host copy more than
/// that, however many times it passes one large string.
pub(crate) fn line(lua: &Lua, args: &[mlua::Value], sep: &str) -> mlua::Result<String> {
    let mut out: Vec<u8> = Vec::new();
    let mut cut = 0usize;
    let mut add = |out: &mut Vec<u8>, part: &[u8]| {
        let take = part.len().min(LINE_MAX - out.len());
        out.extend_from_slice(&part[..take]);
        cut += part.len() - take;
    };
    for (i, v) in args.iter().enumerate() {
        if i > 0 {
            add(&mut out, sep.as_bytes());
        }
        match v {
            mlua::Value::String(s) => add(&mut out, &s.as_bytes()),
            v => add(
                &mut out,
                v.to_string().unwrap_or_else(|_| "?".into()).as_bytes(),
            ),
        }
    }
    charge_bytes(lua, out.len())?;
    let mut line = String::from_utf8_lossy(&out).into_owned();
    if cut > 0 {
        line.push_str(&format!("… ({cut} more bytes)"));
    }
    Ok(line)
}
