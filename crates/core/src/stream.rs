//! [`EventStream`]: what every reader gets, in the library and behind SSE.
//!
//! It reads history from the log in keyset pages up to the head it saw when it started,
//! says [`StreamItem::CaughtUp`], then follows the [`Tail`]. One cursor (the last position
//! scanned) drives both phases, so the switch can neither skip nor repeat an event, and a
//! reader that falls out of the tail's window goes back to keyset pages of the log.
//!
//! After every read of the log the stream asks how far retention has removed events of
//! the topics it follows ([`Log::pruned_through`](crate::Log::pruned_through)). If that is
//! past its cursor, events it should have shown may be gone: it says so with
//! [`StreamItem::Truncated`], once per removal it learns of, and reads on from its cursor
//! (other topics it follows may still hold events in that range, so it never jumps). A
//! stream that starts at 0 ("from the beginning") starts at the oldest events left, with
//! no marker for what was removed before it started: nothing it was promised is missing.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::watch;

use crate::encode::Encoded;
use crate::error::LogError;
use crate::event::Position;
use crate::filter::Filter;
use crate::log::ReadQuery;
use crate::tail::Tail;

pub const DEFAULT_BATCH_SIZE: usize = 256;
pub const MAX_BATCH_SIZE: usize = 1000;

/// What a reader asks for.
#[derive(Clone, Debug)]
pub struct StreamOptions {
    pub filter: Filter,
    /// Start after this position (exclusive); 0 is the beginning.
    pub since: Position,
    /// End after this position (inclusive).
    pub until: Option<Position>,
    /// End once history is read, instead of following live.
    pub snapshot_only: bool,
    /// Events read per log query.
    pub batch_size: usize,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            filter: Filter::all(),
            since: 0,
            until: None,
            snapshot_only: false,
            batch_size: DEFAULT_BATCH_SIZE,
        }
    }
}

#[derive(Clone, Debug)]
pub enum StreamItem {
    Event(Arc<Encoded>),
    /// History is done up to `position`; what follows is live.
    CaughtUp {
        position: Position,
    },
    /// Events after `after` up to `pruned_through` may have been removed by retention
    /// before this stream read them. The stream goes on from `after` with what is left.
    Truncated {
        after: Position,
        pruned_through: Position,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    History { target: Position },
    Live,
    Done,
}

pub struct EventStream {
    tail: Arc<Tail>,
    head: watch::Receiver<Position>,
    options: StreamOptions,
    /// Every matching event at or before it has been handed out (or buffered).
    cursor: Position,
    buffer: VecDeque<Arc<Encoded>>,
    phase: Phase,
    /// Removals up to here are known to the reader (told, or before it started at 0);
    /// `None` until the first read of the log.
    told_through: Option<Position>,
}

impl EventStream {
    pub fn new(tail: Arc<Tail>, mut options: StreamOptions) -> Self {
        options.batch_size = options.batch_size.clamp(1, MAX_BATCH_SIZE);
        let target = *tail.log().head().borrow();
        EventStream {
            head: tail.head(),
            cursor: options.since,
            tail,
            options,
            buffer: VecDeque::new(),
            phase: Phase::History { target },
            told_through: None,
        }
    }

    /// The last position scanned: resuming after it misses nothing this stream would
    /// still have shown.
    pub fn cursor(&self) -> Position {
        self.cursor
    }

    fn until_reached(&self) -> bool {
        self.options.until.is_some_and(|u| self.cursor >= u)
    }

    fn bounded(&self, up_to: Position) -> Position {
        self.options.until.map_or(up_to, |u| u.min(up_to))
    }

    /// Reads the next page into the buffer; answers the marker to hand out first when
    /// retention removed events past the cursor.
    async fn read_log(&mut self, up_to: Position) -> Result<Option<StreamItem>, LogError> {
        let limit = self.options.batch_size;
        let log = self.tail.log();
        let after = self.cursor;
        let page = log
            .read(ReadQuery {
                after,
                up_to,
                filter: &self.options.filter,
                limit,
            })
            .await?;
        // Asked after the read: a removal the read saw is counted by now.
        let pruned_through = log.pruned_through(&self.options.filter).await?;
        self.cursor = if page.len() < limit {
            up_to
        } else {
            page.last().map_or(up_to, |e| e.position)
        };
        // A first read from 0 takes what is left as the beginning.
        let told = *self
            .told_through
            .get_or_insert(if after == 0 { pruned_through } else { 0 });
        let mut marker = None;
        if pruned_through > after.max(told) {
            self.told_through = Some(pruned_through);
            marker = Some(StreamItem::Truncated {
                after,
                pruned_through,
            });
        }
        self.buffer
            .extend(page.into_iter().map(|e| Arc::new(Encoded::new(e))));
        Ok(marker)
    }

    /// The next event if it has been read already: what [`next`](Self::next) would hand
    /// out at once, without a read of the log or a wait. Markers are never ready this
    /// way; they come from `next`. Lets a caller gather a page into one write.
    pub fn next_ready(&mut self) -> Option<Arc<Encoded>> {
        self.buffer.pop_front()
    }

    /// The next event or marker; `None` when the stream has ended (until reached,
    /// snapshot done, tail closed, or after an error was returned).
    pub async fn next(&mut self) -> Option<Result<StreamItem, LogError>> {
        loop {
            if let Some(entry) = self.buffer.pop_front() {
                return Some(Ok(StreamItem::Event(entry)));
            }
            if self.tail.is_closed() {
                self.phase = Phase::Done;
            }
            match self.phase {
                Phase::Done => return None,
                _ if self.until_reached() => {
                    self.phase = Phase::Done;
                    return None;
                }
                Phase::History { target } => {
                    let up_to = self.bounded(target);
                    if self.cursor < up_to {
                        match self.read_log(up_to).await {
                            Ok(Some(marker)) => return Some(Ok(marker)),
                            Ok(None) => {}
                            Err(e) => {
                                self.phase = Phase::Done;
                                return Some(Err(e));
                            }
                        }
                        continue;
                    }
                    if self.until_reached() {
                        continue;
                    }
                    self.phase = if self.options.snapshot_only {
                        Phase::Done
                    } else {
                        Phase::Live
                    };
                    return Some(Ok(StreamItem::CaughtUp {
                        position: self.cursor,
                    }));
                }
                Phase::Live => {
                    let tail_head = *self.head.borrow_and_update();
                    let up_to = self.bounded(tail_head);
                    if up_to > self.cursor {
                        let collected = self.tail.collect(
                            self.cursor,
                            up_to,
                            &self.options.filter,
                            self.options.batch_size,
                        );
                        match collected {
                            Some((entries, scanned)) => {
                                self.cursor = scanned;
                                self.buffer.extend(entries);
                            }
                            None => match self.read_log(up_to).await {
                                Ok(Some(marker)) => return Some(Ok(marker)),
                                Ok(None) => {}
                                Err(e) => {
                                    self.phase = Phase::Done;
                                    return Some(Err(e));
                                }
                            },
                        }
                        continue;
                    }
                    if self.head.changed().await.is_err() {
                        self.phase = Phase::Done;
                    }
                }
            }
        }
    }

    /// The same as a [`futures::Stream`]. Polling keeps the pending read in the stream's
    /// state, so it is safe to race against timers (heartbeats) with `select`.
    pub fn into_stream(self) -> impl Stream<Item = Result<StreamItem, LogError>> + Send {
        futures::stream::unfold(self, |mut s| async move {
            let item = s.next().await?;
            Some((item, s))
        })
    }
}
