//! What an operator can tune about the HTTP server.

use std::time::Duration;

use tributary_core::{RetentionOptions, TailConfig};

/// Limits and timings of the server. Every field has a default suited to one node.
#[derive(Clone, Debug)]
pub struct Config {
    /// Largest single event accepted, as [`tributary_core::NewEvent::size_bytes`] counts it.
    pub max_event_bytes: usize,
    /// Largest request body accepted, checked before and while reading it.
    pub max_request_bytes: usize,
    /// Most events one publish request may carry.
    pub max_batch_events: usize,
    /// How often an idle SSE stream gets a comment, so proxies keep it open and clients
    /// notice a dead connection. A stream may ask for its own with `heartbeat=`.
    pub heartbeat: Duration,
    /// How long a graceful shutdown waits for requests in flight before giving up.
    pub shutdown_timeout: Duration,
    /// The shared in-memory tail that live streams read from.
    pub tail: TailConfig,
    /// Open SSE event streams at most (and registered streams at most); past it, a new
    /// stream is refused with 503 and `Retry-After`.
    pub max_connections: usize,
    /// How often topic retention runs, and how many events it removes per write.
    pub retention: RetentionOptions,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_event_bytes: 1024 * 1024,
            max_request_bytes: 8 * 1024 * 1024,
            max_batch_events: 10_000,
            heartbeat: Duration::from_secs(15),
            shutdown_timeout: Duration::from_secs(10),
            tail: TailConfig::default(),
            max_connections: 10_000,
            retention: RetentionOptions::default(),
        }
    }
}
