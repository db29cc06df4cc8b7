//! Consumer groups as data: a group's configuration, the durable state a
//! [`GroupStore`] keeps for it, and the changes the delivery engine (the
//! `tributary-groups` crate) records as it hands events out.
//!
//! What is kept is just enough for at-least-once delivery across a crash: the committed
//! position (every matching event at or before it is acked or parked), per event beyond
//! it how many times it was delivered and whether it was acked, and the dead-letter
//! queue. Deadlines and members are not kept: after a restart every unacked delivery is
//! due again, which at-least-once allows.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::event::{Event, Position, Timestamp};
use crate::filter::Filter;

/// Longest group name; names are `[A-Za-z0-9_.-]`, so they sit in a URL path as they are.
pub const MAX_GROUP_NAME_LEN: usize = 128;

/// How a group orders deliveries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ordering {
    /// One key's events go out one at a time, in position order (the key is the topic).
    #[default]
    PerKey,
    /// Any matching event may go to any member at any time.
    None,
}

/// When an ack is answered. Either way the ack takes effect at once (the event is not
/// handed out again while the server runs) and is written in the group store's next
/// batch; what differs is whether the answer waits for that write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AckWait {
    /// Answer once the ack is durable: a crash after the answer never brings the event
    /// back. Each ack that waits costs a store commit (an fsync on SQLite), shared by
    /// the acks that arrive meanwhile.
    #[default]
    Durable,
    /// Answer once the ack is applied, before it is written (as a JetStream ack or a
    /// Kafka async commit is). A crash before the write brings the event back once
    /// more, which at least once allows; a clean shutdown still writes it.
    Applied,
}

/// Where a new group starts reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// From the first event in the log.
    Earliest,
    /// From the events appended after the group is created.
    Latest,
    /// From the events after this position.
    After(Position),
}

/// A group's settings, fixed when it is created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    pub name: String,
    pub filter: Filter,
    pub ack_wait: Duration,
    /// Deliveries of one event before it is parked in the dead-letter queue.
    pub max_deliveries: u32,
    /// Delay before the n-th redelivery is `backoff[n-1]`; the last entry repeats. Empty
    /// means redeliver at once.
    pub backoff: Vec<Duration>,
    /// Unacked deliveries one member may hold.
    pub max_in_flight: u32,
    pub ordering: Ordering,
}

impl GroupConfig {
    pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
    pub const DEFAULT_MAX_DELIVERIES: u32 = 5;
    pub const DEFAULT_MAX_IN_FLIGHT: u32 = 100;

    /// A group with the defaults: ack_wait 30 s, 5 deliveries, backoff 1 s, 5 s, 30 s,
    /// 100 in flight per member, per-key ordering.
    pub fn new(name: impl Into<String>, filter: Filter) -> Self {
        GroupConfig {
            name: name.into(),
            filter,
            ack_wait: Self::DEFAULT_ACK_WAIT,
            max_deliveries: Self::DEFAULT_MAX_DELIVERIES,
            backoff: vec![
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(30),
            ],
            max_in_flight: Self::DEFAULT_MAX_IN_FLIGHT,
            ordering: Ordering::PerKey,
        }
    }

    /// The delay before redelivering an event that has been delivered `attempts` times.
    pub fn backoff_after(&self, attempts: u32) -> Duration {
        let i = (attempts.max(1) - 1) as usize;
        self.backoff
            .get(i)
            .or(self.backoff.last())
            .copied()
            .unwrap_or(Duration::ZERO)
    }

    /// Checks the settings; the message says what to change.
    pub fn validate(&self) -> Result<(), String> {
        check_group_name(&self.name)?;
        if self.ack_wait < Duration::from_millis(10) || self.ack_wait > Duration::from_secs(86_400)
        {
            return Err("ack_wait must be between 10ms and 24h".into());
        }
        if self.max_deliveries == 0 || self.max_deliveries > 1000 {
            return Err("max_deliveries must be between 1 and 1000".into());
        }
        if self.backoff.len() > 32 {
            return Err("backoff takes at most 32 delays".into());
        }
        if self
            .backoff
            .iter()
            .any(|d| *d > Duration::from_secs(86_400))
        {
            return Err("a backoff delay may be at most 24h".into());
        }
        if self.max_in_flight == 0 || self.max_in_flight > 10_000 {
            return Err("max_in_flight must be between 1 and 10000".into());
        }
        Ok(())
    }
}

