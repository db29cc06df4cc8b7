//! Accepting connections, and a lean HTTP/1.1 path for long-lived SSE streams.
//!
//! hyper keeps about 16 KiB per HTTP/1 connection for as long as it is open (an 8 KiB
//! read buffer and an 8 KiB buffer for response heads) plus its connection future. For
//! ordinary requests that is nothing, but an idle SSE stream can stay open for hours, and
//! a server holding ten thousand of them spent most of its memory on those buffers while
//! the stream's own state is about 2 KB.
//!
//! So each accepted connection first has its request head read here, into a buffer that
//! starts at [`HEAD_START`] and grows to [`HEAD_CAP`], and parsed with `httparse`. A
//! plain HTTP/1.1 `GET` without a body or `Upgrade` for one of the SSE routes (matched
//! by path shape, see [`is_stream_path`]) takes the lean path: the request goes to the
//! same axum [`Router`] as a tower service, and its response is written here, body frame
//! by frame as HTTP chunks, with no buffer kept between writes; the connection closes
//! after the response (an `EventSource` opens its own connection anyway). While the
//! stream is idle the socket is watched for the client going away, which drops the body
//! and so takes the stream out of the connection list.
//!
//! Everything else (other paths and methods, HTTP/1.0, heads that do not parse or are
//! too large, WebSocket upgrades) goes to hyper as before, with the bytes already read
//! replayed first ([`Replay`]), and keeps hyper's keep-alive, upgrades and error answers.
//!
//! An event stream that starts behind the head (`catches_up`) is served on a runtime
//! of its own (`catch_up_runtime`): it has history to send as fast as the socket takes
//! it, and a hundred such streams on the main runtime kept publishes and live deliveries
//! waiting behind them for seconds. On threads of their own, the kernel shares the cores;
//! in `SCHED_IDLE` (the default [`CatchUpPriority`]) it also hands the core to the main
//! runtime as soon as that wakes. Once such a stream has sent `caught-up`, its socket
//! and the rest of its body move back to the main runtime (`CatchUpHandoff`).
//!
//! Every connection task is tracked, so that a graceful shutdown can wait for them; on
//! `stop`, hyper connections are told to finish their request in flight and close, and
//! lean streams end because draining closes the tail they read.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::{Body, BodyDataStream, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING, UPGRADE};
use axum::http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::CatchUpPriority;
use crate::metrics::Metrics;

/// The request head buffer's first size: enough for an `EventSource` request.
pub const HEAD_START: usize = 1024;
/// The largest head read here; a longer one goes to hyper, which has its own limit.
pub const HEAD_CAP: usize = 16 * 1024;
/// How long a new connection may take to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Most headers a lean request may have; more go to hyper.
const MAX_HEADERS: usize = 64;
/// Body frames ready at once are written together, up to about this many bytes.
const MAX_BURST: usize = 64 * 1024;
/// How long accepting pauses after an error such as `EMFILE`, as `axum::serve` does.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Why one connection ended early. Logged at debug: clients going away is normal.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("reading the request head failed")]
    ReadHead(#[source] io::Error),
    #[error("writing the response failed")]
    Write(#[source] io::Error),
    #[error("the response body failed")]
    Body(#[source] axum::Error),
    #[error("serving the connection over hyper failed")]
    Hyper(#[source] hyper::Error),
}

/// Accepts connections on `listener` until `stop` is cancelled, serving each with `app`
/// on a task spawned on `tracker`. Accept errors are logged and waited out, never fatal.
pub(crate) async fn accept(
    listener: TcpListener,
    app: Router,
    stop: CancellationToken,
    tracker: TaskTracker,
    catch_up: CatchUpPriority,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => return,
        };
        match accepted {
            Ok((socket, remote)) => {
                if let Err(e) = socket.set_nodelay(true) {
                    tracing::debug!(error = %e, %remote, "could not set TCP_NODELAY");
                }
                tracker.spawn(connection(
                    socket,
                    remote,
                    app.clone(),
                    stop.clone(),
                    catch_up,
                ));
            }
            // The peer gave up before we got to it; nothing to wait for.
            Err(e) if is_connection_error(&e) => {
                tracing::debug!(error = %e, "accept failed for one connection");
            }
            Err(e) => {
                // Most likely out of file descriptors: pausing lets some close.
                tracing::warn!(error = %e, "accepting connections failed; retrying shortly");
                tokio::select! {
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    () = stop.cancelled() => return,
                }
            }
        }
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// What the head read decided.
enum Route {
    /// A stream request, ready for the router; the bytes read are no longer needed.
    Lean(Box<Request<Body>>),
    /// Anything else: hyper serves the connection, reading `prefix` first.
    Hyper(Vec<u8>),
    /// Closed, timed out, or shutting down before a request came.
    Close,
}

/// Serves one connection. The task's future is what an idle lean stream holds for its
/// whole life, so the larger futures it awaits on the way (the head read, the router
/// call, hyper's connection) are boxed and freed once done.
async fn connection(
    mut socket: TcpStream,
    remote: SocketAddr,
    app: Router,
    stop: CancellationToken,
    catch_up: CatchUpPriority,
) {
    let head = Box::pin(tokio::time::timeout(
        HEAD_TIMEOUT,
        read_head(&mut socket, remote, &stop),
    ));
    let route = match head.await {
        Ok(Ok(route)) => route,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, %remote, "connection closed");
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, "no request head within the timeout; closing");
            return;
        }
    };
    let served = match route {
        Route::Lean(request) => {
            drop(stop);
            match catch_up_runtime(catch_up).filter(|_| catches_up(&request)) {
                Some(runtime) => on_catch_up_runtime(runtime, socket, *request, app).await,
                None => serve_lean(socket, *request, app).await,
            }
        }
        Route::Hyper(prefix) => Box::pin(hyper(socket, prefix, remote, app, stop)).await,
        Route::Close => Ok(()),
    };
    if let Err(e) = served {
        tracing::debug!(error = %e, %remote, "connection ended");
    }
}

