//! One model turn over HTTP: the pooled client, the request, streaming or
//! not, and retries. 429, 5xx, connection errors and broken streams are
//! retried with exponential backoff that honours `Retry-After`; any other
//! 4xx, and a 500 that is the server refusing the request itself (a
//! request validation error, as llama-cpp-python sends), ends the turn
//! with the provider's own message: the same request would be refused
//! again.

use super::wire::{Accumulator, SseDecoder, Turn};
use futures_util::StreamExt;
use serde_json::Value;
use std::sync::OnceLock;
use std::time::Duration;

/// The most a turn's answer may take, as the process agent's default
/// output cap: a server that streams without end fails the turn instead of
/// filling the host's memory while the timeout runs.
pub const MAX_ANSWER: usize = 16 << 20;

/// The code of a stream that closed without a single event.
pub const EMPTY_STREAM: &str = "llm_empty_stream";

/// The most of an error answer kept (only its start is shown).
const MAX_ERROR_BODY: usize = 64 << 10;

/// One client per process: keep-alive connections are pooled and reused
/// by every LLM agent (HTTP/1.1, or HTTP/2 where the server offers it).
fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .unwrap_or_default()
    })
}

/// Where and how to send a turn.
pub struct Request<'a> {
    pub url: String,
    /// The API key, read from the environment at dispatch; never logged.
    pub key: Option<String>,
    pub headers: &'a [(String, String)],
    pub body: Value,
    pub stream: bool,
    /// Per-request limit (the whole turn, first byte to last).
    pub timeout: Duration,
    /// Retries after the first try.
    pub retries: u32,
}

/// Why a turn failed, after retries.
#[derive(Debug, Clone)]
pub struct Failure {
    /// `llm_http` (a 4xx the provider refused), `llm_unavailable` (retries
    /// spent on 429/5xx/connections), `llm_stream` (a broken or malformed
    /// stream, retries spent), [`EMPTY_STREAM`], `llm_timeout`.
    pub code: &'static str,
    pub message: String,
    pub status: Option<u16>,
    /// The error answer's body (its start), for callers that look for
    /// what was refused (`response_format`).
    pub body: String,
}

enum Try {
    Done(Turn),
    /// Worth another try, after at least this long.
    Again(Failure, Option<Duration>),
    Fatal(Failure),
}

fn failure(code: &'static str, message: String, status: Option<u16>) -> Failure {
    Failure {
        code,
        message,
        status,
        body: String::new(),
    }
}

/// A 500 whose body says the request itself was refused (a schema or
/// validation error of the request), not that the server failed.
fn refused_as_500(body: &str) -> bool {
    const SIGNS: [&str; 6] = [
        "validation error",
        "validation_error",
        "Input should be",
        "literal_error",
        "invalid_request_error",
        "response_format",
    ];
    SIGNS.iter().any(|s| body.contains(s))
}

/// Why a 404 may be the base URL's fault: most servers answer under `/v1`.
fn hint_404(url: &str) -> &'static str {
    if url.contains("/v1/") {
        ""
    } else {
        " (the base URL has no `/v1`: OpenAI-compatible servers answer at \
         BASE/v1/chat/completions, so set base_url or $SWARM_LLM_BASE_URL to end in /v1)"
    }
}

/// Sends a turn, retrying what is worth retrying. `delta` sees each piece
/// of streamed content as it arrives.
pub async fn chat(req: &Request<'_>, delta: &(dyn Fn(&str) + Sync)) -> Result<Turn, Failure> {
    let mut tries = 0;
    loop {
        let outcome = match tokio::time::timeout(req.timeout, once(req, delta)).await {
            Ok(t) => t,
            Err(_) => Try::Again(
                failure(
                    "llm_timeout",
                    format!("no complete answer within {:?}", req.timeout),
                    None,
                ),
                None,
            ),
        };
        match outcome {
            Try::Done(turn) => return Ok(turn),
            Try::Fatal(f) => return Err(f),
            Try::Again(f, _) if tries >= req.retries => return Err(f),
            Try::Again(f, after) => {
                let backoff = Duration::from_millis(250 << tries.min(6));
                let wait = after.unwrap_or(backoff).min(Duration::from_secs(60));
                tracing::warn!(
                    code = f.code,
                    "model turn failed ({}); retrying in {wait:?}",
                    f.message
                );
                tokio::time::sleep(wait).await;
                tries += 1;
            }
        }
    }
}

