//! The writer thread: the only code that writes, on the only read-write connection.
//!
//! Appends arrive on a channel. The thread takes every request waiting (up to
//! `max_batch_events` events) and runs them in ONE transaction, then commits once: one
//! fsync for the whole group instead of one per append, which is what makes durable
//! appends fast under concurrency. Each request is checked whole before any of it is
//! written, so one that is refused (an `expected_seq` conflict, an event too large)
//! touches neither the other requests nor the position counter, and positions stay
//! gapless.
//!
//! Only after the commit does the thread move the head and answer the requests: a caller
//! never hears "stored" before the data is durable, and a reader that sees the head
//! move finds every position up to it.
//!
//! Consumer-group writes ([`GroupWrite`]) and topic writes ([`TopicWrite`]: settings,
//! retention) come through the same queue and run here too, each in a transaction of its
//! own (see `groups` and `topics` for why).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tributary_core::event::new_event_id;
use tributary_core::{
    Appended, Commit, Encoded, Event, LogError, NewEvent, Position, Timestamp, Topic,
};

use crate::error::{shared_storage, storage};
use crate::groups::GroupWrite;
use crate::topics::{Floors, TopicWrite};

/// What the writer thread is asked to do.
pub(crate) enum Command {
    Append(AppendRequest),
    /// Answers whether a write transaction can start now (readiness checks).
    CheckWritable(oneshot::Sender<Result<(), LogError>>),
    /// A consumer-group write, in a transaction of its own.
    Group(GroupWrite),
    /// A topic's settings, or one batch of retention, in a transaction of its own.
    Topic(TopicWrite),
}

/// The way into the writer's queue, shared by the log and its group stores. Emptied when
/// the log is closed, so that closing the log closes its group stores too: they write
/// through the same thread, which stops once every sender is gone.
#[derive(Clone)]
pub(crate) struct WriterQueue {
    sender: Arc<Mutex<Option<mpsc::Sender<Command>>>>,
}

impl WriterQueue {
    pub(crate) fn new(sender: mpsc::Sender<Command>) -> Self {
        WriterQueue {
            sender: Arc::new(Mutex::new(Some(sender))),
        }
    }

    /// Drops the shared sender; the writer drains what is queued (and what callers in
    /// flight still send with their clones), then stops.
    pub(crate) fn close(&self) {
        drop(self.sender.lock().take());
    }

    /// Sends `command` and waits for its answer: [`LogError::Closed`] after
    /// [`close`](Self::close), and a storage error if the writer went away without
    /// answering (it died).
    pub(crate) async fn ask<R>(
        &self,
        command: Command,
        answer: oneshot::Receiver<R>,
    ) -> Result<R, LogError> {
        // Cloned so that the lock is not held across the await; the clone is dropped
        // right after sending, so it never keeps a closing writer alive.
        let sender = self.sender.lock().clone().ok_or(LogError::Closed)?;
        let sent = sender.send(command).await;
        drop(sender);
        sent.map_err(|_| self.gone())?;
        answer.await.map_err(|_| self.gone())
    }

    fn gone(&self) -> LogError {
        if self.sender.lock().is_none() {
            LogError::Closed
        } else {
            LogError::storage("the sqlite writer thread", "stopped unexpectedly")
        }
    }
}

pub(crate) struct AppendRequest {
    /// Already validated by the caller: non-empty, every event's fields checked.
    pub(crate) batch: Vec<NewEvent>,
    pub(crate) reply: oneshot::Sender<Result<Vec<Appended>, LogError>>,
}

/// Counters of the writer's work, for metrics such as the mean group-commit size
/// (`events / commits`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Transactions committed (each is one fsync with `synchronous=full`).
    pub commits: u64,
    /// Append requests answered by those commits, successful or refused.
    pub requests: u64,
    /// Events stored (duplicates and refused requests not counted).
    pub events: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    commits: AtomicU64,
    requests: AtomicU64,
    events: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> WriterStats {
        WriterStats {
            commits: self.commits.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
        }
    }
}

pub(crate) struct Writer {
    pub(crate) conn: Connection,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) head: Arc<watch::Sender<Position>>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) max_batch_events: usize,
    pub(crate) floors: Floors,
    /// Each commit's new events, for the tail ([`tributary_core::Log::commits`]).
    pub(crate) commits: broadcast::Sender<Commit>,
}

/// What one request of a group came to. The outer error of [`apply`] aborts the whole
/// group; this inner one refuses only its request.
type Outcome = Result<Vec<Appended>, LogError>;

