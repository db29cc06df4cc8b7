//! The naive in-memory SSE server: the fan-out ceiling for S3. A publish is turned into
//! one SSE frame and sent into a tokio broadcast channel; each subscriber is a receiver
//! of it. No storage, no filters, no resume: what is left is the cost of HTTP and SSE
//! themselves, which no real event server can beat.
//!
//! It runs as its own process (`tributary-bench naive-server`) so it can be pinned to
//! the server core like Tributary is.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::{BufMut, Bytes, BytesMut};
use tokio::net::TcpListener;
use tokio::sync::broadcast;

/// Frames a subscriber may fall behind by before it is cut off. A cut-off subscriber
/// misses events, which the harness counts as gaps: the ceiling is not allowed to cheat
/// by dropping load.
const CHANNEL_CAPACITY: usize = 16 * 1024;

#[derive(Clone)]
struct Naive {
    frames: broadcast::Sender<Bytes>,
    next_id: Arc<AtomicU64>,
    drop_every: Option<u64>,
}

/// The server's routes: `POST /publish` (a one-line JSON body), `GET /stream` (SSE,
/// opening with `event: ready`), `GET /healthz`.
///
/// `drop_every: Some(n)` silently skips every n-th publish: a broken server on purpose,
/// so a test can show that the harness fails a run with a gap.
pub fn router(drop_every: Option<u64>) -> Router {
    let (frames, _) = broadcast::channel(CHANNEL_CAPACITY);
    let state = Naive {
        frames,
        next_id: Arc::new(AtomicU64::new(1)),
        drop_every: drop_every.filter(|n| *n > 0),
    };
    Router::new()
        .route("/publish", post(publish))
        .route("/stream", get(stream))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
}

/// Serves [`router`] on `listener` until the process is stopped.
pub async fn serve(listener: TcpListener, drop_every: Option<u64>) -> std::io::Result<()> {
    axum::serve(listener, router(drop_every)).await
}

async fn publish(State(naive): State<Naive>, body: Bytes) -> Response {
    if body.contains(&b'\n') || body.contains(&b'\r') {
        return (StatusCode::BAD_REQUEST, "the body must be one line").into_response();
    }
    let id = naive.next_id.fetch_add(1, Ordering::Relaxed);
    if naive.drop_every.is_some_and(|n| id % n == 0) {
        return (StatusCode::OK, "{}").into_response();
    }
    let mut frame = BytesMut::with_capacity(body.len() + 32);
    frame.put_slice(format!("id: {id}\ndata: ").as_bytes());
    frame.put_slice(&body);
    frame.put_slice(b"\n\n");
    // No receiver is not an error: nobody is listening yet.
    let _ = naive.frames.send(frame.freeze());
    (StatusCode::OK, "{}").into_response()
}

async fn stream(State(naive): State<Naive>) -> Response {
    let receiver = naive.frames.subscribe();
    let first = Bytes::from_static(b"event: ready\ndata: {}\n\n");
    let frames = futures::stream::unfold(
        (Some(first), receiver),
        |(first, mut receiver)| async move {
            if let Some(first) = first {
                return Some((Ok::<_, std::io::Error>(first), (None, receiver)));
            }
            // Lagged or closed both end the stream: a ceiling that skipped frames would
            // not be measuring the same work.
            let frame = receiver.recv().await.ok()?;
            Some((Ok(frame), (None, receiver)))
        },
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(frames))
        .expect("static headers are valid")
}
