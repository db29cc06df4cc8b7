//! [`Tail`]: the shared in-memory window of the newest events.
//!
//! One feeder task follows the log's head and appends each new event, encoded once, to a
//! bounded ring. Live subscribers are cursors into that ring: they clone `Arc`s of the
//! entries they want and never get a queue of their own, so a slow subscriber costs
//! nothing but its cursor. A subscriber whose cursor has fallen out of the ring reads the
//! log instead (see [`crate::stream`]).
//!
//! The feeder learns of new events through [`Log::head`]. Events this process committed
//! it takes as the writer hands them over ([`Log::commits`]), built already, when a
//! commit starts right after what the ring holds; anything else (another node's writes,
//! commits it fell behind on) it reads back in position order, so the tail is complete
//! whichever way an event came. Taking commits matters under load: a read-back waits in
//! the same reader pool as every client reading history, and live delivery must not
//! queue behind catch-up.
//!
//! Every position up to the head is committed, so a position the read skips was
//! removed (a topic deleted, retention) before the feeder got to it: its slot in the ring
//! stays empty rather than holding the tail back.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use tokio::sync::{broadcast, watch};

use crate::encode::Encoded;
use crate::event::Position;
use crate::filter::Filter;
use crate::log::{Commit, Log, ReadQuery};

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
        // Subscribed before the feeder starts; a commit made before this is below `start`.
        let commits = tail.log.commits();
        tokio::spawn(feed(Arc::downgrade(&tail), log_head, commits));
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

/// Pushes the handed-over commits that continue the ring exactly, up to the log head
/// `target` the feeder has seen, and returns the ring's head. A commit past `target` is
/// kept in `pending` for the next round (its head move is on the way); one that overlaps
/// or leaves a hole is dropped, since the read-back that follows brings its events.
fn take_commits(
    t: &Tail,
    commits: &mut Option<broadcast::Receiver<Commit>>,
    pending: &mut Option<Commit>,
    target: Position,
) -> Position {
    let mut at = *t.head.borrow();
    let Some(rx) = commits.as_mut() else {
        return at;
    };
    loop {
        let commit = match pending.take() {
            Some(c) => c,
            None => match rx.try_recv() {
                Ok(c) => c,
                Err(broadcast::error::TryRecvError::Empty) => return at,
                // Missed commits are read back.
                Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(broadcast::error::TryRecvError::Closed) => {
                    *commits = None;
                    return at;
                }
            },
        };
        let (Some(first), Some(last)) = (commit.first(), commit.last()) else {
            continue;
        };
        let (first, last) = (first.event.position, last.event.position);
        if last > target {
            *pending = Some(commit);
            return at;
        }
        if first == at + 1 {
            at = t.push(commit.to_vec(), last);
        }
    }
}

async fn feed(
    tail: std::sync::Weak<Tail>,
    mut log_head: watch::Receiver<Position>,
    mut commits: Option<broadcast::Receiver<Commit>>,
) {
    let all = Filter::all();
    let mut pending = None;
    loop {
        let target = *log_head.borrow_and_update();
        let Some(t) = tail.upgrade() else { return };
        if t.is_closed() {
            return;
        }
        let mut at = take_commits(&t, &mut commits, &mut pending, target);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Args, NewEvent};
    use crate::log::COMMITS_CAPACITY;
    use crate::memory::MemoryLog;
    use crate::stream::{EventStream, StreamItem, StreamOptions};
    use crate::topic::Topic;

    fn event(i: usize) -> NewEvent {
        NewEvent::new(
            Topic::new("t").unwrap(),
            format!("n{i}"),
            Args::from_json("{}").unwrap(),
        )
    }

    /// More commits than the hand-over keeps go by before the feeder runs (on this
    /// one-thread runtime the memory log's appends never yield): the feeder has lagged,
    /// and must read back what it missed, so a stream still sees every event once.
    #[tokio::test(flavor = "current_thread")]
    async fn a_feeder_that_lags_the_commits_reads_what_it_missed() {
        let log: Arc<dyn Log> = Arc::new(MemoryLog::new());
        let tail = Tail::spawn(Arc::clone(&log), TailConfig::default());
        let n = COMMITS_CAPACITY * 3;
        for i in 0..n {
            log.append(vec![event(i)]).await.unwrap();
        }
        let mut head = tail.head();
        tokio::time::timeout(
            Duration::from_secs(5),
            head.wait_for(|h| *h == n as Position),
        )
        .await
        .expect("the feeder catches up")
        .unwrap();
        let (entries, _) = tail.len();
        assert_eq!(entries, n, "every position is in the ring");
        let mut stream = EventStream::new(Arc::clone(&tail), StreamOptions::default());
        let mut positions = Vec::new();
        while positions.len() < n {
            let item = tokio::time::timeout(Duration::from_secs(5), stream.next())
                .await
                .expect("the tail catches up")
                .expect("the stream goes on")
                .unwrap();
            if let StreamItem::Event(e) = item {
                positions.push(e.event.position);
            }
        }
        assert_eq!(positions, (1..=n as Position).collect::<Vec<_>>());
    }
}