impl Writer {
    pub(crate) fn spawn(self) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("tributary-sqlite-writer".into())
            .spawn(move || self.run())
    }

    /// Runs until every sender is gone and the queue is drained: closing the log drops
    /// its sender, so appends queued before the close still complete.
    fn run(mut self) {
        let mut next = None;
        loop {
            let command = match next.take() {
                Some(command) => command,
                None => match self.commands.blocking_recv() {
                    Some(command) => command,
                    None => break,
                },
            };
            match command {
                Command::CheckWritable(reply) => {
                    let _ = reply.send(self.check_writable());
                }
                Command::Group(write) => write.run(&mut self.conn),
                Command::Topic(write) => write.run(&mut self.conn, &self.floors),
                Command::Append(first) => {
                    let mut events = first.batch.len();
                    let mut group = vec![first];
                    while events < self.max_batch_events {
                        match self.commands.try_recv() {
                            Ok(Command::Append(request))
                                if events + request.batch.len() <= self.max_batch_events =>
                            {
                                events += request.batch.len();
                                group.push(request);
                            }
                            // Too big for this group, or not an append: it goes first next.
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.commit_group(group);
                }
            }
        }
        // SQLite's advice for a long-lived connection: refresh planner statistics when
        // closing it. Failing here loses nothing stored.
        if let Err(e) = crate::connection::optimize(&self.conn) {
            tracing::warn!(error = %e, "sqlite optimize on close failed");
        }
        tracing::debug!("sqlite writer stopped");
    }

    /// Takes the write lock and gives it back: fails when the file cannot be written
    /// (read-only, locked by another process beyond the busy timeout).
    fn check_writable(&mut self) -> Result<(), LogError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(storage("taking the sqlite write lock"))?;
        tx.rollback()
            .map_err(storage("releasing the sqlite write lock"))
    }

    fn commit_group(&mut self, group: Vec<AppendRequest>) {
        let (batches, replies): (Vec<_>, Vec<_>) =
            group.into_iter().map(|r| (r.batch, r.reply)).unzip();
        let requests = replies.len() as u64;
        match self.run_group(batches) {
            Ok((outcomes, committed, head)) => {
                let stored = committed.len() as u64;
                self.counters.commits.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .requests
                    .fetch_add(requests, Ordering::Relaxed);
                self.counters.events.fetch_add(stored, Ordering::Relaxed);
                // Handed over before the head moves, so a tail woken by the move finds
                // them waiting. Nobody listening is not an error.
                if !committed.is_empty() {
                    let _ = self.commits.send(committed.into());
                }
                // Head before answers: a caller that got its position back must see the
                // head at or past it.
                self.head.send_if_modified(|h| {
                    let moved = head > *h;
                    *h = (*h).max(head);
                    moved
                });
                tracing::trace!(requests, stored, head, "group committed");
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    // The caller may have stopped waiting; its events are stored anyway.
                    let _ = reply.send(outcome);
                }
            }
            Err(e) => {
                // The transaction rolled back: nothing of the group is stored, and every
                // request hears so.
                tracing::error!(error = %e, requests, "sqlite group commit failed");
                let e = Arc::new(e);
                for reply in replies {
                    let _ = reply.send(Err(shared_storage("appending to the sqlite log", &e)));
                }
            }
        }
    }

    /// One transaction for the whole group. Returns each request's outcome, the events
    /// stored, and the new head.
    fn run_group(
        &mut self,
        batches: Vec<Vec<NewEvent>>,
    ) -> rusqlite::Result<(Vec<Outcome>, Vec<Arc<Encoded>>, Position)> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Read inside the write lock rather than cached in memory: the file is the truth,
        // even if something else wrote to it since the last group.
        let (last_stored, last_timestamp) = tx
            .prepare_cached(
                "SELECT position, timestamp FROM events ORDER BY position DESC LIMIT 1",
            )?
            .query_row([], |row| Ok((row.get::<_, u64>(0)?, row.get::<_, i64>(1)?)))
            .optional()?
            .unwrap_or((0, i64::MIN));
        // The newest events may have been removed (a deleted topic): never hand out their
        // positions again.
        let last_position = last_stored.max(crate::read::pruned_position(&tx)?);
        // Timestamps never go backwards (a clock step back), so time and position order
        // agree and position_before can seek by time.
        let timestamp = Timestamp::now().max(Timestamp::from_millis(last_timestamp));
        let mut next_position = last_position + 1;
        let mut outcomes = Vec::with_capacity(batches.len());
        let mut committed = Vec::new();
        for batch in batches {
            // A refused request wrote nothing and left `next_position` where it was.
            outcomes.push(apply(
                &tx,
                batch,
                &mut next_position,
                timestamp,
                &mut committed,
            )?);
        }
        tx.commit()?;
        let head = next_position - 1;
        debug_assert_eq!(committed.len() as u64, head - last_position);
        Ok((outcomes, committed, head))
    }
}

/// A topic's head as this request moves it.
struct TopicHead {
    head_seq: u64,
    added: u64,
    last_position: Position,
    /// The topic's `max_event_bytes`, if it has one.
    max_bytes: Option<u64>,
}

