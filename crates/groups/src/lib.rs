//! Consumer groups over a Tributary log: every matching event is delivered to the
//! group's members at least once; unacked deliveries come back after `ack_wait`
//! following the group's backoff; after `max_deliveries` an event is parked in the
//! group's dead-letter queue with the reason. With per-key ordering (the key is the
//! topic) a key's next event waits until the one before it is acked or parked. Knows no
//! HTTP: the server serves this API, and an embedded app can call it directly.
//!
//! # Layout
//! - [`Groups`] (this file): the registry, the public API, and one task per group that
//!   reads the log into the group's window and wakes it when deliveries fall due.
//! - `state`: one group's state machine (deliver, ack, nack, term, expire, leave,
//!   replay), given `now` on every call.
//! - `journal`: queues the state's durable changes in order and writes them to the
//!   [`GroupStore`] in batches; nacks, terms and the like wait for their batch, and so
//!   do acks unless they ask not to ([`AckWait`]).
//!
//! Memory per group is bounded by its window (`GroupsOptions::window` events read ahead
//! of the committed position) plus its dead-letter queue.
//!
//! # Embedded use
//!
//! ```
//! # use std::sync::Arc;
//! # use std::time::Duration;
//! # use tributary_core::*;
//! # use tributary_groups::*;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let log: Arc<dyn Log> = Arc::new(MemoryLog::new());
//! let groups = Groups::open(log.clone(), Arc::new(MemoryGroupStore::new()), GroupsOptions::default()).await?;
//! let filter = Filter { topics: vec![TopicPattern::new("orders.>")?], ..Filter::default() };
//! groups.create(GroupConfig::new("billing", filter), Start::Earliest).await?;
//!
//! log.append(vec![NewEvent::new(Topic::new("orders.eu")?, "created", Args::null())]).await?;
//! let deliveries = groups.pull("billing", "worker-1", 10, Duration::from_secs(5)).await?;
//! for d in &deliveries {
//!     println!("{} attempt {}: {}", d.id, d.attempt, d.event.name);
//! }
//! let ids: Vec<DeliveryId> = deliveries.iter().map(|d| d.id).collect();
//! groups.ack("billing", &ids, AckWait::Durable).await?;
//! assert_eq!(groups.info("billing")?.lag, 0);
//! # Ok(())
//! # }
//! ```

mod journal;
mod state;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tributary_core::{
    DlqEntry, Event, Filter, GroupConfig, GroupStore, GroupStoreError, Log, LogError, Position,
    ReadQuery, Start, Timestamp,
};

use journal::{Journal, Ticket};
use state::State;
pub use state::Truncation;
pub use tributary_core::AckWait;
pub use tributary_core::duration::{format_duration, parse_duration};

/// Tuning for every group.
#[derive(Clone, Debug)]
pub struct GroupsOptions {
    /// Events a group reads ahead of its committed position at most. A key stuck behind
    /// a failing event can fill it; then other keys wait until that event is parked.
    pub window: usize,
    /// Events per log read.
    pub read_batch: usize,
}

impl Default for GroupsOptions {
    fn default() -> Self {
        GroupsOptions {
            window: 10_000,
            read_batch: 500,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("no group named {0:?}")]
    NotFound(String),
    #[error("group {0:?} already exists")]
    Exists(String),
    #[error("invalid group: {0}")]
    InvalidConfig(String),
    #[error("invalid delivery id {0:?}: expected POSITION.ATTEMPT, like 1201.2")]
    InvalidDeliveryId(String),
    #[error("{0}")]
    StaleDelivery(String),
    #[error("no event at position {0} in the dead-letter queue")]
    NotInDlq(Position),
    #[error("the groups are shutting down")]
    Closed,
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Store(GroupStoreError),
}

impl From<GroupStoreError> for GroupError {
    fn from(e: GroupStoreError) -> Self {
        match e {
            GroupStoreError::Exists(name) => GroupError::Exists(name),
            GroupStoreError::Closed => GroupError::Closed,
            other => GroupError::Store(other),
        }
    }
}

/// Names one delivery: the event's position and the attempt, written `1201.2`. An ack
/// names the attempt so that an ack that comes after the delivery expired (and the
/// event went to someone else) is refused instead of acking the newer delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeliveryId {
    pub position: Position,
    pub attempt: u32,
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.position, self.attempt)
    }
}