/// Routes a lean request and writes its response.
async fn serve_lean(
    socket: TcpStream,
    request: Request<Body>,
    app: Router,
) -> Result<(), ConnError> {
    let response = route(app, request).await;
    let (head, body) = response_head(response);
    lean(socket, head, body).await
}

async fn route(app: Router, request: Request<Body>) -> Response<Body> {
    match Box::pin(app.oneshot(request)).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// Whether an event stream starts behind the head: any start but `since=now`, or a
/// resume from `Last-Event-ID`. Such a stream has history to send as fast as the
/// socket takes it, and is served on the catch-up runtime.
fn catches_up(request: &Request<Body>) -> bool {
    let live = request
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|pair| pair == "since=now"))
        && !request.headers().contains_key("last-event-id");
    request.uri().path() == "/api/v1/events/stream" && !live
}

/// The runtime streams that catch up run on: threads of their own beside the main
/// runtime's, as many as there are cores. A stream catching up always has its next
/// frames ready; on the main runtime a hundred of them filled every turn of its run
/// queue, and a publish or a live delivery waited behind all of them (seconds, in S5).
/// On threads of their own, the kernel shares the cores between them and the main
/// runtime, which is mostly idle and so runs as soon as it is woken; with
/// [`CatchUpPriority::Idle`] the kernel also lets the main runtime take the core back
/// the moment it wakes, rather than at the end of the catch-up thread's slice. `None`
/// if the threads could not be started: everything then runs on the main runtime, as
/// before. One runtime per priority, made on first use and kept for the process.
fn catch_up_runtime(priority: CatchUpPriority) -> Option<&'static tokio::runtime::Runtime> {
    type Slot = std::sync::OnceLock<Option<tokio::runtime::Runtime>>;
    static IDLE: Slot = Slot::new();
    static NORMAL: Slot = Slot::new();
    let slot = match priority {
        CatchUpPriority::Idle => &IDLE,
        CatchUpPriority::Normal => &NORMAL,
    };
    slot.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder
            .worker_threads(cores)
            .thread_name("tributary-catch-up")
            .enable_all();
        if priority == CatchUpPriority::Idle {
            // Every thread the runtime starts, its blocking pool (the log's reads) too.
            builder.on_thread_start(lower_this_thread);
        }
        builder
            .build()
            .inspect_err(|e| {
                tracing::warn!(error = %e, "could not start the catch-up runtime; streams share the main one")
            })
            .ok()
    })
    .as_ref()
}

/// Puts the calling thread in `SCHED_IDLE`. Refused only where a sandbox forbids it;
/// the stream is then served at normal priority, and the first refusal is logged.
fn lower_this_thread() {
    static WARNED: std::sync::Once = std::sync::Once::new();
    if let Err(e) = set_idle_policy() {
        WARNED.call_once(|| {
            tracing::warn!(error = %e, "could not lower the catch-up threads' priority; they run at normal priority");
        });
    }
}

