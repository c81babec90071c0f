//! [`McpClient`]: one MCP server as the host sees it. The server starts on
//! first use (a step, or an LLM agent listing its tools), every step of the
//! run shares it, and a server that crashed or broke the protocol is
//! started again by the next call. Its tool list is fetched once and again
//! after a `tools/list_changed` notification or a restart; each tool's
//! input schema is compiled once and checks every call's arguments before
//! they are sent.

use super::stdio::{self, ChildGuard};
use super::{Fault, McpSpec};
use crate::engine::OutputKind;
use crate::spawn::process::Sink;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResult, ClientRequest, Implementation,
    ProgressNotificationParam, ProgressToken, ServerResult,
};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt};
use rmcp::service::{NotificationContext, PeerRequestOptions, RequestHandle, RunningService};
use rmcp::{ClientHandler, RoleClient, ServiceError};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// One tool of the server, as offered to steps and LLM agents.
#[derive(Clone)]
pub struct ToolEntry {
    pub name: String,
    pub description: String,
    /// The tool's input schema (JSON Schema of its arguments).
    pub schema: Value,
    validator: Option<Arc<jsonschema::Validator>>,
}

/// What the connection's handler shares with the client.
#[derive(Default)]
struct Shared {
    /// Progress tokens of calls in flight → the calling step's events.
    progress: Mutex<HashMap<ProgressToken, Sink>>,
    /// The events of the step that called last (where stderr goes).
    last: Mutex<Option<Sink>>,
    /// The last few KiB of the server's stderr, for fault messages.
    tail: Mutex<String>,
    /// A `tools/list_changed` arrived: list again before the next call.
    stale: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The SDK's client handler: routes progress to the calling step and
/// marks the tool list stale when the server says it changed.
#[derive(Clone)]
struct Handler(Arc<Shared>);

impl ClientHandler for Handler {
    async fn on_progress(&self, p: ProgressNotificationParam, _: NotificationContext<RoleClient>) {
        let sink = lock(&self.0.progress).get(&p.progress_token).cloned();
        if let Some(sink) = sink {
            let data = json!({ "progress": p.progress, "total": p.total, "message": p.message });
            sink(OutputKind::Progress, json!({ "mcp": data }));
        }
    }

    async fn on_tool_list_changed(&self, _: NotificationContext<RoleClient>) {
        self.0.stale.store(true, Ordering::Release);
    }

    fn get_info(&self) -> rmcp::model::ClientConfig {
        let mut info = rmcp::model::ClientConfig::default();
        info.client_info = Implementation::new("swarm", env!("CARGO_PKG_VERSION"));
        info
    }
}

/// A live connection: dropping it kills the server.
struct Conn {
    service: RunningService<RoleClient, Handler>,
    faults: watch::Receiver<Option<Fault>>,
    _hold: Hold,
}

/// What a connection keeps alive: the stdio server's process (killed when
/// dropped), or the sender of an HTTP connection's fault channel.
enum Hold {
    Child(#[allow(dead_code)] ChildGuard),
    Http(#[allow(dead_code)] Arc<watch::Sender<Option<Fault>>>),
}

impl Conn {
    fn fault(&self) -> Option<Fault> {
        self.faults.borrow().clone()
    }

    fn alive(&self) -> bool {
        self.fault().is_none() && !self.service.is_transport_closed()
    }
}

/// One MCP server of a run (see the module doc).
pub struct McpClient {
    agent: String,
    spec: Arc<McpSpec>,
    shared: Arc<Shared>,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    tools: Mutex<Option<Arc<BTreeMap<String, ToolEntry>>>>,
}

impl McpClient {
    /// A client of agent `agent`'s server; nothing starts until used.
    pub fn new(agent: &str, spec: McpSpec) -> McpClient {
        McpClient {
            agent: agent.to_string(),
            spec: Arc::new(spec),
            shared: Arc::default(),
            conn: Default::default(),
            tools: Default::default(),
        }
    }

    pub fn agent(&self) -> &str {
        &self.agent
    }

    pub fn spec(&self) -> &McpSpec {
        &self.spec
    }

    /// The live connection, starting the server when there is none or the
    /// last one broke.
    async fn conn(&self) -> Result<Arc<Conn>, Fault> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| c.alive()) {
            return Ok(c.clone());
        }
        *slot = None;
        let c = Arc::new(self.start().await?);
        self.shared.stale.store(true, Ordering::Release);
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn start(&self) -> Result<Conn, Fault> {
        if let Some(url) = &self.spec.url {
            return self.start_http(url).await;
        }
        let shared = self.shared.clone();
        lock(&shared.tail).clear();
        let route = {
            let shared = shared.clone();
            Arc::new(move || lock(&shared.last).clone())
        };
        let to_events = stdio::stderr_sink(route, &self.agent);
        let tail_of = shared.clone();
        let sink: Sink = Arc::new(move |kind, data: Value| {
            keep_tail(&tail_of, data.as_str().unwrap_or_default());
            to_events(kind, data)
        });
        let pipes = stdio::start(&self.spec, sink)?;
        let faults = pipes.faults.clone();
        let init = Handler(shared).serve_with_lifecycle((pipes.reader, pipes.writer), lifecycle());
        let service = self.handshake(init, &faults).await?;
        Ok(Conn {
            service,
            faults,
            _hold: Hold::Child(pipes.child),
        })
    }

    /// Connects to a streamable-HTTP server, with the bearer token of the
    /// variable `bearer_env` names (allow-listed; read here, never kept in
    /// a message, a log or the journal).
    async fn start_http(&self, url: &str) -> Result<Conn, Fault> {
        use rmcp::transport::StreamableHttpClientTransport;
        use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
        let mut config = StreamableHttpClientTransportConfig::with_uri(url.to_string());
        if let Some(var) = &self.spec.bearer_env {
            crate::spawn::secrets::may_name(var).map_err(Fault::Start)?;
            let token = std::env::var(var).map_err(|_| {
                Fault::Start(format!("the bearer token's variable ${var} is not set"))
            })?;
            config = config.auth_header(token);
        }
        // The SDK's HTTP client takes the process's TLS provider; none
        // is set unless someone installs one (a second install is a no-op).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (tx, faults) = watch::channel(None);
        let tx = Arc::new(tx);
        let client = super::http::Capped::new(self.spec.max_message, tx.clone());
        let transport = StreamableHttpClientTransport::with_client(client, config);
        let init = Handler(self.shared.clone()).serve_with_lifecycle(transport, lifecycle());
        let service = self.handshake(init, &faults).await?;
        Ok(Conn {
            service,
            faults,
            _hold: Hold::Http(tx),
        })
    }

    /// The handshake, within `start_timeout`.
    async fn handshake(
        &self,
        init: impl std::future::Future<
            Output = Result<
                RunningService<RoleClient, Handler>,
                rmcp::service::ClientInitializeError,
            >,
        >,
        faults: &watch::Receiver<Option<Fault>>,
    ) -> Result<RunningService<RoleClient, Handler>, Fault> {
        let limit = self.spec.start_timeout;
        match tokio::time::timeout(limit, init).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => match faults.borrow().clone() {
                Some(f) => Err(f),
                None => Err(Fault::Start(format!("{e}{}", self.tail()))),
            },
            Err(_) => Err(Fault::Start(format!(
                "no answer to `initialize` within {limit:?}{}",
                self.tail()
            ))),
        }
    }

