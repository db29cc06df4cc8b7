//! `POST /api/v1/livestore?storeId=…&transport=http` and its WebSocket twin
//! (`GET …&transport=ws`): the LiveStore sync-cf protocol, so that unmodified LiveStore
//! clients (`makeHttpSync`, `makeWsSync`) sync through Tributary. The wire format is in
//! LIVESTORE_SYNC.md beside DESIGN.md.
//!
//! Each store is the topic `livestore.<storeId>`; LiveStore's seqNum is the topic's seq.
//! Its events are ordinary log events, so SSE and history see them, and an event
//! published to that topic through the plain API reaches LiveStore clients.
//!
//! # Layout
//! - `protocol`: the messages and the event mapping.
//! - `store`: pulls by seqNum, pushes checked against the head, per-store push locks.
//! - `ws`: a WebSocket session: pings, live pulls, pushes.
//!
//! Protocol errors (a push behind the head, another backend, a bad storeId, a body we
//! cannot read) are answered as the protocol's `Exit` failures with HTTP 200, because
//! that is what the client decodes; only HTTP-level faults (size, content type) get our
//! usual 4xx.

mod protocol;
mod store;
mod ws;

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tracing::Instrument;

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{JsonBody, Query};

pub use store::Stores;

use protocol::{Request, SyncError, exit_failure, exit_success};
use store::Store;

/// The query string both transports take.
struct Params {
    store_id: String,
    /// The client's `syncPayload` (e.g. an auth token), for [`authorize`].
    payload: Option<Value>,
}

impl Params {
    fn take(mut q: Query, transport: &str) -> Result<Params, SyncError> {
        let bad = |e: ApiError| SyncError::unknown(e.to_string());
        let store_id = q
            .take("storeId")
            .map_err(bad)?
            .ok_or_else(|| SyncError::unknown("the storeId query parameter is required"))?;
        store::check_store_id(&store_id)?;
        match q.take("transport").map_err(bad)?.as_deref() {
            Some(t) if t == transport => {}
            other => {
                return Err(SyncError::unknown(format!(
                    "expected transport={transport}, got {other:?}"
                )));
            }
        }
        let payload = q
            .take("payload")
            .map_err(bad)?
            .map(parse_payload)
            .transpose()?;
        q.finish().map_err(bad)?;
        Ok(Params { store_id, payload })
    }
}

/// The client URI-encodes the JSON payload twice; the query parser undid one layer.
fn parse_payload(text: String) -> Result<Value, SyncError> {
    if let Ok(v) = serde_json::from_str(&text) {
        return Ok(v);
    }
    let decoded: String = url::form_urlencoded::parse(format!("p={text}").as_bytes())
        .map(|(_, v)| v.into_owned())
        .collect();
    serde_json::from_str(&decoded)
        .map_err(|e| SyncError::unknown(format!("the payload query parameter is not JSON: {e}")))
}

/// Decides whether a client may sync a store. Nothing is enforced yet: when auth lands,
/// this is the one place the client's `syncPayload` (query or request) is judged.
fn authorize(store_id: &str, payload: Option<&Value>) -> Result<(), SyncError> {
    tracing::debug!(store_id, has_payload = payload.is_some(), "livestore sync");
    Ok(())
}

/// The HTTP transport: one request, answered by a JSON array of messages.
pub async fn http(
    State(state): State<AppState>,
    q: Query,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let message: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            let error = SyncError::unknown(format!("the body is not JSON: {e}"));
            return Ok(Json(vec![exit_failure("", &error)]).into_response());
        }
    };
    let request = match Request::parse(&message) {
        Ok(r) => r,
        Err((id, error)) => return Ok(Json(vec![exit_failure(&id, &error)]).into_response()),
    };
    let span = tracing::info_span!("livestore", tag = %request.tag, transport = "http");
    Ok(
        match serve_http(&state, q, &request).instrument(span).await {
            Ok(Answer::Messages(messages)) => Json(messages).into_response(),
            Ok(Answer::Pull(pull)) => stream_pull(request.id, pull),
            Err(error) => Json(vec![exit_failure(&request.id, &error)]).into_response(),
        },
    )
}

