//! The write-behind journal between the groups and their [`GroupStore`].
//!
//! Changes are queued under the group's lock, so the journal sees them in the order the
//! group made them, and one flusher task applies whatever has queued up in one store
//! call (group commit: one transaction however many members acked meanwhile). A caller
//! that must not answer before its change is durable (ack, nack, term, replay, discard)
//! waits for the batch its change went into.
//!
//! Memory stays bounded without a bounded queue: deliveries (the changes nobody waits
//! for) are capped by the members' `max_in_flight`, and everything that frees room for
//! more deliveries waits for a flush.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tributary_core::{GroupChange, GroupStore};

pub(crate) struct Journal {
    queue: Mutex<Queue>,
    kick: Notify,
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

    /// Waits until the ticket's batch is durable; false if the journal stopped first.
    pub async fn wait(&self, ticket: Ticket) -> bool {
        let mut flushed = self.flushed.subscribe();
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
                (std::mem::take(&mut q.changes), batch)
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
        }
    }

    fn stopped(&self) {
        self.flushed.send_modify(|(_, stopped)| *stopped = true);
    }
}
