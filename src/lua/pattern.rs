//! Lua 5.4 pattern matching with a step budget.
//!
//! The C implementation in `lstrlib.c` backtracks without ever returning to
//! the VM, so the instruction hook cannot stop a catastrophic pattern such as
//! `("a*"):rep(20) .. "b"` on a long subject. This is a port of the same
//! algorithm (same syntax, same results, same error messages) that charges
//! every matching step to the VM's budget, so deadlines, cancellation and the
//! instruction budget reach pattern matching too. It backs `string.find`,
//! `string.match`, `string.gmatch` and `string.gsub` in every sandbox.

use mlua::{Error, Lua, MultiValue, Result, Value};

const ESC: u8 = b'%';
const SPECIALS: &[u8] = b"^$*+?.([%-";
const MAX_CAPTURES: usize = 32;
const MAX_DEPTH: usize = 200;
const CAP_UNFINISHED: isize = -1;
const CAP_POSITION: isize = -2;
/// Steps between two calls to the budget callback.
const CHARGE_EVERY: u64 = 1024;

/// Called with a number of steps; returns an error to abort matching.
pub type Charge<'a> = &'a dyn Fn(u64) -> Result<()>;

struct Matcher<'a> {
    src: &'a [u8],
    pat: &'a [u8],
    level: usize,
    capture: [(usize, isize); MAX_CAPTURES],
    depth: usize,
    steps: u64,
    charge: Charge<'a>,
}

fn perr(msg: impl Into<String>) -> Error {
    Error::RuntimeError(msg.into())
}

fn class_matches(c: u8, cl: u8) -> bool {
    let res = match cl.to_ascii_lowercase() {
        b'a' => c.is_ascii_alphabetic(),
        b'c' => c.is_ascii_control(),
        b'd' => c.is_ascii_digit(),
        b'g' => c.is_ascii_graphic(),
        b'l' => c.is_ascii_lowercase(),
        b'p' => c.is_ascii_punctuation(),
        b's' => matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c),
        b'u' => c.is_ascii_uppercase(),
        b'w' => c.is_ascii_alphanumeric(),
        b'x' => c.is_ascii_hexdigit(),
        _ => return cl == c,
    };
    if cl.is_ascii_uppercase() { !res } else { res }
}

