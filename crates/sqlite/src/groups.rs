//! [`SqliteGroupStore`]: the consumer groups' durable state, kept in the log's own
//! database file so that one backup (one file) holds the events and how far each group
//! has got through them.
//!
//! # Why writes go through the writer thread
//! The writer thread owns the file's only read-write connection. Group writes are sent
//! to it as commands of their own ([`GroupWrite`]), each run in one `IMMEDIATE`
//! transaction, so:
//! - there is still a single writer: no `SQLITE_BUSY` between two connections of ours,
//!   and no busy timeout to tune against the length of an append group;
//! - a group commit is durable exactly as an append is, under the log's `synchronous`
//!   setting, because it is the same connection;
//! - closing the log drains and closes the store with it.
//!
//! A dedicated connection would not have been much simpler (the same transactions, on a
//! blocking thread instead of behind a command), and it would fight every append group
//! for the write lock.
//!
//! Group writes do not join an append group's transaction. They are already batched
//! upstream (the journal in `tributary-groups` flushes whatever queued up meanwhile in
//! one `apply`), and keeping them apart means a failing group write can never fail
//! appends, nor the other way round.
//!
//! Loads run on the reader pool like event reads, in one read transaction so that the
//! three tables agree with each other. The writer answers only after committing, so a
//! load that starts after a write has returned sees it.
//!
//! The tables come from migration 3 (see `migrate`). The statements in [`apply_change`]
//! mirror, arm by arm, `apply_change` in `tributary_core::group`, which defines what each
//! change means.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tributary_core::{
    DlqEntry, Event, EventProgress, Filter, GroupChange, GroupConfig, GroupStore, GroupStoreError,
    LogError, Ordering, Position, StoredGroup, Timestamp,
};

use crate::read::ReaderPool;
use crate::writer::{Command, WriterQueue};

/// The [`GroupStore`] of a [`SqliteLog`](crate::SqliteLog), made by
/// [`SqliteLog::group_store`](crate::SqliteLog::group_store). Clones share everything;
/// closing the log closes them all.
#[derive(Clone)]
pub struct SqliteGroupStore {
    queue: WriterQueue,
    readers: Arc<ReaderPool>,
}

impl SqliteGroupStore {
    pub(crate) fn new(queue: WriterQueue, readers: Arc<ReaderPool>) -> Self {
        SqliteGroupStore { queue, readers }
    }

    /// Hands `write` to the writer thread and waits for it to be committed.
    async fn write<T>(
        &self,
        write: GroupWrite,
        answer: oneshot::Receiver<Result<T, GroupStoreError>>,
    ) -> Result<T, GroupStoreError> {
        self.queue
            .ask(Command::Group(write), answer)
            .await
            .map_err(from_log_error)?
    }
}

#[async_trait]
impl GroupStore for SqliteGroupStore {
    async fn load(&self) -> Result<Vec<StoredGroup>, GroupStoreError> {
        self.readers
            .run("loading the consumer groups", load)
            .await
            .map_err(from_log_error)
    }

    async fn create(
        &self,
        config: &GroupConfig,
        committed: Position,
        created_at: Timestamp,
    ) -> Result<(), GroupStoreError> {
        // Encoded here rather than on the writer thread, which every append waits for.
        let json = serde_json::to_string(&StoredConfig::new(config)).map_err(|e| {
            GroupStoreError::Storage(format!(
                "encoding the config of group {:?}: {e}",
                config.name
            ))
        })?;
        let (reply, answer) = oneshot::channel();
        let write = GroupWrite::Create {
            name: config.name.clone(),
            config: json,
            committed,
            created_at,
            reply,
        };
        self.write(write, answer).await
    }

    async fn delete(&self, name: &str) -> Result<bool, GroupStoreError> {
        let (reply, answer) = oneshot::channel();
        let write = GroupWrite::Delete {
            name: name.to_owned(),
            reply,
        };
        self.write(write, answer).await
    }

