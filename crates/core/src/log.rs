//! The [`Log`] trait: what every storage backend (memory, SQLite, later PostgreSQL)
//! provides. The conformance suite in `tributary-conformance` pins down its behaviour.
//!
//! Nothing here assumes one writing process: the head is learned through
//! [`Log::head`], and the only ordering promise readers rely on is that positions become
//! visible in order (a reader that has seen position n never later finds an n' < n).

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use crate::encode::Encoded;
use crate::error::LogError;
use crate::event::{Appended, Event, NewEvent, Position, Timestamp};
use crate::filter::Filter;
use crate::retention::{PruneRule, TopicConfig};
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
    /// The seq of the topic's newest event (kept when its events are removed, so that a
    /// topic's seqs are never handed out twice).
    pub head_seq: u64,
    /// Events stored now (retention and deletion lower it).
    pub event_count: u64,
    /// Position of the topic's newest event.
    pub last_position: Position,
    /// Every event with a seq up to this one has been removed (retention or deletion);
    /// the oldest one left, if any, has `pruned_seq + 1`.
    #[serde(default)]
    pub pruned_seq: u64,
    /// The position of the event that had `pruned_seq`: a reader whose cursor is below it
    /// may have missed events of this topic.
    #[serde(default)]
    pub pruned_position: Position,
    /// Its settings, for a topic that was given some (`None`: keep everything, the
    /// server's size limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<TopicConfig>,
}

impl TopicInfo {
    /// A topic with no events yet.
    pub fn empty(topic: Topic) -> Self {
        TopicInfo {
            topic,
            head_seq: 0,
            event_count: 0,
            last_position: 0,
            pruned_seq: 0,
            pruned_position: 0,
            config: None,
        }
    }

    /// Whether the topic is worth listing: it holds events or has settings. A topic
    /// whose events were all deleted and whose settings were removed is gone for
    /// readers, though its head seq is kept.
    pub fn is_listed(&self) -> bool {
        self.event_count > 0 || self.config.is_some()
    }
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

    /// Every listed topic ([`TopicInfo::is_listed`]) with its head and settings, sorted
    /// by name.
    async fn topics(&self) -> Result<Vec<TopicInfo>, LogError>;

    /// One topic, listed or not; `None` for a name the log has never seen.
    async fn topic(&self, topic: &Topic) -> Result<Option<TopicInfo>, LogError>;

    /// Gives a topic its settings, replacing any it had; the topic need not have events
    /// yet. From then on, appends to it are held to `config.max_event_bytes`
    /// ([`LogError::EventTooLarge`]); its retention is applied by [`Log::prune`].
    async fn set_topic_config(&self, topic: &Topic, config: TopicConfig) -> Result<(), LogError>;

    /// Removes a topic's settings; answers whether it had any.
    async fn remove_topic_config(&self, topic: &Topic) -> Result<bool, LogError>;

    /// Removes up to `limit` of `topic`'s oldest events that `rule` no longer keeps, in
    /// one short write, and answers how many it removed: fewer than `limit` means the
    /// topic is within its rule now. Events go oldest first (by seq, which is also
    /// position and time order within a topic), so what remains is always a suffix of
    /// the topic, and [`TopicInfo::pruned_seq`] says where it starts.
    async fn prune(&self, topic: &Topic, rule: PruneRule, limit: usize) -> Result<u64, LogError>;

    /// The highest position removed from a topic that `filter`'s topic patterns match
    /// (0 if none was). Readers ask after each read: a reader whose cursor is below it
    /// may have missed events and is told so. Raised no later than the removal becomes
    /// visible, so asking after a read never misses a removal that the read saw.
    async fn pruned_through(&self, filter: &Filter) -> Result<Position, LogError>;

    /// Fails unless an append could succeed now (for readiness checks).
    async fn check_writable(&self) -> Result<(), LogError>;

    /// Finishes appends in flight, then refuses new ones with [`LogError::Closed`].
    async fn close(&self) -> Result<(), LogError>;

    /// Commit counters for metrics; zero for a backend that does not count them.
    fn commit_stats(&self) -> CommitStats {
        CommitStats::default()
    }

    /// The events this process commits, as it commits them: one [`Commit`] per
    /// transaction, its new events in position order, sent after the commit and before
    /// [`Log::head`] moves past them. The tail takes new events from here instead of
    /// reading each one back, so live delivery does not wait in a backend's reader pool
    /// behind readers of history.
    ///
    /// `None` (the default) when the log cannot say: the tail then reads every new event
    /// back. A receiver that lags, or a commit it never saw, loses nothing: the tail reads
    /// whatever the commits did not bring.
    fn commits(&self) -> Option<broadcast::Receiver<Commit>> {
        None
    }
}

/// The new events of one commit, in position order, dense: see [`Log::commits`].
pub type Commit = Arc<[Arc<Encoded>]>;

/// Commits a [`Log::commits`] receiver may fall behind by before it misses some (and
/// reads them instead). Bounded, because a commit holds its events in memory.
pub const COMMITS_CAPACITY: usize = 64;
