//! Submitted work (`member:submit(text)`): a message in the member's inbox
//! from `work`, which its next turn shows. Its state is read back from the
//! store: still waiting in the inbox, done (the first turn whose shown
//! messages reach its number holds the reply), or withdrawn before any
//! turn showed it (`cancel`).

use super::{Handle, Mob, MobError};
use serde_json::Value;

/// Where a unit of submitted work stands.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum WorkState {
    Queued,
    Done { reply: Value },
    Cancelled,
}

impl Mob<'_> {
    /// The state of the work posted as message `seq` to the member behind `h`.
    pub async fn work(&self, h: &Handle, seq: u64) -> Result<WorkState, MobError> {
        let roster = self.roster().await?;
        let m = roster
            .members
            .get(&h.id)
            .ok_or_else(|| self.unknown(&h.id))?;
        if m.incarnation != h.incarnation {
            self.current(&roster, h)?;
        }
        if m.inbox.iter().any(|msg| msg.seq == seq) {
            // A retired member takes no more turns: its pending work fails
            // `retired` (a waiter would otherwise wait for ever).
            if !m.live {
                return Err(MobError::Retired {
                    mob: self.name.clone(),
                    id: h.id.clone(),
                });
            }
            return Ok(WorkState::Queued);
        }
        if m.withdrawn.contains(&seq) {
            return Ok(WorkState::Cancelled);
        }
        let turns = self.store.turns(&self.name, &m.convo).await?;
        let done = turns
            .iter()
            .find(|t| t["role"] == "assistant" && t["upto"].as_u64().is_some_and(|u| u >= seq));
        match done {
            Some(t) => Ok(WorkState::Done {
                reply: t
                    .get("reply")
                    .cloned()
                    .unwrap_or_else(|| t["content"].clone()),
            }),
            None => Err(MobError::Bad(format!(
                "member `{}` of mob `{}` has no work numbered {seq}",
                h.id, self.name
            ))),
        }
    }

    /// Withdraws the work posted as message `seq` while no turn has shown
    /// it: true when withdrawn (now or before), false when a turn took it.
    pub async fn cancel_work(&self, h: &Handle, seq: u64) -> Result<bool, MobError> {
        self.update(|r| {
            self.current(r, h)?;
            let m = r.members.get_mut(&h.id).expect("current");
            if m.withdrawn.contains(&seq) {
                return Ok((true, false));
            }
            let before = m.inbox.len();
            m.inbox.retain(|msg| msg.seq != seq);
            if m.inbox.len() == before {
                return Ok((false, false));
            }
            m.withdrawn.push(seq);
            // The last ones are enough to answer `wait` on them.
            if m.withdrawn.len() > super::ops::MAX_INBOX {
                m.withdrawn.remove(0);
            }
            Ok((true, true))
        })
        .await
    }
}