impl FromStr for DeliveryId {
    type Err = GroupError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || GroupError::InvalidDeliveryId(s.to_owned());
        let (p, a) = s.split_once('.').ok_or_else(bad)?;
        let position: Position = p.parse().map_err(|_| bad())?;
        let attempt: u32 = a.parse().map_err(|_| bad())?;
        if position == 0 || attempt == 0 {
            return Err(bad());
        }
        Ok(DeliveryId { position, attempt })
    }
}

/// One event handed to a member.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub id: DeliveryId,
    pub attempt: u32,
    pub event: Arc<Event>,
}

/// A member as the group sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    pub member: String,
    pub in_flight: u32,
    pub last_seen: Option<Timestamp>,
}

/// A group's settings and how it is doing.
#[derive(Clone, Debug)]
pub struct GroupInfo {
    pub config: GroupConfig,
    pub created_at: Timestamp,
    pub committed: Position,
    /// The log's newest position.
    pub head: Position,
    /// Matching events not yet acked or parked: exact once the group has read up to the
    /// head, an upper bound before that.
    pub lag: u64,
    pub in_flight: u64,
    /// Waiting out a backoff.
    pub waiting: u64,
    pub dlq_size: u64,
    pub delivered: u64,
    pub redelivered: u64,
    pub parked: u64,
    /// Times retention removed events before the group read them, and the last one.
    pub truncations: u64,
    pub last_truncation: Option<Truncation>,
    pub members: Vec<MemberInfo>,
}

struct Group {
    created_at: Timestamp,
    state: Mutex<State>,
    /// Wakes pullers: something may have become deliverable.
    ready: Notify,
    /// Wakes the group's task: the window has room, or a new deadline was set.
    wake: Notify,
    stop: CancellationToken,
}

/// Every consumer group of one log.
pub struct Groups {
    log: Arc<dyn Log>,
    store: Arc<dyn GroupStore>,
    options: GroupsOptions,
    groups: RwLock<HashMap<String, Arc<Group>>>,
    journal: Arc<Journal>,
    stop: CancellationToken,
    journal_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Groups {
    /// Loads every group from the store and starts delivering.
    pub async fn open(
        log: Arc<dyn Log>,
        store: Arc<dyn GroupStore>,
        options: GroupsOptions,
    ) -> Result<Arc<Groups>, GroupError> {
        let stored = store.load().await?;
        let journal = Journal::new();
        let stop = CancellationToken::new();
        let task = tokio::spawn(Arc::clone(&journal).run(Arc::clone(&store), stop.clone()));
        let groups = Arc::new(Groups {
            log,
            store,
            options,
            groups: RwLock::new(HashMap::new()),
            journal,
            stop,
            journal_task: Mutex::new(Some(task)),
        });
        let now = Instant::now();
        for g in stored {
            let mut state = State::new(g.config.clone(), g.committed);
            for p in g.progress {
                // A replayed event that was acked is done: one at or before the
                // committed position (kept by a store written before commits dropped
                // such rows) is passed over, one ahead of it is read back as acked.
                if p.replayed && !p.acked {
                    // Its event is read back by position; it may be gone from the log
                    // (retention), in which case there is nothing left to deliver.
                    if let Some(event) = groups.event_at(p.position).await? {
                        state.replays.insert(
                            p.position,
                            state::Entry {
                                event: Arc::new(event),
                                attempts: p.attempts,
                                last_reason: p.last_reason,
                                status: state::Status::Ready { not_before: now },
                            },
                        );
                    }
                } else if p.position > g.committed {
                    state.saved.insert(p.position, p);
                }
            }
            for entry in g.dlq {
                state.dlq.insert(entry.event.position, entry);
            }
            groups.start(state, g.created_at);
        }
        Ok(groups)
    }

    async fn event_at(&self, position: Position) -> Result<Option<Event>, GroupError> {
        let filter = Filter::all();
        let page = self
            .log
            .read(ReadQuery {
                after: position - 1,
                up_to: position,
                filter: &filter,
                limit: 1,
            })
            .await?;
        Ok(page.into_iter().next())
    }

    fn start(self: &Arc<Self>, state: State, created_at: Timestamp) {
        let name = state.config.name.clone();
        let group = Arc::new(Group {
            created_at,
            state: Mutex::new(state),
            ready: Notify::new(),
            wake: Notify::new(),
            stop: self.stop.child_token(),
        });
        self.groups.write().insert(name, Arc::clone(&group));
        tokio::spawn(Arc::clone(self).run_group(group));
    }

    /// Creates a group; its start is resolved against the log's head now.
    pub async fn create(
        self: &Arc<Self>,
        config: GroupConfig,
        start: Start,
    ) -> Result<GroupInfo, GroupError> {
        config.validate().map_err(GroupError::InvalidConfig)?;
        if self.stop.is_cancelled() {
            return Err(GroupError::Closed);
        }
        if self.groups.read().contains_key(&config.name) {
            return Err(GroupError::Exists(config.name));
        }
        let committed = match start {
            Start::Earliest => 0,
            Start::Latest => *self.log.head().borrow(),
            Start::After(p) => p,
        };
        let created_at = Timestamp::now();
        self.store.create(&config, committed, created_at).await?;
        let name = config.name.clone();
        self.start(State::new(config, committed), created_at);
        self.info(&name)
    }

    /// Removes a group and all its state.
    pub async fn delete(&self, name: &str) -> Result<(), GroupError> {
        let group = self
            .groups
            .write()
            .remove(name)
            .ok_or_else(|| GroupError::NotFound(name.to_owned()))?;
        // Cancelled under the state lock: every change is queued either before the
        // barrier below, or by someone who then sees the group gone.
        {
            let _state = group.state.lock();
            group.stop.cancel();
        }
        group.ready.notify_waiters();
        // Changes already queued for it must land before the delete, or a group made
        // again under the same name could inherit them.
        self.journal.wait(self.journal.barrier()).await;
        self.store.delete(name).await?;
        Ok(())
    }

    fn group(&self, name: &str) -> Result<Arc<Group>, GroupError> {
        self.groups
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| GroupError::NotFound(name.to_owned()))
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.groups.read().keys().cloned().collect();
        names.sort();
        names
    }

