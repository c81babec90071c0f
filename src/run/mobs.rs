//! Mobs as every face shows them (`swarm mob list/show`, `GET /v1/mobs`):
//! each roster with its members' status, incarnation, labels, token use
//! and last reply. Mobs outlive runs, so a caller bound to one run sees
//! none of them.

use super::service::{Action, Authority};
use super::{RunError, Runs};
use crate::mob::{Mob, View};
use crate::store::MobStore;
use serde::Serialize;

/// One mob: its roster's version and every member, live or retired.
#[derive(Debug, Clone, Serialize)]
pub struct MobShown {
    pub name: String,
    pub version: u64,
    pub updated_ms: u64,
    pub members: Vec<View>,
}

impl Runs {
    /// Every mob of the journal, by name.
    pub async fn mobs(&self, who: &Authority) -> Result<Vec<MobShown>, RunError> {
        let store = self.mob_store(who)?;
        let mut out = Vec::new();
        for rec in store.mobs().await? {
            out.push(self.shown(store, rec).await?);
        }
        Ok(out)
    }

    /// Mob `name`, or `unknown_mob`.
    pub async fn mob(&self, who: &Authority, name: &str) -> Result<MobShown, RunError> {
        let store = self.mob_store(who)?;
        let rec = store
            .mob(name)
            .await?
            .ok_or_else(|| RunError::UnknownMob(name.to_string()))?;
        self.shown(store, rec).await
    }

    fn mob_store(&self, who: &Authority) -> Result<&dyn MobStore, RunError> {
        who.check(Action::Read, None)?;
        if let Some(run) = &who.run {
            return Err(RunError::Bound(run.clone()));
        }
        let store = self
            .store()
            .ok_or_else(|| RunError::Refused("this needs a journal (not --no-journal)".into()))?;
        Ok(&**store)
    }

    async fn shown(
        &self,
        store: &dyn MobStore,
        rec: crate::store::MobRecord,
    ) -> Result<MobShown, RunError> {
        let members = Mob::new(store, &rec.name)
            .all()
            .await
            .map_err(|e| RunError::Refused(e.to_string()))?;
        Ok(MobShown {
            name: rec.name,
            version: rec.version,
            updated_ms: rec.updated_ms,
            members,
        })
    }
}
