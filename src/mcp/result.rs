//! A `tools/call` result as a step's value: the tool's `structuredContent`
//! when it gives one, else `{ content = { ... } }` with each text item as a
//! plain string and every other item (image, audio, resource link,
//! embedded resource) as a table of its wire form, with its `type` and,
//! where it has one, its `mimeType` at the top. A result flagged `isError`
//! is the tool's failure (`tool_error`), with its text as the message.

use super::Fault;
use rmcp::model::CallToolResult;
use serde_json::{Value, json};

/// The step's value of a successful call, or the tool's error.
pub fn to_value(r: CallToolResult) -> Result<Value, Fault> {
    let items: Vec<Value> = r
        .content
        .iter()
        .map(|c| item(serde_json::to_value(c).unwrap_or(Value::Null)))
        .collect();
    if r.is_error == Some(true) {
        let text: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
        let text = match text.join("\n") {
            t if t.is_empty() => "the tool reported an error without text".to_string(),
            t => t,
        };
        return Err(Fault::Tool(text));
    }
    if let Some(v) = r.structured_content {
        return Ok(v);
    }
    Ok(json!({ "content": items }))
}

/// One content item: text as a string, the rest as its table.
fn item(mut v: Value) -> Value {
    if v["type"] == "text"
        && let Some(t) = v.get_mut("text").map(Value::take)
    {
        return t;
    }
    // An embedded resource keeps its MIME type inside `resource`.
    if v.get("mimeType").is_none()
        && let Some(mime) = v.pointer("/resource/mimeType").cloned()
    {
        v["mimeType"] = mime;
    }
    v
}

/// A JSON value's type in Lua's words, for messages.
pub(super) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "nil",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a table",
    }
}
