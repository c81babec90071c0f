//! How a Lua value becomes JSON: the one conversion every step input,
//! result, journaled value and `swarm.json.encode` goes through.
//!
//! A table is a list when it carries the JSON-array metatable, or when its
//! keys are exactly 1..n with holes no more than half of n (holes become
//! null). Any other table is an object, integer keys written as text:
//! `{1, 2, x = 3}` is `{"1":1,"2":2,"x":3}` and `{}` is `{}`. (mlua's serde
//! bridge made `{1, 2, x = 3}` into `[1,2]` and a sparse list into its
//! items before the first hole, silently; asked to tell mixed tables
//! apart, it makes `{}` a list.) A string that is not UTF-8 text, a key that
//! is neither text nor an integer, a function, a cycle or nesting deeper
//! than [`DEPTH`] is refused with what and why.

use mlua::{Lua, LuaSerdeExt, LuaString, Table, Value};
use serde_json::{Map, Value as Json};

/// Deepest nesting converted (mlua's default too).
const DEPTH: usize = 128;

/// `v` as JSON; the error says what could not convert.
///
/// The tree is built in host memory, so it may grow only to the VM's
/// memory limit (as JSON text), charged as it grows: a table that holds
/// one large table many times over (shared, not cyclic) would otherwise
/// make the host build each copy.
pub fn lua_to_json(lua: &Lua, v: Value) -> Result<Json, String> {
    match v {
        // Most steps' inputs and results: no walk to set up.
        Value::Integer(i) => Ok(Json::from(i)),
        Value::String(s) => text(&s, "a string").map(Json::String),
        v => {
            let limit = lua
                .app_data_ref::<super::ctx::VmCtx>()
                .map_or(usize::MAX, |ctx| ctx.memory_limit);
            let mut walk = Walk {
                lua,
                array_mt: None,
                path: Vec::new(),
                left: limit,
                limit,
                uncharged: 0,
            };
            let out = walk.value(&v);
            super::meter::charge_bytes(lua, walk.uncharged).map_err(|e| e.to_string())?;
            out
        }
    }
}

struct Walk<'a> {
    lua: &'a Lua,
    /// The JSON-array metatable, looked up at the first table.
    array_mt: Option<Table>,
    /// The tables being converted, outermost first: a cycle's witness.
    path: Vec<*const std::ffi::c_void>,
    /// Bytes of JSON text the tree may still grow by, of `limit`.
    left: usize,
    limit: usize,
    /// Bytes built since the work was last charged.
    uncharged: usize,
}

impl Walk<'_> {
    /// Accounts for `bytes` more of JSON text before they are built.
    fn grow(&mut self, bytes: usize) -> Result<(), String> {
        let Some(left) = self.left.checked_sub(bytes) else {
            if let Some(ctx) = self.lua.app_data_ref::<super::ctx::VmCtx>() {
                ctx.limits.trip(super::limits::Tripped::Memory);
            }
            return Err(format!(
                "larger than the VM's memory limit of {} bytes as JSON",
                self.limit
            ));
        };
        self.left = left;
        self.uncharged += bytes;
        if self.uncharged >= 1 << 16 {
            super::meter::charge_bytes(self.lua, self.uncharged).map_err(|e| e.to_string())?;
            self.uncharged = 0;
        }
        Ok(())
    }

    fn value(&mut self, v: &Value) -> Result<Json, String> {
        self.grow(match v {
            Value::String(s) => s.as_bytes().len() + 8,
            _ => 8,
        })?;
        Ok(match v {
            Value::Nil => Json::Null,
            Value::Boolean(b) => Json::Bool(*b),
            Value::Integer(i) => Json::from(*i),
            // NaN and the infinities have no JSON form: null, as JSON.stringify.
            Value::Number(n) => Json::from(*n),
            Value::String(s) => Json::String(text(s, "a string")?),
            Value::Table(t) => self.table(t)?,
            Value::LightUserData(_) if *v == self.lua.null() => Json::Null,
            other => return Err(format!("unsupported value type `{}`", other.type_name())),
        })
    }

    fn table(&mut self, t: &Table) -> Result<Json, String> {
        let ptr = t.to_pointer();
        if self.path.contains(&ptr) {
            return Err("recursive table detected".into());
        }
        if self.path.len() >= DEPTH {
            return Err("recursion limit exceeded".into());
        }
        self.path.push(ptr);
        let out = self.entries(t);
        self.path.pop();
        out
    }

    fn entries(&mut self, t: &Table) -> Result<Json, String> {
        let array_mt = self
            .array_mt
            .get_or_insert_with(|| self.lua.array_metatable());
        if t.metatable().is_some_and(|mt| mt == *array_mt) {
            let items = t.sequence_values::<Value>();
            let items = items.map(|v| self.value(&v.map_err(|e| e.to_string())?));
            return items.collect::<Result<_, _>>().map(Json::Array);
        }
        let mut pairs = Vec::new();
        for pair in t.pairs::<Value, Value>() {
            let (k, v) = pair.map_err(|e| e.to_string())?;
            if let Value::String(s) = &k {
                self.grow(s.as_bytes().len())?;
            }
            pairs.push((k, self.value(&v)?));
        }
        if let Some(list) = as_list(&mut pairs) {
            return Ok(Json::Array(list));
        }
        let mut out = Map::new();
        for (k, v) in pairs {
            out.insert(key(&k)?, v);
        }
        Ok(Json::Object(out))
    }
}

