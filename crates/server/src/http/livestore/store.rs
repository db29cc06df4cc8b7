//! One LiveStore store over the log: its topic, its backend id, pulls by seqNum and
//! pushes checked against the topic's head. Both transports use this.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::OwnedMutexGuard;
use tokio_util::sync::CancellationToken;
use tributary_core::{Args, Log, LogError, NewEvent, Topic};

use super::protocol::{self, Cursor, PushedEvent, SyncError};

/// Events per `PullResponse`, as the sync-cf backend pages them.
pub const PAGE_SIZE: usize = 100;

/// Longest storeId accepted; with the `livestore.` prefix it stays a short topic.
const MAX_STORE_ID_LEN: usize = 128;

/// What the LiveStore endpoint shares across requests: the per-store push locks, and
/// the signal that ends WebSocket sessions at shutdown.
#[derive(Default)]
pub struct Stores {
    /// One lock per store with a push in flight. An entry lives only while someone holds
    /// or waits for it (see [`PushGuard`]), so the map holds at most one entry per
    /// concurrent push, never one per store ever seen.
    push_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    closing: CancellationToken,
}

impl Stores {
    /// Ends every WebSocket session (shutdown); their clients reconnect and resume.
    pub fn close(&self) {
        self.closing.cancel();
    }

    pub fn closing(&self) -> &CancellationToken {
        &self.closing
    }

    /// Waits for the store's push lock. Pushes to one store run one at a time so that
    /// a rejected push is rejected against a settled head; other stores never wait.
    async fn lock(self: &Arc<Self>, store_id: &str) -> PushGuard {
        let lock = Arc::clone(
            self.push_locks
                .lock()
                .entry(store_id.to_owned())
                .or_default(),
        );
        let guard = lock.lock_owned().await;
        PushGuard {
            stores: Arc::clone(self),
            store_id: store_id.to_owned(),
            guard: Some(guard),
        }
    }
}

struct PushGuard {
    stores: Arc<Stores>,
    store_id: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for PushGuard {
    fn drop(&mut self) {
        // Release first, then drop the map's entry if no one else holds or awaits it
        // (each waiter holds a clone of the Arc, so the count tells).
        drop(self.guard.take());
        let mut locks = self.stores.push_locks.lock();
        if locks
            .get(&self.store_id)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            locks.remove(&self.store_id);
        }
    }
}

/// Checks a storeId: `[A-Za-z0-9_-]{1,128}`, so that `livestore.<storeId>` is one
/// topic token and no id can reach into another store's topic with dots or wildcards.
pub fn check_store_id(store_id: &str) -> Result<(), SyncError> {
    if store_id.is_empty() || store_id.len() > MAX_STORE_ID_LEN {
        return Err(SyncError::unknown(format!(
            "invalid storeId {store_id:?}: must be 1 to {MAX_STORE_ID_LEN} characters"
        )));
    }
    if let Some(c) = store_id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(SyncError::unknown(format!(
            "invalid storeId {store_id:?}: {c:?} is not allowed (only A-Z, a-z, 0-9, _ and -)"
        )));
    }
    Ok(())
}

/// A store as one request sees it.
#[derive(Clone)]
pub struct Store {
    pub log: Arc<dyn Log>,
    pub store_id: String,
    pub topic: Topic,
    /// The log's id: it is born with the data and dies with it, which is exactly what a
    /// backendId must tell a client. Every store of one log shares it; that is enough,
    /// since a store's data is never wiped without the log's.
    pub backend_id: String,
}

impl Store {
    pub async fn open(log: Arc<dyn Log>, store_id: &str) -> Result<Store, SyncError> {
        check_store_id(store_id)?;
        let topic = Topic::new(format!("livestore.{store_id}"))
            .map_err(|e| SyncError::unknown(e.to_string()))?;
        let backend_id = log.log_id().await.map_err(internal)?;
        Ok(Store {
            log,
            store_id: store_id.to_owned(),
            topic,
            backend_id,
        })
    }