/// One request, with the semantics of the `Log::append` doc: per event, a known id
/// answers the original; else a wrong `expected_seq` (or an event over its topic's
/// `max_event_bytes`) refuses the whole request; else the event is stored at the next
/// position and seq.
///
/// Every check runs before the first write, so a refused request has written nothing
/// and needs no savepoint to roll back to. That matters for speed: a savepoint makes
/// SQLite keep a statement journal of every page the request touches, which was a fifth
/// of the writer's time under load. Once the writes start they can only fail with
/// SQLite itself, and that aborts the whole group.
///
/// The events it stores are added to `committed`, as readers will see them once the
/// group commits.
fn apply(
    conn: &Connection,
    batch: Vec<NewEvent>,
    next_position: &mut Position,
    timestamp: Timestamp,
    committed: &mut Vec<Arc<Encoded>>,
) -> rusqlite::Result<Outcome> {
    let mut find_id = conn.prepare_cached("SELECT position, seq FROM events WHERE id = ?1")?;
    let mut find_head =
        conn.prepare_cached("SELECT head_seq, max_event_bytes FROM topics WHERE name = ?1")?;
    let mut heads: HashMap<Topic, TopicHead> = HashMap::new();
    // Ids planned earlier in this request: not in the table yet.
    let mut planned_ids: HashMap<String, Appended> = HashMap::new();
    let mut appended = Vec::with_capacity(batch.len());
    let mut writes: Vec<(NewEvent, String, Position, u64)> = Vec::with_capacity(batch.len());
    let mut position = *next_position;
    for (index, event) in batch.into_iter().enumerate() {
        if let Some(id) = event.id.as_deref() {
            let earlier = match planned_ids.get(id) {
                Some(a) => Some((a.position, a.seq)),
                None => find_id
                    .query_row([id], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()?,
            };
            if let Some((position, seq)) = earlier {
                appended.push(Appended {
                    position,
                    seq,
                    duplicate: true,
                });
                continue;
            }
        }
        let (head, max_bytes) = match heads.get(&event.topic) {
            Some(topic) => (topic.head_seq, topic.max_bytes),
            None => {
                let (head_seq, max_bytes) = find_head
                    .query_row([event.topic.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()?
                    .unwrap_or((0, None));
                heads.insert(
                    event.topic.clone(),
                    TopicHead {
                        head_seq,
                        added: 0,
                        last_position: 0,
                        max_bytes,
                    },
                );
                (head_seq, max_bytes)
            }
        };
        let size = event.size_bytes() as u64;
        if let Some(max) = max_bytes.filter(|&max| size > max) {
            return Ok(Err(LogError::EventTooLarge {
                topic: event.topic.into_string(),
                size,
                max,
                index,
            }));
        }
        if let Some(expected) = event.expected_seq
            && expected != head
        {
            return Ok(Err(LogError::SeqConflict {
                topic: event.topic.into_string(),
                expected,
                head,
                index,
            }));
        }
        let seq = head + 1;
        let done = Appended {
            position,
            seq,
            duplicate: false,
        };
        let id = match &event.id {
            Some(id) => {
                planned_ids.insert(id.clone(), done);
                id.clone()
            }
            None => new_event_id(),
        };
        if let Some(topic) = heads.get_mut(&event.topic) {
            topic.head_seq = seq;
            topic.added += 1;
            topic.last_position = position;
        }
        appended.push(done);
        writes.push((event, id, position, seq));
        position += 1;
    }

    let mut insert = conn.prepare_cached(
        "INSERT INTO events (position, topic, seq, name, args, id, client_id, session_id, timestamp)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for (event, id, position, seq) in &writes {
        insert.execute(params![
            position,
            event.topic.as_str(),
            seq,
            event.name,
            event.args.as_json(),
            id,
            event.client_id,
            event.session_id,
            timestamp.as_millis(),
        ])?;
    }
    *next_position = position;
    // One upsert per topic per request rather than per event.
    let mut upsert = conn.prepare_cached(
        "INSERT INTO topics (name, head_seq, event_count, last_position) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (name) DO UPDATE SET
             head_seq = excluded.head_seq,
             event_count = event_count + excluded.event_count,
             last_position = excluded.last_position",
    )?;
    for (topic, head) in heads.iter().filter(|(_, h)| h.added > 0) {
        upsert.execute(params![
            topic.as_str(),
            head.head_seq,
            head.added,
            head.last_position
        ])?;
    }
    committed.extend(writes.into_iter().map(|(event, id, position, seq)| {
        Arc::new(Encoded::new(Event {
            position,
            topic: event.topic,
            seq,
            name: event.name,
            args: event.args,
            id,
            client_id: event.client_id,
            session_id: event.session_id,
            timestamp,
        }))
    }));
    Ok(Ok(appended))
}
