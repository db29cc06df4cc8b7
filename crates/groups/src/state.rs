//! One group's delivery state, as a plain state machine: no tasks, no locks, no clock of
//! its own (every call is given `now`), so each rule can be read in one place. The
//! durable changes each transition makes are returned to the caller, which queues them
//! in the journal under the same lock.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use tokio::time::{Duration, Instant};
use tributary_core::duration::format_duration;
use tributary_core::{
    DlqEntry, Event, EventProgress, GroupChange, GroupConfig, Ordering, Position, Timestamp,
};

use crate::{DeliveryId, GroupError};

/// A member that has held nothing for this long is forgotten (it shows in the group's
/// member list until then).
const MEMBER_IDLE_FORGET: Duration = Duration::from_secs(300);

#[derive(Debug)]
pub(crate) enum Status {
    /// Due at `not_before`.
    Ready {
        not_before: Instant,
    },
    InFlight {
        member: String,
        deadline: Instant,
    },
    Acked,
}

#[derive(Debug)]
pub(crate) struct Entry {
    pub event: Arc<Event>,
    pub attempts: u32,
    pub last_reason: Option<String>,
    pub status: Status,
}

#[derive(Debug, Default)]
pub(crate) struct Member {
    pub in_flight: u32,
    pub last_seen: Option<Instant>,
    pub last_seen_at: Option<Timestamp>,
    /// Open SSE streams under this name; the member leaves when the last one closes.
    pub streams: u32,
}

/// Counters for metrics and the group's info.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counters {
    pub delivered: u64,
    pub redelivered: u64,
    pub parked: u64,
    /// Times retention removed events the group had not read yet.
    pub truncations: u64,
}

pub(crate) struct State {
    pub config: GroupConfig,
    pub committed: Position,
    /// Every log position up to here has been read into `window` (or did not match).
    pub read_cursor: Position,
    /// Events after `committed`, in position order, until acked and passed by it.
    pub window: BTreeMap<Position, Entry>,
    /// Events replayed from the dead-letter queue (at or before `committed`).
    pub replays: BTreeMap<Position, Entry>,
    /// Every delivery in flight, by deadline: expiring and the group's timer look here,
    /// so an ack or a pull costs the same with a full window as with an empty one.
    deadlines: BTreeSet<(Instant, Position)>,
    /// Events put back with a delay (nack, backoff), by when they are due. Entries that
    /// have come due are dropped lazily by `expire`; the timer looks only past `now`.
    delayed: BTreeSet<(Instant, Position)>,
    pub dlq: BTreeMap<Position, DlqEntry>,
    pub members: HashMap<String, Member>,
    /// Progress saved before a restart for events not read back into the window yet.
    pub saved: HashMap<Position, EventProgress>,
    pub counters: Counters,
    /// The last time retention overtook the group's read cursor.
    pub last_truncation: Option<Truncation>,
    /// Removals up to here are accounted for (reported, or made before a group that
    /// starts at 0 first read); `None` until the first read.
    pub told_through: Option<Position>,
}

/// Retention removed events of the group's topics after position `after`, up to
/// `pruned_through`, before the group read them: they may never be delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Truncation {
    pub after: Position,
    pub pruned_through: Position,
    pub at: Timestamp,
}

pub(crate) type Changes = Vec<GroupChange>;

impl State {
    pub fn new(config: GroupConfig, committed: Position) -> Self {
        State {
            config,
            committed,
            read_cursor: committed,
            window: BTreeMap::new(),
            replays: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            delayed: BTreeSet::new(),
            dlq: BTreeMap::new(),
            members: HashMap::new(),
            saved: HashMap::new(),
            counters: Counters::default(),
            last_truncation: None,
            told_through: None,
        }
    }

