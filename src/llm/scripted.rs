//! A scripted OpenAI-compatible server on loopback, for tests and `swarm
//! bench llm`: real HTTP (axum), answering `POST /chat/completions` from a
//! script of replies, streamed as SSE when the request asks for it, and
//! counting what it was sent. Not for production use.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A final answer.
    Text(String),
    /// Tool calls: `(id, name, arguments JSON)`; streamed with id and name
    /// in the first chunk and the arguments split across two more.
    Tools(Vec<(String, String, String)>),
    /// An HTTP error, with `Retry-After` seconds when given.
    Status(u16, Option<u64>),
    /// Some content, then the connection breaks (streamed requests).
    Drop(String),
    /// A chunk that is not JSON.
    Malformed,
    /// Waits this long before answering with the inner reply.
    Slow(u64, Box<Reply>),
    /// Streams the first text, then holds the stream open until someone
    /// posts to `/v1/release`, then streams the second and finishes.
    Held(String, String),
    /// Content without end, as a runaway server sends it: deltas when
    /// streamed, one JSON string that never closes otherwise.
    Endless,
    /// An HTTP error whose `error.message` is this text (a server refusing
    /// a field, as llama-cpp-python does with a 500).
    Refuse(u16, String),
    /// A final answer with no `usage` at all, as servers that ignore
    /// `stream_options.include_usage` send it.
    Bare(String),
    /// A 200 whose stream closes without a single event (llama-cpp-python
    /// asked to stream a turn with `tool_choice = "auto"`).
    Empty,
    /// An answer the model stopped at its token limit (`finish_reason:
    /// "length"`).
    Cut(String),
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Reply>,
    requests: Vec<Value>,
    release: Arc<tokio::sync::Notify>,
}

/// A running scripted server.
#[derive(Clone)]
pub struct Scripted {
    /// `http://127.0.0.1:PORT/v1`: a `base_url`.
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl Scripted {
    /// Starts on a free loopback port; when the script runs out, every
    /// request gets `Text("ok")`.
    pub async fn start(script: Vec<Reply>) -> std::io::Result<Scripted> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/v1", listener.local_addr()?);
        let inner = Arc::new(Mutex::new(Inner {
            script: script.into(),
            ..Inner::default()
        }));
        let app = axum::Router::new()
            .route("/v1/chat/completions", axum::routing::post(answer))
            .route("/v1/release", axum::routing::post(release))
            .with_state(inner.clone());
        // Chunks go out as written: with Nagle's algorithm a small chunk
        // can wait for the client's delayed ACK (tens of ms).
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Scripted { url, inner })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds replies to the end of the script.
    pub fn push(&self, replies: impl IntoIterator<Item = Reply>) {
        self.lock().script.extend(replies);
    }

    /// Every request body received, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.lock().requests.clone()
    }

    pub fn count(&self) -> usize {
        self.lock().requests.len()
    }
}

async fn answer(State(inner): State<Arc<Mutex<Inner>>>, body: Bytes) -> Response {
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let stream = req["stream"] == json!(true);
    let (reply, release) = {
        let mut i = inner.lock().unwrap_or_else(|e| e.into_inner());
        i.requests.push(req);
        let reply = i.script.pop_front().unwrap_or(Reply::Text("ok".into()));
        (reply, i.release.clone())
    };
    if let Reply::Held(first, rest) = reply {
        return held(first, rest, release);
    }
    if let Reply::Endless = reply {
        return endless(stream);
    }
    respond(reply, stream).await
}

/// Lets a [`Reply::Held`] stream go on (now, or as soon as one waits).
async fn release(State(inner): State<Arc<Mutex<Inner>>>) -> StatusCode {
    let release = inner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .release
        .clone();
    release.notify_one();
    StatusCode::NO_CONTENT
}

/// A streamed answer that stops half-way until released.
fn held(first: String, rest: String, release: Arc<tokio::sync::Notify>) -> Response {
    use futures_util::StreamExt;
    let data = |c: String| Ok::<_, std::io::Error>(Bytes::from(format!("data: {c}\n\n")));
    let (mut head, _) = chunks(&Reply::Text(first));
    head.truncate(2);
    let (tail, _) = chunks(&Reply::Text(rest));
    let head = futures_util::stream::iter(head.into_iter().map(data));
    let tail = futures_util::stream::once(async move {
        release.notified().await;
        futures_util::stream::iter(tail.into_iter().map(data))
    })
    .flatten()
    .chain(futures_util::stream::once(async {
        Ok(Bytes::from("data: [DONE]\n\n"))
    }));
    let body = Body::from_stream(head.chain(tail));
    ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
}

