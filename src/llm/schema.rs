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

/// Decodes a model's answer as JSON (a fenced ```json block is accepted,
/// and so is one JSON object or array inside prose, as models asked in
/// the prompt alone tend to answer) and checks it against `schema`.
pub fn check(schema: &Value, answer: &str) -> Result<Value, String> {
    let text = answer.trim();
    let text = text
        .strip_prefix("```json")
        .or_else(|| text.strip_prefix("```"))
        .and_then(|t| t.strip_suffix("```"))
        .unwrap_or(text)
        .trim();
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => embedded(text).ok_or_else(|| format!("the answer is not JSON ({e})"))?,
    };
    validate(schema, &value)?;
    Ok(value)
}

/// The JSON object or array inside `text`, from its first `{` or `[` to
/// the last matching bracket, when that much parses.
fn embedded(text: &str) -> Option<Value> {
    let start = text.find(['{', '['])?;
    let close = if text[start..].starts_with('{') {
        '}'
    } else {
        ']'
    };
    let end = text.rfind(close)?;
    (end > start)
        .then(|| serde_json::from_str(&text[start..=end]).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_answer_wrapped_in_prose_or_fences_is_found() {
        let schema = json!({ "type": "object", "required": ["ok"] });
        assert!(check(&schema, "```json\n{\"ok\": true}\n```").is_ok());
        assert!(check(&schema, "Sure! Here it is: {\"ok\": 1} Hope it helps.").is_ok());
        let err = check(&schema, "no json here").unwrap_err();
        assert!(err.starts_with("the answer is not JSON"), "{err}");
        assert!(check(&schema, "{}").unwrap_err().contains("ok"));
    }
}
