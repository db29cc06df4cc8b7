//! `GET /api/v1/events/stream`: Server-Sent Events, history first and then live.
//!
//! The body is a pull stream: hyper asks for the next frame only once the socket has
//! taken the previous ones, so a slow reader holds nothing but its [`EventStream`] cursor
//! and the server never queues frames for it. Event frames are the shared bytes
//! encoded once per event ([`Encoded::sse_frame`]), written as they are.
//!
//! What the client sees, in order: `retry: 1000`; the events (`id: <position>`); an
//! `event: caught-up` marker where history ends and live begins; `: heartbeat` comments
//! meanwhile; and `event: end` when `until` was reached or the snapshot is done, which
//! tells a client not to reconnect. `event: truncated` (data `{"after","pruned_through"}`)
//! says that retention removed events of the followed topics before this stream got to
//! them; the stream goes on with what is left. A stream cut by shutdown just closes, so the client
//! reconnects and resumes with `Last-Event-ID`.
//!
//! [`Encoded::sse_frame`]: tributary_core::Encoded::sse_frame

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{Extensions, HeaderMap};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures::stream::{self, Stream, StreamExt};
use tokio::time::{Instant, MissedTickBehavior};
use tributary_core::stream::{DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE};
use tributary_core::{Encoded, EventStream, Position, StreamItem, StreamOptions};

use super::{ReadParams, parse_bool, parse_in_range, parse_position};
use crate::app::AppState;
use crate::connections::{OpenStream, StreamKind, StreamSettings};
use crate::error::ApiError;
use crate::extract::Query;
use crate::listen::CatchUpHandoff;
use crate::metrics::Metrics;

const RETRY: &[u8] = b"retry: 1000\n\n";
const HEARTBEAT: &[u8] = b": heartbeat\n\n";
const MAX_HEARTBEAT_SECS: u64 = 300;

pub async fn stream(
    State(state): State<AppState>,
    extensions: Extensions,
    headers: HeaderMap,
    mut query: Query,
) -> Result<Response, ApiError> {
    if state.is_draining() {
        return Err(ApiError::Unavailable(
            "the server is shutting down; reconnect later".to_owned(),
        ));
    }
    // Everything is checked before the 200 goes out: after that, an error can only be
    // told by closing the stream, which an EventSource takes as "reconnect".
    let params = ReadParams::take(&mut query, false)?;
    let snapshot_only = query
        .take("snapshot_only")?
        .map(|v| parse_bool("snapshot_only", &v))
        .transpose()?
        .unwrap_or(false);
    let heartbeat = match query.take("heartbeat")? {
        Some(v) => Duration::from_secs(parse_in_range("heartbeat", &v, 1..=MAX_HEARTBEAT_SECS)?),
        None => state.config().heartbeat,
    };
    let batch_size = query
        .take("batch_size")?
        .map(|v| parse_in_range("batch_size", &v, 1..=MAX_BATCH_SIZE as u64))
        .transpose()?
        .map_or(DEFAULT_BATCH_SIZE, |n| n as usize);
    query.finish()?;
    let resume = last_event_id(&headers)?;
    let since = params.start(state.log().as_ref(), resume).await?;
    let settings = StreamSettings {
        kind: StreamKind::Events,
        filter: params.filter,
        heartbeat,
        batch_size,
    };
    let open = state
        .connections()
        .open(None, settings.clone(), remote_addr(&extensions))?;
    Ok(respond(
        &state,
        open,
        settings,
        since,
        params.until,
        snapshot_only,
    ))
}

/// The client's address, when the server was started with it (not in some tests).
pub(crate) fn remote_addr(extensions: &Extensions) -> Option<SocketAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr)
}

/// The SSE response for a stream checked and counted under the connection cap.
pub(crate) fn respond(
    state: &AppState,
    open: OpenStream,
    settings: StreamSettings,
    since: Position,
    until: Option<Position>,
    snapshot_only: bool,
) -> Response {
    let options = StreamOptions {
        filter: settings.filter,
        since,
        until,
        snapshot_only,
        batch_size: settings.batch_size,
    };
    let events = EventStream::new(Arc::clone(state.tail()), options);
    let ended = open.cancelled();
    let caught_up = Arc::new(AtomicBool::new(false));
    let frames = frames(
        events,
        until,
        snapshot_only,
        Arc::new(open),
        Arc::clone(&caught_up),
    )
    .take_until(ended.cancelled_owned());
    let body = sse_body(frames, settings.heartbeat, Arc::clone(state.metrics()));
    let headers = [
        (CONTENT_TYPE, "text/event-stream"),
        (CACHE_CONTROL, "no-cache"),
        // Tells nginx not to buffer the stream, which would delay every event.
        (
            axum::http::HeaderName::from_static("x-accel-buffering"),
            "no",
        ),
    ];
    let handoff = CatchUpHandoff {
        caught_up,
        metrics: Arc::clone(state.metrics()),
    };
    (headers, Extension(handoff), Body::from_stream(body)).into_response()
}

/// The position an EventSource resumes after. Browsers send none (rather than an empty
/// one) before the first `id:`, but an empty header is taken as none as well.
pub(crate) fn last_event_id(headers: &HeaderMap) -> Result<Option<Position>, ApiError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let value = value.to_str().unwrap_or("\u{fffd}").trim();
    if value.is_empty() {
        return Ok(None);
    }
    parse_position("Last-Event-ID", value).map(Some)
}

