//! [`Subscription`]: a stream of events over SSE that reconnects and resumes by itself.
//!
//! The subscription keeps a cursor: the position of the last event it yielded, or the
//! position of a later `caught-up` / `end` marker (everything matching up to that point
//! has been delivered). Each reconnect sends it as `Last-Event-ID` (and as `since`), and
//! any event at or before it is dropped, so the caller sees each event exactly once, in
//! position order, across any number of reconnects.
//!
//! Retention may remove events before the subscription gets to them (a topic's
//! `max_age` or `max_events`, or a deleted topic). The server then says so, and the
//! subscription yields [`SubscriptionEvent::Truncated`] before the events that are left:
//! a gap is never silent. The marker does not move the cursor (other topics followed may
//! still hold events in that range), and one already yielded is not yielded again when a
//! reconnect makes the server repeat it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, FusedStream, Stream, StreamExt};
use reqwest::StatusCode;
use reqwest::header::ACCEPT;
use serde::Deserialize;
use tributary_core::{Event, Filter, Position};

use crate::client::{Client, filter_params, is_event_stream};
use crate::error::ClientError;
use crate::sse::{SseEvent, SseParser};

/// How long to wait before reconnecting: `initial` after a connection that delivered
/// something, then doubling after each failed attempt, up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay (default 100 ms).
    pub initial: Duration,
    /// The longest delay (default 5 s).
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

/// What a [`Subscription`] follows, and how.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Which events to receive.
    pub filter: Filter,
    /// Start after this position (`Some(0)`: from the first event). `None` starts at the
    /// server's head when the subscription connects (`since=now`): only events stored
    /// from then on.
    pub since: Option<Position>,
    /// End the subscription once this position has been passed.
    pub until: Option<Position>,
    /// End the subscription once the history up to the head at connect time has been
    /// delivered, instead of following live events.
    pub snapshot_only: bool,
    /// Ask the server for a heartbeat at this interval (sent in whole seconds). When set,
    /// a connection silent for three intervals is taken as dead and replaced.
    pub heartbeat: Option<Duration>,
    /// Delays between reconnect attempts.
    pub backoff: Backoff,
}

/// One item of a [`Subscription`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscriptionEvent {
    /// An event, in position order, each exactly once.
    Event(Event),
    /// The server has sent every stored match up to `position`; live events follow.
    /// Sent again after a reconnect once the subscription is live again; `position`
    /// never goes backwards.
    CaughtUp {
        /// The log position the history part reached.
        position: Position,
    },
    /// Retention removed events of the followed topics after position `after`, up to
    /// `pruned_through`, before this subscription got them: some matching events in that
    /// range may never be yielded. The subscription goes on with the events that are
    /// left; [`Subscription::last_position`] is not moved by it.
    Truncated {
        /// The subscription's position when the server noticed the removal.
        after: Position,
        /// The highest position removed from the followed topics.
        pruned_through: Position,
    },
}

/// A live stream of events: a [`Stream`] of `Result<SubscriptionEvent, ClientError>`.
///
/// Besides the events it yields [`SubscriptionEvent::CaughtUp`] where history ends and
/// [`SubscriptionEvent::Truncated`] where retention removed events before they could be
/// delivered; match with a `_` arm, as newer versions may add kinds.
///
/// It connects when first polled, reconnects after any network error, server restart
/// or close other than the server's deliberate `end` (waiting per
/// [`SubscribeOptions::backoff`]), and resumes after the last event it yielded. It ends
/// (`None`) when the server ends the stream (`until` reached, or `snapshot_only`). An
/// `Err` item is always the last one: a 4xx answer on connect (a bad filter, say), or a
/// stream it cannot parse. Connection problems are never returned, only logged (with
/// `tracing`) and retried, forever.
pub struct Subscription {
    inner: BoxStream<'static, Result<SubscriptionEvent, ClientError>>,
    cursor: Arc<Mutex<Option<Position>>>,
    done: bool,
}

impl Subscription {
    pub(crate) fn new(client: Client, options: SubscribeOptions) -> Subscription {
        let cursor = Arc::new(Mutex::new(options.since));
        let driver = Driver {
            client,
            next_delay: options.backoff.initial,
            options,
            cursor: Arc::clone(&cursor),
            conn: None,
            wait: None,
            connected_before: false,
            told_through: 0,
            done: false,
        };
        let inner = futures::stream::unfold(driver, |mut driver| async move {
            let item = driver.next().await?;
            Some((item, driver))
        })
        .boxed();
        Subscription {
            inner,
            cursor,
            done: false,
        }
    }