/// The items in order when the keys are exactly 1..n, not too sparse.
fn as_list(pairs: &mut [(Value, Json)]) -> Option<Vec<Json>> {
    let mut max = 0usize;
    for (k, _) in pairs.iter() {
        match k {
            Value::Integer(i) if *i >= 1 => max = max.max(*i as usize),
            _ => return None,
        }
    }
    if pairs.is_empty() || pairs.len() * 2 < max {
        return None;
    }
    let mut list = vec![Json::Null; max];
    for (k, v) in pairs.iter_mut() {
        if let Value::Integer(i) = k {
            list[*i as usize - 1] = std::mem::take(v);
        }
    }
    Some(list)
}

fn key(k: &Value) -> Result<String, String> {
    match k {
        Value::String(s) => text(s, "a table key"),
        Value::Integer(i) => Ok(i.to_string()),
        other => Err(format!(
            "a table key {} is neither text nor an integer",
            other
                .to_string()
                .unwrap_or_else(|_| other.type_name().into())
        )),
    }
}

fn text(s: &LuaString, what: &str) -> Result<String, String> {
    s.to_str()
        .map(|s| s.to_string())
        .map_err(|_| format!("{what} of {} bytes is not UTF-8 text", s.as_bytes().len()))
}

/// JSON text as a Lua value, built straight in the VM: every table and
/// string is allocated under the VM's memory limit as it is read, and the
/// work is charged as it goes, so no host-side tree proportional to the
/// text is ever built. Arrays carry the JSON-array metatable, null is
/// `swarm.json.null`. `Ok(Err(text))` is text that is not JSON (an
/// expected failure); `Err` a limit or a Lua error.
pub fn json_to_lua(lua: &Lua, text: &[u8]) -> mlua::Result<Result<Value, String>> {
    use serde::de::DeserializeSeed;
    let state = Decode {
        err: std::cell::RefCell::new(None),
        values: std::cell::Cell::new(0),
        array_mt: lua.array_metatable(),
    };
    let mut de = serde_json::Deserializer::from_slice(text);
    let out = Seed { lua, st: &state }
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v));
    if let Some(e) = state.err.into_inner() {
        return Err(e);
    }
    super::meter::charge(lua, state.values.get() % 1024 + text.len() as u64 / 64)?;
    Ok(out.map_err(|e| e.to_string()))
}

struct Decode {
    /// The Lua or limit error that stopped the parse, raised after it.
    err: std::cell::RefCell<Option<mlua::Error>>,
    values: std::cell::Cell<u64>,
    array_mt: Table,
}

#[derive(Clone, Copy)]
struct Seed<'a> {
    lua: &'a Lua,
    st: &'a Decode,
}