/// One chunk of the body, and how many events it carries (for the metrics).
type Chunk = (Bytes, u64);

/// About how many bytes of frames [`gather`] puts in one chunk.
const GATHER_BYTES: usize = 32 * 1024;

fn sse_body(
    frames: impl Stream<Item = Chunk> + Send + 'static,
    heartbeat: Duration,
    metrics: Arc<Metrics>,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let live = metrics.live_connection();
    // `None` marks the end of the events, so that the endless heartbeats stop with them.
    let events = frames.map(Some).chain(stream::once(async { None }));
    let beats = heartbeats(heartbeat).map(Some);
    let body = stream::select(events, beats).scan((), |_, chunk| futures::future::ready(chunk));
    stream::once(async { (Bytes::from_static(RETRY), 0) })
        .chain(body)
        .map(move |(bytes, events): Chunk| {
            // Held here so the live-connections gauge drops when the body does.
            let _ = &live;
            metrics.record_sent(events, bytes.len());
            Ok(bytes)
        })
}

struct Frames {
    events: EventStream,
    until: Option<Position>,
    snapshot_only: bool,
    /// Its place in the connection list; counts what is sent, and frees the place when
    /// the body is dropped.
    open: Arc<OpenStream>,
    /// Set as the `caught-up` marker is handed out; read here to end a snapshot, and
    /// by the connection to move the stream off the catch-up runtime
    /// ([`CatchUpHandoff`]).
    caught_up: Arc<AtomicBool>,
}

/// The event frames and markers. `unfold` keeps a pending `next()` in its own state,
/// so being raced against heartbeats never drops a read halfway.
fn frames(
    events: EventStream,
    until: Option<Position>,
    snapshot_only: bool,
    open: Arc<OpenStream>,
    caught_up: Arc<AtomicBool>,
) -> impl Stream<Item = Chunk> + Send + 'static {
    let state = Frames {
        events,
        until,
        snapshot_only,
        open,
        caught_up,
    };
    stream::unfold(Some(state), |state| async move {
        let mut st = state?;
        match st.events.next().await {
            Some(Ok(StreamItem::Event(entry))) => {
                let chunk = gather(entry, &mut st.events);
                st.open.record(chunk.1);
                Some((chunk, Some(st)))
            }
            Some(Ok(StreamItem::CaughtUp { position })) => {
                st.caught_up.store(true, Ordering::Release);
                Some(((marker("caught-up", position), 0), Some(st)))
            }
            Some(Ok(StreamItem::Truncated {
                after,
                pruned_through,
            })) => {
                let frame = format!(
                    "event: truncated\ndata: {{\"after\":{after},\"pruned_through\":{pruned_through}}}\n\n"
                );
                Some(((Bytes::from(frame), 0), Some(st)))
            }
            Some(Err(e)) => {
                // Closing without `end` makes the client reconnect and resume, which is
                // the best we can offer once the 200 is out.
                tracing::warn!(error = %e, cursor = st.events.cursor(), "SSE stream failed");
                st.open.fail(e.to_string());
                None
            }
            None => {
                let cursor = st.events.cursor();
                // Checked on what was delivered rather than on why the stream stopped,
                // so that a shutdown racing the last event still ends truthfully.
                let finished = st.until.is_some_and(|u| cursor >= u)
                    || (st.snapshot_only && st.caught_up.load(Ordering::Acquire));
                finished.then(|| ((marker("end", cursor), 0), None))
            }
        }
    })
}

/// `first`'s frame, and after it the frames of the events `events` has ready (the rest
/// of a page of history, or several live events that came at once), up to about
/// [`GATHER_BYTES`]. One chunk per page rather than per event: every chunk costs a pass
/// through the body's stream layers, a chunk header and the counters, which made up a
/// large share of a catch-up's CPU when paid per event.
fn gather(first: Arc<Encoded>, events: &mut EventStream) -> Chunk {
    let first = first.sse_frame();
    let Some(second) = events.next_ready() else {
        return (first, 1);
    };
    // Frames are shared `Bytes`: collected first, so that the chunk is allocated once at
    // its size rather than at the bound for two small live events.
    let mut frames = vec![first, second.sse_frame()];
    let mut len: usize = frames.iter().map(Bytes::len).sum();
    while len < GATHER_BYTES {
        let Some(entry) = events.next_ready() else {
            break;
        };
        let frame = entry.sse_frame();
        len += frame.len();
        frames.push(frame);
    }
    let mut out = BytesMut::with_capacity(len);
    for frame in &frames {
        out.extend_from_slice(frame);
    }
    (out.freeze(), frames.len() as u64)
}

fn heartbeats(every: Duration) -> impl Stream<Item = Chunk> + Send + 'static {
    // A zero period would make `interval` panic; a configured zero is a mistake, not a
    // request for a busy loop.
    let every = every.max(Duration::from_millis(10));
    let mut ticker = tokio::time::interval_at(Instant::now() + every, every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    stream::unfold(ticker, |mut ticker| async move {
        ticker.tick().await;
        Some(((Bytes::from_static(HEARTBEAT), 0), ticker))
    })
}

fn marker(event: &str, position: Position) -> Bytes {
    Bytes::from(format!(
        "event: {event}\ndata: {{\"position\":{position}}}\n\n"
    ))
}