#[cfg(target_os = "linux")]
fn set_idle_policy() -> Result<(), String> {
    use thread_priority::unix::{
        NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
        thread_native_id,
    };
    // The nice value a normal-class policy is given alongside; SCHED_IDLE ignores it.
    let nice = thread_priority::ThreadPriority::Min;
    set_thread_priority_and_policy(
        thread_native_id(),
        nice,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    )
    .map_err(|e| format!("{e:?}"))
}

#[cfg(not(target_os = "linux"))]
fn set_idle_policy() -> Result<(), String> {
    Err("SCHED_IDLE is Linux's".to_owned())
}

/// Put on an event stream's response by its handler. `caught_up` is set once the
/// stream has handed out its `caught-up` marker; a stream served on the catch-up
/// runtime then moves back to the main one, so that a client that resumed (every
/// reconnecting `EventSource`) gets its live events at the main runtime's priority.
/// `metrics` counts the streams on the catch-up runtime meanwhile. (A moved stream's
/// heartbeat timer stays on the catch-up runtime's clock; at worst a busy core makes a
/// heartbeat a little late.)
#[derive(Clone)]
pub(crate) struct CatchUpHandoff {
    pub caught_up: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
}

/// Serves a lean request on `runtime`, and waits for it here so that a graceful
/// shutdown, which waits for this task, waits for it too. The socket moves to the
/// other runtime's reactor on the way, and back once the stream has caught up.
async fn on_catch_up_runtime(
    runtime: &'static tokio::runtime::Runtime,
    socket: TcpStream,
    request: Request<Body>,
    app: Router,
) -> Result<(), ConnError> {
    let socket = socket.into_std().map_err(ConnError::Write)?;
    let served = runtime.spawn(async move {
        let socket = TcpStream::from_std(socket).map_err(ConnError::Write)?;
        catch_up(socket, request, app).await
    });
    let handed_back = match served.await {
        Ok(result) => result?,
        // Only a panic gets here (the runtime is never shut down): the connection is
        // gone either way.
        Err(e) => {
            tracing::error!(error = %e, "a catch-up stream's task failed");
            return Ok(());
        }
    };
    let Some((socket, mut frames, chunked)) = handed_back else {
        return Ok(());
    };
    let mut socket = TcpStream::from_std(socket).map_err(ConnError::Write)?;
    let written = write_frames(&mut socket, Vec::new(), &mut frames, chunked, None).await;
    let _ = socket.shutdown().await;
    written.map(|_| ())
}

/// A stream the catch-up runtime has sent up to its `caught-up` marker: the socket,
/// out of this runtime's reactor, the rest of the body, and whether it is chunked.
type HandedBack = (std::net::TcpStream, BodyDataStream, bool);

/// Serves a lean request until its stream has caught up, and hands back the rest; a
/// response without a [`CatchUpHandoff`] (an error, say) is written whole here.
async fn catch_up(
    mut socket: TcpStream,
    request: Request<Body>,
    app: Router,
) -> Result<Option<HandedBack>, ConnError> {
    let mut response = route(app, request).await;
    let handoff = response.extensions_mut().remove::<CatchUpHandoff>();
    let (head, body) = response_head(response);
    let (handoff, body) = match (handoff, body) {
        (Some(handoff), Some(body)) => (handoff, body),
        (_, body) => return lean(socket, head, body).await.map(|()| None),
    };
    let _gauge = handoff.metrics.catching_up();
    let chunked = body.size_hint().exact().is_none();
    let mut frames = body.into_data_stream();
    let written = write_frames(
        &mut socket,
        head,
        &mut frames,
        chunked,
        Some(&handoff.caught_up),
    )
    .await;
    if let Ok(Written::CaughtUp) = written {
        let socket = socket.into_std().map_err(ConnError::Write)?;
        return Ok(Some((socket, frames, chunked)));
    }
    // Ended or failed: closed here, as `lean` closes.
    let _ = socket.shutdown().await;
    written.map(|_| None)
}