async fn once(req: &Request<'_>, delta: &(dyn Fn(&str) + Sync)) -> Try {
    let mut http = client().post(&req.url).json(&req.body);
    if let Some(key) = &req.key {
        http = http.bearer_auth(key);
    }
    for (k, v) in req.headers {
        http = http.header(k, v);
    }
    let resp = match http.send().await {
        Ok(r) => r,
        Err(e) => {
            let msg = format!("cannot reach {}: {}", req.url, e.without_url());
            return Try::Again(failure("llm_unavailable", msg, None), None);
        }
    };
    let status = resp.status();
    if !status.is_success() {
        let after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|s| Duration::from_secs_f64(s.clamp(0.0, 60.0)));
        let body = match read_capped(resp, MAX_ERROR_BODY).await {
            Ok((b, _)) | Err(b) => String::from_utf8_lossy(&b).into_owned(),
        };
        let said = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| {
                v.pointer("/error/message")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_else(|| body.chars().take(300).collect());
        let code = status.as_u16();
        let retry = code == 429 || (status.is_server_error() && !refused_as_500(&body));
        let mut f = if retry {
            let msg = format!("{} answered {status}: {said}", req.url);
            failure("llm_unavailable", msg, Some(code))
        } else {
            let hint = if code == 404 { hint_404(&req.url) } else { "" };
            let msg = format!(
                "{} refused the request with {status} (not retried: the same request \
                 would be refused again): {said}{hint}",
                req.url
            );
            failure("llm_http", msg, Some(code))
        };
        f.body = body;
        return if retry {
            Try::Again(f, after)
        } else {
            Try::Fatal(f)
        };
    }
    if !req.stream {
        let body = match read_capped(resp, MAX_ANSWER).await {
            Ok((body, None)) => body,
            Ok((_, Some(e))) => {
                let msg = format!("the answer broke off: {e}");
                return Try::Again(failure("llm_stream", msg, None), None);
            }
            Err(_) => return too_long(),
        };
        return match serde_json::from_slice::<Value>(&body) {
            Ok(body) => match Turn::from_response(&body) {
                Ok(t) => Try::Done(t),
                Err(m) => Try::Fatal(failure("llm_response", m, None)),
            },
            Err(e) => Try::Again(
                failure("llm_stream", format!("the answer is not JSON: {e}"), None),
                None,
            ),
        };
    }
    let (mut sse, mut acc) = (SseDecoder::default(), Accumulator::default());
    let mut body = resp.bytes_stream();
    let (mut received, mut events) = (0, 0);
    while let Some(piece) = body.next().await {
        let piece = match piece {
            Ok(p) => p,
            Err(e) => {
                let msg = format!("the stream broke: {}", e.without_url());
                return Try::Again(failure("llm_stream", msg, None), None);
            }
        };
        received += piece.len();
        if received > MAX_ANSWER {
            return too_long();
        }
        for data in sse.feed(&piece) {
            events += 1;
            match acc.push(&data) {
                Ok(Some(text)) => delta(&text),
                Ok(None) => {}
                Err(m) => return Try::Again(failure("llm_stream", m, None), None),
            }
        }
    }
    if let Some(data) = sse.end() {
        events += 1;
        if let Err(m) = acc.push(&data) {
            return Try::Again(failure("llm_stream", m, None), None);
        }
    }
    if events == 0 {
        // A 200 that closes without a single event is the server failing
        // to stream this request at all (llama-cpp-python cannot stream a
        // turn with tool_choice "auto"): the same request would fail again.
        let msg = format!(
            "{} answered 200 and closed the stream without sending anything (a server \
             that cannot stream this request; `stream = false` avoids it)",
            req.url
        );
        return Try::Fatal(failure(EMPTY_STREAM, msg, None));
    }
    match acc.finish() {
        Ok(t) => Try::Done(t),
        Err(m) => Try::Again(failure("llm_stream", m, None), None),
    }
}

/// A turn whose answer passed [`MAX_ANSWER`]: not retried, since the same
/// request would stream the same again.
fn too_long() -> Try {
    let msg = format!("the answer passed {} MiB", MAX_ANSWER >> 20);
    Try::Fatal(failure("llm_response", msg, None))
}

/// The body of `resp`, read up to `cap` bytes: `Err` with the first `cap`
/// bytes when it is longer; `Ok` with the error that cut it short, if any.
async fn read_capped(
    resp: reqwest::Response,
    cap: usize,
) -> Result<(Vec<u8>, Option<String>), Vec<u8>> {
    let mut out = Vec::new();
    let mut body = resp.bytes_stream();
    while let Some(piece) = body.next().await {
        match piece {
            Ok(p) if out.len() + p.len() > cap => {
                out.extend_from_slice(&p[..cap - out.len()]);
                return Err(out);
            }
            Ok(p) => out.extend_from_slice(&p),
            Err(e) => return Ok((out, Some(e.without_url().to_string()))),
        }
    }
    Ok((out, None))
}