    async fn apply(&self, changes: Vec<GroupChange>) -> Result<(), GroupStoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        self.write(GroupWrite::Apply { changes, reply }, answer)
            .await
    }
}

/// The store's errors as [`GroupStore`] callers know them. `Closed` stays `Closed`: the
/// groups' journal stops on it instead of retrying.
fn from_log_error(e: LogError) -> GroupStoreError {
    match e {
        LogError::Closed => GroupStoreError::Closed,
        LogError::Storage { context, source } => {
            GroupStoreError::Storage(format!("{context}: {source}"))
        }
        other => GroupStoreError::Storage(other.to_string()),
    }
}

type Reply<T> = oneshot::Sender<Result<T, GroupStoreError>>;

/// A group write, as queued for the writer thread.
pub(crate) enum GroupWrite {
    Create {
        name: String,
        /// [`StoredConfig`] as JSON.
        config: String,
        committed: Position,
        created_at: Timestamp,
        reply: Reply<()>,
    },
    Delete {
        name: String,
        reply: Reply<bool>,
    },
    Apply {
        changes: Vec<GroupChange>,
        reply: Reply<()>,
    },
}

impl GroupWrite {
    /// Runs on the writer thread: one transaction, answered after the commit. A caller
    /// that stopped waiting has its write made anyway, like an append.
    pub(crate) fn run(self, conn: &mut Connection) {
        match self {
            GroupWrite::Create {
                name,
                config,
                committed,
                created_at,
                reply,
            } => {
                let created = in_transaction(conn, "creating a consumer group", |tx| {
                    create(tx, &name, &config, committed, created_at)
                })
                .and_then(|created| {
                    if created {
                        Ok(())
                    } else {
                        Err(GroupStoreError::Exists(name))
                    }
                });
                let _ = reply.send(created);
            }
            GroupWrite::Delete { name, reply } => {
                let _ = reply.send(in_transaction(conn, "deleting a consumer group", |tx| {
                    delete(tx, &name)
                }));
            }
            GroupWrite::Apply { changes, reply } => {
                let _ = reply.send(in_transaction(
                    conn,
                    "saving consumer group changes",
                    |tx| apply(tx, changes),
                ));
            }
        }
    }
}

