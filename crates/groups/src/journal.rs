//! The write-behind journal between the groups and their [`GroupStore`].
//!
//! Changes are queued under the group's lock, so the journal sees them in the order the
//! group made them, and one flusher task applies whatever has queued up in one store
//! call (group commit: one transaction however many members acked meanwhile). A caller
//! that must not answer before its change is durable (a durable ack, nack, term,
//! replay, discard) waits for the batch its change went into, and the flusher writes at
//! once. Changes nobody waits for (deliveries, applied acks) gather for up to [`LINGER`]
//! first: one commit, and on SQLite one fsync, per few milliseconds rather than per
//! request.
//!
//! Memory stays bounded without a bounded queue: deliveries are capped by the members'
//! `max_in_flight`, and what frees room for more deliveries either waits for a flush or,
//! for an applied ack, waits too once [`MAX_UNWRITTEN`] changes are queued.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tributary_core::{GroupChange, GroupStore};

/// How long changes nobody waits for may gather before the flusher writes them; also the
/// most an applied ack stays unwritten while the store keeps up.
pub(crate) const LINGER: Duration = Duration::from_millis(5);

/// Queued changes beyond which an applied ack waits for its batch like a durable one:
/// while the store is slow or failing, acks cannot run ahead of it without bound.
pub(crate) const MAX_UNWRITTEN: usize = 10_000;

pub(crate) struct Journal {
    queue: Mutex<Queue>,
    kick: Notify,
    /// Someone waits for a batch: write without lingering.
    urgent: Notify,
    /// The number of the last batch the store has made durable, and whether the
    /// journal has stopped (nothing queued after that will be written).
    flushed: watch::Sender<(u64, bool)>,
}

struct Queue {
    changes: Vec<GroupChange>,
    /// The number the queued changes will be flushed as.
    batch: u64,
}

/// A place in the journal: durable once the batch of that number is flushed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticket(u64);

impl Journal {
    pub fn new() -> Arc<Self> {
        Arc::new(Journal {
            queue: Mutex::new(Queue {
                changes: Vec::new(),
                batch: 1,
            }),
            kick: Notify::new(),
            urgent: Notify::new(),
            flushed: watch::Sender::new((0, false)),
        })
    }

    /// Queues changes (call it under the lock that ordered them).
    pub fn push(&self, changes: impl IntoIterator<Item = GroupChange>) -> Ticket {
        let mut q = self.queue.lock();
        q.changes.extend(changes);
        let ticket = Ticket(q.batch);
        drop(q);
        self.kick.notify_one();
        ticket
    }

    /// A ticket for everything queued so far.
    pub fn barrier(&self) -> Ticket {
        self.push([])
    }

    /// Changes queued and not yet taken by the flusher.
    pub fn queued(&self) -> usize {
        self.queue.lock().changes.len()
    }

    /// Waits until the ticket's batch is durable; false if the journal stopped first.
    pub async fn wait(&self, ticket: Ticket) -> bool {
        let mut flushed = self.flushed.subscribe();
        if flushed.borrow().0 < ticket.0 {
            self.urgent.notify_one();
        }
        match flushed
            .wait_for(|(done, stopped)| *done >= ticket.0 || *stopped)
            .await
        {
            Ok(state) => state.0 >= ticket.0,
            Err(_) => false,
        }
    }

    /// Applies queued changes until cancelled, then once more to drain. A failing store
    /// is retried: the changes stay queued in order, and waiters keep waiting (at
    /// shutdown it gets a few more tries, then the waiters are told).
    pub async fn run(self: Arc<Self>, store: Arc<dyn GroupStore>, stop: CancellationToken) {
        let mut retry = Duration::from_millis(50);
        loop {
            let stopping = stop.is_cancelled();
            let (changes, batch) = {
                let mut q = self.queue.lock();
                let batch = q.batch;
                q.batch += 1;
                (coalesce(std::mem::take(&mut q.changes)), batch)
            };
            let mut tries = 0;
            while !changes.is_empty() {
                match store.apply(changes.clone()).await {
                    Ok(()) => {
                        retry = Duration::from_millis(50);
                        break;
                    }
                    Err(tributary_core::GroupStoreError::Closed) => return self.stopped(),
                    Err(e) => {
                        tries += 1;
                        tracing::error!(error = %e, changes = changes.len(), "group state not saved; retrying");
                        if stop.is_cancelled() && tries >= 3 {
                            return self.stopped();
                        }
                        tokio::time::sleep(retry).await;
                        retry = (retry * 2).min(Duration::from_secs(5));
                    }
                }
            }
            self.flushed.send_modify(|(done, _)| *done = batch);
            if stopping {
                return self.stopped();
            }
            tokio::select! {
                () = self.kick.notified() => {}
                () = stop.cancelled() => {}
            }
            // A permit left by a waiter whose batch was written meanwhile ends this
            // early: one write sooner, nothing worse.
            tokio::select! {
                () = self.urgent.notified() => {}
                () = tokio::time::sleep(LINGER) => {}
                () = stop.cancelled() => {}
            }
        }
    }

    fn stopped(&self) {
        self.flushed.send_modify(|(_, stopped)| *stopped = true);
    }
}

/// One `Committed` per group per batch, the highest, after the group's other changes:
/// an ack per event moves the committed position every time, and each move is a store
/// update and a delete of the progress rows it passed.
///
/// Writing only the last is the same state: a move drops the settled progress rows at or
/// before it (not replayed, or acked), and no later change in the batch makes such a row
/// again. Rows an
/// event gets after the committed position passed it are replayed rows (a `Replayed`
/// comes first), which a move keeps; `Parked`, `Forget` and `Discarded` remove rows or
/// dead-letter entries whatever the committed position is.
fn coalesce(changes: Vec<GroupChange>) -> Vec<GroupChange> {
    let mut highest: Vec<(String, u64)> = Vec::new();
    let mut out = Vec::with_capacity(changes.len());
    for change in changes {
        match change {
            GroupChange::Committed { group, committed } => {
                match highest.iter_mut().find(|(g, _)| *g == group) {
                    Some((_, c)) => *c = (*c).max(committed),
                    None => highest.push((group, committed)),
                }
            }
            other => out.push(other),
        }
    }
    out.extend(
        highest
            .into_iter()
            .map(|(group, committed)| GroupChange::Committed { group, committed }),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(group: &str, committed: u64) -> GroupChange {
        GroupChange::Committed {
            group: group.into(),
            committed,
        }
    }

    fn acked(group: &str, position: u64) -> GroupChange {
        GroupChange::Acked {
            group: group.into(),
            position,
        }
    }

    #[test]
    fn a_batch_keeps_its_order_and_one_highest_commit_per_group() {
        let batch = vec![
            acked("a", 1),
            committed("a", 1),
            acked("b", 7),
            acked("a", 2),
            committed("a", 2),
            committed("b", 7),
            acked("a", 3),
        ];
        assert_eq!(
            coalesce(batch),
            [
                acked("a", 1),
                acked("b", 7),
                acked("a", 2),
                acked("a", 3),
                committed("a", 2),
                committed("b", 7),
            ]
        );
        assert_eq!(coalesce(vec![acked("a", 1)]), [acked("a", 1)]);
    }
}