/// What an HTTP request is answered with: a few messages, or a pull streamed page by
/// page.
enum Answer {
    Messages(Vec<Value>),
    Pull(store::Pull),
}

async fn serve_http(state: &AppState, q: Query, r: &Request) -> Result<Answer, SyncError> {
    let params = Params::take(q, "http")?;
    let store = open_store(state, &params, &r.payload).await?;
    match r.tag.as_str() {
        "SyncHttpRpc.Ping" => Ok(Answer::Messages(vec![exit_success(
            &r.id,
            Some(json!({ "_tag": "SyncMessage.Pong" })),
        )])),
        "SyncHttpRpc.Pull" => {
            let after = store.cursor(&r.payload)?;
            Ok(Answer::Pull(store.pull(after).await?))
        }
        "SyncHttpRpc.Push" => {
            push(state, &store, &r.payload).await?;
            Ok(Answer::Messages(vec![exit_success(&r.id, Some(json!({})))]))
        }
        other => Err(SyncError::unknown(format!(
            "unknown request tag {other:?} (expected SyncHttpRpc.Ping, .Pull or .Push)"
        ))),
    }
}

/// Streams a pull's answer, `[Chunk, Chunk, …, Exit]`, one page per Chunk, read as the
/// client takes them: a client catching up on a large store costs the server one page
/// of memory. A storage fault midway still ends the array, with an `Exit` failure.
fn stream_pull(request_id: String, pull: store::Pull) -> Response {
    enum Step {
        Pages(store::Pull, bool),
        Done,
    }
    let body = futures::stream::unfold(Step::Pages(pull, true), move |step| {
        let request_id = request_id.clone();
        async move {
            let Step::Pages(mut pull, first) = step else {
                return None;
            };
            let sep = if first { "[" } else { "," };
            let (message, next) = match pull.next_page().await {
                Ok(Some(page)) => (
                    protocol::chunk(&request_id, vec![page]),
                    Step::Pages(pull, false),
                ),
                Ok(None) => (exit_success(&request_id, None), Step::Done),
                Err(error) => (exit_failure(&request_id, &error), Step::Done),
            };
            let end = if matches!(next, Step::Done) { "]" } else { "" };
            let text = format!("{sep}{message}{end}");
            Some((
                Ok::<_, std::convert::Infallible>(bytes::Bytes::from(text)),
                next,
            ))
        }
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from_stream(body),
    )
        .into_response()
}

/// Authorizes the request and opens its store; a payload that names another store
/// than the URL is refused rather than guessed at.
async fn open_store(
    state: &AppState,
    params: &Params,
    payload: &Value,
) -> Result<Store, SyncError> {
    if let Some(named) = payload.get("storeId").and_then(Value::as_str)
        && named != params.store_id
    {
        return Err(SyncError::unknown(format!(
            "the request is for store {named:?} but the URL names {:?}",
            params.store_id
        )));
    }
    authorize(
        &params.store_id,
        payload.get("payload").or(params.payload.as_ref()),
    )?;
    Store::open(Arc::clone(state.log()), &params.store_id).await
}

async fn push(state: &AppState, store: &Store, payload: &Value) -> Result<(), SyncError> {
    let pushed = store
        .push(state.livestore(), payload, state.config().max_event_bytes)
        .await;
    match &pushed {
        Ok(()) => state.metrics().record_livestore_push(true),
        Err(SyncError::ServerAhead { .. }) => state.metrics().record_livestore_push(false),
        Err(_) => {}
    }
    pushed
}

/// The WebSocket transport. A bad query is refused before the upgrade, as a plain 400.
pub async fn websocket(
    State(state): State<AppState>,
    q: Query,
    upgrade: WebSocketUpgrade,
) -> Response {
    let params = match Params::take(q, "ws") {
        Ok(p) => p,
        Err(e) => {
            let message = match e {
                SyncError::Unknown(m) => m,
                other => format!("{other:?}"),
            };
            return ApiError::InvalidParameter(message).into_response();
        }
    };
    upgrade
        .max_message_size(state.config().max_request_bytes)
        .on_upgrade(move |socket| ws::session(socket, state, params))
}
