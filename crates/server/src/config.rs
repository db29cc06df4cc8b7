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
    /// The scheduling class of the threads that send history to streams catching up.
    pub catch_up_priority: CatchUpPriority,
}

/// How the kernel weighs the catch-up threads against the rest of the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CatchUpPriority {
    /// Linux `SCHED_IDLE`: they run on what the rest of the server leaves, and a live
    /// delivery or a publish that wakes up takes the core from them at once. Under a
    /// load that keeps every core busy, catching up waits.
    #[default]
    Idle,
    /// The same class as every other thread: catching up and live work share the cores
    /// evenly, and live deliveries wait their turn (S5 in docs/benchmarks.md).
    Normal,
}

/// A catch-up priority other than `idle` or `normal`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown catch-up priority {0:?} (expected \"idle\" or \"normal\")")]
pub struct ParseCatchUpPriorityError(pub String);

impl std::str::FromStr for CatchUpPriority {
    type Err = ParseCatchUpPriorityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("idle") {
            Ok(CatchUpPriority::Idle)
        } else if s.eq_ignore_ascii_case("normal") {
            Ok(CatchUpPriority::Normal)
        } else {
            Err(ParseCatchUpPriorityError(s.to_owned()))
        }
    }
}

impl std::fmt::Display for CatchUpPriority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CatchUpPriority::Idle => "idle",
            CatchUpPriority::Normal => "normal",
        })
    }
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
            catch_up_priority: CatchUpPriority::default(),
        }
    }
}