    pub fn list(&self) -> Vec<GroupInfo> {
        self.names()
            .iter()
            .filter_map(|n| self.info(n).ok())
            .collect()
    }

    pub fn info(&self, name: &str) -> Result<GroupInfo, GroupError> {
        let group = self.group(name)?;
        let head = *self.log.head().borrow();
        let now = Instant::now();
        let s = group.state.lock();
        let (in_flight, waiting, unfinished) = s.counts(now);
        let unread = head.saturating_sub(s.read_cursor);
        let mut members: Vec<MemberInfo> = s
            .members
            .iter()
            .map(|(name, m)| MemberInfo {
                member: name.clone(),
                in_flight: m.in_flight,
                last_seen: m.last_seen_at,
            })
            .collect();
        members.sort_by(|a, b| a.member.cmp(&b.member));
        Ok(GroupInfo {
            config: s.config.clone(),
            created_at: group.created_at,
            committed: s.committed,
            head,
            lag: unfinished + unread,
            in_flight,
            waiting,
            dlq_size: s.dlq.len() as u64,
            delivered: s.counters.delivered,
            redelivered: s.counters.redelivered,
            parked: s.counters.parked,
            truncations: s.counters.truncations,
            last_truncation: s.last_truncation,
            members,
        })
    }

    /// Up to `max` deliveries for `member`, waiting up to `wait` for the first.
    pub async fn pull(
        &self,
        name: &str,
        member: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, GroupError> {
        let group = self.group(name)?;
        let deadline = Instant::now() + wait;
        loop {
            // Registered before looking, so a wake between the look and the wait counts.
            let ready = group.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            let delivered = {
                let mut s = group.state.lock();
                if group.stop.is_cancelled() {
                    return Err(self.gone(name));
                }
                let (delivered, changes) = s.deliver(member, max, Instant::now());
                if !changes.is_empty() {
                    self.journal.push(changes);
                }
                delivered
            };
            if !delivered.is_empty() {
                // A new deadline for the group's timer.
                group.wake.notify_one();
                return Ok(delivered
                    .into_iter()
                    .map(|d| Delivery {
                        id: d.id,
                        attempt: d.id.attempt,
                        event: d.event,
                    })
                    .collect());
            }
            if Instant::now() >= deadline {
                return Ok(Vec::new());
            }
            tokio::select! {
                () = &mut ready => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Why a group's handle stopped working: shutdown, or the group was deleted.
    fn gone(&self, name: &str) -> GroupError {
        if self.stop.is_cancelled() {
            GroupError::Closed
        } else {
            GroupError::NotFound(name.to_owned())
        }
    }

    /// Runs `f` on the group's state and queues its changes; wakes pullers and the
    /// group's task; then, for [`AckWait::Durable`], waits until the changes are durable.
    async fn change<T>(
        &self,
        name: &str,
        wait: AckWait,
        f: impl FnOnce(&mut State, Instant) -> Result<(T, state::Changes), GroupError>,
    ) -> Result<T, GroupError> {
        let group = self.group(name)?;
        let (value, ticket): (T, Ticket) = {
            let mut s = group.state.lock();
            if group.stop.is_cancelled() {
                return Err(self.gone(name));
            }
            let (value, changes) = f(&mut s, Instant::now())?;
            (value, self.journal.push(changes))
        };
        group.ready.notify_waiters();
        group.wake.notify_one();
        let must_wait = wait == AckWait::Durable || self.journal.queued() > journal::MAX_UNWRITTEN;
        if must_wait && !self.journal.wait(ticket).await {
            return Err(GroupError::Closed);
        }
        Ok(value)
    }

    /// Acks deliveries; all must be current, or nothing changes. `wait` says whether
    /// the answer waits for the ack to be durable.
    pub async fn ack(
        &self,
        name: &str,
        ids: &[DeliveryId],
        wait: AckWait,
    ) -> Result<usize, GroupError> {
        self.change(name, wait, |s, _| {
            s.check_current(ids)?;
            Ok((ids.len(), s.ack(ids)))
        })
        .await
    }

    /// Puts deliveries back: due after `delay`, or the group's backoff.
    pub async fn nack(
        &self,
        name: &str,
        ids: &[DeliveryId],
        delay: Option<Duration>,
        reason: Option<String>,
    ) -> Result<usize, GroupError> {
        self.change(name, AckWait::Durable, |s, now| {
            s.check_current(ids)?;
            Ok((ids.len(), s.nack(ids, delay, reason, now)))
        })
        .await
    }

    /// Parks deliveries in the dead-letter queue at once.
    pub async fn term(
        &self,
        name: &str,
        ids: &[DeliveryId],
        reason: &str,
    ) -> Result<usize, GroupError> {
        self.change(name, AckWait::Durable, |s, _| {
            s.check_current(ids)?;
            Ok((ids.len(), s.term(ids, reason)))
        })
        .await
    }

    /// A page of the dead-letter queue: entries after `after`, in position order, and
    /// the cursor for the next page if there may be more.
    pub fn dlq(
        &self,
        name: &str,
        after: Position,
        limit: usize,
    ) -> Result<(Vec<DlqEntry>, Option<Position>), GroupError> {
        let group = self.group(name)?;
        let s = group.state.lock();
        let page: Vec<DlqEntry> = s
            .dlq
            .range(after.saturating_add(1)..)
            .take(limit)
            .map(|(_, e)| e.clone())
            .collect();
        let next = (page.len() == limit)
            .then(|| page.last().map(|e| e.event.position))
            .flatten();
        Ok((page, next))
    }

    /// Back into delivery with fresh attempts: `ids`, or every entry when `None`.
    pub async fn replay(&self, name: &str, ids: Option<&[Position]>) -> Result<usize, GroupError> {
        self.change(name, AckWait::Durable, |s, now| {
            let changes = s.replay(ids, now)?;
            Ok((changes.len(), changes))
        })
        .await
    }

    /// Drops one entry from the dead-letter queue.
    pub async fn discard(&self, name: &str, position: Position) -> Result<(), GroupError> {
        self.change(name, AckWait::Durable, |s, _| {
            Ok(((), s.discard(position)?))
        })
        .await
    }

    /// A member with an open stream. When its last stream's guard drops, what it held
    /// goes to the other members at once.
    pub fn join(self: &Arc<Self>, name: &str, member: &str) -> Result<MemberGuard, GroupError> {
        let group = self.group(name)?;
        group
            .state
            .lock()
            .members
            .entry(member.to_owned())
            .or_default()
            .streams += 1;
        Ok(MemberGuard {
            groups: Arc::clone(self),
            group,
            member: member.to_owned(),
        })
    }

    /// Stops every group's task and flushes what is queued.
    pub async fn close(&self) {
        self.stop.cancel();
        for g in self.groups.read().values() {
            g.ready.notify_waiters();
        }
        let task = self.journal_task.lock().take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// One group's task: reads the log into the window while it has room, and wakes at
    /// the next deadline to expire deliveries and release backoffs.
    async fn run_group(self: Arc<Self>, group: Arc<Group>) {
        let mut head = self.log.head();
        // A full window refills in reads of some size: an ack that frees one slot does
        // not cost a log read of one event.
        let refill = (self.options.window / 4).clamp(1, self.options.read_batch.max(1));
        loop {
            if group.stop.is_cancelled() {
                return;
            }
            let now = Instant::now();
            let (changes, cursor, room, wake_at) = {
                let mut s = group.state.lock();
                let changes = s.expire(now);
                s.forget_idle_members(now);
                let room = self.options.window.saturating_sub(s.held());
                (changes, s.read_cursor, room, s.next_wake(now))
            };
            let expired = !changes.is_empty();
            if expired {
                self.journal.push(changes);
            }
            let log_head = *head.borrow_and_update();
            let mut read_any = false;
            if room >= refill && cursor < log_head {
                let filter = group.state.lock().config.filter.clone();
                let page = self
                    .log
                    .read(ReadQuery {
                        after: cursor,
                        up_to: log_head,
                        filter: &filter,
                        limit: room.min(self.options.read_batch),
                    })
                    .await;
                // Asked after the read, as every reader does (see `Log::pruned_through`).
                let pruned = match &page {
                    Ok(_) => self.log.pruned_through(&filter).await.unwrap_or(0),
                    Err(_) => 0,
                };
                match page {
                    Ok(events) => {
                        group
                            .state
                            .lock()
                            .note_pruned(cursor, pruned, Timestamp::now());
                        let full = events.len() == room.min(self.options.read_batch);
                        let up_to = match (full, events.last()) {
                            (true, Some(last)) => last.position,
                            _ => log_head,
                        };
                        let mut s = group.state.lock();
                        let changes = s.add_events(events, up_to, Instant::now());
                        if !changes.is_empty() {
                            self.journal.push(changes);
                        }
                        read_any = true;
                    }
                    Err(LogError::Closed) => return,
                    Err(e) => {
                        tracing::error!(group = %group.state.lock().config.name, error = %e, "group read failed; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
            }
            if expired || read_any {
                group.ready.notify_waiters();
            }
            if read_any {
                // There may be more to read straight away.
                let s = group.state.lock();
                if s.read_cursor < *head.borrow()
                    && self.options.window.saturating_sub(s.held()) >= refill
                {
                    continue;
                }
            }
            let sleep = async {
                match wake_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = group.stop.cancelled() => return,
                () = group.wake.notified() => {}
                changed = head.changed() => if changed.is_err() { return },
                // A deadline passed or a delay ran out: what became due goes to the
                // pullers waiting now (a pull settles passed deadlines itself), not
                // at their next poll.
                () = sleep => group.ready.notify_waiters(),
            }
        }
    }
}

/// Held while a member's stream is open; see [`Groups::join`].
pub struct MemberGuard {
    groups: Arc<Groups>,
    group: Arc<Group>,
    member: String,
}

impl Drop for MemberGuard {
    fn drop(&mut self) {
        let mut s = self.group.state.lock();
        // A deleted group's state is gone from the store; nothing to hand back.
        if self.group.stop.is_cancelled() {
            return;
        }
        let last = match s.members.get_mut(&self.member) {
            Some(m) => {
                m.streams = m.streams.saturating_sub(1);
                m.streams == 0
            }
            None => false,
        };
        if last {
            let changes = s.leave(&self.member, Instant::now());
            drop(s);
            if !changes.is_empty() {
                self.groups.journal.push(changes);
            }
            self.group.ready.notify_waiters();
            self.group.wake.notify_one();
        }
    }
}