    /// After a read of the log that started after `after`: records a truncation if
    /// retention has removed events of the group's topics past what it knew of.
    pub fn note_pruned(&mut self, after: Position, pruned_through: Position, at: Timestamp) {
        let told = *self
            .told_through
            .get_or_insert(if after == 0 { pruned_through } else { 0 });
        if pruned_through > after.max(told) {
            self.told_through = Some(pruned_through);
            self.counters.truncations += 1;
            self.last_truncation = Some(Truncation {
                after,
                pruned_through,
                at,
            });
            tracing::warn!(
                group = %self.config.name,
                after,
                pruned_through,
                "retention removed events this group had not read yet"
            );
        }
    }

    fn name(&self) -> String {
        self.config.name.clone()
    }

    /// Takes events read from the log (matching, in order, after `read_cursor`) and
    /// moves the cursor to `up_to`.
    pub fn add_events(&mut self, events: Vec<Event>, up_to: Position, now: Instant) -> Changes {
        for event in events {
            if event.position <= self.read_cursor {
                continue;
            }
            let saved = self.saved.remove(&event.position);
            let (attempts, acked, last_reason) = saved
                .map(|p| (p.attempts, p.acked, p.last_reason))
                .unwrap_or((0, false, None));
            // A parked event is done for the window's purposes (it waits in the DLQ).
            let status = if acked || self.dlq.contains_key(&event.position) {
                Status::Acked
            } else {
                Status::Ready { not_before: now }
            };
            self.window.insert(
                event.position,
                Entry {
                    event: Arc::new(event),
                    attempts,
                    last_reason,
                    status,
                },
            );
        }
        self.read_cursor = self.read_cursor.max(up_to);
        self.advance()
    }

    /// Moves `committed` over the done events at the front of the window.
    fn advance(&mut self) -> Changes {
        while let Some(entry) = self.window.first_entry() {
            if matches!(entry.get().status, Status::Acked) {
                entry.remove();
            } else {
                break;
            }
        }
        let committed = match self.window.first_key_value() {
            Some((p, _)) => p - 1,
            None => self.read_cursor,
        };
        if committed > self.committed {
            self.committed = committed;
            self.saved.retain(|p, _| *p > committed);
            return vec![GroupChange::Committed {
                group: self.name(),
                committed,
            }];
        }
        Vec::new()
    }

    /// Unfinished events held (for the window's cap).
    pub fn held(&self) -> usize {
        self.window.len()
    }

    fn member(&mut self, member: &str, now: Instant) -> &mut Member {
        let m = self.members.entry(member.to_owned()).or_default();
        m.last_seen = Some(now);
        m.last_seen_at = Some(Timestamp::now());
        m
    }