/// A body that never ends: 64 KiB of content after 64 KiB of content.
fn endless(stream: bool) -> Response {
    use futures_util::StreamExt;
    let piece = "x".repeat(64 << 10);
    let (head, item, kind) = if stream {
        let delta = json!({ "object": "chat.completion.chunk",
            "choices": [{ "index": 0, "delta": { "content": piece }, "finish_reason": null }] });
        (
            String::new(),
            format!("data: {delta}\n\n"),
            "text/event-stream",
        )
    } else {
        let head = r#"{"choices":[{"index":0,"message":{"role":"assistant","content":""#;
        (head.to_string(), piece, "application/json")
    };
    let head = futures_util::stream::once(async move { Ok(Bytes::from(head)) });
    let rest = futures_util::stream::repeat_with(move || {
        Ok::<_, std::io::Error>(Bytes::from(item.clone()))
    });
    let body = Body::from_stream(head.chain(rest));
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

async fn respond(mut reply: Reply, stream: bool) -> Response {
    while let Reply::Slow(ms, inner) = reply {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        reply = *inner;
    }
    if let Reply::Empty = reply {
        return ([(header::CONTENT_TYPE, "text/event-stream")], Body::empty()).into_response();
    }
    if let Reply::Refuse(code, message) = &reply {
        let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = json!({ "error": { "message": message, "type": "scripted" } });
        return (status, axum::Json(body)).into_response();
    }
    if let Reply::Status(code, after) = &reply {
        let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body =
            json!({ "error": { "message": format!("scripted {code}"), "type": "scripted" } });
        let mut resp = (status, axum::Json(body)).into_response();
        if let Some(s) = after
            && let Ok(v) = s.to_string().parse()
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return resp;
    }
    if !stream {
        return axum::Json(whole(&reply)).into_response();
    }
    let (chunks, broken) = chunks(&reply);
    let mut events: Vec<Result<Bytes, std::io::Error>> = vec![Ok(Bytes::from(": keep-alive\n\n"))];
    events.extend(
        chunks
            .into_iter()
            .map(|c| Ok(Bytes::from(format!("data: {c}\n\n")))),
    );
    if broken {
        events.push(Err(std::io::Error::other("scripted connection drop")));
    } else {
        events.push(Ok(Bytes::from("data: [DONE]\n\n")));
    }
    let body = Body::from_stream(futures_util::stream::iter(events));
    ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
}

fn usage() -> Value {
    json!({ "prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18 })
}

/// The reply as one `chat.completion` body.
fn whole(reply: &Reply) -> Value {
    let message = match reply {
        Reply::Tools(calls) => json!({ "role": "assistant", "content": null, "tool_calls":
            calls.iter().map(|(id, name, args)| json!({ "id": id, "type": "function",
                "function": { "name": name, "arguments": args } })).collect::<Vec<_>>() }),
        Reply::Text(t) | Reply::Drop(t) | Reply::Bare(t) | Reply::Cut(t) => {
            json!({ "role": "assistant", "content": t })
        }
        _ => json!({ "role": "assistant", "content": "" }),
    };
    let finish = match reply {
        Reply::Tools(_) => "tool_calls",
        Reply::Cut(_) => "length",
        _ => "stop",
    };
    let usage = match reply {
        Reply::Bare(_) => Value::Null,
        _ => usage(),
    };
    json!({ "object": "chat.completion", "choices": [{ "index": 0, "message": message,
            "finish_reason": finish }], "usage": usage })
}

/// The reply as `chat.completion.chunk` payloads; true when the stream
/// must break after them.
fn chunks(reply: &Reply) -> (Vec<String>, bool) {
    let chunk = |delta: Value, finish: Value| {
        json!({ "object": "chat.completion.chunk",
                "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }] })
        .to_string()
    };
    let tail =
        json!({ "object": "chat.completion.chunk", "choices": [], "usage": usage() }).to_string();
    match reply {
        Reply::Text(t) | Reply::Bare(t) | Reply::Cut(t) => {
            let mid = t
                .char_indices()
                .nth(t.chars().count() / 2)
                .map_or(t.len(), |(i, _)| i);
            let (a, b) = t.split_at(mid);
            let out = vec![
                chunk(json!({ "role": "assistant", "content": a }), Value::Null),
                chunk(json!({ "content": b }), Value::Null),
                chunk(
                    json!({}),
                    json!(if matches!(reply, Reply::Cut(_)) {
                        "length"
                    } else {
                        "stop"
                    }),
                ),
            ];
            let out = match reply {
                Reply::Bare(_) => out,
                _ => [out, vec![tail]].concat(),
            };
            (out, false)
        }
        Reply::Tools(calls) => {
            let mut out = Vec::new();
            for (i, (id, name, _)) in calls.iter().enumerate() {
                out.push(chunk(
                    json!({ "tool_calls": [{ "index": i, "id": id, "type": "function",
                    "function": { "name": name, "arguments": "" } }] }),
                    Value::Null,
                ));
            }
            for (i, (_, _, args)) in calls.iter().enumerate() {
                let mid = args.len() / 2;
                let mid = (0..=mid)
                    .rev()
                    .find(|m| args.is_char_boundary(*m))
                    .unwrap_or(0);
                for part in [&args[..mid], &args[mid..]] {
                    out.push(chunk(
                        json!({ "tool_calls": [{ "index": i,
                        "function": { "arguments": part } }] }),
                        Value::Null,
                    ));
                }
            }
            out.push(chunk(json!({}), json!("tool_calls")));
            out.push(tail);
            (out, false)
        }
        Reply::Drop(t) => (vec![chunk(json!({ "content": t }), Value::Null)], true),
        Reply::Malformed => (vec!["{\"choices\": [".to_string()], false),
        Reply::Status(..)
        | Reply::Refuse(..)
        | Reply::Empty
        | Reply::Slow(..)
        | Reply::Held(..)
        | Reply::Endless => (Vec::new(), false),
    }
}
