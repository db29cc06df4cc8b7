//! [`Tail`]: the shared in-memory window of the newest events.
//!
//! One feeder task follows the log's head and appends each new event, encoded once, to a
//! bounded ring. Live subscribers are cursors into that ring: they clone `Arc`s of the
//! entries they want and never get a queue of their own, so a slow subscriber costs
//! nothing but its cursor. A subscriber whose cursor has fallen out of the ring reads the
//! log instead (see [`crate::stream`]).
//!
//! The feeder learns of new events only through [`Log::head`] and reads them back in
//! position order, so the tail works the same whether this process or another node wrote
//! them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use tokio::sync::watch;

use crate::encode::Encoded;
use crate::event::Position;
use crate::filter::Filter;
use crate::log::{Log, ReadQuery};

/// How much the tail keeps; whichever bound is hit first evicts the oldest entries.
#[derive(Clone, Debug)]
pub struct TailConfig {
    pub max_events: usize,
    pub max_bytes: usize,
    /// Events the feeder reads from the log per query.
    pub read_batch: usize,
}

impl Default for TailConfig {
    fn default() -> Self {
        TailConfig {
            max_events: 100_000,
            max_bytes: 64 * 1024 * 1024,
            read_batch: 1024,
        }
    }
}

struct Ring {
    entries: VecDeque<Arc<Encoded>>,
    /// Position of `entries[0]` (or of the next entry when empty).
    first: Position,
    bytes: usize,
}

pub struct Tail {
    log: Arc<dyn Log>,
    ring: RwLock<Ring>,
    /// The newest position in the ring; subscribers wait on it.
    head: watch::Sender<Position>,
    closed: AtomicBool,
    config: TailConfig,
}

impl Tail {
    /// Creates the tail at the log's current head and starts its feeder task.
    pub fn spawn(log: Arc<dyn Log>, config: TailConfig) -> Arc<Tail> {
        let mut log_head = log.head();
        let start = *log_head.borrow_and_update();
        let tail = Arc::new(Tail {
            log,
            ring: RwLock::new(Ring {
                entries: VecDeque::new(),
                first: start + 1,
                bytes: 0,
            }),
            head: watch::Sender::new(start),
            closed: AtomicBool::new(false),
            config,
        });
        tokio::spawn(feed(Arc::downgrade(&tail), log_head));
        tail
    }

    pub fn log(&self) -> &Arc<dyn Log> {
        &self.log
    }

    /// The newest position the tail holds, and every later one.
    pub fn head(&self) -> watch::Receiver<Position> {
        self.head.subscribe()
    }

    /// Ends every live stream on this tail (graceful shutdown) and stops the feeder.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        // Wake every waiting subscriber so it sees the flag.
        self.head.send_modify(|_| {});
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// The entries with `after < position <= up_to` that match `filter`, at most `limit`,
    /// and the last position scanned (the caller's new cursor). `None` when `after + 1`
    /// has already been evicted: the caller must read the log.
    pub fn collect(
        &self,
        after: Position,
        up_to: Position,
        filter: &Filter,
        limit: usize,
    ) -> Option<(Vec<Arc<Encoded>>, Position)> {
        let ring = self.ring.read();
        if after + 1 < ring.first {
            return None;
        }
        let start = (after + 1 - ring.first) as usize;
        let end = (up_to + 1).saturating_sub(ring.first) as usize;
        let end = end.min(ring.entries.len());
        let mut out = Vec::new();
        let mut scanned = after;
        for entry in ring.entries.range(start.min(end)..end) {
            scanned = entry.event.position;
            if filter.is_all() || filter.matches(&entry.event) {
                out.push(Arc::clone(entry));
                if out.len() >= limit {
                    break;
                }
            }
        }
        Some((out, scanned))
    }

    /// Events and bytes the ring holds now.
    pub fn len(&self) -> (usize, usize) {
        let ring = self.ring.read();
        (ring.entries.len(), ring.bytes)
    }

    /// Appends entries that continue the ring and returns the new head. An entry that does
    /// not continue it stops the push: a log that hands out positions out of order breaks
    /// the one promise the tail relies on, and serving a gap would be worse than waiting.
    fn push(&self, batch: Vec<Arc<Encoded>>) -> Position {
        let head = {
            let mut ring = self.ring.write();
            for entry in batch {
                let expected = ring.first + ring.entries.len() as Position;
                if entry.event.position != expected {
                    tracing::error!(
                        got = entry.event.position,
                        expected,
                        "log returned a position out of order; the tail re-reads"
                    );
                    break;
                }
                ring.bytes += entry.weight();
                ring.entries.push_back(entry);
            }
            while ring.entries.len() > self.config.max_events
                || (ring.bytes > self.config.max_bytes && ring.entries.len() > 1)
            {
                let old = ring.entries.pop_front().expect("ring is not empty");
                ring.bytes -= old.weight();
                ring.first += 1;
            }
            ring.first + ring.entries.len() as Position - 1
        };
        self.head.send_if_modified(|h| {
            let moved = *h != head;
            *h = head;
            moved
        });
        head
    }
}

async fn feed(tail: std::sync::Weak<Tail>, mut log_head: watch::Receiver<Position>) {
    let all = Filter::all();
    loop {
        let target = *log_head.borrow_and_update();
        let Some(t) = tail.upgrade() else { return };
        if t.is_closed() {
            return;
        }
        let mut at = *t.head.borrow();
        while at < target {
            let query = ReadQuery {
                after: at,
                up_to: target,
                filter: &all,
                limit: t.config.read_batch,
            };
            match t.log.read(query).await {
                Ok(page) if !page.is_empty() => {
                    let encoded = page
                        .into_iter()
                        .map(|e| Arc::new(Encoded::new(e)))
                        .collect();
                    let pushed_to = t.push(encoded);
                    if pushed_to == at {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    at = pushed_to;
                }
                Ok(_) => {
                    // The head said these positions are readable; they must appear.
                    tracing::error!(at, target, "log head is ahead of what it returns");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "tail could not read the log; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            if t.is_closed() {
                return;
            }
        }
        drop(t);
        if log_head.changed().await.is_err() {
            return;
        }
    }
}
