//! Mobs: named rosters of long-lived members, each a conversation with
//! one of a blueprint's LLM agents as its profile, wired to the peers it
//! may message. The rules live here, over the store's [`MobStore`]: a
//! roster is one versioned document changed by compare and set (so two
//! runs, or two branches, changing one mob never lose a change), and a
//! conversation is an append-only list of turns.
//!
//! Every change names its *origin*, the run and journal position that
//! made it: an operation made again after a crash (its journal entry was
//! not written yet) finds its own effect and does not apply it twice.
//! The Lua library (`lua/swarm/mob.lua`) and its host calls
//! (`lua/modules/mob.rs`) journal each operation's answer, so a resumed
//! run replays them without touching the store.

mod ops;
mod turn;
mod work;

pub use ops::{Budget, Receipt, Spawn};
pub use turn::{TurnStart, turn_lock};
pub use work::WorkState;

use crate::store::{MobStore, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// A mob's roster, as its document holds it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Roster {
    #[serde(default)]
    pub members: BTreeMap<String, Member>,
    /// The last peer message's number in this mob.
    #[serde(default)]
    pub messages: u64,
}

/// One member: its current incarnation and what it is wired to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Member {
    /// The blueprint's LLM agent it talks as (its profile).
    pub agent: String,
    /// `turns` (the default: only when asked) or `autonomous` (also a
    /// turn of its own whenever messages wait for it, in `mob:run`).
    #[serde(default = "turns")]
    pub mode: String,
    /// 1 at spawn, one more at every respawn: handles carry it.
    pub incarnation: u64,
    pub live: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Peers it may message (wiring is mutual).
    #[serde(default)]
    pub wired: BTreeSet<String>,
    /// Tokens reserved for it from its run's `limits.tokens`.
    pub budget: Option<u64>,
    /// The conversation its turns append to.
    pub convo: String,
    /// The run and position that made this incarnation.
    pub origin: String,
    /// The run and position that retired it.
    #[serde(default)]
    pub ended_by: Option<String>,
    /// Peer messages not yet shown to it, in order.
    #[serde(default)]
    pub inbox: Vec<PeerMessage>,
    /// The origins (and numbers) of the last [`DELIVERED`] messages its
    /// turns were shown: a send made again after a crash, with its
    /// origin, finds its first receipt here once the message has left
    /// the inbox, and is not delivered twice.
    #[serde(default)]
    pub delivered: std::collections::VecDeque<(String, u64)>,
    /// Finished turns of this incarnation.
    #[serde(default)]
    pub turns: u64,
    #[serde(default)]
    pub last_reply: Option<Value>,
    /// Model tokens its turns spent.
    #[serde(default)]
    pub tokens: u64,
    /// The origin of the last turn counted here: a turn closed again
    /// after a crash is not counted twice.
    #[serde(default)]
    pub last_turn: Option<String>,
    /// Submitted work withdrawn before a turn showed it (message numbers).
    #[serde(default)]
    pub withdrawn: Vec<u64>,
}

fn turns() -> String {
    "turns".into()
}

/// A message from one member to another, waiting in the recipient's inbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerMessage {
    pub seq: u64,
    pub from: String,
    pub text: String,
    pub origin: String,
}

/// What a flow holds of a member: a handle fenced by its incarnation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Handle {
    pub mob: String,
    pub id: String,
    pub incarnation: u64,
}

/// A member as the flow and the faces see it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct View {
    pub mob: String,
    pub id: String,
    pub agent: String,
    pub mode: String,
    pub incarnation: u64,
    pub status: &'static str,
    pub labels: BTreeMap<String, String>,
    pub wired: Vec<String>,
    pub budget: Option<u64>,
    pub turns: u64,
    pub tokens: u64,
    pub inbox: usize,
    pub last_reply: Option<Value>,
}

impl Member {
    fn view(&self, mob: &str, id: &str) -> View {
        View {
            mob: mob.to_string(),
            id: id.to_string(),
            agent: self.agent.clone(),
            mode: self.mode.clone(),
            incarnation: self.incarnation,
            status: if self.live { "live" } else { "retired" },
            labels: self.labels.clone(),
            wired: self.wired.iter().cloned().collect(),
            budget: self.budget,
            turns: self.turns,
            tokens: self.tokens,
            inbox: self.inbox.len(),
            last_reply: self.last_reply.clone(),
        }
    }
}