/// Runs `f` in an `IMMEDIATE` transaction and commits; on any error nothing of it stays.
fn in_transaction<T>(
    conn: &mut Connection,
    context: &str,
    f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
) -> Result<T, GroupStoreError> {
    fn run<T>(
        conn: &mut Connection,
        f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
    run(conn, f).map_err(|e| GroupStoreError::Storage(format!("{context}: {e}")))
}

/// False if the name is taken; the existing group is left as it was.
fn create(
    tx: &Transaction<'_>,
    name: &str,
    config: &str,
    committed: Position,
    created_at: Timestamp,
) -> rusqlite::Result<bool> {
    let inserted = tx
        .prepare_cached(
            "INSERT INTO consumer_groups (name, config, created_at, committed)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO NOTHING",
        )?
        .execute(params![name, config, created_at.as_millis(), committed])?;
    Ok(inserted == 1)
}

fn delete(tx: &Transaction<'_>, name: &str) -> rusqlite::Result<bool> {
    let Some(id) = group_id(tx, name)? else {
        return Ok(false);
    };
    for sql in [
        "DELETE FROM group_progress WHERE group_id = ?1",
        "DELETE FROM group_dlq WHERE group_id = ?1",
        "DELETE FROM consumer_groups WHERE id = ?1",
    ] {
        tx.prepare_cached(sql)?.execute([id])?;
    }
    Ok(true)
}

fn group_id(tx: &Transaction<'_>, name: &str) -> rusqlite::Result<Option<i64>> {
    tx.prepare_cached("SELECT id FROM consumer_groups WHERE name = ?1")?
        .query_row([name], |row| row.get(0))
        .optional()
}

fn apply(tx: &Transaction<'_>, changes: Vec<GroupChange>) -> rusqlite::Result<()> {
    // A batch holds many changes to a few groups: look each name up once.
    let mut ids: HashMap<String, Option<i64>> = HashMap::new();
    for change in changes {
        let id = match ids.get(change.group()) {
            Some(id) => *id,
            None => {
                let id = group_id(tx, change.group())?;
                ids.insert(change.group().to_owned(), id);
                id
            }
        };
        // A group deleted while its changes were queued: they are moot.
        let Some(id) = id else { continue };
        apply_change(tx, id, change)?;
    }
    Ok(())
}

/// One change, in SQL. Each arm does what the same arm of the in-memory reference does.
fn apply_change(tx: &Transaction<'_>, id: i64, change: GroupChange) -> rusqlite::Result<()> {
    match change {
        GroupChange::Attempted {
            position,
            attempts,
            reason,
            ..
        } => {
            // A new row starts unacked and not replayed; an existing one keeps both, and
            // its reason unless a new one was given.
            tx.prepare_cached(
                "INSERT INTO group_progress (group_id, position, attempts, acked, last_reason, replayed)
                 VALUES (?1, ?2, ?3, 0, ?4, 0)
                 ON CONFLICT (group_id, position) DO UPDATE SET
                     attempts = excluded.attempts,
                     last_reason = coalesce(excluded.last_reason, last_reason)",
            )?
            .execute(params![id, position, attempts, reason])?;
        }
        GroupChange::Acked { position, .. } => {
            tx.prepare_cached(
                "INSERT INTO group_progress (group_id, position, attempts, acked, last_reason, replayed)
                 VALUES (?1, ?2, 0, 1, NULL, 0)
                 ON CONFLICT (group_id, position) DO UPDATE SET acked = 1",
            )?
            .execute(params![id, position])?;
        }
        GroupChange::Committed { committed, .. } => {
            // Never backwards: a stale commit must not bring back dropped rows' events.
            tx.prepare_cached(
                "UPDATE consumer_groups SET committed = max(committed, ?2) WHERE id = ?1",
            )?
            .execute(params![id, committed])?;
            tx.prepare_cached(
                "DELETE FROM group_progress
                 WHERE group_id = ?1 AND (replayed = 0 OR acked = 1)
                   AND position <= (SELECT committed FROM consumer_groups WHERE id = ?1)",
            )?
            .execute([id])?;
        }
        GroupChange::Forget { position, .. } => {
            forget(tx, id, position)?;
        }
        GroupChange::Parked { entry, .. } => {
            let position = entry.event.position;
            forget(tx, id, position)?;
            let event = serde_json::to_string(&entry.event)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            tx.prepare_cached(
                "INSERT INTO group_dlq (group_id, position, attempts, reason, parked_at, event)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (group_id, position) DO UPDATE SET
                     attempts = excluded.attempts,
                     reason = excluded.reason,
                     parked_at = excluded.parked_at,
                     event = excluded.event",
            )?
            .execute(params![
                id,
                position,
                entry.attempts,
                entry.reason,
                entry.parked_at.as_millis(),
                event,
            ])?;
        }
        GroupChange::Replayed { position, .. } => {
            discard(tx, id, position)?;
            tx.prepare_cached(
                "INSERT INTO group_progress (group_id, position, attempts, acked, last_reason, replayed)
                 VALUES (?1, ?2, 0, 0, NULL, 1)
                 ON CONFLICT (group_id, position) DO UPDATE SET
                     attempts = 0, acked = 0, last_reason = NULL, replayed = 1",
            )?
            .execute(params![id, position])?;
        }
        GroupChange::Discarded { position, .. } => {
            discard(tx, id, position)?;
        }
    }
    Ok(())
}

fn forget(tx: &Transaction<'_>, id: i64, position: Position) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM group_progress WHERE group_id = ?1 AND position = ?2")?
        .execute(params![id, position])?;
    Ok(())
}

fn discard(tx: &Transaction<'_>, id: i64, position: Position) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM group_dlq WHERE group_id = ?1 AND position = ?2")?
        .execute(params![id, position])?;
    Ok(())
}

/// Every group, on a reader connection. The primary keys give the position order.
fn load(conn: &Connection) -> rusqlite::Result<Vec<StoredGroup>> {
    // One read transaction: the three tables as of one commit, never a group without the
    // progress a concurrent `apply` committed with it.
    let tx = conn.unchecked_transaction()?;
    let mut groups = Vec::new();
    let mut index = HashMap::new();
    {
        let mut stmt = tx.prepare_cached(
            "SELECT id, name, config, created_at, committed FROM consumer_groups ORDER BY name",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            let name: String = row.get(1)?;
            let config: StoredConfig = json_column(&row.get::<_, String>(2)?, 2)?;
            index.insert(id, groups.len());
            groups.push(StoredGroup {
                config: config.into_config(name),
                created_at: Timestamp::from_millis(row.get(3)?),
                committed: row.get(4)?,
                progress: Vec::new(),
                dlq: Vec::new(),
            });
        }
    }
    {
        let mut stmt = tx.prepare_cached(
            "SELECT group_id, position, attempts, acked, last_reason, replayed
             FROM group_progress ORDER BY group_id, position",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let Some(&i) = index.get(&row.get::<_, i64>(0)?) else {
                continue;
            };
            groups[i].progress.push(EventProgress {
                position: row.get(1)?,
                attempts: row.get(2)?,
                acked: row.get(3)?,
                last_reason: row.get(4)?,
                replayed: row.get(5)?,
            });
        }
    }
    {
        let mut stmt = tx.prepare_cached(
            "SELECT group_id, event, attempts, reason, parked_at
             FROM group_dlq ORDER BY group_id, position",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let Some(&i) = index.get(&row.get::<_, i64>(0)?) else {
                continue;
            };
            let event: Event = json_column(&row.get::<_, String>(1)?, 1)?;
            groups[i].dlq.push(DlqEntry {
                event,
                attempts: row.get(2)?,
                reason: row.get(3)?,
                parked_at: Timestamp::from_millis(row.get(4)?),
            });
        }
    }
    Ok(groups)
}