/// Reads the request head and decides where it goes. No buffer is allocated until the
/// client has sent something.
async fn read_head(
    socket: &mut TcpStream,
    remote: SocketAddr,
    stop: &CancellationToken,
) -> Result<Route, ConnError> {
    tokio::select! {
        ready = socket.readable() => ready.map_err(ConnError::ReadHead)?,
        // Idle when the shutdown came, as hyper closes an idle connection.
        () = stop.cancelled() => return Ok(Route::Close),
    }
    let mut buf: Vec<u8> = Vec::with_capacity(HEAD_START);
    loop {
        if buf.len() == buf.capacity() {
            if buf.len() >= HEAD_CAP {
                // hyper answers a head it finds too large itself.
                return Ok(Route::Hyper(buf));
            }
            buf.reserve_exact((buf.len() * 2).min(HEAD_CAP) - buf.len());
        }
        let n = socket
            .read_buf(&mut buf)
            .await
            .map_err(ConnError::ReadHead)?;
        if n == 0 {
            // Closed before a whole head came; hyper would answer nothing either.
            return Ok(Route::Close);
        }
        match classify(&buf, remote) {
            Head::Partial => continue,
            Head::Lean(request) => return Ok(Route::Lean(request)),
            Head::Other => return Ok(Route::Hyper(buf)),
        }
    }
}

enum Head {
    Partial,
    Lean(Box<Request<Body>>),
    Other,
}

/// Parses what has been read of a head: a lean request, not one, or not known yet.
fn classify(buf: &[u8], remote: SocketAddr) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(buf) {
        Ok(httparse::Status::Partial) => Head::Partial,
        Ok(httparse::Status::Complete(_)) => match lean_request(&parsed, remote) {
            Some(request) => Head::Lean(Box::new(request)),
            None => Head::Other,
        },
        // Malformed, or too many headers: hyper answers it as it always did.
        Err(_) => Head::Other,
    }
}

/// The request to route on the lean path, or `None` when hyper should serve this head.
fn lean_request(parsed: &httparse::Request<'_, '_>, remote: SocketAddr) -> Option<Request<Body>> {
    if parsed.method != Some("GET") || parsed.version != Some(1) {
        return None;
    }
    let uri: Uri = parsed.path?.parse().ok()?;
    if !is_stream_path(uri.path()) {
        return None;
    }
    let mut request = Request::new(Body::empty());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    let headers = request.headers_mut();
    for header in parsed.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(header.value).ok()?;
        // A body, or a protocol switch, is hyper's to handle.
        let bodiless = if name == CONTENT_LENGTH {
            value.as_bytes().trim_ascii() == b"0"
        } else {
            name != TRANSFER_ENCODING && name != UPGRADE
        };
        if !bodiless {
            return None;
        }
        headers.append(name, value);
    }
    request.extensions_mut().insert(ConnectInfo(remote));
    Some(request)
}

/// `/api/v1/events/stream`, `/api/v1/connections/{id}/stream` or
/// `/api/v1/groups/{group}/stream`: the routes whose answer is an SSE stream.
pub fn is_stream_path(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/api/v1/") else {
        return false;
    };
    let segments: Vec<&str> = rest.split('/').collect();
    match segments.as_slice() {
        ["events", "stream"] => true,
        ["connections" | "groups", name, "stream"] => !name.is_empty(),
        _ => false,
    }
}

/// Writes a lean request's response (see [`response_head`]), then closes the
/// connection.
async fn lean(mut socket: TcpStream, head: Vec<u8>, body: Option<Body>) -> Result<(), ConnError> {
    let written = write_body(&mut socket, head, body).await;
    // Closing with a FIN rather than a reset, so the client reads all of it.
    let _ = socket.shutdown().await;
    written
}

/// The status line and headers, and the body to send after them. A known-size body
/// gets `content-length`, any other `transfer-encoding: chunked`; every response
/// closes the connection after it.
fn response_head(response: Response<Body>) -> (Vec<u8>, Option<Body>) {
    let (parts, body) = response.into_parts();
    let status = parts.status;
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        // Framing and connection handling are ours to say.
        if [CONTENT_LENGTH, TRANSFER_ENCODING, CONNECTION].contains(name) {
            continue;
        }
        push_header(&mut head, name.as_str(), value.as_bytes());
    }
    if !parts.headers.contains_key(DATE) {
        let date = httpdate::fmt_http_date(SystemTime::now());
        push_header(&mut head, "date", date.as_bytes());
    }
    push_header(&mut head, "connection", b"close");
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let body = if bodiless {
        None
    } else if let Some(len) = body.size_hint().exact() {
        push_header(&mut head, "content-length", len.to_string().as_bytes());
        (len > 0).then_some(body)
    } else {
        push_header(&mut head, "transfer-encoding", b"chunked");
        Some(body)
    };
    head.extend_from_slice(b"\r\n");
    (head, body)
}