/// Why a mob operation was refused. Each has a stable code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MobError {
    #[error("mob `{mob}` has no member `{id}`")]
    Unknown { mob: String, id: String },
    #[error("mob `{mob}` has a live member `{id}` already (respawn it, or ensure it)")]
    Exists { mob: String, id: String },
    #[error(
        "this handle of `{id}` in mob `{mob}` is stale: it holds incarnation {held}, and \
         `{id}` is now incarnation {now}"
    )]
    Stale {
        mob: String,
        id: String,
        held: u64,
        now: u64,
    },
    #[error("member `{id}` of mob `{mob}` is retired")]
    Retired { mob: String, id: String },
    #[error("member `{from}` of mob `{mob}` is not wired to `{to}` (wired: {wired})")]
    NotWired {
        mob: String,
        from: String,
        to: String,
        wired: String,
    },
    #[error(
        "member `{id}` of mob `{mob}` has spent {spent} of its budget of {budget} tokens: \
         no more turns (respawn it, or give it a larger budget)"
    )]
    Budget {
        mob: String,
        id: String,
        budget: u64,
        spent: u64,
    },
    #[error("{0}")]
    Bad(String),
    #[error("mob `{0}` changed under too many writers at once; try again")]
    Contended(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl MobError {
    pub fn code(&self) -> &'static str {
        match self {
            MobError::Unknown { .. } => "unknown_member",
            MobError::Exists { .. } => "member_exists",
            MobError::Stale { .. } => "stale_member",
            MobError::Retired { .. } => "retired",
            MobError::NotWired { .. } => "not_wired",
            MobError::Budget { .. } => "token_budget",
            MobError::Bad(_) => "bad_argument",
            MobError::Contended(_) => "mob_contended",
            MobError::Store(e) => e.code(),
        }
    }
}

/// One mob of a store, by name.
pub struct Mob<'a> {
    pub store: &'a dyn MobStore,
    pub name: String,
}

/// How often a roster write is tried again after another writer won.
const CAS_TRIES: usize = 64;

impl<'a> Mob<'a> {
    pub fn new(store: &'a dyn MobStore, name: &str) -> Mob<'a> {
        Mob {
            store,
            name: name.to_string(),
        }
    }

    /// The roster as stored now (empty for a mob never written).
    pub async fn roster(&self) -> Result<Roster, MobError> {
        Ok(self.read().await?.1)
    }

    async fn read(&self) -> Result<(u64, Roster), MobError> {
        match self.store.mob(&self.name).await? {
            None => Ok((0, Roster::default())),
            Some(rec) => {
                let roster = serde_json::from_value(rec.doc).map_err(|e| {
                    MobError::Bad(format!("mob `{}`'s roster is unreadable: {e}", self.name))
                })?;
                Ok((rec.version, roster))
            }
        }
    }

    /// Applies `change` to the roster and writes it, again on a fresh read
    /// whenever another writer got there first. `change` returns what the
    /// caller gets, and whether there is anything to write.
    async fn update<T>(
        &self,
        mut change: impl FnMut(&mut Roster) -> Result<(T, bool), MobError>,
    ) -> Result<T, MobError> {
        for _ in 0..CAS_TRIES {
            let (version, mut roster) = self.read().await?;
            let (out, write) = change(&mut roster)?;
            if !write {
                return Ok(out);
            }
            let doc = serde_json::to_value(&roster).map_err(|e| MobError::Bad(e.to_string()))?;
            if self.store.put_mob(&self.name, version, doc).await? {
                return Ok(out);
            }
        }
        Err(MobError::Contended(self.name.clone()))
    }

    /// The member behind `h`, refused unless it is that incarnation and live.
    fn current<'r>(&self, roster: &'r Roster, h: &Handle) -> Result<&'r Member, MobError> {
        let m = roster
            .members
            .get(&h.id)
            .ok_or_else(|| self.unknown(&h.id))?;
        if m.incarnation != h.incarnation {
            return Err(MobError::Stale {
                mob: self.name.clone(),
                id: h.id.clone(),
                held: h.incarnation,
                now: m.incarnation,
            });
        }
        if !m.live {
            return Err(MobError::Retired {
                mob: self.name.clone(),
                id: h.id.clone(),
            });
        }
        Ok(m)
    }

    fn unknown(&self, id: &str) -> MobError {
        MobError::Unknown {
            mob: self.name.clone(),
            id: id.to_string(),
        }
    }
}

/// A conversation's turns as the model reads them: role and content only.
pub fn as_messages(turns: &[Value]) -> Vec<Value> {
    turns
        .iter()
        .map(|t| serde_json::json!({ "role": t["role"], "content": t["content"] }))
        .collect()
}

/// How many shown messages' origins a member remembers (see
/// [`Member::delivered`]).
pub const DELIVERED: usize = 1000;

impl Member {
    /// The number of the message `origin` sent, if it reached this member
    /// (waiting in its inbox, or shown to it already).
    pub fn received(&self, origin: &str) -> Option<u64> {
        self.inbox
            .iter()
            .find(|m| m.origin == origin)
            .map(|m| m.seq)
            .or_else(|| {
                self.delivered
                    .iter()
                    .find(|(o, _)| o == origin)
                    .map(|(_, seq)| *seq)
            })
    }
}
