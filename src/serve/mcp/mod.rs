//! The MCP face: `swarm mcp` (stdio) and `/mcp` in `swarm serve`
//! (streamable HTTP, stateless), so a coding agent (Claude Code, Cursor)
//! can start, inspect and steer runs. Like every face it authenticates,
//! calls [`Runs`] and renders; it owns no run. Over stdio the caller is
//! the local operator (whoever started the process); over HTTP it is the
//! request's bearer token, checked by the same code as the REST API, and
//! a caller sees only the tools its role may use (observer: read;
//! senior: + answer; operator: all).
//!
//! Every answer carries `structuredContent` and a short text; a refusal is
//! a tool error whose structured content is `{code, message}`.

mod resources;
mod tools;
mod watch;

use crate::reload::LiveBlueprints;
use crate::run::service::Authority;
use crate::run::{RunOptions, Runs};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities, ServerConfig,
    SubscribeRequestParams, SubscriptionFilter, Tool, UnsubscribeRequestParams,
};
use rmcp::service::{RequestContext, SubscriptionContext};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use watch::Progress;

/// What the MCP face serves from: the run service and the live blueprints.
pub struct McpFace {
    runs: Arc<Runs>,
    live: Arc<LiveBlueprints>,
    /// How resumed runs run.
    opts: RunOptions,
}

impl McpFace {
    pub fn new(runs: Arc<Runs>, live: Arc<LiveBlueprints>, opts: RunOptions) -> Arc<McpFace> {
        Arc::new(McpFace { runs, live, opts })
    }

    /// The tools `who` may use.
    fn tools_for(&self, who: &Authority) -> Vec<Tool> {
        let mut out = Vec::new();
        if who.check(crate::run::service::Action::Start, None).is_ok() {
            for v in self.live.versions() {
                let about = v
                    .description
                    .clone()
                    .unwrap_or_else(|| format!("Run the `{}` blueprint.", v.name));
                let about = format!(
                    "{about} Returns the run's result, or its id and status when it waits for an \
                     answer or runs longer than a few seconds."
                );
                let schema = match &v.input {
                    Some(Value::Object(o)) => o.clone(),
                    _ => object(json!({ "type": "object" })),
                };
                out.push(Tool::new(tools::run_tool(&v.name), about, schema));
            }
        }
        for t in tools::FIXED {
            if who.check(t.action, None).is_ok() {
                out.push(Tool::new(t.name, t.about, object((t.schema)())));
            }
        }
        out
    }

    /// Calls tool `name` as `who`; a refusal is a tool error. A run the
    /// call waits for reports its events to `progress`.
    async fn call(
        &self,
        who: &Authority,
        name: &str,
        args: Value,
        progress: Option<Progress>,
    ) -> CallToolResult {
        let answer = match tools::FIXED.iter().any(|t| t.name == name) {
            true => self.fixed(who, name, &args, progress).await,
            false => self.start(who, name, args, progress).await,
        };
        match answer {
            Ok((value, text)) => {
                let mut r = CallToolResult::structured(value);
                r.content = vec![ContentBlock::text(text)];
                r
            }
            Err(e) => {
                let text = format!("{}: {e}", e.code());
                let mut r = CallToolResult::structured_error(
                    json!({ "code": e.code(), "message": e.to_string() }),
                );
                r.content = vec![ContentBlock::text(text)];
                r
            }
        }
    }
}

fn object(v: Value) -> serde_json::Map<String, Value> {
    match v {
        Value::Object(o) => o,
        _ => serde_json::Map::new(),
    }
}

/// One MCP connection (stdio) or request (HTTP): the face, and the caller
/// when it is fixed (stdio); else the caller is read from the request.
#[derive(Clone)]
pub struct McpSession {
    face: Arc<McpFace>,
    who: Option<Authority>,
    /// The session's `resources/subscribe` watchers, by URI.
    subs: Arc<Mutex<HashMap<String, watch::Watch>>>,
}

impl McpSession {
    /// A session of the local operator (stdio).
    pub fn local(face: Arc<McpFace>) -> McpSession {
        McpSession {
            face,
            who: Some(Authority::local()),
            subs: Arc::default(),
        }
    }

    /// A session whose caller each HTTP request carries (set by `/mcp`'s
    /// authentication in the request's extensions).
    pub fn per_request(face: Arc<McpFace>) -> McpSession {
        McpSession {
            face,
            who: None,
            subs: Arc::default(),
        }
    }

    fn who(&self, ctx: &RequestContext<RoleServer>) -> Result<Authority, ErrorData> {
        if let Some(who) = &self.who {
            return Ok(who.clone());
        }
        ctx.extensions
            .get::<axum::http::request::Parts>()
            .and_then(|p| p.extensions.get::<Authority>())
            .cloned()
            .ok_or_else(|| {
                ErrorData::invalid_request("no caller (a bearer token is required)", None)
            })
    }