    /// `; stderr: …` with the server's last stderr lines, when it wrote any.
    fn tail(&self) -> String {
        let t = lock(&self.shared.tail);
        match t.trim() {
            "" => String::new(),
            s => format!("; its stderr ends: {s}"),
        }
    }

    /// Forgets `conn` if it is still the current one: the next call starts
    /// the server again.
    async fn forget(&self, conn: &Arc<Conn>) {
        let mut slot = self.conn.lock().await;
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *slot = None;
        }
    }

    /// The protocol revision the server and this client agreed on,
    /// starting the server when it is not running.
    pub async fn protocol(&self) -> Result<String, Fault> {
        let conn = self.conn().await?;
        let info = conn.service.peer().peer_info();
        Ok(info.map_or_else(String::new, |i| i.protocol_version.to_string()))
    }

    /// The allowed tools, listing them from the server when not known yet
    /// or stale.
    pub async fn tools(&self) -> Result<Arc<BTreeMap<String, ToolEntry>>, Fault> {
        let conn = self.conn().await?;
        self.tools_of(&conn).await
    }

    async fn tools_of(&self, conn: &Arc<Conn>) -> Result<Arc<BTreeMap<String, ToolEntry>>, Fault> {
        let cached = lock(&self.tools).clone();
        if let Some(t) = cached.filter(|_| !self.shared.stale.load(Ordering::Acquire)) {
            return Ok(t);
        }
        // Cleared before listing: a change announced meanwhile lists again.
        self.shared.stale.store(false, Ordering::Release);
        let listing = conn.service.peer().list_all_tools();
        let listed = match tokio::time::timeout(self.spec.timeout, listing).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return Err(self.service_fault(conn, e).await),
            Err(_) => return Err(Fault::Timeout(self.spec.timeout)),
        };
        let tools: BTreeMap<String, ToolEntry> = listed
            .into_iter()
            .filter(|t| self.spec.allows(&t.name))
            .map(|t| {
                let schema = Value::Object((*t.input_schema).clone());
                let validator = jsonschema::validator_for(&schema).ok().map(Arc::new);
                let entry = ToolEntry {
                    name: t.name.to_string(),
                    description: t.description.map(|d| d.to_string()).unwrap_or_default(),
                    schema,
                    validator,
                };
                (entry.name.clone(), entry)
            })
            .collect();
        let tools = Arc::new(tools);
        *lock(&self.tools) = Some(tools.clone());
        Ok(tools)
    }

    /// Calls `tool` with `args`; its events (progress, stderr) go to
    /// `sink`. Dropping the future cancels the call on the server.
    pub async fn call(&self, tool: &str, args: Value, sink: Sink) -> Result<CallToolResult, Fault> {
        *lock(&self.shared.last) = Some(sink.clone());
        let conn = self.conn().await?;
        let tools = self.tools_of(&conn).await?;
        let Some(entry) = tools.get(tool) else {
            let known: Vec<&str> = tools.keys().map(String::as_str).collect();
            return Err(Fault::UnknownTool {
                tool: tool.to_string(),
                known: if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                },
            });
        };
        let args = arguments(entry, args)?;
        let params = CallToolRequestParams::new(tool.to_string()).with_arguments(args);
        let req = ClientRequest::CallToolRequest(CallToolRequest::new(params));
        let sent = conn
            .service
            .peer()
            .send_request_with_option(req, PeerRequestOptions::no_options())
            .await;
        let handle = match sent {
            Ok(h) => h,
            Err(e) => return Err(self.service_fault(&conn, e).await),
        };
        lock(&self.shared.progress).insert(handle.progress_token.clone(), sink);
        let mut pending = Pending {
            handle: Some(handle),
            shared: self.shared.clone(),
        };
        let mut faults = conn.faults.clone();
        let rx = &mut pending.handle.as_mut().expect("pending").rx;
        let answer = tokio::select! {
            r = rx => r.unwrap_or(Err(ServiceError::TransportClosed)),
            _ = tokio::time::sleep(self.spec.timeout) => {
                return Err(Fault::Timeout(self.spec.timeout));
            }
            _ = faults.wait_for(Option::is_some) => Err(ServiceError::TransportClosed),
        };
        pending.done();
        match answer {
            Ok(ServerResult::CallToolResult(r)) => Ok(r),
            Ok(_) => Err(Fault::Protocol(
                "a `tools/call` answered with another result".into(),
            )),
            Err(e) => Err(self.service_fault(&conn, e).await),
        }
    }

    /// The fault an SDK error means; a fault that breaks the connection
    /// makes the next call start the server again.
    async fn service_fault(&self, conn: &Arc<Conn>, e: ServiceError) -> Fault {
        let fault = match e {
            _ if conn.fault().is_some() => conn.fault().expect("checked"),
            ServiceError::McpError(e) => {
                Fault::Tool(format!("{} (JSON-RPC error {})", e.message, e.code.0))
            }
            ServiceError::TransportClosed | ServiceError::TransportSend(_) => Fault::Closed(
                format!("the server exited or closed its output{}", self.tail()),
            ),
            ServiceError::Timeout { timeout } => Fault::Timeout(timeout),
            other => Fault::Protocol(other.to_string()),
        };
        if fault.breaks_connection() {
            self.forget(conn).await;
        }
        fault
    }

    /// Stops the server, if it runs.
    pub async fn stop(&self) {
        *self.conn.lock().await = None;
    }
}