    /// Hands up to `max` due events to `member`, in position order, keeping per-key
    /// order and the member's `max_in_flight`.
    pub fn deliver(&mut self, member: &str, max: usize, now: Instant) -> (Vec<Delivered>, Changes) {
        // Deadlines that passed are settled first, so a pull never depends on whether
        // the group's timer has run yet.
        let mut changes = self.expire(now);
        let limit = self.config.max_in_flight;
        let deadline = now + self.config.ack_wait;
        let room = {
            let m = self.member(member, now);
            limit.saturating_sub(m.in_flight) as usize
        };
        let take = max.min(room);
        let mut picked = Vec::new();
        if take > 0 {
            let per_key = self.config.ordering == Ordering::PerKey;
            // A key is blocked from its first unfinished event on: later events of that
            // key wait until it is acked or parked.
            let mut blocked: HashSet<&str> = HashSet::new();
            for (position, entry) in self.replays.iter().chain(self.window.iter()) {
                if matches!(entry.status, Status::Acked) {
                    continue;
                }
                let key = entry.event.topic.as_str();
                if per_key && !blocked.insert(key) {
                    continue;
                }
                if let Status::Ready { not_before } = entry.status
                    && not_before <= now
                {
                    picked.push(*position);
                    if picked.len() == take {
                        break;
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(picked.len());
        for position in picked {
            let entry = match self.replays.get_mut(&position) {
                Some(e) => e,
                None => self
                    .window
                    .get_mut(&position)
                    .expect("picked from the window"),
            };
            entry.attempts += 1;
            entry.status = Status::InFlight {
                member: member.to_owned(),
                deadline,
            };
            self.deadlines.insert((deadline, position));
            self.counters.delivered += 1;
            if entry.attempts > 1 {
                self.counters.redelivered += 1;
            }
            changes.push(GroupChange::Attempted {
                group: self.config.name.clone(),
                position,
                attempts: entry.attempts,
                reason: None,
            });
            out.push(Delivered {
                id: DeliveryId {
                    position,
                    attempt: entry.attempts,
                },
                event: Arc::clone(&entry.event),
            });
        }
        if let Some(m) = self.members.get_mut(member) {
            m.in_flight += out.len() as u32;
        }
        (out, changes)
    }

    /// Checks that every id is a delivery in flight now; nothing changes otherwise.
    pub fn check_current(&self, ids: &[DeliveryId]) -> Result<(), GroupError> {
        let mut seen = HashSet::new();
        for id in ids {
            if !seen.insert(*id) {
                return Err(GroupError::StaleDelivery(format!(
                    "delivery {id} is listed twice"
                )));
            }
            let entry = self
                .replays
                .get(&id.position)
                .or_else(|| self.window.get(&id.position));
            if self.dlq.contains_key(&id.position) {
                return Err(GroupError::StaleDelivery(format!(
                    "delivery {id}: the event is parked in the dead-letter queue"
                )));
            }
            match entry {
                Some(e)
                    if matches!(e.status, Status::InFlight { .. }) && e.attempts == id.attempt => {}
                Some(e) if matches!(e.status, Status::Acked) => {
                    return Err(GroupError::StaleDelivery(format!(
                        "delivery {id} was already acked"
                    )));
                }
                Some(e) if e.attempts > id.attempt => {
                    return Err(GroupError::StaleDelivery(format!(
                        "delivery {id} expired; the event was delivered again (attempt {})",
                        e.attempts
                    )));
                }
                Some(_) => {
                    return Err(GroupError::StaleDelivery(format!(
                        "delivery {id} is not in flight"
                    )));
                }
                None if id.position <= self.committed => {
                    return Err(GroupError::StaleDelivery(format!(
                        "delivery {id} was already acked"
                    )));
                }
                None => {
                    return Err(GroupError::StaleDelivery(format!(
                        "delivery {id} was never made"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Takes an entry out of flight, freeing its member's room and dropping its
    /// deadline; the caller gives it its next status.
    fn land(&mut self, position: Position) -> Option<&mut Entry> {
        let entry = match self.replays.get_mut(&position) {
            Some(e) => e,
            None => self.window.get_mut(&position)?,
        };
        if let Status::InFlight { member, deadline } = &entry.status {
            self.deadlines.remove(&(*deadline, position));
            if let Some(m) = self.members.get_mut(member) {
                m.in_flight = m.in_flight.saturating_sub(1);
            }
        }
        Some(entry)
    }

    /// Acks current deliveries (checked with [`State::check_current`] first).
    pub fn ack(&mut self, ids: &[DeliveryId]) -> Changes {
        let mut changes = Vec::new();
        for id in ids {
            let Some(entry) = self.land(id.position) else {
                continue;
            };
            entry.status = Status::Acked;
            if self.replays.remove(&id.position).is_some() {
                changes.push(GroupChange::Forget {
                    group: self.name(),
                    position: id.position,
                });
            } else {
                changes.push(GroupChange::Acked {
                    group: self.name(),
                    position: id.position,
                });
            }
        }
        changes.extend(self.advance());
        changes
    }

    /// Puts current deliveries back, due after `delay` (or the backoff); one that has
    /// had its `max_deliveries` is parked instead.
    pub fn nack(
        &mut self,
        ids: &[DeliveryId],
        delay: Option<Duration>,
        reason: Option<String>,
        now: Instant,
    ) -> Changes {
        let mut changes = Vec::new();
        for id in ids {
            let max = self.config.max_deliveries;
            let backoff = self.config.clone();
            let group = self.name();
            let Some(entry) = self.land(id.position) else {
                continue;
            };
            if reason.is_some() {
                entry.last_reason.clone_from(&reason);
            }
            if entry.attempts >= max {
                let why = entry
                    .last_reason
                    .clone()
                    .unwrap_or_else(|| format!("nacked on delivery {} of {max}", entry.attempts));
                changes.extend(self.park(id.position, why));
                continue;
            }
            let wait = delay.unwrap_or_else(|| backoff.backoff_after(entry.attempts));
            let due = now + wait;
            entry.status = Status::Ready { not_before: due };
            changes.push(GroupChange::Attempted {
                group,
                position: id.position,
                attempts: entry.attempts,
                reason: reason.clone(),
            });
            self.delayed.insert((due, id.position));
        }
        changes.extend(self.advance());
        changes
    }

    /// Parks current deliveries at once.
    pub fn term(&mut self, ids: &[DeliveryId], reason: &str) -> Changes {
        let mut changes = Vec::new();
        for id in ids {
            if self.land(id.position).is_none() {
                continue;
            }
            changes.extend(self.park(id.position, reason.to_owned()));
        }
        changes.extend(self.advance());
        changes
    }

    /// Moves an entry (already out of flight) to the dead-letter queue.
    fn park(&mut self, position: Position, reason: String) -> Changes {
        let entry = match self.replays.remove(&position) {
            Some(e) => e,
            None => match self.window.get_mut(&position) {
                // Left in the window as done, so that `advance` passes it in order.
                Some(e) => Entry {
                    event: Arc::clone(&e.event),
                    attempts: e.attempts,
                    last_reason: e.last_reason.take(),
                    status: std::mem::replace(&mut e.status, Status::Acked),
                },
                None => return Vec::new(),
            },
        };
        let dlq = DlqEntry {
            event: (*entry.event).clone(),
            attempts: entry.attempts,
            reason,
            parked_at: Timestamp::now(),
        };
        self.dlq.insert(position, dlq.clone());
        self.counters.parked += 1;
        vec![GroupChange::Parked {
            group: self.name(),
            entry: dlq,
        }]
    }

    /// Expired deliveries come back after their backoff, or are parked; returns the
    /// changes and whether anything became due or was parked.
    pub fn expire(&mut self, now: Instant) -> Changes {
        while self.delayed.first().is_some_and(|(due, _)| *due <= now) {
            self.delayed.pop_first();
        }
        let mut expired: Vec<(Position, Instant)> = self
            .deadlines
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .map(|(deadline, p)| (*p, *deadline))
            .collect();
        // Settled in position order, as the window is.
        expired.sort_unstable();
        let mut changes = Vec::new();
        let ack_wait = self.config.ack_wait;
        for (position, deadline) in expired {
            let max = self.config.max_deliveries;
            let backoff = self.config.backoff_after(
                self.replays
                    .get(&position)
                    .or_else(|| self.window.get(&position))
                    .map_or(1, |e| e.attempts),
            );
            let Some(entry) = self.land(position) else {
                continue;
            };
            if entry.attempts >= max {
                let why = format!(
                    "ack_wait ({}) expired on delivery {} of {max}",
                    format_duration(ack_wait),
                    entry.attempts
                );
                changes.extend(self.park(position, why));
            } else {
                // Counted from the deadline, not from when the expiry was noticed.
                entry.status = Status::Ready {
                    not_before: deadline + backoff,
                };
                self.delayed.insert((deadline + backoff, position));
            }
        }
        changes.extend(self.advance());
        changes
    }

    /// A member left (its last stream closed): its deliveries are due again at once
    /// (parked if they had their last delivery).
    pub fn leave(&mut self, member: &str, now: Instant) -> Changes {
        let mut held: Vec<Position> = self
            .deadlines
            .iter()
            .map(|(_, p)| *p)
            .filter(|p| {
                let entry = self.replays.get(p).or_else(|| self.window.get(p));
                entry.is_some_and(
                    |e| matches!(&e.status, Status::InFlight { member: m, .. } if m == member),
                )
            })
            .collect();
        held.sort_unstable();
        let mut changes = Vec::new();
        for position in held {
            let max = self.config.max_deliveries;
            let Some(entry) = self.land(position) else {
                continue;
            };
            if entry.attempts >= max {
                let why = format!(
                    "member {member:?} left holding delivery {} of {max}",
                    entry.attempts
                );
                changes.extend(self.park(position, why));
            } else {
                entry.status = Status::Ready { not_before: now };
            }
        }
        self.members.remove(member);
        changes.extend(self.advance());
        changes
    }

    /// When something next becomes due or expires, if anything will.
    pub fn next_wake(&self, now: Instant) -> Option<Instant> {
        let deadline = self.deadlines.first().map(|(at, _)| *at);
        let due = self
            .delayed
            .range((
                std::ops::Bound::Excluded((now, Position::MAX)),
                std::ops::Bound::Unbounded,
            ))
            .next()
            .map(|(at, _)| *at);
        deadline.into_iter().chain(due).min()
    }

    /// Forgets members that hold nothing and have not been seen for a while.
    pub fn forget_idle_members(&mut self, now: Instant) {
        self.members.retain(|_, m| {
            m.in_flight > 0
                || m.streams > 0
                || m.last_seen
                    .is_some_and(|seen| now.saturating_duration_since(seen) < MEMBER_IDLE_FORGET)
        });
    }

    /// Back from the dead-letter queue: `ids`, or all when `None`. Unknown ids are
    /// refused before anything changes.
    pub fn replay(
        &mut self,
        ids: Option<&[Position]>,
        now: Instant,
    ) -> Result<Changes, GroupError> {
        let positions: Vec<Position> = match ids {
            Some(ids) => {
                if let Some(missing) = ids.iter().find(|p| !self.dlq.contains_key(p)) {
                    return Err(GroupError::NotInDlq(*missing));
                }
                ids.to_vec()
            }
            None => self.dlq.keys().copied().collect(),
        };
        let mut changes = Vec::new();
        for position in positions {
            let Some(dlq) = self.dlq.remove(&position) else {
                continue;
            };
            let entry = Entry {
                event: Arc::new(dlq.event),
                attempts: 0,
                last_reason: None,
                status: Status::Ready { not_before: now },
            };
            // An event parked ahead of the committed position is still in the window
            // (as done); it goes back to work there.
            match self.window.get_mut(&position) {
                Some(slot) => *slot = entry,
                None => {
                    self.replays.insert(position, entry);
                }
            }
            changes.push(GroupChange::Replayed {
                group: self.name(),
                position,
            });
        }
        Ok(changes)
    }

    pub fn discard(&mut self, position: Position) -> Result<Changes, GroupError> {
        if self.dlq.remove(&position).is_none() {
            return Err(GroupError::NotInDlq(position));
        }
        Ok(vec![GroupChange::Discarded {
            group: self.name(),
            position,
        }])
    }

    /// In flight, and waiting out a backoff.
    pub fn counts(&self, now: Instant) -> (u64, u64, u64) {
        let (mut in_flight, mut waiting, mut unfinished) = (0, 0, 0);
        for e in self.replays.values().chain(self.window.values()) {
            match e.status {
                Status::InFlight { .. } => in_flight += 1,
                Status::Ready { not_before } if not_before > now => waiting += 1,
                _ => {}
            }
            if !matches!(e.status, Status::Acked) {
                unfinished += 1;
            }
        }
        debug_assert_eq!(
            in_flight as usize,
            self.deadlines.len(),
            "one deadline per delivery in flight"
        );
        (in_flight, waiting, unfinished)
    }
}

/// A delivery as the state hands it out.
pub(crate) struct Delivered {
    pub id: DeliveryId,
    pub event: Arc<Event>,
}