    /// The position everything up to which has been delivered: the last event yielded,
    /// or a later `caught-up`/`end` marker. Starts as [`SubscribeOptions::since`]; `None`
    /// until then if that was `None`. A new subscription with `since` set to this value
    /// continues exactly where this one stopped.
    pub fn last_position(&self) -> Option<Position> {
        *self.cursor.lock().expect("cursor lock is never poisoned")
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("last_position", &self.last_position())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Stream for Subscription {
    type Item = Result<SubscriptionEvent, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let poll = self.inner.poll_next_unpin(cx);
        if let Poll::Ready(None) = poll {
            self.done = true;
        }
        poll
    }
}

impl FusedStream for Subscription {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

/// One open SSE response.
struct Connection {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    parser: SseParser,
    pending: VecDeque<SseEvent>,
    /// It delivered at least one event or marker, so the server was healthy.
    productive: bool,
}

enum ConnectError {
    Retry(String),
    Fatal(ClientError),
}

/// What to do with one parsed SSE event.
enum Step {
    Yield(SubscriptionEvent),
    Skip,
    End,
}

/// The state machine behind a [`Subscription`].
struct Driver {
    client: Client,
    options: SubscribeOptions,
    cursor: Arc<Mutex<Option<Position>>>,
    conn: Option<Connection>,
    /// Sleep this long before the next connect.
    wait: Option<Duration>,
    /// The delay after the next unproductive attempt.
    next_delay: Duration,
    connected_before: bool,
    /// The highest `pruned_through` yielded in a [`SubscriptionEvent::Truncated`]: the
    /// server tells each connection afresh, and a removal is reported once.
    told_through: Position,
    done: bool,
}

#[derive(Deserialize)]
struct Marker {
    position: Position,
}

#[derive(Deserialize)]
struct TruncatedMarker {
    after: Position,
    pruned_through: Position,
}

impl Driver {
    fn cursor(&self) -> Option<Position> {
        *self.cursor.lock().expect("cursor lock is never poisoned")
    }

    fn advance(&self, position: Position) {
        let mut cursor = self.cursor.lock().expect("cursor lock is never poisoned");
        if cursor.is_none_or(|c| position > c) {
            *cursor = Some(position);
        }
    }

    async fn next(&mut self) -> Option<Result<SubscriptionEvent, ClientError>> {
        loop {
            if self.done {
                return None;
            }
            if self.conn.is_none() {
                if let Some(wait) = self.wait.take() {
                    tokio::time::sleep(wait).await;
                }
                match self.connect().await {
                    Ok(conn) => self.conn = Some(conn),
                    Err(ConnectError::Retry(reason)) => {
                        self.schedule_reconnect(false);
                        tracing::warn!(
                            %reason,
                            retry_in = ?self.wait.unwrap_or_default(),
                            "could not connect to the event stream; retrying"
                        );
                        continue;
                    }
                    Err(ConnectError::Fatal(e)) => return Some(Err(self.fail(e))),
                }
            }
            let conn = self.conn.as_mut().expect("connected above");
            if let Some(frame) = conn.pending.pop_front() {
                match self.handle(frame) {
                    Ok(Step::Yield(item)) => return Some(Ok(item)),
                    Ok(Step::Skip) => continue,
                    Ok(Step::End) => {
                        self.done = true;
                        self.conn = None;
                        return None;
                    }
                    Err(e) => return Some(Err(self.fail(e))),
                }
            }
            let idle = self
                .options
                .heartbeat
                .map(|h| h.max(Duration::from_secs(1)) * 3);
            let read = match idle {
                Some(idle) => tokio::time::timeout(idle, conn.body.next())
                    .await
                    .map_err(|_| format!("no data or heartbeat for {idle:?}")),
                None => Ok(conn.body.next().await),
            };
            match read {
                Ok(Some(Ok(chunk))) => match conn.parser.feed(&chunk) {
                    Ok(frames) => conn.pending.extend(frames),
                    Err(e) => {
                        let e = ClientError::Decode {
                            context: e.to_string(),
                            source: None,
                        };
                        return Some(Err(self.fail(e)));
                    }
                },
                Ok(Some(Err(e))) => self.lost(&ErrorChain(&e).to_string()),
                Ok(None) => self.lost("the server closed the stream"),
                Err(silence) => self.lost(&silence),
            }
        }
    }

    /// Ends the subscription with a final error.
    fn fail(&mut self, e: ClientError) -> ClientError {
        self.done = true;
        self.conn = None;
        e
    }