/// A call's arguments: its input as an object (`nil`: none), checked
/// against the tool's input schema.
fn arguments(entry: &ToolEntry, args: Value) -> Result<serde_json::Map<String, Value>, Fault> {
    let args = match args {
        Value::Null => serde_json::Map::new(),
        Value::Object(m) => m,
        other => {
            return Err(Fault::BadArguments(format!(
                "the step's input must be a table of the tool's arguments, not {}",
                super::result::kind_of(&other)
            )));
        }
    };
    if let Some(v) = &entry.validator {
        let instance = Value::Object(args);
        let problems: Vec<String> = v
            .iter_errors(&instance)
            .take(3)
            .map(|e| match e.instance_path.to_string() {
                at if at.is_empty() => e.to_string(),
                at => format!("{at}: {e}"),
            })
            .collect();
        if !problems.is_empty() {
            return Err(Fault::BadArguments(problems.join("; ")));
        }
        let Value::Object(args) = instance else {
            unreachable!("built as an object above")
        };
        return Ok(args);
    }
    Ok(args)
}

/// A call in flight: dropped before [`Pending::done`] (the step was
/// cancelled, the call timed out), it tells the server to stop it.
struct Pending {
    handle: Option<RequestHandle<RoleClient>>,
    shared: Arc<Shared>,
}

impl Pending {
    fn done(&mut self) {
        if let Some(h) = self.handle.take() {
            lock(&self.shared.progress).remove(&h.progress_token);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            lock(&self.shared.progress).remove(&h.progress_token);
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = h.cancel(Some("cancelled by the caller".into())).await;
                });
            }
        }
    }
}

fn keep_tail(shared: &Shared, line: &str) {
    const TAIL: usize = 2048;
    let mut t = lock(&shared.tail);
    t.push_str(line);
    t.push('\n');
    if t.len() > TAIL {
        let mut cut = t.len() - TAIL;
        while !t.is_char_boundary(cut) {
            cut += 1;
        }
        t.drain(..cut);
    }
}

/// How a connection starts: the current revision (2026-07-28, asked with
/// `server/discover`), else, for a server that does not know it, the
/// `initialize` handshake of 2025-11-25 (which negotiates further down
/// when the server asks).
fn lifecycle() -> ClientLifecycleMode {
    use rmcp::model::ProtocolVersion;
    ClientLifecycleMode::Auto {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        legacy_version: Some(ProtocolVersion::V_2025_11_25),
    }
}