/// Checks a group name: 1 to 128 characters of `[A-Za-z0-9_.-]`.
pub fn check_group_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_GROUP_NAME_LEN {
        return Err(format!(
            "a group name has 1 to {MAX_GROUP_NAME_LEN} characters"
        ));
    }
    // A name of dots alone cannot be one URL path segment (clients drop `.` and `..`).
    if name.chars().all(|c| c == '.') {
        return Err(format!("invalid group name {name:?}: not only dots"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "invalid group name {name:?}: {c:?} is not allowed (only A-Z, a-z, 0-9, _, - and .)"
        ));
    }
    Ok(())
}

/// An event parked in a group's dead-letter queue. The event is kept whole, so that the
/// entry outlives the log's retention.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlqEntry {
    pub event: Event,
    /// Deliveries made before it was parked.
    pub attempts: u32,
    pub reason: String,
    pub parked_at: Timestamp,
}

/// What a store keeps about one event beyond a group's committed position (or at or
/// before it, for an event replayed from the dead-letter queue).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventProgress {
    pub position: Position,
    pub attempts: u32,
    pub acked: bool,
    pub last_reason: Option<String>,
    /// Replayed from the dead-letter queue: it is due again although the committed
    /// position has passed it.
    pub replayed: bool,
}

/// A group as its store holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredGroup {
    pub config: GroupConfig,
    pub created_at: Timestamp,
    /// Every matching event at or before this position is acked or parked (replayed
    /// events aside, which `progress` lists).
    pub committed: Position,
    /// In position order.
    pub progress: Vec<EventProgress>,
    /// In position order.
    pub dlq: Vec<DlqEntry>,
}

/// One change to a group's durable state. A batch of them is applied atomically.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupChange {
    /// The event was handed out again: its attempt count, and why the previous attempt
    /// failed if a member said so.
    Attempted {
        group: String,
        position: Position,
        attempts: u32,
        reason: Option<String>,
    },
    /// Acked beyond the committed position (an out-of-order ack).
    Acked { group: String, position: Position },
    /// The committed position moved: progress rows at or before it are dropped, except
    /// replayed ones not acked yet.
    Committed { group: String, committed: Position },
    /// A replayed event is done: drop its progress row.
    Forget { group: String, position: Position },
    /// Parked: its progress row goes, a dead-letter entry comes.
    Parked { group: String, entry: DlqEntry },
    /// Back from the dead-letter queue into delivery, with no attempts yet.
    Replayed { group: String, position: Position },
    /// Dropped from the dead-letter queue.
    Discarded { group: String, position: Position },
}

