//! The host tool a mob member's turns get: `send_message(to, text)`, to
//! the peers it is wired to. The host marks a member's turn when the mob
//! library starts it (`TaskSpec::member`: whose turn, whom it may
//! message), never from the step's input, so no other step can act as a
//! member; the run delivers through
//! its [`PeerMail`]. Like every tool call it is journaled, so a resumed
//! run does not send twice; the call's journal position goes with it as
//! the message's origin, so a call made again after a crash is a no-op.

use super::ToolInfo;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};

/// The name the model calls it by.
pub const SEND_MESSAGE: &str = "send_message";

/// Delivers a member's peer messages (the run's mob).
pub trait PeerMail: Send + Sync {
    /// Puts `text` from `member` (its handle) into `to`'s inbox; answers
    /// the receipt, or why not (unwired, unknown, retired), for the model.
    fn send(
        &self,
        member: &Value,
        to: &str,
        text: &str,
        origin: Option<&str>,
    ) -> BoxFuture<'static, Result<Value, Value>>;
}

/// The tool, when `input` is a member's turn with peers to message.
pub fn offered(input: &Value) -> Option<(String, ToolInfo)> {
    let peers: Vec<&str> = input
        .get("peers")?
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    if input.get("member").is_none() || peers.is_empty() {
        return None;
    }
    let description = format!(
        "Send a message to one of your peers ({}). They see it at the start of their \
         next turn. Answers a receipt {{id, delivered}}.",
        peers.join(", ")
    );
    let params = json!({
        "type": "object",
        "properties": {
            "to": { "type": "string", "enum": peers, "description": "the peer's id" },
            "text": { "type": "string", "description": "the message" },
        },
        "required": ["to", "text"],
    });
    Some((
        SEND_MESSAGE.to_string(),
        ToolInfo {
            description,
            params,
        },
    ))
}
