//! JSON Schema checks, with the maintained `jsonschema` crate: a model's
//! structured answer, and a tool call's arguments against the tool's
//! `params`.

use serde_json::Value;

/// Checks `instance` against `schema`; the first few problems, in words.
pub fn validate(schema: &Value, instance: &Value) -> Result<(), String> {
    let validator = jsonschema::validator_for(schema)
        .map_err(|e| format!("the schema itself is invalid: {e}"))?;
    let problems: Vec<String> = validator
        .iter_errors(instance)
        .take(3)
        .map(|e| {
            let at = e.instance_path.to_string();
            if at.is_empty() {
                e.to_string()
            } else {
                format!("{at}: {e}")
            }
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Decodes a model's answer as JSON (a fenced ```json block is accepted)
/// and checks it against `schema`.
pub fn check(schema: &Value, answer: &str) -> Result<Value, String> {
    let text = answer.trim();
    let text = text
        .strip_prefix("```json")
        .or_else(|| text.strip_prefix("```"))
        .and_then(|t| t.strip_suffix("```"))
        .unwrap_or(text)
        .trim();
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("the answer is not JSON ({e})"))?;
    validate(schema, &value)?;
    Ok(value)
}
