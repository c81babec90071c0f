//! The OpenAI-compatible chat-completions wire format: the request body,
//! Server-Sent Events framing, and folding `chat.completion.chunk`s into
//! one assistant message (content deltas appended, tool calls merged by
//! index, usage taken from the final chunk).

use serde_json::{Map, Value, json};

/// One model turn, as the agent keeps and journals it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Turn {
    /// The assistant message: `{ role, content, tool_calls? }`.
    pub message: Value,
    /// `{ prompt_tokens, completion_tokens, total_tokens }` when reported.
    pub usage: Option<Value>,
    pub finish_reason: Option<String>,
}

impl Turn {
    /// A turn as the journal recorded it.
    pub fn recorded(rec: &Value) -> Turn {
        Turn {
            message: rec["message"].clone(),
            usage: rec.get("usage").cloned(),
            finish_reason: rec["finish_reason"].as_str().map(str::to_string),
        }
    }

    /// The tool calls the model asked for (empty when it answered).
    pub fn tool_calls(&self) -> Vec<Value> {
        self.message
            .get("tool_calls")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }

    pub fn content(&self) -> String {
        self.message
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    }

    /// A non-streamed response body.
    pub fn from_response(body: &Value) -> Result<Turn, String> {
        let choice = body
            .pointer("/choices/0")
            .ok_or_else(|| format!("the response has no choices: {}", excerpt(body)))?;
        let mut message = choice.get("message").cloned().unwrap_or(json!({}));
        if let Some(m) = message.as_object_mut() {
            m.entry("role").or_insert(json!("assistant"));
            // Sent back as history: servers refuse `content: null` beside
            // tool calls (llama-cpp-python answers 500), all accept "".
            if m.get("content").is_none_or(Value::is_null) {
                m.insert("content".into(), json!(""));
            }
            if m.get("tool_calls")
                .is_some_and(|t| t.as_array().is_none_or(Vec::is_empty))
            {
                m.remove("tool_calls");
            }
            // The legacy twin of `tool_calls` (llama-cpp-python sends both,
            // naming the function `lookup:`): the history carries one.
            if m.contains_key("tool_calls") {
                m.remove("function_call");
            }
        }
        Ok(Turn {
            message,
            usage: body.get("usage").filter(|u| !u.is_null()).cloned(),
            finish_reason: choice
                .get("finish_reason")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }
}

/// At most 300 characters of `v`, for error messages.
pub fn excerpt(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// Folds streamed chunks into a [`Turn`].
#[derive(Default)]
pub struct Accumulator {
    content: String,
    calls: Vec<(String, String, String)>,
    usage: Option<Value>,
    finish: Option<String>,
    done: bool,
}

impl Accumulator {
    /// Takes one `data:` payload; returns the content delta it carried.
    pub fn push(&mut self, data: &str) -> Result<Option<String>, String> {
        if data.trim() == "[DONE]" {
            self.done = true;
            return Ok(None);
        }
        let chunk: Value = serde_json::from_str(data)
            .map_err(|e| format!("a malformed stream chunk ({e}): {}", cut(data)))?;
        if let Some(err) = chunk.get("error") {
            return Err(format!(
                "the server sent an error mid-stream: {}",
                excerpt(err)
            ));
        }
        if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
            self.usage = Some(u.clone());
        }
        let Some(choice) = chunk.pointer("/choices/0") else {
            return Ok(None);
        };
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish = Some(f.to_string());
        }
        let delta = choice.get("delta").cloned().unwrap_or(Value::Null);
        for call in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.merge_call(call);
        }
        let text = delta.get("content").and_then(Value::as_str).unwrap_or("");
        self.content.push_str(text);
        Ok((!text.is_empty()).then(|| text.to_string()))
    }

    /// Tool calls arrive in pieces: id and name first, arguments accreting,
    /// each piece naming its call by `index`.
    fn merge_call(&mut self, call: &Value) {
        let index = call.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
        if self.calls.len() <= index {
            self.calls.resize(index + 1, Default::default());
        }
        let slot = &mut self.calls[index];
        if let Some(id) = call.get("id").and_then(Value::as_str) {
            slot.0 = id.to_string();
        }
        let f = call.get("function");
        if let Some(name) = f.and_then(|f| f.get("name")).and_then(Value::as_str) {
            // The format sends the name once, in the call's first delta;
            // some servers (llama-cpp-python) repeat the whole name in every
            // delta. A repeat (the name so far, or more of it) replaces.
            if name.starts_with(slot.1.as_str()) {
                slot.1 = name.to_string();
            } else {
                slot.1.push_str(name);
            }
        }
        if let Some(args) = f.and_then(|f| f.get("arguments")).and_then(Value::as_str) {
            slot.2.push_str(args);
        }
    }

