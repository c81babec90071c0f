//! Declared inputs: a blueprint may say what its flow takes with `input =
//! { …JSON Schema… }`. The declaration is read here once (an invalid
//! schema is a blueprint error naming the file and line), and every run
//! start checks its input against it before anything runs or is
//! journaled (`Prepared::start`, which every face goes through: `swarm
//! run`, `POST /v1/runs`, the REPL, MCP). Without a declaration any input
//! is taken, as before. Faces that describe a blueprint (`swarm check`,
//! MCP's tool list, the page's start form) read [`Blueprint::input_schema`].

use super::RunError;
use super::blueprint::Blueprint;
use serde_json::Value;

/// The most problems one refusal lists.
const SHOWN: usize = 5;

impl Blueprint {
    /// The JSON Schema the blueprint declares for its input, if any.
    pub fn input_schema(&self) -> Option<&Value> {
        self.input.as_ref()
    }

    /// Checks `input` against the declared schema: `Err` with every
    /// problem (up to five), each naming the field (a JSON pointer into
    /// the input, `/` for the whole of it) and what is wrong there.
    pub fn check_input(&self, input: &Value) -> Result<(), RunError> {
        let Some(schema) = &self.input else {
            return Ok(());
        };
        let validator = jsonschema::validator_for(schema)
            .map_err(|e| RunError::Input(format!("the declared input schema is invalid: {e}")))?;
        let problems: Vec<String> = validator
            .iter_errors(input)
            .take(SHOWN)
            .map(|e| {
                let at = e.instance_path.to_string();
                let at = if at.is_empty() { "/".to_string() } else { at };
                format!("at {at}: {e}")
            })
            .collect();
        if problems.is_empty() {
            return Ok(());
        }
        Err(RunError::Input(format!(
            "the input does not match what blueprint `{}` declares (`input` in {}): {}",
            self.name,
            self.chunk,
            problems.join("; ")
        )))
    }
}

/// Reads a declared `input` (Lua table as JSON) into a schema: Lua has one
/// table for `{}` and `[]`, so an empty `required` or `enum` read as an
/// object is made a list again. An invalid schema is refused, in words.
pub(super) fn declared(mut schema: Value) -> Result<Value, String> {
    empty_lists(&mut schema);
    jsonschema::validator_for(&schema).map_err(|e| format!("is not a valid JSON Schema: {e}"))?;
    Ok(schema)
}

fn empty_lists(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (k, item) in o.iter_mut() {
                let list_key = matches!(
                    k.as_str(),
                    "required" | "enum" | "allOf" | "anyOf" | "oneOf"
                );
                if list_key && item.as_object().is_some_and(|m| m.is_empty()) {
                    *item = Value::Array(Vec::new());
                } else {
                    empty_lists(item);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(empty_lists),
        _ => {}
    }
}
