//! How big a JSON value is, measured without encoding it.
//!
//! Data enters the engine as `serde_json::Value`s (step inputs, results,
//! emitted output, questions and answers). Each entry point checks the
//! value's encoded size against a limit before keeping it, so nothing later
//! (the journal, a process agent's stdin, an event stream) can encode it
//! into something larger: a string of NUL bytes encodes six times longer,
//! and the measure counts that. The heap estimate is what holding the value
//! costs the host, used for retention accounting.

use serde_json::Value;

/// Sizes of one value, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Size {
    /// Length of its JSON encoding (numbers are estimated from above).
    pub json: usize,
    /// Roughly what the `Value` tree occupies in memory.
    pub heap: usize,
}

const NODE: usize = std::mem::size_of::<Value>();

/// Measures `v`, giving up (returning a size over `limit`) as soon as the
/// encoding is known to exceed `limit`.
pub fn measure(v: &Value, limit: usize) -> Size {
    let mut size = Size::default();
    walk(v, limit, &mut size);
    size
}

fn walk(v: &Value, limit: usize, size: &mut Size) {
    if size.json > limit {
        return;
    }
    size.heap += NODE;
    match v {
        Value::Null | Value::Bool(_) => size.json += 5,
        Value::Number(_) => size.json += 24,
        Value::String(s) => string(s, size),
        Value::Array(items) => {
            size.json += 2 + items.len();
            for item in items {
                walk(item, limit, size);
            }
        }
        Value::Object(map) => {
            size.json += 2 + map.len() * 2;
            for (k, item) in map {
                size.heap += NODE;
                string(k, size);
                walk(item, limit, size);
            }
        }
    }
}

fn string(s: &str, size: &mut Size) {
    size.heap += s.len();
    size.json += 2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..0x20 => 6,
            _ => 1,
        })
        .sum::<usize>();
}

/// A `MiB`/`KiB` figure for messages.
pub fn human(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encoded_length_bounds_the_real_encoding() {
        for v in [
            json!("plain"),
            json!("quote\" back\\ nl\n nul\u{0} bell\u{7}"),
            json!({"a": [1, 2.5, null, true], "nested": {"k": "v"}}),
            json!("\u{0}".repeat(1000)),
        ] {
            let real = serde_json::to_string(&v).unwrap().len();
            let m = measure(&v, usize::MAX).json;
            assert!(m >= real, "{v}: measured {m} < real {real}");
            assert!(m <= real + 100, "{v}: measured {m} far above {real}");
        }
    }

    #[test]
    fn measuring_stops_past_the_limit() {
        let big = Value::Array(vec![json!("x".repeat(100)); 100_000]);
        let m = measure(&big, 1000);
        assert!(m.json > 1000 && m.json < 200_000, "{m:?}");
    }
}