fn push_header(head: &mut Vec<u8>, name: &str, value: &[u8]) {
    head.extend_from_slice(name.as_bytes());
    head.extend_from_slice(b": ");
    head.extend_from_slice(value);
    head.extend_from_slice(b"\r\n");
}

/// Writes `head` and then `body`: as it is when its size is known, else frame by frame
/// as chunks (see [`write_frames`]).
async fn write_body(
    socket: &mut TcpStream,
    head: Vec<u8>,
    body: Option<Body>,
) -> Result<(), ConnError> {
    let Some(body) = body else {
        return socket.write_all(&head).await.map_err(ConnError::Write);
    };
    let chunked = body.size_hint().exact().is_none();
    let mut frames = body.into_data_stream();
    write_frames(socket, head, &mut frames, chunked, None)
        .await
        .map(|_| ())
}

/// How [`write_frames`] stopped without an error.
enum Written {
    /// The body ended, or the client went away.
    Ended,
    /// The stream's `caught-up` marker is written; the rest is the caller's to write.
    CaughtUp,
}

/// Writes `out` (a head, or nothing) and then the body's frames, coalescing the frames
/// that are ready at once. Between writes nothing is buffered; an idle stream waits on
/// its next frame and on the client going away. With `caught_up`, stops after the
/// write that carried the frame that set it.
async fn write_frames(
    socket: &mut TcpStream,
    mut out: Vec<u8>,
    frames: &mut BodyDataStream,
    chunked: bool,
    caught_up: Option<&AtomicBool>,
) -> Result<Written, ConnError> {
    loop {
        if out.is_empty() {
            let next = tokio::select! {
                next = frames.next() => next,
                () = client_gone(socket) => return Ok(Written::Ended),
            };
            if !push_frame(&mut out, next, chunked)? {
                socket.write_all(&out).await.map_err(ConnError::Write)?;
                return Ok(Written::Ended);
            }
        }
        let mut ended = false;
        while out.len() < MAX_BURST {
            let Some(next) = frames.next().now_or_never() else {
                break;
            };
            if !push_frame(&mut out, next, chunked)? {
                ended = true;
                break;
            }
        }
        socket.write_all(&out).await.map_err(ConnError::Write)?;
        if ended {
            return Ok(Written::Ended);
        }
        if caught_up.is_some_and(|flag| flag.load(Ordering::Acquire)) {
            return Ok(Written::CaughtUp);
        }
        // Freed rather than kept: an idle stream holds no buffer.
        out = Vec::new();
    }
}

/// Appends one body frame to `out` (as a chunk when `chunked`), or the end of the body;
/// `false` once the body has ended.
fn push_frame(
    out: &mut Vec<u8>,
    next: Option<Result<Bytes, axum::Error>>,
    chunked: bool,
) -> Result<bool, ConnError> {
    match next {
        Some(Ok(data)) if data.is_empty() => Ok(true),
        Some(Ok(data)) => {
            if chunked {
                out.reserve(data.len() + 12);
                push_chunk_size(out, data.len());
                out.extend_from_slice(&data);
                out.extend_from_slice(b"\r\n");
            } else {
                out.extend_from_slice(&data);
            }
            Ok(true)
        }
        // Closing without the last chunk tells the client the body was cut short.
        Some(Err(e)) => Err(ConnError::Body(e)),
        None => {
            if chunked {
                out.extend_from_slice(b"0\r\n\r\n");
            }
            Ok(false)
        }
    }
}

/// Appends `len` in hex and the CRLF that ends a chunk-size line, with no allocation
/// (this runs once per delivered frame).
fn push_chunk_size(out: &mut Vec<u8>, len: usize) {
    use std::io::Write as _;
    write!(out, "{len:x}\r\n").expect("writing to a Vec cannot fail");
}

/// Resolves when the client closes its side or the connection fails. What it sends
/// meanwhile is read and dropped, into a buffer that lives only for one poll.
async fn client_gone(socket: &mut TcpStream) {
    std::future::poll_fn(|cx| {
        let mut scratch = [0u8; 256];
        // Bounded, so that a client sending without pause cannot hog the worker.
        for _ in 0..16 {
            let mut read = ReadBuf::new(&mut scratch);
            match Pin::new(&mut *socket).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => return Poll::Ready(()),
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
}

/// Serves the connection with hyper, as `axum::serve` did: keep-alive and upgrades,
/// each request carrying the client's address for the connection list.
async fn hyper(
    socket: TcpStream,
    prefix: Vec<u8>,
    remote: SocketAddr,
    app: Router,
    stop: CancellationToken,
) -> Result<(), ConnError> {
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(remote));
        app.clone().oneshot(request)
    });
    let io = hyper_util::rt::TokioIo::new(Replay::new(prefix, socket));
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        // Polled first, so that a request already read is taken in before a shutdown
        // that came meanwhile would close the connection as idle.
        biased;
        served = conn.as_mut() => return served.map_err(ConnError::Hyper),
        () = stop.cancelled() => conn.as_mut().graceful_shutdown(),
    }
    conn.await.map_err(ConnError::Hyper)
}