    /// The finished turn; an error when the stream ended before the model
    /// finished (a connection that broke mid-way is never a short answer).
    pub fn finish(self) -> Result<Turn, String> {
        if !self.done && self.finish.is_none() {
            return Err("the stream ended before the model finished its answer".into());
        }
        let mut message = Map::new();
        message.insert("role".into(), json!("assistant"));
        message.insert("content".into(), json!(self.content));
        let calls: Vec<Value> = self
            .calls
            .into_iter()
            .enumerate()
            .filter(|(_, c)| !c.1.is_empty())
            .map(|(i, (id, name, args))| {
                let id = if id.is_empty() {
                    format!("call_{i}")
                } else {
                    id
                };
                json!({ "id": id, "type": "function",
                        "function": { "name": name, "arguments": args } })
            })
            .collect();
        if !calls.is_empty() {
            message.insert("tool_calls".into(), Value::Array(calls));
        }
        Ok(Turn {
            message: Value::Object(message),
            usage: self.usage,
            finish_reason: self.finish,
        })
    }
}

fn cut(s: &str) -> String {
    s.chars().take(200).collect()
}

/// Server-Sent Events framing: bytes in, complete `data` payloads out.
/// Comment lines (`:` keep-alives) and other fields are skipped; the data
/// lines of one event are joined with newlines.
#[derive(Default)]
pub struct SseDecoder {
    buf: Vec<u8>,
    data: Vec<String>,
}

impl SseDecoder {
    /// Feeds bytes; returns the payloads of the events they completed.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    out.push(self.data.join("\n"));
                    self.data.clear();
                }
            } else if let Some(rest) = line.strip_prefix("data:") {
                self.data
                    .push(rest.strip_prefix(' ').unwrap_or(rest).to_string());
            }
        }
        out
    }

    /// The payload of a last event not followed by a blank line.
    pub fn end(&mut self) -> Option<String> {
        (!self.data.is_empty()).then(|| std::mem::take(&mut self.data).join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_calls_split_across_chunks_merge_by_index() {
        let mut sse = SseDecoder::default();
        let mut acc = Accumulator::default();
        let stream = concat!(
            ": keep-alive\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"a\",\"function\":{\"name\":\"look\",\"arguments\":\"\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"b\",\"function\":{\"name\":\"calc\",\"arguments\":\"{\\\"x\\\"\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"t\\\":1}\"}}]}}]}\n\r\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\":2}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7}}\n\n",
            "data: [DONE]\n\n"
        );
        // Fed in awkward pieces, as a network delivers them.
        for piece in stream.as_bytes().chunks(7) {
            for data in sse.feed(piece) {
                acc.push(&data).unwrap();
            }
        }
        let turn = acc.finish().unwrap();
        let calls = turn.tool_calls();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0]["function"]["arguments"], "{\"t\":1}");
        assert_eq!(calls[1]["id"], "b");
        assert_eq!(calls[1]["function"]["arguments"], "{\"x\":2}");
        assert_eq!(turn.usage.unwrap()["completion_tokens"], 7);
    }

    #[test]
    fn a_name_repeated_in_every_delta_is_not_appended() {
        let mut acc = Accumulator::default();
        for args in ["{\"term\":", "\"lua\"}"] {
            let chunk = json!({ "choices": [{ "delta": { "tool_calls": [{ "index": 0,
                "id": "c", "function": { "name": "lookup", "arguments": args } }] } }] });
            acc.push(&chunk.to_string()).unwrap();
        }
        acc.push("[DONE]").unwrap();
        let call = &acc.finish().unwrap().tool_calls()[0];
        assert_eq!(call["function"]["name"], "lookup");
        assert_eq!(call["function"]["arguments"], "{\"term\":\"lua\"}");
        let body = json!({ "choices": [{ "message": { "content": null, "tool_calls": [call],
            "function_call": { "name": "lookup:", "arguments": "{}" } } }] });
        let message = Turn::from_response(&body).unwrap().message;
        assert_eq!(message["content"], "");
        assert!(message.get("function_call").is_none());
    }

    #[test]
    fn a_stream_cut_short_is_an_error_not_a_short_answer() {
        let mut acc = Accumulator::default();
        acc.push(r#"{"choices":[{"delta":{"content":"Hel"}}]}"#)
            .unwrap();
        assert!(acc.finish().is_err());
        let mut acc = Accumulator::default();
        assert!(acc.push("{not json").is_err());
    }
}