impl Seed<'_> {
    /// Runs a Lua operation for the parser: its error stops the parse and
    /// is kept to be raised as itself; every 1024 values are charged.
    fn lua<T, E: serde::de::Error>(&self, op: impl FnOnce() -> mlua::Result<T>) -> Result<T, E> {
        let n = self.st.values.get() + 1;
        self.st.values.set(n);
        let charged = if n.is_multiple_of(1024) {
            super::meter::charge(self.lua, 1024)
        } else {
            Ok(())
        };
        match charged.and_then(|()| op()) {
            Ok(v) => Ok(v),
            Err(e) => {
                *self.st.err.borrow_mut() = Some(e);
                Err(E::custom("stopped"))
            }
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Boolean(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Integer(v))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::Number(v as f64), Value::Integer))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Number(v))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        self.lua(|| self.lua.create_string(v).map(Value::String))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        Ok(self.lua.null())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let t = self.lua(|| self.lua.create_table())?;
        let mut i = 1i64;
        while let Some(v) = seq.next_element_seed(self)? {
            self.lua(|| t.raw_set(i, v))?;
            i += 1;
        }
        self.lua(|| t.set_metatable(Some(self.st.array_mt.clone())))?;
        Ok(Value::Table(t))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let t = self.lua(|| self.lua.create_table())?;
        while let Some(k) = map.next_key_seed(self)? {
            let v = map.next_value_seed(self)?;
            self.lua(|| t.raw_set(k, v))?;
        }
        Ok(Value::Table(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(src: &str) -> Result<Json, String> {
        let lua = Lua::new();
        let v: Value = lua.load(src).eval().unwrap();
        lua_to_json(&lua, v)
    }

    #[test]
    fn lists_objects_and_the_tables_between() {
        let ok = |v: Json| Ok::<Json, String>(v);
        assert_eq!(convert("{1, 2, 3}"), ok(serde_json::json!([1, 2, 3])));
        assert_eq!(convert("{1, nil, 3}"), ok(serde_json::json!([1, null, 3])));
        assert_eq!(
            convert("{1, 2, x = 3}"),
            ok(serde_json::json!({"1": 1, "2": 2, "x": 3}))
        );
        assert_eq!(
            convert("{[1] = 'a', [1000000] = 'b'}"),
            ok(serde_json::json!({"1": "a", "1000000": "b"}))
        );
        assert_eq!(convert("{}"), ok(serde_json::json!({})));
        assert_eq!(
            convert("{a = {b = {true, 1.5, 'x'}}}"),
            ok(serde_json::json!({"a": {"b": [true, 1.5, "x"]}}))
        );
        assert_eq!(convert("0/0"), ok(Json::Null));
        assert_eq!(convert("math.maxinteger"), ok(serde_json::json!(i64::MAX)));
        // A shared (not cyclic) table converts wherever it appears.
        assert_eq!(
            convert("local s = {1} return {s, s}"),
            ok(serde_json::json!([[1], [1]]))
        );
    }

    #[test]
    fn json_arrays_and_null_round_trip() {
        let lua = Lua::new();
        for text in [r#"[]"#, r#"[1,null,{"a":[]}]"#, r#"{"x":null,"y":{}}"#] {
            let json: Json = serde_json::from_str(text).unwrap();
            let v = lua.to_value(&json).unwrap();
            assert_eq!(lua_to_json(&lua, v), Ok(json), "{text}");
        }
    }

    #[test]
    fn what_json_cannot_hold_is_refused() {
        let err = |src| convert(src).unwrap_err();
        assert!(err("'\\xff\\xfe'").contains("not UTF-8"));
        assert!(err("{[1.5] = 1}").contains("neither text nor an integer"));
        assert!(err("{[true] = 1}").contains("neither text nor an integer"));
        assert!(err("{f = print}").contains("`function`"));
        assert!(err("local t = {} t.t = t return t").contains("recursive"));
        let deep = "local t = {} local c = t for i = 1, 200 do c.x = {} c = c.x end return t";
        assert!(err(deep).contains("recursion limit"));
    }
}
