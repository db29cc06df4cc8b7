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
//! them. Every position up to the head is committed, so a position the read skips was
//! removed (a topic deleted, retention) before the feeder got to it: its slot in the ring
//! stays empty rather than holding the tail back.

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
    /// One slot per position; `None` for a position that was removed before it was read.
    entries: VecDeque<Option<Arc<Encoded>>>,
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
        let start = start.min(end);
        for (i, slot) in ring.entries.range(start..end).enumerate() {
            scanned = ring.first + (start + i) as Position;
            let Some(entry) = slot else { continue };
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

    /// Appends one page the feeder read, which scanned every position up to `scanned_to`,
    /// and returns the new head. Positions the page skips were removed: their slots stay
    /// empty. An entry at or below the ring's head stops the push: a log that hands out
    /// positions out of order breaks the one promise the tail relies on, and serving a
    /// gap would be worse than waiting.
    fn push(&self, batch: Vec<Arc<Encoded>>, scanned_to: Position) -> Position {
        let head = {
            let mut ring = self.ring.write();
            let mut complete = true;
            for entry in batch {
                let next = ring.first + ring.entries.len() as Position;
                if entry.event.position < next {
                    tracing::error!(
                        got = entry.event.position,
                        expected = next,
                        "log returned a position out of order; the tail re-reads"
                    );
                    complete = false;
                    break;
                }
                self.skip_to(&mut ring, entry.event.position);
                ring.bytes += entry.weight();
                ring.entries.push_back(Some(entry));
            }
            if complete {
                self.skip_to(&mut ring, scanned_to + 1);
            }
            while ring.entries.len() > self.config.max_events
                || (ring.bytes > self.config.max_bytes && ring.entries.len() > 1)
            {
                let old = ring.entries.pop_front().expect("ring is not empty");
                ring.bytes -= old.map_or(0, |e| e.weight());
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

    /// Leaves empty slots up to (not including) `position`. A hole wider than the ring
    /// empties it and starts it over at `position`.
    fn skip_to(&self, ring: &mut Ring, position: Position) {
        let next = ring.first + ring.entries.len() as Position;
        let Some(missing) = position.checked_sub(next).filter(|&m| m > 0) else {
            return;
        };
        if missing as usize >= self.config.max_events {
            ring.entries.clear();
            ring.bytes = 0;
            ring.first = position;
        } else {
            ring.entries.extend((0..missing).map(|_| None));
        }
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
                Ok(page) => {
                    // A short page scanned everything up to the target; a full one up to
                    // its last event.
                    let scanned_to = match page.last() {
                        Some(last) if page.len() >= t.config.read_batch => last.position,
                        _ => target,
                    };
                    let encoded = page
                        .into_iter()
                        .map(|e| Arc::new(Encoded::new(e)))
                        .collect();
                    let pushed_to = t.push(encoded, scanned_to);
                    if pushed_to == at {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    at = pushed_to;
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