    fn subs(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Watch>> {
        self.subs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A watcher telling `to` of changes to run resource `uri`, once `who`
    /// may read it; refused where there is no session to tell (stateless
    /// HTTP).
    async fn subscription(
        &self,
        who: &Authority,
        uri: &str,
        to: watch::Updates,
    ) -> Result<watch::Watch, ErrorData> {
        if self.who.is_none() {
            let message = "subscriptions need a session: use `swarm mcp` (stdio), or poll \
                           resources/read over HTTP";
            let data = json!({ "code": "unsupported", "message": message });
            return Err(ErrorData::invalid_request(message, Some(data)));
        }
        let id = watch::run_of(uri).ok_or_else(|| resources::not_found(uri))?;
        self.face
            .runs
            .record(who, id)
            .await
            .map_err(resources::refused)?;
        Ok(watch::updates(
            &self.face.runs,
            who.clone(),
            id.to_string(),
            to,
        ))
    }
}

impl ServerHandler for McpSession {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .enable_resources_subscribe()
            .build();
        let mut info = ServerConfig::new(capabilities);
        info.server_info = Implementation::new("swarm", env!("CARGO_PKG_VERSION"));
        info.instructions = Some(
            "lua-swarm: run_<blueprint> starts a run of a live blueprint; list_runs, show_run, \
             answer_question, send_to_run, cancel_run, resume_run and fork_run steer runs; \
             check_blueprint validates a file. Each run is the resource swarm://runs/{id} \
             (subscribable over stdio)."
                .into(),
        );
        info
    }

    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let who = self.who(&ctx)?;
        Ok(ListToolsResult::with_all_items(self.face.tools_for(&who)))
    }

    async fn call_tool(
        &self,
        req: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let who = self.who(&ctx)?;
        let args = Value::Object(req.arguments.unwrap_or_default());
        let progress = Progress::of(&ctx);
        Ok(self.face.call(&who, &req.name, args, progress).await.into())
    }

    async fn list_resources(
        &self,
        _: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let who = self.who(&ctx)?;
        let all = self.face.resources(&who).await?;
        Ok(ListResourcesResult::with_all_items(all))
    }

    async fn list_resource_templates(
        &self,
        _: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        self.who(&ctx)?;
        Ok(ListResourceTemplatesResult::with_all_items(
            self.face.templates(),
        ))
    }

    async fn read_resource(
        &self,
        req: ReadResourceRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let who = self.who(&ctx)?;
        Ok(ReadResourceResponse::Complete(
            self.face.read(&who, &req.uri).await?,
        ))
    }

    #[allow(deprecated)] // the pre-2026-07-28 way, still what most clients send
    async fn subscribe(
        &self,
        req: SubscribeRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let who = self.who(&ctx)?;
        let to = watch::Updates::Peer(ctx.peer.clone());
        let watch = self.subscription(&who, &req.uri, to).await?;
        self.subs().insert(req.uri, watch);
        Ok(())
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        req: UnsubscribeRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.subs().remove(&req.uri);
        Ok(())
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        let mut accepted = SubscriptionFilter::new();
        accepted.resource_subscriptions = requested.resource_subscriptions.as_ref().map(|uris| {
            uris.iter()
                .filter(|u| watch::run_of(u).is_some())
                .cloned()
                .collect()
        });
        Some(accepted)
    }

    async fn listen(&self, sub: SubscriptionContext) -> Result<(), ErrorData> {
        let who = self.who(sub.request_context())?;
        let mut watches = Vec::new();
        let uris = sub
            .accepted()
            .resource_subscriptions
            .clone()
            .unwrap_or_default();
        for uri in uris {
            let to = watch::Updates::Listen(sub.sink().clone());
            watches.push(self.subscription(&who, &uri, to).await?);
        }
        sub.cancelled().await;
        Ok(())
    }
}

/// Serves the MCP face over this process's stdin and stdout until the
/// client closes them.
pub async fn serve_stdio(face: Arc<McpFace>) -> std::io::Result<()> {
    use rmcp::ServiceExt;
    let running = McpSession::local(face)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(std::io::Error::other)?;
    running.waiting().await.map_err(std::io::Error::other)?;
    Ok(())
}

/// `/mcp`: the face over streamable HTTP, stateless (every request stands
/// alone, so any server behind a balancer answers it), behind the REST
/// API's bearer tokens: a request without a valid one is refused before
/// the MCP service sees it, and the caller it names rides in the
/// request's extensions to [`McpSession::who`].
pub(super) fn routes(server: &Arc<super::Server>) -> axum::Router<Arc<super::Server>> {
    use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    let face = McpFace::new(server.runs.clone(), server.dev.clone(), server.opts.clone());
    // Hosts and origins are `swarm serve`'s to check (origin.rs), for
    // every route alike.
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .disable_allowed_hosts();
    let service = StreamableHttpService::new(
        move || Ok(McpSession::per_request(face.clone())),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn_with_state(
            server.clone(),
            authenticate,
        ))
}

/// Puts the request's caller (its bearer token, checked as for the REST
/// API) in its extensions, or answers with the REST API's refusal.
async fn authenticate(
    axum::extract::State(s): axum::extract::State<Arc<super::Server>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match s.who(req.headers()) {
        Ok(who) => {
            req.extensions_mut().insert(who);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}
