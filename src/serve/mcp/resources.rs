//! Runs as MCP resources: `swarm://runs/{id}` is one run as JSON (its
//! record, journal, open questions, usage and events), listed newest
//! first, readable by whoever may read the run (the same [`Runs`] checks
//! as `show_run`), and subscribable: over stdio with `resources/subscribe`
//! (protocol revisions before 2026-07-28) or `subscriptions/listen`
//! (2026-07-28), a subscriber is told `resources/updated` as the run's
//! events arrive and when it ends (see `watch.rs`). Over stateless HTTP
//! there is no session to notify, so subscribing is refused there.
//!
//! [`Runs`]: crate::run::Runs

use super::McpFace;
use super::watch::{run_of, run_uri};
use crate::run::RunError;
use crate::run::service::Authority;
use crate::store::EventRecord;
use rmcp::ErrorData;
use rmcp::model::{ReadResourceResult, Resource, ResourceContents, ResourceTemplate};
use serde_json::{Value, json};

/// How many runs `resources/list` names (the newest); older ones are read
/// by URI (the template) or found with `list_runs`.
const LISTED: usize = 200;

/// How many of a run's events a read returns (the newest).
const EVENTS: usize = 1000;

const MIME: &str = "application/json";

impl McpFace {
    /// The newest runs `who` may read, as resources.
    pub(super) async fn resources(&self, who: &Authority) -> Result<Vec<Resource>, ErrorData> {
        let runs = self.runs.list(who, None).await.map_err(refused)?;
        Ok(runs
            .iter()
            .rev()
            .take(LISTED)
            .map(|r| {
                Resource::new(run_uri(&r.id), r.id.clone())
                    .with_description(format!("{} run, {}", r.blueprint, r.status.as_str()))
                    .with_mime_type(MIME)
            })
            .collect())
    }

    /// The one template: any run by id.
    pub(super) fn templates(&self) -> Vec<ResourceTemplate> {
        vec![
            ResourceTemplate::new("swarm://runs/{id}", "run")
                .with_description(
                    "A run: its record, journal, open questions, usage and its last events.",
                )
                .with_mime_type(MIME),
        ]
    }

    /// Reads `swarm://runs/{id}` as `who`.
    pub(super) async fn read(
        &self,
        who: &Authority,
        uri: &str,
    ) -> Result<ReadResourceResult, ErrorData> {
        let id = run_of(uri).ok_or_else(|| not_found(uri))?;
        let shown = self.runs.show(who, id).await.map_err(refused)?;
        let events: Vec<Value> = self
            .last_events(id)
            .await?
            .iter()
            .map(|e| json!({ "id": e.id, "kind": e.kind, "payload": e.payload }))
            .collect();
        let body = json!({
            "run": shown.run, "journal": shown.journal, "questions": shown.questions,
            "usage": shown.usage, "events": events,
        });
        let text =
            serde_json::to_string(&body).map_err(|e| refused(RunError::Refused(e.to_string())))?;
        Ok(ReadResourceResult::new(vec![
            ResourceContents::text(text, uri).with_mime_type(MIME),
        ]))
    }
}

impl McpFace {
    /// The newest [`EVENTS`] events of run `id`.
    async fn last_events(&self, id: &str) -> Result<Vec<EventRecord>, ErrorData> {
        let Some(store) = self.runs.store() else {
            return Ok(Vec::new());
        };
        let (_, before) = store
            .event_tail(id, EVENTS)
            .await
            .map_err(|e| refused(e.into()))?;
        let tail = store.events(id, before, EVENTS).await;
        tail.map_err(|e| refused(e.into()))
    }
}

/// The refusal of a URI that names no run.
pub(super) fn not_found(uri: &str) -> ErrorData {
    let message = format!("no resource `{uri}` (runs are swarm://runs/{{id}})");
    ErrorData::resource_not_found(
        message.clone(),
        Some(json!({ "code": "unknown_resource", "message": message })),
    )
}

/// A refusal of the run service as an MCP error carrying `{code, message}`.
pub(super) fn refused(e: RunError) -> ErrorData {
    let data = Some(json!({ "code": e.code(), "message": e.to_string() }));
    match e {
        RunError::UnknownRun(_) => ErrorData::resource_not_found(e.to_string(), data),
        _ => ErrorData::invalid_request(e.to_string(), data),
    }
}
