//! Every live SSE event stream, and the streams registered ahead of time.
//!
//! A stream opened on `/api/v1/events/stream` is listed while it is open. A registered
//! one is made with `POST /api/v1/connections` (filter and options kept here), opened on
//! its own URL, and stays listed, `disconnected`, between reconnects until it is
//! deleted. Deleting one that is open ends its stream; reopening a registered stream
//! that is still open ends the older one (that is usually a client reconnecting over a
//! half-dead TCP connection).
//!
//! Consumer-group member streams are listed too (kind `group`), under the same cap.
//!
//! The cap on open streams is checked when a stream opens; a full server answers 503
//! with `Retry-After`, before any byte of the stream is sent.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tributary_core::{Filter, Timestamp};

/// Where a stream stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Registered, never opened yet.
    Connecting,
    Connected,
    /// Was open, closed by the client, by a delete, or by shutdown.
    Disconnected,
    /// Ended by a failure of ours (the log could not be read).
    Error,
}

/// What a stream carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StreamKind {
    /// The log's events (`/api/v1/events/stream`, or a registered stream).
    Events,
    /// A consumer group's deliveries to one member.
    Group { group: String, member: String },
}

/// Options a stream is opened with (a registered one keeps them between reconnects).
#[derive(Clone, Debug)]
pub struct StreamSettings {
    pub kind: StreamKind,
    pub filter: Filter,
    pub heartbeat: Duration,
    pub batch_size: usize,
}

pub struct Connection {
    pub id: String,
    pub registered: bool,
    pub settings: StreamSettings,
    pub created_at: Timestamp,
    delivered: AtomicU64,
    state: Mutex<State>,
}

struct State {
    status: Status,
    remote: Option<SocketAddr>,
    connected_at: Option<Timestamp>,
    last_event_at: Option<Timestamp>,
    error: Option<String>,
    /// Ends the open stream; `None` while none is open.
    cancel: Option<CancellationToken>,
    /// Counts opens, so that a stream can tell whether it is still the open one.
    opens: u64,
}

/// A connection as `GET /api/v1/connections` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ConnectionInfo {
    pub id: String,
    #[serde(flatten)]
    pub kind: StreamKind,
    pub registered: bool,
    pub status: Status,
    pub filter: Filter,
    pub heartbeat_secs: u64,
    pub batch_size: usize,
    pub remote_addr: Option<String>,
    pub created_at: Timestamp,
    pub connected_at: Option<Timestamp>,
    pub last_event_at: Option<Timestamp>,
    pub events_delivered: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("the server has {0} open streams, its limit; try again shortly")]
    Full(usize),
    #[error("{0} streams are registered, the limit; delete some first")]
    TooManyRegistered(usize),
    #[error("no connection {0:?}")]
    NotFound(String),
}

/// The registry. Memory is bounded by the cap: open streams by `max_open`, registered
/// ones by the same number.
pub struct Connections {
    max_open: usize,
    next_id: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    all: HashMap<String, Arc<Connection>>,
    open: usize,
    registered: usize,
}

impl Connections {
    pub fn new(max_open: usize) -> Self {
        Connections {
            max_open,
            next_id: AtomicU64::new(1),
            inner: Mutex::default(),
        }
    }

    fn new_connection(&self, registered: bool, settings: StreamSettings) -> Arc<Connection> {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Registered ids are handed to clients and put in URLs, so they should not be
        // guessable from each other; open-stream ids only need to be unique.
        let id = if registered {
            format!("c-{}", tributary_core::event::new_event_id())
        } else {
            format!("s-{n}")
        };
        Arc::new(Connection {
            id,
            registered,
            settings,
            created_at: Timestamp::now(),
            delivered: AtomicU64::new(0),
            state: Mutex::new(State {
                status: Status::Connecting,
                remote: None,
                connected_at: None,
                last_event_at: None,
                error: None,
                cancel: None,
                opens: 0,
            }),
        })
    }

    /// Registers a stream to be opened later on its own URL.
    pub fn register(&self, settings: StreamSettings) -> Result<Arc<Connection>, ConnectionError> {
        let mut inner = self.inner.lock();
        if inner.registered >= self.max_open {
            return Err(ConnectionError::TooManyRegistered(self.max_open));
        }
        let conn = self.new_connection(true, settings);
        inner.registered += 1;
        inner.all.insert(conn.id.clone(), Arc::clone(&conn));
        Ok(conn)
    }

    pub fn get(&self, id: &str) -> Result<Arc<Connection>, ConnectionError> {
        self.inner
            .lock()
            .all
            .get(id)
            .cloned()
            .ok_or_else(|| ConnectionError::NotFound(id.to_owned()))
    }

    /// Opens a stream: a registered one (`Some`) or a new unlisted one made from
    /// `settings`. Refused when `max_open` streams are open.
    pub fn open(
        self: &Arc<Self>,
        registered: Option<Arc<Connection>>,
        settings: StreamSettings,
        remote: Option<SocketAddr>,
    ) -> Result<OpenStream, ConnectionError> {
        let mut inner = self.inner.lock();
        let conn = match registered {
            Some(conn) => {
                // Reopened while open: the older stream ends and this one takes over,
                // keeping its place under the cap.
                let mut st = conn.state.lock();
                if let Some(old) = st.cancel.take() {
                    old.cancel();
                    inner.open -= 1;
                }
                drop(st);
                conn
            }
            None => self.new_connection(false, settings),
        };
        if inner.open >= self.max_open {
            return Err(ConnectionError::Full(self.max_open));
        }
        inner.open += 1;
        if !conn.registered {
            inner.all.insert(conn.id.clone(), Arc::clone(&conn));
        }
        let cancel = CancellationToken::new();
        let serial = {
            let mut st = conn.state.lock();
            st.opens += 1;
            st.status = Status::Connected;
            st.remote = remote;
            st.connected_at = Some(Timestamp::now());
            st.error = None;
            st.cancel = Some(cancel.clone());
            st.opens
        };
        Ok(OpenStream {
            connections: Arc::clone(self),
            conn,
            cancel,
            serial,
        })
    }

