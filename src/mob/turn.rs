//! One turn of a member's conversation, around the model call the caller
//! makes: [`Mob::open_turn`] reads what the model is sent (the
//! conversation, then the peer messages waiting in its inbox and the new
//! text as one user turn); [`Mob::close_turn`] appends the user turn and
//! the reply, both marked with the turn's origin, and takes the messages
//! shown out of the inbox. A turn made again after a crash finds its
//! reply by origin ([`Mob::finished_turn`]) instead of asking again.
//!
//! A member takes one turn at a time: [`turn_lock`] queues turns on one
//! member in this process (turns on different members run in parallel).

use super::{Handle, Mob, MobError};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// What a turn starts from.
#[derive(Debug, Clone)]
pub struct TurnStart {
    pub agent: String,
    /// The whole request: the conversation so far, then `user`.
    pub messages: Vec<Value>,
    /// The new user turn: peer messages waiting, then the text.
    pub user: String,
    /// The conversation's length when the turn began.
    pub at: u64,
    pub convo: String,
    /// The last peer message shown (0: none).
    pub upto: u64,
    /// Who it may message (`send_message`).
    pub peers: Vec<String>,
}

/// The queue of turns on member `id` of mob `mob`, in this process.
pub fn turn_lock(mob: &str, id: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    // Locks nobody waits on are let go, so the map stays small.
    locks.retain(|_, l| Arc::strong_count(l) > 1);
    locks.entry(format!("{mob}\u{0}{id}")).or_default().clone()
}

impl Mob<'_> {
    /// Reads what the turn of `h` on `text` sends the model: with `upto`,
    /// the inbox's messages up to that number only (a turn opened again
    /// after a crash shows what it showed the first time, so its model
    /// calls replay; later messages wait for the next turn).
    pub async fn open_turn(
        &self,
        h: &Handle,
        text: &str,
        upto: Option<u64>,
    ) -> Result<TurnStart, MobError> {
        let roster = self.roster().await?;
        let m = self.current(&roster, h)?;
        if let Some(budget) = m.budget.filter(|b| m.tokens >= *b) {
            return Err(MobError::Budget {
                mob: self.name.clone(),
                id: h.id.clone(),
                budget,
                spent: m.tokens,
            });
        }
        let turns = self.store.turns(&self.name, &m.convo).await?;
        let shown: Vec<_> = m
            .inbox
            .iter()
            .filter(|msg| upto.is_none_or(|u| msg.seq <= u))
            .collect();
        let mut user = String::new();
        if !shown.is_empty() {
            user.push_str("Messages for you since your last turn:\n");
            for msg in &shown {
                user.push_str(&format!("- from {}: {}\n", msg.from, msg.text));
            }
            user.push('\n');
        }
        user.push_str(text);
        let mut messages = super::as_messages(&turns);
        messages.push(json!({ "role": "user", "content": user }));
        Ok(TurnStart {
            agent: m.agent.clone(),
            messages,
            user,
            at: turns.len() as u64,
            convo: m.convo.clone(),
            upto: shown.last().map_or(upto.unwrap_or(0), |msg| msg.seq),
            peers: m.wired.iter().cloned().collect(),
        })
    }

    /// The reply of the turn `origin` made, if it finished before; the
    /// roster is brought up to date with it (a crash may have come between
    /// the conversation's write and the roster's).
    pub async fn finished_turn(&self, h: &Handle, origin: &str) -> Result<Option<Value>, MobError> {
        let roster = self.roster().await?;
        let Some(m) = roster.members.get(&h.id) else {
            return Ok(None);
        };
        let turns = self.store.turns(&self.name, &m.convo).await?;
        let Some(done) = turns
            .iter()
            .rev()
            .find(|t| t["origin"] == origin && t["role"] == "assistant")
        else {
            return Ok(None);
        };
        let reply = done
            .get("reply")
            .cloned()
            .unwrap_or_else(|| done["content"].clone());
        let upto = done["upto"].as_u64().unwrap_or(0);
        let tokens = done["tokens"].as_u64().unwrap_or(0);
        self.settle(h, origin, upto, &reply, tokens).await?;
        Ok(Some(reply))
    }

    /// Counts the turn `origin` in the roster once: the messages it
    /// showed leave the inbox, its tokens and reply are kept.
    async fn settle(
        &self,
        h: &Handle,
        origin: &str,
        upto: u64,
        reply: &Value,
        tokens: u64,
    ) -> Result<(), MobError> {
        self.update(|r| {
            let Some(m) = r.members.get_mut(&h.id) else {
                return Ok(((), false));
            };
            if m.incarnation != h.incarnation || m.last_turn.as_deref() == Some(origin) {
                return Ok(((), false));
            }
            for shown in m.inbox.iter().filter(|msg| msg.seq <= upto) {
                m.delivered.push_back((shown.origin.clone(), shown.seq));
            }
            while m.delivered.len() > super::DELIVERED {
                m.delivered.pop_front();
            }
            m.inbox.retain(|msg| msg.seq > upto);
            m.turns += 1;
            m.tokens += tokens;
            m.last_reply = Some(reply.clone());
            m.last_turn = Some(origin.to_string());
            Ok(((), true))
        })
        .await
    }

    /// Records the finished turn: its user turn and `reply`, then the
    /// roster (inbox emptied up to what it showed, counts, last reply).
    pub async fn close_turn(
        &self,
        h: &Handle,
        start: &TurnStart,
        origin: &str,
        reply: &Value,
        tokens: u64,
    ) -> Result<(), MobError> {
        // A turn through a handle the member outgrew (respawned while the
        // model answered) writes nothing into the new incarnation's
        // conversation: it fails `stale_member` (or `retired`).
        let roster = self.roster().await?;
        self.current(&roster, h)?;
        let content = match reply {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let turns = vec![
            json!({ "role": "user", "content": start.user, "origin": origin }),
            json!({ "role": "assistant", "content": content, "reply": reply, "origin": origin,
                    "upto": start.upto, "tokens": tokens }),
        ];
        let appended = self
            .store
            .append_turns(&self.name, &start.convo, start.at, turns)
            .await?;
        if !appended {
            // Written already (made again after a crash), or another writer
            // took the conversation on meanwhile.
            return match self.finished_turn(h, origin).await? {
                Some(_) => Ok(()),
                None => Err(MobError::Contended(self.name.clone())),
            };
        }
        self.settle(h, origin, start.upto, reply, tokens).await
    }
}