impl<'a> Matcher<'a> {
    fn new(src: &'a [u8], pat: &'a [u8], charge: Charge<'a>) -> Matcher<'a> {
        Matcher {
            src,
            pat,
            level: 0,
            capture: [(0, 0); MAX_CAPTURES],
            depth: MAX_DEPTH,
            steps: 0,
            charge,
        }
    }

    fn reset(&mut self) {
        self.level = 0;
        self.depth = MAX_DEPTH;
    }

    fn step(&mut self) -> Result<()> {
        self.steps += 1;
        if self.steps.is_multiple_of(CHARGE_EVERY) {
            (self.charge)(CHARGE_EVERY)?;
        }
        Ok(())
    }

    fn pat_at(&self, p: usize) -> u8 {
        self.pat.get(p).copied().unwrap_or(0)
    }

    fn class_end(&self, mut p: usize) -> Result<usize> {
        let c = self.pat[p];
        p += 1;
        if c == ESC {
            if p >= self.pat.len() {
                return Err(perr("malformed pattern (ends with '%')"));
            }
            return Ok(p + 1);
        }
        if c == b'[' {
            if self.pat_at(p) == b'^' {
                p += 1;
            }
            loop {
                if p >= self.pat.len() {
                    return Err(perr("malformed pattern (missing ']')"));
                }
                let cc = self.pat[p];
                p += 1;
                if cc == ESC && p < self.pat.len() {
                    p += 1;
                }
                if self.pat_at(p) == b']' {
                    break;
                }
            }
            return Ok(p + 1);
        }
        Ok(p)
    }

    /// `p` points at '[', `ec` at the closing ']'.
    fn bracket(&self, c: u8, mut p: usize, ec: usize) -> bool {
        let mut sig = true;
        if self.pat_at(p + 1) == b'^' {
            sig = false;
            p += 1;
        }
        loop {
            p += 1;
            if p >= ec {
                break;
            }
            if self.pat[p] == ESC {
                p += 1;
                if class_matches(c, self.pat_at(p)) {
                    return sig;
                }
            } else if self.pat_at(p + 1) == b'-' && p + 2 < ec {
                p += 2;
                if self.pat[p - 2] <= c && c <= self.pat[p] {
                    return sig;
                }
            } else if self.pat[p] == c {
                return sig;
            }
        }
        !sig
    }

    fn single(&self, s: usize, p: usize, ep: usize) -> bool {
        let Some(&c) = self.src.get(s) else {
            return false;
        };
        match self.pat[p] {
            b'.' => true,
            ESC => class_matches(c, self.pat_at(p + 1)),
            b'[' => self.bracket(c, p, ep - 1),
            pc => pc == c,
        }
    }

    fn do_match(&mut self, mut s: usize, mut p: usize) -> Result<Option<usize>> {
        self.step()?;
        if self.depth == 0 {
            return Err(perr("pattern too complex"));
        }
        self.depth -= 1;
        let res = loop {
            if p >= self.pat.len() {
                break Some(s);
            }
            match self.pat[p] {
                b'(' => {
                    break if self.pat_at(p + 1) == b')' {
                        self.start_capture(s, p + 2, CAP_POSITION)?
                    } else {
                        self.start_capture(s, p + 1, CAP_UNFINISHED)?
                    };
                }
                b')' => break self.end_capture(s, p + 1)?,
                b'$' if p + 1 == self.pat.len() => {
                    break (s == self.src.len()).then_some(s);
                }
                ESC if self.pat_at(p + 1) == b'b' => match self.balance(s, p + 2)? {
                    Some(e) => {
                        s = e;
                        p += 4;
                        continue;
                    }
                    None => break None,
                },
                ESC if self.pat_at(p + 1) == b'f' => {
                    p += 2;
                    if self.pat_at(p) != b'[' {
                        return Err(perr("missing '[' after '%f' in pattern"));
                    }
                    let ep = self.class_end(p)?;
                    let prev = if s == 0 { 0 } else { self.src[s - 1] };
                    let cur = self.src.get(s).copied().unwrap_or(0);
                    if !self.bracket(prev, p, ep - 1) && self.bracket(cur, p, ep - 1) {
                        p = ep;
                        continue;
                    }
                    break None;
                }
                ESC if self.pat_at(p + 1).is_ascii_digit() => {
                    match self.match_capture(s, self.pat_at(p + 1))? {
                        Some(e) => {
                            s = e;
                            p += 2;
                            continue;
                        }
                        None => break None,
                    }
                }
                _ => {
                    let ep = self.class_end(p)?;
                    let epc = self.pat_at(ep);
                    if !self.single(s, p, ep) {
                        if matches!(epc, b'*' | b'?' | b'-') {
                            p = ep + 1;
                            continue;
                        }
                        break None;
                    }
                    match epc {
                        b'?' => {
                            if let Some(r) = self.do_match(s + 1, ep + 1)? {
                                break Some(r);
                            }
                            p = ep + 1;
                        }
                        b'+' => break self.max_expand(s + 1, p, ep)?,
                        b'*' => break self.max_expand(s, p, ep)?,
                        b'-' => break self.min_expand(s, p, ep)?,
                        _ => {
                            s += 1;
                            p = ep;
                        }
                    }
                }
            }
        };
        self.depth += 1;
        Ok(res)
    }

    fn max_expand(&mut self, s: usize, p: usize, ep: usize) -> Result<Option<usize>> {
        let mut i = 0;
        while self.single(s + i, p, ep) {
            self.step()?;
            i += 1;
        }
        loop {
            if let Some(r) = self.do_match(s + i, ep + 1)? {
                return Ok(Some(r));
            }
            if i == 0 {
                return Ok(None);
            }
            i -= 1;
        }
    }

    fn min_expand(&mut self, mut s: usize, p: usize, ep: usize) -> Result<Option<usize>> {
        loop {
            if let Some(r) = self.do_match(s, ep + 1)? {
                return Ok(Some(r));
            }
            if self.single(s, p, ep) {
                s += 1;
            } else {
                return Ok(None);
            }
        }
    }

    fn balance(&mut self, mut s: usize, p: usize) -> Result<Option<usize>> {
        if p + 1 >= self.pat.len() {
            return Err(perr("malformed pattern (missing arguments to '%b')"));
        }
        let (b, e) = (self.pat[p], self.pat[p + 1]);
        if self.src.get(s) != Some(&b) {
            return Ok(None);
        }
        let mut open = 1;
        loop {
            s += 1;
            self.step()?;
            let Some(&c) = self.src.get(s) else {
                return Ok(None);
            };
            if c == e {
                open -= 1;
                if open == 0 {
                    return Ok(Some(s + 1));
                }
            } else if c == b {
                open += 1;
            }
        }
    }

    fn start_capture(&mut self, s: usize, p: usize, what: isize) -> Result<Option<usize>> {
        if self.level >= MAX_CAPTURES {
            return Err(perr("too many captures"));
        }
        self.capture[self.level] = (s, what);
        self.level += 1;
        let res = self.do_match(s, p)?;
        if res.is_none() {
            self.level -= 1;
        }
        Ok(res)
    }

    fn end_capture(&mut self, s: usize, p: usize) -> Result<Option<usize>> {
        let l = (0..self.level)
            .rev()
            .find(|&l| self.capture[l].1 == CAP_UNFINISHED)
            .ok_or_else(|| perr("invalid pattern capture"))?;
        self.capture[l].1 = (s - self.capture[l].0) as isize;
        let res = self.do_match(s, p)?;
        if res.is_none() {
            self.capture[l].1 = CAP_UNFINISHED;
        }
        Ok(res)
    }

    fn match_capture(&mut self, s: usize, digit: u8) -> Result<Option<usize>> {
        let l = (digit - b'1') as usize;
        if digit < b'1' || l >= self.level || self.capture[l].1 == CAP_UNFINISHED {
            return Err(perr(format!("invalid capture index %{}", l + 1)));
        }
        let (start, len) = (self.capture[l].0, self.capture[l].1 as usize);
        let cap = &self.src[start..start + len];
        if self.src.len() - s >= len && &self.src[s..s + len] == cap {
            Ok(Some(s + len))
        } else {
            Ok(None)
        }
    }

    fn one_capture(&self, lua: &Lua, i: usize, s: usize, e: usize) -> Result<Value> {
        if i >= self.level {
            if i != 0 {
                return Err(perr(format!("invalid capture index %{}", i + 1)));
            }
            return Ok(Value::String(lua.create_string(&self.src[s..e])?));
        }
        let (init, len) = self.capture[i];
        match len {
            CAP_UNFINISHED => Err(perr("unfinished capture")),
            CAP_POSITION => Ok(Value::Integer(init as i64 + 1)),
            n => Ok(Value::String(
                lua.create_string(&self.src[init..init + n as usize])?,
            )),
        }
    }

    /// All captures, or the whole match when there are none (if `whole`).
    fn captures(&self, lua: &Lua, s: usize, e: usize, whole: bool) -> Result<MultiValue> {
        let n = if self.level == 0 && whole {
            1
        } else {
            self.level
        };
        (0..n).map(|i| self.one_capture(lua, i, s, e)).collect()
    }
}

/// Lua's `posrelatI`: a 1-based start position, clamped.
fn start_pos(init: Option<i64>, len: usize) -> usize {
    match init.unwrap_or(1) {
        p if p > 0 => p as usize,
        0 => 1,
        p if p < -(len as i64) => 1,
        p => (len as i64 + p + 1) as usize,
    }
}

/// `string.find` (`find = true`) and `string.match`.
pub fn find(
    lua: &Lua,
    (s, p, init, plain): (mlua::LuaString, mlua::LuaString, Option<i64>, Option<bool>),
    find: bool,
    charge: Charge<'_>,
) -> Result<MultiValue> {
    let (src, pat) = (s.as_bytes(), p.as_bytes());
    let init = start_pos(init, src.len()) - 1;
    if init > src.len() {
        return Ok(MultiValue::from_iter([Value::Nil]));
    }
    if find && (plain.unwrap_or(false) || !pat.iter().any(|c| SPECIALS.contains(c))) {
        let hit = if pat.is_empty() {
            Some(0)
        } else {
            // Linear in the subject (two-way search), charged up front.
            (charge)((src.len() - init) as u64 / 16 + 1)?;
            memchr::memmem::find(&src[init..], &pat)
        };
        return Ok(match hit {
            Some(i) => MultiValue::from_iter([
                Value::Integer((init + i + 1) as i64),
                Value::Integer((init + i + pat.len()) as i64),
            ]),
            None => MultiValue::from_iter([Value::Nil]),
        });
    }
    let anchor = pat.first() == Some(&b'^');
    let pstart = anchor as usize;
    let mut m = Matcher::new(&src, &pat, charge);
    let mut s1 = init;
    loop {
        m.reset();
        if let Some(e) = m.do_match(s1, pstart)? {
            if find {
                let mut out = MultiValue::from_iter([
                    Value::Integer(s1 as i64 + 1),
                    Value::Integer(e as i64),
                ]);
                out.extend(m.captures(lua, s1, e, false)?);
                return Ok(out);
            }
            return m.captures(lua, s1, e, true);
        }
        s1 += 1;
        if anchor || s1 > src.len() {
            return Ok(MultiValue::from_iter([Value::Nil]));
        }
    }
}

/// One step of a `string.gmatch` iterator: the next match at or after `*pos`.
pub fn gmatch_next(
    lua: &Lua,
    src: &[u8],
    pat: &[u8],
    pos: &mut usize,
    last: &mut Option<usize>,
    charge: Charge<'_>,
) -> Result<MultiValue> {
    let mut m = Matcher::new(src, pat, charge);
    let mut s = *pos;
    while s <= src.len() {
        m.reset();
        if let Some(e) = m.do_match(s, 0)?
            && Some(e) != *last
        {
            *pos = e;
            *last = Some(e);
            return m.captures(lua, s, e, true);
        }
        s += 1;
    }
    *pos = s;
    Ok(MultiValue::from_iter([Value::Nil]))
}

/// Where `gmatch` starts for a Lua `init` argument.
pub fn gmatch_start(init: Option<i64>, len: usize) -> usize {
    (start_pos(init, len) - 1).min(len + 1)
}

/// `string.gsub`.
pub fn gsub(
    lua: &Lua,
    (s, p, repl, max_n): (mlua::LuaString, mlua::LuaString, Value, Option<i64>),
    charge: Charge<'_>,
) -> Result<(mlua::LuaString, i64)> {
    let (src, pat) = (s.as_bytes(), p.as_bytes());
    if !matches!(
        repl,
        Value::String(_)
            | Value::Integer(_)
            | Value::Number(_)
            | Value::Table(_)
            | Value::Function(_)
    ) {
        return Err(perr(format!(
            "bad argument #3 to 'gsub' (string/function/table expected, got {})",
            repl.type_name()
        )));
    }
    let repl_str = match &repl {
        Value::String(r) => Some(r.as_bytes().to_vec()),
        Value::Integer(_) | Value::Number(_) => Some(repl.to_string()?.into_bytes()),
        _ => None,
    };
    let anchor = pat.first() == Some(&b'^');
    let pstart = anchor as usize;
    let max_n = max_n.unwrap_or(i64::MAX);
    let mut m = Matcher::new(&src, &pat, charge);
    // The output grows only within what is left of the VM's memory.
    let mut out = super::meter::Buffer::new(lua, "string.gsub's result", None);
    let (mut at, mut n, mut last) = (0usize, 0i64, None);
    while n < max_n {
        m.reset();
        let e = m.do_match(at, pstart)?;
        match e {
            Some(e) if Some(e) != last => {
                n += 1;
                m.step()?;
                let whole = &src[at..e];
                let value = match (&repl, &repl_str) {
                    (_, Some(r)) => {
                        expand(lua, &m, r, at, e, &mut out)?;
                        None
                    }
                    (Value::Table(t), _) => Some(t.get::<Value>(m.one_capture(lua, 0, at, e)?)?),
                    (Value::Function(f), _) => {
                        Some(f.call::<Value>(m.captures(lua, at, e, true)?)?)
                    }
                    _ => unreachable!("checked above"),
                };
                match value {
                    None => {}
                    Some(Value::Nil) | Some(Value::Boolean(false)) => out.extend(whole)?,
                    Some(Value::String(s)) => out.extend(&s.as_bytes())?,
                    Some(v @ (Value::Integer(_) | Value::Number(_))) => {
                        out.extend(v.to_string()?.as_bytes())?
                    }
                    Some(v) => {
                        return Err(perr(format!(
                            "invalid replacement value (a {})",
                            v.type_name()
                        )));
                    }
                }
                at = e;
                last = Some(e);
            }
            _ if at < src.len() => {
                out.push(src[at])?;
                at += 1;
            }
            _ => break,
        }
        if anchor {
            break;
        }
    }
    out.extend(&src[at.min(src.len())..])?;
    Ok((lua.create_string(&out.bytes)?, n))
}

/// Expands `%0`–`%9` and `%%` in a gsub replacement string.
fn expand(
    lua: &Lua,
    m: &Matcher,
    r: &[u8],
    s: usize,
    e: usize,
    out: &mut super::meter::Buffer,
) -> Result<()> {
    let mut i = 0;
    while i < r.len() {
        let c = r[i];
        i += 1;
        if c != ESC {
            out.push(c)?;
            continue;
        }
        let d = r.get(i).copied().unwrap_or(0);
        i += 1;
        match d {
            ESC => out.push(ESC)?,
            b'0' => out.extend(&m.src[s..e])?,
            b'1'..=b'9' => match m.one_capture(lua, (d - b'1') as usize, s, e)? {
                Value::String(v) => out.extend(&v.as_bytes())?,
                v => out.extend(v.to_string()?.as_bytes())?,
            },
            _ => return Err(perr("invalid use of '%' in replacement string")),
        }
    }
    Ok(())
}
