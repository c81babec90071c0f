//! Token counts for turns whose server reports none (llama-cpp-python
//! ignores `stream_options.include_usage`): the request and the answer
//! are counted with a real BPE tokenizer, `tiktoken-rs`'s `o200k_base`
//! (OpenAI's current encoding, shipped inside the crate, so nothing is
//! fetched at run time). A local model's own tokenizer differs, so the
//! figures are marked `estimated` wherever they are shown; they are close
//! enough for `limits.tokens` to trip on, which is what matters.

use serde_json::{Value, json};

/// Per message: the role and the framing tokens chat templates add.
const PER_MESSAGE: u64 = 4;

fn count(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    tiktoken_rs::o200k_base_singleton()
        .encode_ordinary(text)
        .len() as u64
}

/// A JSON value's tokens: a string's text, anything else as JSON.
fn count_value(v: &Value) -> u64 {
    match v {
        Value::Null => 0,
        Value::String(s) => count(s),
        other => count(&other.to_string()),
    }
}

/// A message's tokens: content, tool calls, framing.
fn message(m: &Value) -> u64 {
    PER_MESSAGE + count_value(&m["content"]) + count_value(&m["tool_calls"])
}

/// A turn's usage, estimated from the request `body` as sent and the
/// assistant `answer`: `{prompt_tokens, completion_tokens, total_tokens,
/// estimated: true}`.
pub fn usage(body: &Value, answer: &Value) -> Value {
    let messages = body["messages"].as_array().map(Vec::as_slice);
    let prompt = messages
        .unwrap_or_default()
        .iter()
        .map(message)
        .sum::<u64>()
        + count_value(&body["tools"])
        + 3;
    let completion = count_value(&answer["content"]) + count_value(&answer["tool_calls"]);
    json!({ "prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion, "estimated": true })
}

/// Whether a reported usage says nothing (absent, or all zero).
pub fn missing(usage: Option<&Value>) -> bool {
    let n = |k: &str| usage.and_then(|u| u.get(k)).and_then(Value::as_u64);
    n("total_tokens").unwrap_or(0) == 0
        && n("prompt_tokens").unwrap_or(0) == 0
        && n("completion_tokens").unwrap_or(0) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turn_without_usage_is_counted_and_marked() {
        let body = json!({ "messages": [{ "role": "user", "content": "Hello there, world" }] });
        let u = usage(&body, &json!({ "content": "Hi!" }));
        assert_eq!(u["estimated"], true);
        assert!(u["prompt_tokens"].as_u64().unwrap() >= 3 + PER_MESSAGE);
        assert!(u["completion_tokens"].as_u64().unwrap() >= 1);
        assert!(missing(None));
        assert!(missing(Some(&json!({ "prompt_tokens": 0 }))));
        assert!(!missing(Some(&json!({ "prompt_tokens": 5 }))));
    }
}
