//! The roster operations: spawn, ensure, retire, respawn, fork, wire and
//! unwire, peer messages (`tell`), and the reads (members, history). Each
//! change is one compare-and-set of the roster; one made again with the
//! same origin (after a crash) answers what it answered the first time.

use super::{Handle, Member, Mob, MobError, PeerMessage, Roster, View};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// What `spawn` (and `ensure`, `helper`) take.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spawn {
    pub id: String,
    pub agent: String,
    /// `turns` (default) or `autonomous`.
    #[serde(default)]
    pub mode: Option<String>,
    /// Its standing instruction: the conversation's first turn.
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub wire: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `{ tokens = N }`, reserved by the flow library from the run's limit.
    #[serde(default)]
    pub budget: Option<Budget>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub tokens: u64,
}

/// A peer message's receipt.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct Receipt {
    /// Its number in the mob.
    pub id: u64,
    /// In the recipient's inbox: shown at the start of its next turn.
    pub delivered: bool,
}

/// The longest id, label or peer message a mob takes.
const MAX_TEXT: usize = 64 * 1024;

/// Members a mob holds at most (live or retired): every operation reads
/// and writes the whole roster.
pub const MAX_MEMBERS: usize = 1000;

/// Messages waiting in one member's inbox at most.
pub const MAX_INBOX: usize = 1000;

fn inbox_full(mob: &str, to: &str) -> MobError {
    MobError::Bad(format!(
        "member `{to}` of mob `{mob}` has {MAX_INBOX} messages waiting already; let it take a turn first"
    ))
}

/// A message's text is at most [`MAX_TEXT`] bytes.
fn check_text(text: &str, what: &str) -> Result<(), MobError> {
    if text.len() > MAX_TEXT {
        return Err(MobError::Bad(format!(
            "{what} is at most {MAX_TEXT} bytes, this one {}",
            text.len()
        )));
    }
    Ok(())
}

fn check_id(what: &str, id: &str) -> Result<(), MobError> {
    if id.is_empty() || id.len() > 128 || id.contains('#') {
        return Err(MobError::Bad(format!(
            "a member's {what} must be 1-128 characters without `#`, got `{id}`"
        )));
    }
    Ok(())
}

