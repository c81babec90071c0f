//! Structured output on the servers people actually run. OpenAI's
//! `response_format = json_schema` is not universal: llama-cpp-python
//! refuses it (a 500 naming `response_format`), others answer 400/422. A
//! step with a `schema` tries, in order, `json_schema`, then `json_object`
//! with the schema in the system prompt, then plain text with the schema
//! in the prompt; the answer is validated against the schema in every
//! mode (the caller does that). What an endpoint + model accepted is
//! remembered for the life of the process, so only the first turn pays
//! for the refusals.
//!
//! The same memory holds the other things servers differ on: whether a
//! turn that offers tools can be streamed (llama-cpp-python closes such a
//! stream empty; the turn is sent again without streaming), and whether
//! the model takes `max_tokens` or wants `max_completion_tokens`.

use super::http::Failure;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// How a turn asks for structured output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    JsonSchema,
    JsonObject,
    Text,
}

impl Mode {
    /// The name events and messages use.
    pub fn name(self) -> &'static str {
        match self {
            Mode::JsonSchema => "json_schema",
            Mode::JsonObject => "json_object",
            Mode::Text => "text",
        }
    }

    /// The mode to try when this one is refused.
    pub fn next(self) -> Option<Mode> {
        match self {
            Mode::JsonSchema => Some(Mode::JsonObject),
            Mode::JsonObject => Some(Mode::Text),
            Mode::Text => None,
        }
    }
}

/// What an endpoint + model was found to accept.
#[derive(Debug, Clone, Copy, Default)]
struct Learnt {
    mode: Option<Mode>,
    /// Turns offering tools must not be streamed.
    no_streamed_tools: bool,
    /// The turn's limit goes as `max_completion_tokens`.
    max_completion: bool,
}

type Memory = Mutex<HashMap<(String, String), Learnt>>;

fn learnt(base: &str, model: &str) -> Learnt {
    let m = memory().lock().unwrap_or_else(|e| e.into_inner());
    let key = (base.to_string(), model.to_string());
    m.get(&key).copied().unwrap_or_default()
}

fn learn(base: &str, model: &str, f: impl FnOnce(&mut Learnt)) {
    let mut m = memory().lock().unwrap_or_else(|e| e.into_inner());
    f(m.entry((base.to_string(), model.to_string())).or_default());
}

fn memory() -> &'static Memory {
    static MEMORY: OnceLock<Memory> = OnceLock::new();
    MEMORY.get_or_init(Memory::default)
}

/// The mode to start with at `base` for `model`: what worked last time.
pub fn remembered(base: &str, model: &str) -> Mode {
    learnt(base, model).mode.unwrap_or(Mode::JsonSchema)
}

/// Records that `mode` worked at `base` for `model`.
pub fn remember(base: &str, model: &str, mode: Mode) {
    learn(base, model, |l| l.mode = Some(mode));
}

/// Whether turns offering tools may be streamed at `base` for `model`.
pub fn streams_tools(base: &str, model: &str) -> bool {
    !learnt(base, model).no_streamed_tools
}

/// Whether `model` at `base` wants `max_completion_tokens`.
pub fn says_max_completion(base: &str, model: &str) -> bool {
    learnt(base, model).max_completion
}

/// Records that `model` at `base` refuses `max_tokens`.
pub fn max_completion(base: &str, model: &str) {
    learn(base, model, |l| l.max_completion = true);
}

/// Records that `base` cannot stream turns offering tools for `model`.
pub fn no_streamed_tools(base: &str, model: &str) {
    learn(base, model, |l| l.no_streamed_tools = true);
}

/// Whether a failed turn is the server refusing the response format: a
/// 400 or 422, or a 500 whose body names `response_format`.
pub fn refused(f: &Failure) -> bool {
    match f.status {
        Some(400 | 422) => true,
        Some(500) => f.body.contains("response_format"),
        _ => false,
    }
}

/// The instruction that carries the schema when the server does not.
pub fn instruction(schema: &Value) -> String {
    format!(
        "Answer with only a JSON value, no other text, that matches this JSON Schema:\n{schema}"
    )
}

/// Rewrites a request body (built for `json_schema`) for `mode`.
pub fn apply(body: &mut Value, schema: &Value, mode: Mode) {
    let Some(b) = body.as_object_mut() else {
        return;
    };
    match mode {
        Mode::JsonSchema => return,
        // `schema` beside the type is llama-cpp-python's grammar-constrained
        // JSON; servers that do not know it ignore it.
        Mode::JsonObject => {
            b.insert(
                "response_format".into(),
                json!({ "type": "json_object", "schema": schema }),
            );
        }
        Mode::Text => {
            b.remove("response_format");
        }
    }
    let Some(messages) = b.get_mut("messages").and_then(Value::as_array_mut) else {
        return;
    };
    let text = instruction(schema);
    match messages.first_mut() {
        Some(m) if m["role"] == "system" && m["content"].is_string() => {
            let s = m["content"].as_str().unwrap_or_default();
            m["content"] = json!(format!("{s}\n\n{text}"));
        }
        _ => messages.insert(0, json!({ "role": "system", "content": text })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mode_carries_the_schema_its_own_way() {
        let schema = json!({ "type": "object" });
        let body = json!({ "messages": [{ "role": "system", "content": "Be brief." },
            { "role": "user", "content": "hi" }],
            "response_format": { "type": "json_schema" } });
        let mut b = body.clone();
        apply(&mut b, &schema, Mode::JsonSchema);
        assert_eq!(b, body);
        apply(&mut b, &schema, Mode::JsonObject);
        assert_eq!(b["response_format"]["type"], "json_object");
        let system = b["messages"][0]["content"].as_str().unwrap();
        assert!(system.starts_with("Be brief.\n\nAnswer with only a JSON value"));
        let mut b = json!({ "messages": [{ "role": "user", "content": "hi" }],
            "response_format": {} });
        apply(&mut b, &schema, Mode::Text);
        assert!(b.get("response_format").is_none());
        assert_eq!(b["messages"][0]["role"], "system");
        assert_eq!(b["messages"].as_array().unwrap().len(), 2);
    }
}