    /// Ends a connection's stream if open, and forgets it.
    pub fn delete(&self, id: &str) -> Result<(), ConnectionError> {
        let mut inner = self.inner.lock();
        let conn = inner
            .all
            .remove(id)
            .ok_or_else(|| ConnectionError::NotFound(id.to_owned()))?;
        if conn.registered {
            inner.registered -= 1;
        }
        if let Some(cancel) = conn.state.lock().cancel.take() {
            cancel.cancel();
            inner.open -= 1;
        }
        Ok(())
    }

    /// Every connection, oldest first.
    pub fn list(&self) -> Vec<ConnectionInfo> {
        let conns: Vec<Arc<Connection>> = self.inner.lock().all.values().cloned().collect();
        let mut list: Vec<ConnectionInfo> = conns.iter().map(|c| c.info()).collect();
        list.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        list
    }

    pub fn open_count(&self) -> usize {
        self.inner.lock().open
    }
}

impl Connection {
    pub fn info(&self) -> ConnectionInfo {
        let st = self.state.lock();
        ConnectionInfo {
            id: self.id.clone(),
            kind: self.settings.kind.clone(),
            registered: self.registered,
            status: st.status,
            filter: self.settings.filter.clone(),
            heartbeat_secs: self.settings.heartbeat.as_secs(),
            batch_size: self.settings.batch_size,
            remote_addr: st.remote.map(|a| a.to_string()),
            created_at: self.created_at,
            connected_at: st.connected_at,
            last_event_at: st.last_event_at,
            events_delivered: self.delivered.load(Ordering::Relaxed),
            error: st.error.clone(),
        }
    }
}

/// One open stream. Dropping it (the response body is dropped when the client goes)
/// marks the connection disconnected and frees its place under the cap.
pub struct OpenStream {
    connections: Arc<Connections>,
    conn: Arc<Connection>,
    cancel: CancellationToken,
    serial: u64,
}

impl OpenStream {
    /// Cancelled when the stream must end (deleted, or replaced by a reopen).
    pub fn cancelled(&self) -> CancellationToken {
        self.cancel.clone()
    }

    pub fn record(&self, events: u64) {
        if events > 0 {
            self.conn.delivered.fetch_add(events, Ordering::Relaxed);
            self.conn.state.lock().last_event_at = Some(Timestamp::now());
        }
    }

    /// The stream ends because of a failure of ours.
    pub fn fail(&self, error: String) {
        self.conn.state.lock().error = Some(error);
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        let mut inner = self.connections.inner.lock();
        let mut st = self.conn.state.lock();
        // Only if this stream is still the connection's: a reopen or a delete has
        // already settled the count otherwise.
        let current = st.cancel.is_some() && st.opens == self.serial;
        if current {
            st.cancel = None;
            inner.open -= 1;
            st.status = if st.error.is_some() {
                Status::Error
            } else {
                Status::Disconnected
            };
        } else if st.cancel.is_none() {
            st.status = Status::Disconnected;
        }
        drop(st);
        if !self.conn.registered {
            inner.all.remove(&self.conn.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> StreamSettings {
        StreamSettings {
            kind: StreamKind::Events,
            filter: Filter::all(),
            heartbeat: Duration::from_secs(15),
            batch_size: 100,
        }
    }

    #[test]
    fn the_cap_counts_open_streams_and_frees_on_drop() {
        let c = Arc::new(Connections::new(2));
        let a = c.open(None, settings(), None).unwrap();
        let b = c.open(None, settings(), None).unwrap();
        assert!(matches!(
            c.open(None, settings(), None),
            Err(ConnectionError::Full(2))
        ));
        assert_eq!(c.list().len(), 2);
        drop(a);
        assert_eq!((c.open_count(), c.list().len()), (1, 1));
        let _again = c.open(None, settings(), None).unwrap();
        drop(b);
        assert_eq!(c.open_count(), 1);
    }

    #[test]
    fn a_registered_stream_stays_listed_and_a_reopen_replaces_the_open_one() {
        let c = Arc::new(Connections::new(5));
        let conn = c.register(settings()).unwrap();
        assert_eq!(conn.info().status, Status::Connecting);
        let first = c.open(Some(Arc::clone(&conn)), settings(), None).unwrap();
        first.record(3);
        assert_eq!(conn.info().status, Status::Connected);
        assert_eq!(conn.info().events_delivered, 3);
        let second = c.open(Some(Arc::clone(&conn)), settings(), None).unwrap();
        assert!(first.cancelled().is_cancelled());
        drop(first);
        assert_eq!((c.open_count(), conn.info().status), (1, Status::Connected));
        drop(second);
        assert_eq!(
            (c.open_count(), conn.info().status),
            (0, Status::Disconnected)
        );
        assert_eq!(c.list().len(), 1);
        c.delete(&conn.id).unwrap();
        assert!(c.list().is_empty());
        assert!(matches!(
            c.delete(&conn.id),
            Err(ConnectionError::NotFound(_))
        ));
    }

    #[test]
    fn delete_ends_an_open_stream() {
        let c = Arc::new(Connections::new(5));
        let open = c.open(None, settings(), None).unwrap();
        let id = c.list()[0].id.clone();
        c.delete(&id).unwrap();
        assert!(open.cancelled().is_cancelled());
        assert_eq!(c.open_count(), 0);
        drop(open);
        assert_eq!(c.open_count(), 0);
    }
}