impl Mob<'_> {
    /// A new member (a live one with this id is `member_exists`; a retired
    /// one comes back as its next incarnation). Its `message` is the first
    /// turn of its conversation.
    pub async fn spawn(&self, spec: &Spawn, origin: &str) -> Result<View, MobError> {
        check_id("id", &spec.id)?;
        let mode = spec.mode.clone().unwrap_or_else(|| "turns".into());
        if mode != "turns" && mode != "autonomous" {
            return Err(MobError::Bad(format!(
                "a member's mode is `turns` or `autonomous`, not `{mode}`"
            )));
        }
        let view = self
            .update(|r| {
                if let Some(m) = r.members.get(&spec.id) {
                    if m.origin == origin {
                        return Ok((m.view(&self.name, &spec.id), false));
                    }
                    if m.live {
                        return Err(MobError::Exists {
                            mob: self.name.clone(),
                            id: spec.id.clone(),
                        });
                    }
                }
                for peer in &spec.wire {
                    match r.members.get(peer) {
                        Some(p) if p.live && peer != &spec.id => {}
                        _ => return Err(self.unknown(peer)),
                    }
                }
                if !r.members.contains_key(&spec.id) && r.members.len() >= MAX_MEMBERS {
                    return Err(MobError::Bad(format!(
                        "mob `{}` holds {MAX_MEMBERS} members already (retired ones count)",
                        self.name
                    )));
                }
                let incarnation = r.members.get(&spec.id).map_or(1, |m| m.incarnation + 1);
                let m = Member {
                    agent: spec.agent.clone(),
                    mode: mode.clone(),
                    incarnation,
                    live: true,
                    labels: spec.labels.clone(),
                    wired: spec.wire.iter().cloned().collect(),
                    budget: spec.budget.map(|b| b.tokens),
                    convo: format!("{}#{incarnation}", spec.id),
                    origin: origin.to_string(),
                    ended_by: None,
                    inbox: Vec::new(),
                    // What reached its earlier incarnations stays known.
                    delivered: r
                        .members
                        .get(&spec.id)
                        .map(|m| m.delivered.clone())
                        .unwrap_or_default(),
                    turns: 0,
                    last_reply: None,
                    tokens: 0,
                    last_turn: None,
                    withdrawn: Vec::new(),
                };
                for peer in &spec.wire {
                    if let Some(p) = r.members.get_mut(peer) {
                        p.wired.insert(spec.id.clone());
                    }
                }
                let view = m.view(&self.name, &spec.id);
                r.members.insert(spec.id.clone(), m);
                Ok((view, true))
            })
            .await?;
        if let Some(text) = &spec.message {
            let convo = format!("{}#{}", spec.id, view.incarnation);
            let first = json!({ "role": "system", "content": text, "origin": origin });
            // At 0 only: made again after a crash, it is there already.
            self.store
                .append_turns(&self.name, &convo, 0, vec![first])
                .await?;
        }
        Ok(view)
    }

    /// The live member with this id, or a new one spawned from `spec`.
    pub async fn ensure(&self, spec: &Spawn, origin: &str) -> Result<View, MobError> {
        let roster = self.roster().await?;
        match roster.members.get(&spec.id) {
            Some(m) if m.live => Ok(m.view(&self.name, &spec.id)),
            _ => self.spawn(spec, origin).await,
        }
    }

    /// Ends the member behind `h`; answers the budget it held.
    pub async fn retire(&self, h: &Handle, origin: &str) -> Result<Option<u64>, MobError> {
        self.update(|r| {
            if let Some(m) = r.members.get(&h.id)
                && m.ended_by.as_deref() == Some(origin)
            {
                return Ok((m.budget, false));
            }
            self.current(r, h)?;
            let m = r.members.get_mut(&h.id).expect("current");
            m.live = false;
            m.ended_by = Some(origin.to_string());
            Ok((m.budget, true))
        })
        .await
    }

    /// A new incarnation of member `id` (live or retired): fresh, or with
    /// the conversation so far when `keep_history`. Handles of the old
    /// incarnation are stale from now on.
    pub async fn respawn(&self, id: &str, keep: bool, origin: &str) -> Result<View, MobError> {
        self.update(|r| {
            let m = r.members.get_mut(id).ok_or_else(|| self.unknown(id))?;
            if m.origin == origin {
                return Ok((m.view(&self.name, id), false));
            }
            m.incarnation += 1;
            m.live = true;
            m.ended_by = None;
            m.origin = origin.to_string();
            m.turns = 0;
            m.last_reply = None;
            if !keep {
                m.convo = format!("{id}#{}", m.incarnation);
            }
            Ok((m.view(&self.name, id), true))
        })
        .await
    }

    /// A new member `id` whose conversation starts as a copy of `h`'s.
    pub async fn fork(&self, h: &Handle, id: &str, origin: &str) -> Result<View, MobError> {
        check_id("id", id)?;
        let roster = self.roster().await?;
        let src = self.current(&roster, h)?.clone();
        let spec = Spawn {
            id: id.to_string(),
            agent: src.agent.clone(),
            mode: Some(src.mode.clone()),
            message: None,
            wire: Vec::new(),
            labels: src.labels.clone(),
            budget: None,
        };
        let view = self.spawn(&spec, origin).await?;
        let turns = self.store.turns(&self.name, &src.convo).await?;
        let convo = format!("{id}#{}", view.incarnation);
        self.store
            .append_turns(&self.name, &convo, 0, turns)
            .await?;
        Ok(view)
    }

    /// Lets `a` and `b` message each other (`on`), or no longer (`!on`).
    pub async fn wire(&self, a: &str, b: &str, on: bool) -> Result<(), MobError> {
        self.update(|r| {
            for id in [a, b] {
                if !r.members.contains_key(id) {
                    return Err(self.unknown(id));
                }
            }
            if a == b {
                return Err(MobError::Bad(format!("`{a}` cannot be wired to itself")));
            }
            for (x, y) in [(a, b), (b, a)] {
                let m = r.members.get_mut(x).expect("checked");
                if on {
                    m.wired.insert(y.to_string());
                } else {
                    m.wired.remove(y);
                }
            }
            Ok(((), true))
        })
        .await
    }

    /// Puts `text` from `from` into `to`'s inbox: refused unless both are
    /// live and wired. Delivered once: made again with its origin, it
    /// answers the first receipt.
    pub async fn tell(
        &self,
        from: &Handle,
        to: &str,
        text: &str,
        origin: &str,
    ) -> Result<Receipt, MobError> {
        check_text(text, "a peer message")?;
        self.update(|r| {
            let sender = self.current(r, from)?;
            let recipient = r.members.get(to).ok_or_else(|| self.unknown(to))?;
            if recipient.received(origin).is_none() && !sender.wired.contains(to) {
                return Err(MobError::NotWired {
                    mob: self.name.clone(),
                    from: from.id.clone(),
                    to: to.to_string(),
                    wired: match sender.wired.len() {
                        0 => "nobody".into(),
                        _ => sender.wired.iter().cloned().collect::<Vec<_>>().join(", "),
                    },
                });
            }
            self.deliver(r, to, &from.id, text, origin)
        })
        .await
    }

    /// Puts `text` from outside the mob (the flow, a message sent into the
    /// run) into member `to`'s inbox: no wiring needed; `from` names the
    /// sender as the member will read it.
    pub async fn post(
        &self,
        to: &str,
        from: &str,
        text: &str,
        origin: &str,
    ) -> Result<Receipt, MobError> {
        check_text(text, "a message")?;
        self.update(|r| self.deliver(r, to, from, text, origin))
            .await
    }

    /// The one way a message enters an inbox: once per origin (made again,
    /// it answers the first receipt), to a live member with room.
    fn deliver(
        &self,
        r: &mut Roster,
        to: &str,
        from: &str,
        text: &str,
        origin: &str,
    ) -> Result<(Receipt, bool), MobError> {
        let recipient = r.members.get(to).ok_or_else(|| self.unknown(to))?;
        if let Some(id) = recipient.received(origin) {
            let receipt = Receipt {
                id,
                delivered: true,
            };
            return Ok((receipt, false));
        }
        if !recipient.live {
            return Err(MobError::Retired {
                mob: self.name.clone(),
                id: to.to_string(),
            });
        }
        if recipient.inbox.len() >= MAX_INBOX {
            return Err(inbox_full(&self.name, to));
        }
        r.messages += 1;
        let seq = r.messages;
        r.members
            .get_mut(to)
            .expect("found")
            .inbox
            .push(PeerMessage {
                seq,
                from: from.to_string(),
                text: text.to_string(),
                origin: origin.to_string(),
            });
        let receipt = Receipt {
            id: seq,
            delivered: true,
        };
        Ok((receipt, true))
    }

    /// The live members whose labels include every one of `labels`.
    pub async fn members(&self, labels: &BTreeMap<String, String>) -> Result<Vec<View>, MobError> {
        let roster = self.roster().await?;
        Ok(roster
            .members
            .iter()
            .filter(|(_, m)| m.live && labels.iter().all(|(k, v)| m.labels.get(k) == Some(v)))
            .map(|(id, m)| m.view(&self.name, id))
            .collect())
    }

    /// Every member, live or retired.
    pub async fn all(&self) -> Result<Vec<View>, MobError> {
        let roster = self.roster().await?;
        Ok(roster
            .members
            .iter()
            .map(|(id, m)| m.view(&self.name, id))
            .collect())
    }

    /// The conversation of the member behind `h`: `{role, content}` turns.
    pub async fn history(&self, h: &Handle) -> Result<Vec<Value>, MobError> {
        let roster = self.roster().await?;
        let m = roster
            .members
            .get(&h.id)
            .ok_or_else(|| self.unknown(&h.id))?;
        if m.incarnation != h.incarnation {
            self.current(&roster, h)?;
        }
        let turns = self.store.turns(&self.name, &m.convo).await?;
        Ok(super::as_messages(&turns))
    }
}