impl GroupChange {
    pub fn group(&self) -> &str {
        match self {
            GroupChange::Attempted { group, .. }
            | GroupChange::Acked { group, .. }
            | GroupChange::Committed { group, .. }
            | GroupChange::Forget { group, .. }
            | GroupChange::Parked { group, .. }
            | GroupChange::Replayed { group, .. }
            | GroupChange::Discarded { group, .. } => group,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GroupStoreError {
    #[error("group {0:?} already exists")]
    Exists(String),
    #[error("group store: {0}")]
    Storage(String),
    #[error("the group store is closed")]
    Closed,
}

/// Durable group state. Each backend keeps it beside its log (the SQLite backend in the
/// same database file), so that one backup holds both.
#[async_trait]
pub trait GroupStore: Send + Sync + 'static {
    /// Every group, with its progress and dead-letter queue.
    async fn load(&self) -> Result<Vec<StoredGroup>, GroupStoreError>;

    /// Creates a group with nothing delivered yet; fails with
    /// [`GroupStoreError::Exists`] if the name is taken. Durable on return.
    async fn create(
        &self,
        config: &GroupConfig,
        committed: Position,
        created_at: Timestamp,
    ) -> Result<(), GroupStoreError>;

    /// Deletes a group and all its state; false if there was none.
    async fn delete(&self, name: &str) -> Result<bool, GroupStoreError>;

    /// Applies the changes in order, atomically, durable on return. Changes to a group
    /// that does not exist (deleted meanwhile) are ignored.
    async fn apply(&self, changes: Vec<GroupChange>) -> Result<(), GroupStoreError>;
}

/// The in-memory [`GroupStore`] (tests, embedding). Its state lasts as long as it does.
#[derive(Default)]
pub struct MemoryGroupStore {
    groups: parking_lot::Mutex<std::collections::BTreeMap<String, StoredGroup>>,
}

impl MemoryGroupStore {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl GroupStore for MemoryGroupStore {
    async fn load(&self) -> Result<Vec<StoredGroup>, GroupStoreError> {
        Ok(self.groups.lock().values().cloned().collect())
    }

    async fn create(
        &self,
        config: &GroupConfig,
        committed: Position,
        created_at: Timestamp,
    ) -> Result<(), GroupStoreError> {
        let mut groups = self.groups.lock();
        if groups.contains_key(&config.name) {
            return Err(GroupStoreError::Exists(config.name.clone()));
        }
        groups.insert(
            config.name.clone(),
            StoredGroup {
                config: config.clone(),
                created_at,
                committed,
                progress: Vec::new(),
                dlq: Vec::new(),
            },
        );
        Ok(())
    }

    async fn delete(&self, name: &str) -> Result<bool, GroupStoreError> {
        Ok(self.groups.lock().remove(name).is_some())
    }

    async fn apply(&self, changes: Vec<GroupChange>) -> Result<(), GroupStoreError> {
        let mut groups = self.groups.lock();
        for change in changes {
            let Some(g) = groups.get_mut(change.group()) else {
                continue;
            };
            apply_change(g, change);
        }
        Ok(())
    }
}

/// One change applied to a group held in memory; the reference for what each change
/// means, which the SQLite store mirrors in SQL.
fn apply_change(g: &mut StoredGroup, change: GroupChange) {
    let find = |g: &mut StoredGroup, position: Position| match g
        .progress
        .binary_search_by_key(&position, |p| p.position)
    {
        Ok(i) => i,
        Err(i) => {
            g.progress.insert(
                i,
                EventProgress {
                    position,
                    attempts: 0,
                    acked: false,
                    last_reason: None,
                    replayed: false,
                },
            );
            i
        }
    };
    match change {
        GroupChange::Attempted {
            position,
            attempts,
            reason,
            ..
        } => {
            let i = find(g, position);
            g.progress[i].attempts = attempts;
            if reason.is_some() {
                g.progress[i].last_reason = reason;
            }
        }
        GroupChange::Acked { position, .. } => {
            let i = find(g, position);
            g.progress[i].acked = true;
        }
        GroupChange::Committed { committed, .. } => {
            g.committed = g.committed.max(committed);
            let c = g.committed;
            g.progress
                .retain(|p| p.position > c || (p.replayed && !p.acked));
        }
        GroupChange::Forget { position, .. } => {
            g.progress.retain(|p| p.position != position);
        }
        GroupChange::Parked { entry, .. } => {
            let position = entry.event.position;
            g.progress.retain(|p| p.position != position);
            match g.dlq.binary_search_by_key(&position, |e| e.event.position) {
                Ok(i) => g.dlq[i] = entry,
                Err(i) => g.dlq.insert(i, entry),
            }
        }
        GroupChange::Replayed { position, .. } => {
            g.dlq.retain(|e| e.event.position != position);
            let i = find(g, position);
            g.progress[i] = EventProgress {
                position,
                attempts: 0,
                acked: false,
                last_reason: None,
                replayed: true,
            };
        }
        GroupChange::Discarded { position, .. } => {
            g.dlq.retain(|e| e.event.position != position);
        }
    }
}