/// A socket whose first bytes read are the ones already taken from it. Writes go
/// straight through.
pub struct Replay<S> {
    prefix: Vec<u8>,
    read: usize,
    inner: S,
}

impl<S> Replay<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Replay {
            prefix,
            read: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.read < this.prefix.len() {
            let rest = &this.prefix[this.read..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.read += n;
            if this.read == this.prefix.len() {
                // Replayed: the buffer is not needed for the connection's life.
                this.prefix = Vec::new();
                this.read = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_are_written_as_hex() {
        for len in [0usize, 1, 9, 10, 15, 16, 255, 256, 4095, 65_536, 1 << 40] {
            let mut out = b"x".to_vec();
            push_chunk_size(&mut out, len);
            assert_eq!(out, format!("x{len:x}\r\n").into_bytes(), "{len}");
        }
    }

    #[test]
    fn stream_paths_are_matched_by_shape() {
        for path in [
            "/api/v1/events/stream",
            "/api/v1/connections/c-1/stream",
            "/api/v1/groups/g%20x/stream",
        ] {
            assert!(is_stream_path(path), "{path}");
        }
        for path in [
            "/api/v1/events",
            "/api/v1/events/stream/",
            "/api/v1/connections//stream",
            "/api/v1/groups/g/pull",
            "/api/v1/groups/a/b/stream",
            "/api/v1/livestore",
            "/healthz",
        ] {
            assert!(!is_stream_path(path), "{path}");
        }
    }

    /// What an idle lean stream's task holds, besides the body and the socket's
    /// registration: printed so that a change that makes it grow is noticed.
    #[tokio::test]
    async fn the_futures_an_idle_stream_holds_stay_small() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _clients = (
            TcpStream::connect(addr).await.unwrap(),
            TcpStream::connect(addr).await.unwrap(),
        );
        let (mut first, remote) = listener.accept().await.unwrap();
        let (second, _) = listener.accept().await.unwrap();
        let (head, body) = response_head(Response::new(Body::empty()));
        let write = std::mem::size_of_val(&write_body(&mut first, head, body));
        let (head, body) = response_head(Response::new(Body::empty()));
        let lean = std::mem::size_of_val(&lean(first, head, body));
        let stop = CancellationToken::new();
        let conn = std::mem::size_of_val(&connection(
            second,
            remote,
            Router::new(),
            stop,
            CatchUpPriority::Idle,
        ));
        println!("task future {conn} B, lean {lean} B, of which write_body {write} B");
        assert!(conn <= 1024 && lean <= 1024, "{conn} {lean}");
    }

    fn remote() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9))
    }

    #[test]
    fn only_plain_http11_gets_without_a_body_go_lean() {
        let lean =
            b"GET /api/v1/events/stream?topic=x HTTP/1.1\r\nHost: a\r\nLast-Event-ID: 3\r\n\r\n";
        let Head::Lean(request) = classify(lean, remote()) else {
            panic!("not lean");
        };
        assert_eq!(request.uri().query(), Some("topic=x"));
        assert_eq!(request.headers()["last-event-id"], "3");
        assert!(
            request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .is_some()
        );
        assert!(matches!(
            classify(b"GET /api/v1/events/stream HTTP/1.1\r\nHost:", remote()),
            Head::Partial
        ));
        for other in [
            &b"GET /api/v1/events/stream HTTP/1.0\r\n\r\n"[..],
            b"POST /api/v1/events/stream HTTP/1.1\r\n\r\n",
            b"GET /api/v1/events/history HTTP/1.1\r\n\r\n",
            b"GET /api/v1/events/stream HTTP/1.1\r\nContent-Length: 2\r\n\r\nab",
            b"GET /api/v1/events/stream HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /api/v1/events/stream HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            b"GET /api/v1/events/stream HTTP/1.1\r\nbad header\r\n\r\n",
        ] {
            assert!(
                matches!(classify(other, remote()), Head::Other),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }
}