    /// Refuses a cursor or push made against another backend (a wiped server).
    pub fn check_backend_id(&self, received: Option<&str>) -> Result<(), SyncError> {
        match received {
            Some(received) if received != self.backend_id => Err(SyncError::BackendIdMismatch {
                expected: self.backend_id.clone(),
                received: received.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// Reads a pull's cursor: the seqNum to continue after (0 for none).
    pub fn cursor(&self, payload: &Value) -> Result<u64, SyncError> {
        let Some(cursor) = protocol::option(payload.get("cursor"))? else {
            return Ok(0);
        };
        let cursor: Cursor = serde_json::from_value(cursor.clone())
            .map_err(|e| SyncError::unknown(format!("invalid pull cursor: {e}")))?;
        self.check_backend_id(Some(&cursor.backend_id))?;
        Ok(cursor.event_sequence_number)
    }

    /// A pull of every event after `after`, read one page at a time so that a client
    /// catching up on a large store costs one page of memory, not the whole store.
    pub async fn pull(&self, after: u64) -> Result<Pull, SyncError> {
        let head = self.log.topic_head(&self.topic).await.map_err(internal)?;
        Ok(Pull {
            store: self.clone(),
            after,
            head,
            sent_any: false,
        })
    }

    /// Appends a pushed batch after checking that it chains onto itself; the log checks
    /// atomically that it chains onto the head.
    pub async fn push(
        &self,
        stores: &Arc<Stores>,
        payload: &Value,
        max_event_bytes: usize,
    ) -> Result<(), SyncError> {
        let backend_id = protocol::option(payload.get("backendId"))?
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| SyncError::unknown("backendId is not a string"))
            })
            .transpose()?;
        self.check_backend_id(backend_id.as_deref())?;
        let batch: Vec<PushedEvent> =
            serde_json::from_value(payload.get("batch").cloned().unwrap_or(Value::Null))
                .map_err(|e| SyncError::unknown(format!("invalid push batch: {e}")))?;
        let Some(first) = batch.first() else {
            return Err(SyncError::unknown("a push needs at least one event"));
        };
        let provided = first.parent_seq_num;
        let mut parent = provided;
        for (i, e) in batch.iter().enumerate() {
            if e.parent_seq_num != parent || e.seq_num != parent + 1 {
                return Err(SyncError::unknown(format!(
                    "the batch does not chain: event {i} is seqNum {} with parentSeqNum {}, \
                     expected seqNum {} with parentSeqNum {parent}",
                    e.seq_num,
                    e.parent_seq_num,
                    parent + 1
                )));
            }
            parent = e.seq_num;
        }
        let events = batch
            .into_iter()
            .map(|e| self.new_event(e, max_event_bytes))
            .collect::<Result<Vec<_>, _>>()?;

        let _guard = stores.lock(&self.store_id).await;
        match self.log.append(events).await {
            Ok(_) => Ok(()),
            Err(LogError::SeqConflict { head, .. }) => Err(SyncError::ServerAhead {
                minimum_expected: head,
                provided,
            }),
            Err(e) => Err(internal(e)),
        }
    }

    fn new_event(&self, e: PushedEvent, max_event_bytes: usize) -> Result<NewEvent, SyncError> {
        // The id makes a retried push idempotent: an event already stored (same store,
        // client, session and seqNum) answers as a duplicate instead of failing the
        // expected_seq check or being stored twice. Too long an id is left out.
        let id = format!(
            "livestore:{}:{}:{}:{}",
            self.store_id, e.client_id, e.session_id, e.seq_num
        );
        let mut event = NewEvent::new(
            self.topic.clone(),
            e.name,
            e.args.unwrap_or_else(Args::null),
        );
        event.id = (id.len() <= tributary_core::event::MAX_FIELD_LEN).then_some(id);
        event.client_id = Some(e.client_id);
        event.session_id = Some(e.session_id);
        // Each event expects its own parent, so the whole batch must chain onto the head.
        event.expected_seq = Some(e.parent_seq_num);
        event
            .validate()
            .map_err(|err| SyncError::unknown(format!("invalid event: {err}")))?;
        if event.size_bytes() > max_event_bytes {
            return Err(SyncError::unknown(format!(
                "an event may weigh at most {max_event_bytes} bytes"
            )));
        }
        Ok(event)
    }
}

/// One pull's progress: `PullResponse`s of at most [`PAGE_SIZE`] events (keyset pages
/// by seq), up to the head seen when it began. `remaining` counts against that head;
/// events that land meanwhile come with the next pull (or, live, the next round).
pub struct Pull {
    store: Store,
    after: u64,
    head: u64,
    sent_any: bool,
}

impl Pull {
    /// The next `PullResponse`, or `None` when the pull is done. A pull always yields at
    /// least one value, an empty `NoMore` one when there is nothing to send.
    pub async fn next_page(&mut self) -> Result<Option<Value>, SyncError> {
        let s = &self.store;
        if self.after < self.head {
            let page = s
                .log
                .read_topic(&s.topic, self.after, PAGE_SIZE)
                .await
                .map_err(internal)?;
            if let Some(last) = page.last() {
                self.after = last.seq;
                self.sent_any = true;
                let remaining = self.head.saturating_sub(self.after);
                return Ok(Some(protocol::pull_response(
                    &page,
                    remaining,
                    &s.backend_id,
                )));
            }
            // The topic is shorter than its head said: only a topic deleted under us.
            self.head = self.after;
        }
        if self.sent_any {
            return Ok(None);
        }
        self.sent_any = true;
        Ok(Some(protocol::pull_response(&[], 0, &s.backend_id)))
    }

    /// The last seq this pull has read (its cursor, once it is done).
    pub fn after(&self) -> u64 {
        self.after
    }
}

/// A storage fault: logged in full, told to the client only vaguely.
fn internal(e: LogError) -> SyncError {
    if matches!(e, LogError::Closed) {
        return SyncError::unknown("the server is shutting down");
    }
    tracing::error!(error = %e, detail = ?e, "livestore request failed");
    SyncError::unknown("internal server error")
}
