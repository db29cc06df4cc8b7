//! The [`Log`] trait: what every storage backend (memory, SQLite, later PostgreSQL)
//! provides. The conformance suite in `tributary-conformance` pins down its behaviour.
//!
//! Nothing here assumes one writing process: the head is learned through
//! [`Log::head`], and the only ordering promise readers rely on is that positions become
//! visible in order (a reader that has seen position n never later finds an n' < n).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::LogError;
use crate::event::{Appended, Event, NewEvent, Position, Timestamp};
use crate::filter::Filter;
use crate::topic::Topic;

/// One keyset page: events with `after < position <= up_to` that match `filter`, in
/// position order, at most `limit` of them.
#[derive(Clone, Copy, Debug)]
pub struct ReadQuery<'a> {
    pub after: Position,
    pub up_to: Position,
    pub filter: &'a Filter,
    pub limit: usize,
}

/// A topic and how far it has come.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    pub topic: Topic,
    /// The seq of the topic's newest event.
    pub head_seq: u64,
    pub event_count: u64,
    /// Position of the topic's newest event.
    pub last_position: Position,
}

/// How a backend has committed appends so far. With group commit, `events / commits` is
/// the average number of events one durable commit (one fsync) carried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    pub commits: u64,
    pub events: u64,
}

#[async_trait]
pub trait Log: Send + Sync + 'static {
    /// Appends a batch atomically: every new event is stored, or none is.
    ///
    /// Per event, in order: an `id` stored before (or earlier in the same batch) answers
    /// the original position and seq with `duplicate: true` and stores nothing; else an
    /// `expected_seq` that is not the topic's head fails the whole batch with
    /// [`LogError::SeqConflict`]; else the event gets the next position and seq, an id
    /// (UUIDv7) if it had none, and a timestamp. Returns once the batch is durable.
    async fn append(&self, batch: Vec<NewEvent>) -> Result<Vec<Appended>, LogError>;

    /// One page of a filtered read; see [`ReadQuery`].
    async fn read(&self, query: ReadQuery<'_>) -> Result<Vec<Event>, LogError>;

    /// One keyset page of a single topic by seq: its events with `seq > after_seq`, in
    /// seq order, at most `limit` of them. Readers that think in a topic's own numbers
    /// (LiveStore's seqNum) use this instead of scanning positions.
    async fn read_topic(
        &self,
        topic: &Topic,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>, LogError>;

    /// The seq of `topic`'s newest event (0 for a topic with no events).
    async fn topic_head(&self, topic: &Topic) -> Result<u64, LogError>;

    /// A random id made once, when the log's storage was created, and kept with the data.
    /// It stays the same across restarts and changes when the data is wiped, so a client
    /// that remembers it can tell "same log" from "a new, empty one" (LiveStore's
    /// backendId is derived from it).
    async fn log_id(&self) -> Result<String, LogError>;

    /// The newest position that readers can see, and every later one as it moves.
    /// The value only grows; every position up to it is readable.
    fn head(&self) -> watch::Receiver<Position>;

    /// The last position stored strictly before `time` (0 if none), so that reading
    /// `after` it starts at the first event at or after `time`.
    async fn position_before(&self, time: Timestamp) -> Result<Position, LogError>;

    /// Every topic with its head.
    async fn topics(&self) -> Result<Vec<TopicInfo>, LogError>;

    /// Fails unless an append could succeed now (for readiness checks).
    async fn check_writable(&self) -> Result<(), LogError>;

    /// Finishes appends in flight, then refuses new ones with [`LogError::Closed`].
    async fn close(&self) -> Result<(), LogError>;

    /// Commit counters for metrics; zero for a backend that does not count them.
    fn commit_stats(&self) -> CommitStats {
        CommitStats::default()
    }
}