    fn lost(&mut self, reason: &str) {
        let productive = self.conn.take().is_some_and(|c| c.productive);
        self.schedule_reconnect(productive);
        tracing::warn!(
            %reason,
            last_position = ?self.cursor(),
            retry_in = ?self.wait.unwrap_or_default(),
            "event stream interrupted; reconnecting"
        );
    }

    fn schedule_reconnect(&mut self, productive: bool) {
        let backoff = self.options.backoff;
        if productive {
            self.next_delay = backoff.initial;
        }
        self.wait = Some(self.next_delay);
        self.next_delay = (self.next_delay * 2).min(backoff.max);
    }

    async fn connect(&mut self) -> Result<Connection, ConnectError> {
        let cursor = self.cursor();
        let mut params = filter_params(&self.options.filter);
        // With no cursor yet, ask for the head explicitly: the server's own default is
        // the first event.
        let since = cursor.map_or_else(|| "now".to_owned(), |c| c.to_string());
        params.push(("since", since));
        if let Some(until) = self.options.until {
            params.push(("until", until.to_string()));
        }
        if self.options.snapshot_only {
            params.push(("snapshot_only", "true".to_owned()));
        }
        if let Some(heartbeat) = self.options.heartbeat {
            params.push(("heartbeat", heartbeat.as_secs().max(1).to_string()));
        }
        let mut req = self
            .client
            .http()
            .get(self.client.endpoint("api/v1/events/stream"))
            .query(&params)
            .header(ACCEPT, "text/event-stream");
        if self.connected_before
            && let Some(position) = cursor
        {
            req = req.header("Last-Event-ID", position.to_string());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ConnectError::Retry(format!("{}", ErrorChain(&e))))?;
        let status = resp.status();
        if status.is_success() {
            if !is_event_stream(&resp) {
                return Err(ConnectError::Fatal(ClientError::Decode {
                    context: "the stream endpoint did not answer text/event-stream".to_owned(),
                    source: None,
                }));
            }
            self.connected_before = true;
            tracing::debug!(since = ?cursor, "event stream connected");
            return Ok(Connection {
                body: resp.bytes_stream().boxed(),
                parser: SseParser::new(),
                pending: VecDeque::new(),
                productive: false,
            });
        }
        // A refusal is final; anything that may pass (server errors, overload) is retried.
        let transient = status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT;
        let body = resp.bytes().await.unwrap_or_default();
        let error = ClientError::from_response(status, &body);
        if transient {
            Err(ConnectError::Retry(error.to_string()))
        } else {
            Err(ConnectError::Fatal(error))
        }
    }

    fn handle(&mut self, frame: SseEvent) -> Result<Step, ClientError> {
        let conn = self.conn.as_mut().expect("frames come from a connection");
        match frame.event.as_str() {
            "message" => {
                conn.productive = true;
                let event: Event = serde_json::from_str(&frame.data)
                    .map_err(|e| ClientError::decode("a stream event is not an event", e))?;
                if self.cursor().is_some_and(|c| event.position <= c) {
                    // Already delivered before a reconnect.
                    return Ok(Step::Skip);
                }
                self.advance(event.position);
                Ok(Step::Yield(SubscriptionEvent::Event(event)))
            }
            "caught-up" => {
                conn.productive = true;
                let marker: Marker = serde_json::from_str(&frame.data)
                    .map_err(|e| ClientError::decode("the caught-up marker is not valid", e))?;
                self.advance(marker.position);
                let position = self.cursor().unwrap_or(marker.position);
                Ok(Step::Yield(SubscriptionEvent::CaughtUp { position }))
            }
            "truncated" => {
                conn.productive = true;
                let marker: TruncatedMarker = serde_json::from_str(&frame.data)
                    .map_err(|e| ClientError::decode("the truncated marker is not valid", e))?;
                if marker.pruned_through <= self.told_through {
                    // Said already, on an earlier connection.
                    return Ok(Step::Skip);
                }
                self.told_through = marker.pruned_through;
                Ok(Step::Yield(SubscriptionEvent::Truncated {
                    after: marker.after,
                    pruned_through: marker.pruned_through,
                }))
            }
            "end" => {
                let marker: Marker = serde_json::from_str(&frame.data)
                    .map_err(|e| ClientError::decode("the end marker is not valid", e))?;
                self.advance(marker.position);
                Ok(Step::End)
            }
            // Kinds this client does not know yet are for newer clients.
            _ => Ok(Step::Skip),
        }
    }
}

/// Shows an error with its causes, which reqwest keeps out of its own message.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}
