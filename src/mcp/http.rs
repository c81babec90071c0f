//! The HTTP side of an MCP agent's size cap: the SDK's reqwest client,
//! wrapped so that an answer over [`McpSpec::max_message`] is the fault
//! `too_large` (as it is over stdio), not a closed connection. A JSON
//! answer over the cap is refused by the SDK with a typed error, which is
//! reported as the fault; an SSE event is measured here as it is parsed,
//! and the SDK's own byte limit (twice the cap) bounds what is read before
//! that. The fault goes to the connection's fault channel, where a pending
//! call sees it, and the connection is started again for the next call.
//!
//! [`McpSpec::max_message`]: super::McpSpec::max_message

use super::Fault;
use axum::http::{HeaderName, HeaderValue};
use futures_util::StreamExt;
use rmcp::model::ClientJsonRpcMessage;
use rmcp::transport::common::client_side_sse::BoxedSseResponse;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
    StreamableHttpResponseLimits,
};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::watch;

/// The SDK's HTTP client, with the cap and the fault channel.
#[derive(Clone)]
pub(super) struct Capped {
    inner: reqwest013::Client,
    max: usize,
    faults: Arc<watch::Sender<Option<Fault>>>,
}

type Posted = Result<StreamableHttpPostResponse, StreamableHttpError<reqwest013::Error>>;

impl Capped {
    /// A client like the SDK's own (no idle pooling: it stalls on
    /// delayed ACKs), following no redirect: a redirect would replay the
    /// bearer token to wherever it points.
    pub(super) fn new(max: usize, faults: Arc<watch::Sender<Option<Fault>>>) -> Capped {
        let inner = reqwest013::Client::builder()
            .pool_max_idle_per_host(0)
            .redirect(reqwest013::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Capped { inner, max, faults }
    }

    fn limits(&self) -> StreamableHttpResponseLimits {
        let mut limits = StreamableHttpResponseLimits::default();
        limits.max_json_response_size = self.max;
        limits.max_sse_event_size = self.max.saturating_mul(2);
        limits
    }

    fn too_large(&self) {
        self.faults.send_replace(Some(Fault::TooLarge(self.max)));
    }

    /// Ends `stream` at the first event over the cap, after reporting it.
    fn capped(&self, stream: BoxedSseResponse) -> BoxedSseResponse {
        let me = self.clone();
        stream
            .take_while(move |item| {
                let over =
                    matches!(item, Ok(e) if e.data.as_ref().is_some_and(|d| d.len() > me.max));
                if over {
                    me.too_large();
                }
                std::future::ready(!over)
            })
            .boxed()
    }

    fn checked(&self, posted: Posted) -> Posted {
        match posted {
            Ok(StreamableHttpPostResponse::Sse(s, id)) => {
                Ok(StreamableHttpPostResponse::Sse(self.capped(s), id))
            }
            Err(StreamableHttpError::ResponseBodyTooLarge { max_size }) => {
                self.too_large();
                Err(StreamableHttpError::ResponseBodyTooLarge { max_size })
            }
            other => other,
        }
    }
}

impl StreamableHttpClient for Capped {
    type Error = reqwest013::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Posted {
        let limits = self.limits();
        let posted = self.inner.post_message_with_response_limits(
            uri,
            message,
            session_id,
            auth_header,
            custom_headers,
            limits,
        );
        self.checked(posted.await)
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        _: StreamableHttpResponseLimits,
    ) -> Posted {
        self.post_message(uri, message, session_id, auth_header, custom_headers)
            .await
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), StreamableHttpError<Self::Error>> {
        let deleted = self
            .inner
            .delete_session(uri, session_id, auth_header, custom_headers);
        deleted.await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<BoxedSseResponse, StreamableHttpError<Self::Error>> {
        let stream = self.inner.get_stream_with_max_sse_event_size(
            uri,
            session_id,
            last_event_id,
            auth_header,
            custom_headers,
            self.max.saturating_mul(2),
        );
        Ok(self.capped(stream.await?))
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        _: usize,
    ) -> Result<BoxedSseResponse, StreamableHttpError<Self::Error>> {
        self.get_stream(uri, session_id, last_event_id, auth_header, custom_headers)
            .await
    }
}