fn json_column<T: for<'de> Deserialize<'de>>(text: &str, column: usize) -> rusqlite::Result<T> {
    serde_json::from_str(text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(column, Type::Text, Box::new(e)))
}

/// The `config` column's JSON: every [`GroupConfig`] field but the name, which has a
/// column of its own. Durations are whole milliseconds, which is all the HTTP API can
/// express; a sub-millisecond remainder would be dropped.
#[derive(Serialize, Deserialize)]
struct StoredConfig {
    filter: Filter,
    ack_wait_ms: u64,
    max_deliveries: u32,
    backoff_ms: Vec<u64>,
    max_in_flight: u32,
    ordering: Ordering,
}

impl StoredConfig {
    fn new(config: &GroupConfig) -> Self {
        StoredConfig {
            filter: config.filter.clone(),
            ack_wait_ms: millis(config.ack_wait),
            max_deliveries: config.max_deliveries,
            backoff_ms: config.backoff.iter().copied().map(millis).collect(),
            max_in_flight: config.max_in_flight,
            ordering: config.ordering,
        }
    }

    fn into_config(self, name: String) -> GroupConfig {
        GroupConfig {
            name,
            filter: self.filter,
            ack_wait: Duration::from_millis(self.ack_wait_ms),
            max_deliveries: self.max_deliveries,
            backoff: self
                .backoff_ms
                .into_iter()
                .map(Duration::from_millis)
                .collect(),
            max_in_flight: self.max_in_flight,
            ordering: self.ordering,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
