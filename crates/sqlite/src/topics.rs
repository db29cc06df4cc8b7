//! Topic settings and retention in SQLite: the writes ([`TopicWrite`], run on the writer
//! thread, each in one short `IMMEDIATE` transaction), the reads of `topics` rows, and
//! [`Floors`], the in-memory copy of how far each topic has been pruned.
//!
//! A prune removes one batch of a topic's oldest events by seq: a range of the
//! `UNIQUE (topic, seq)` index, never a scan of the topic. The cut by age is found through
//! the `(timestamp)` index (time and position grow together), then turned into the
//! topic's seq with one seek of `(topic, position)`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use tokio::sync::oneshot;
use tributary_core::{Filter, LogError, Position, PruneRule, Topic, TopicConfig, TopicInfo};

use crate::error::storage;

/// How far each pruned topic has been cut (its `pruned_position`), kept in memory so
/// that readers can ask after every page without a query. The writer raises an entry
/// before it commits the prune, so a reader that saw the removal also sees the floor.
#[derive(Clone, Default)]
pub(crate) struct Floors(Arc<RwLock<HashMap<String, Position>>>);

impl Floors {
    pub(crate) fn load(conn: &Connection) -> rusqlite::Result<Floors> {
        let mut stmt =
            conn.prepare("SELECT name, pruned_position FROM topics WHERE pruned_position > 0")?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(Floors(Arc::new(RwLock::new(
            rows.collect::<rusqlite::Result<_>>()?,
        ))))
    }

    /// The highest floor of a topic `filter` can match.
    pub(crate) fn highest(&self, filter: &Filter) -> Position {
        self.0
            .read()
            .iter()
            .filter(|(topic, _)| filter.matches_topic(topic))
            .map(|(_, &floor)| floor)
            .max()
            .unwrap_or(0)
    }

    fn raise(&self, topic: &str, floor: Position) {
        let mut floors = self.0.write();
        let entry = floors.entry(topic.to_owned()).or_insert(0);
        *entry = (*entry).max(floor);
    }
}

/// A write to a topic's row or its events, answered on `reply`.
pub(crate) enum TopicWrite {
    Configure {
        topic: Topic,
        config: TopicConfig,
        reply: oneshot::Sender<Result<(), LogError>>,
    },
    Unconfigure {
        topic: Topic,
        reply: oneshot::Sender<Result<bool, LogError>>,
    },
    Prune {
        topic: Topic,
        rule: PruneRule,
        limit: usize,
        reply: oneshot::Sender<Result<u64, LogError>>,
    },
}

impl TopicWrite {
    pub(crate) fn run(self, conn: &mut Connection, floors: &Floors) {
        match self {
            TopicWrite::Configure {
                topic,
                config,
                reply,
            } => {
                let done = write(conn, "configuring a topic", |tx| {
                    configure(tx, topic.as_str(), &config)
                });
                let _ = reply.send(done);
            }
            TopicWrite::Unconfigure { topic, reply } => {
                let done = write(conn, "removing a topic's settings", |tx| {
                    tx.execute(
                        "UPDATE topics SET configured = 0, max_age_ms = NULL, max_events = NULL,
                             max_event_bytes = NULL
                         WHERE name = ?1 AND configured = 1",
                        [topic.as_str()],
                    )
                    .map(|n| n > 0)
                });
                let _ = reply.send(done);
            }
            TopicWrite::Prune {
                topic,
                rule,
                limit,
                reply,
            } => {
                let done = write(conn, "pruning a topic", |tx| {
                    prune(tx, topic.as_str(), rule, limit, floors)
                });
                let _ = reply.send(done);
            }
        }
    }
}

fn write<T>(
    conn: &mut Connection,
    context: &'static str,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> Result<T, LogError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(storage(context))?;
    let out = f(&tx).map_err(storage(context))?;
    tx.commit().map_err(storage(context))?;
    Ok(out)
}

fn to_sql(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn configure(tx: &Connection, topic: &str, config: &TopicConfig) -> rusqlite::Result<()> {
    let max_age_ms = config.max_age.map(|a| to_sql(a.as_millis() as u64));
    tx.execute(
        "INSERT INTO topics (name, head_seq, event_count, last_position, configured,
                             max_age_ms, max_events, max_event_bytes)
         VALUES (?1, 0, 0, 0, 1, ?2, ?3, ?4)
         ON CONFLICT (name) DO UPDATE SET configured = 1, max_age_ms = excluded.max_age_ms,
             max_events = excluded.max_events, max_event_bytes = excluded.max_event_bytes",
        params![
            topic,
            max_age_ms,
            config.max_events.map(to_sql),
            config.max_event_bytes.map(to_sql)
        ],
    )?;
    Ok(())
}

/// One batch of `rule` on `topic`: the events with seq in `(pruned_seq, cut]`, at most
/// `limit` of them.
fn prune(
    tx: &Connection,
    topic: &str,
    rule: PruneRule,
    limit: usize,
    floors: &Floors,
) -> rusqlite::Result<u64> {
    let Some((head_seq, pruned_seq)) = tx
        .prepare_cached("SELECT head_seq, pruned_seq FROM topics WHERE name = ?1")?
        .query_row([topic], |row| {
            Ok((row.get::<_, u64>(0)?, row.get::<_, u64>(1)?))
        })
        .optional()?
    else {
        return Ok(0);
    };
    let mut cut = rule
        .keep_last
        .map_or(0, |keep| head_seq.saturating_sub(keep));
    if let Some(before) = rule.before {
        let old_enough = crate::read::position_before(tx, before)?;
        let seq: Option<u64> = tx
            .prepare_cached(
                "SELECT seq FROM events WHERE topic = ?1 AND position <= ?2
                 ORDER BY position DESC LIMIT 1",
            )?
            .query_row(params![topic, to_sql(old_enough)], |row| row.get(0))
            .optional()?;
        cut = cut.max(seq.unwrap_or(0));
    }
    let upper = cut.min(pruned_seq.saturating_add(limit as u64));
    if upper <= pruned_seq {
        return Ok(0);
    }
    let position: Position = tx
        .prepare_cached("SELECT position FROM events WHERE topic = ?1 AND seq = ?2")?
        .query_row(params![topic, to_sql(upper)], |row| row.get(0))?;
    let removed = tx
        .prepare_cached("DELETE FROM events WHERE topic = ?1 AND seq > ?2 AND seq <= ?3")?
        .execute(params![topic, to_sql(pruned_seq), to_sql(upper)])? as u64;
    tx.prepare_cached(
        "UPDATE topics SET event_count = event_count - ?2, pruned_seq = ?3, pruned_position = ?4
         WHERE name = ?1",
    )?
    .execute(params![
        topic,
        removed as i64,
        to_sql(upper),
        to_sql(position)
    ])?;
    tx.prepare_cached(
        "UPDATE meta SET value = CAST(MAX(CAST(value AS INTEGER), ?1) AS TEXT)
         WHERE key = 'pruned_position'",
    )?
    .execute([to_sql(position)])?;
    // Before the commit: see `Floors`.
    floors.raise(topic, position);
    Ok(removed)
}

/// The columns a [`TopicInfo`] is made of, in the order [`info_from_row`] reads them.
pub(crate) const TOPIC_COLUMNS: &str = "name, head_seq, event_count, last_position, pruned_seq,
     pruned_position, configured, max_age_ms, max_events, max_event_bytes";

pub(crate) fn info_from_row(row: &Row<'_>) -> rusqlite::Result<TopicInfo> {
    let name: String = row.get(0)?;
    let topic = Topic::new(name)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, Type::Text, Box::new(e)))?;
    let configured: bool = row.get(6)?;
    let config = configured
        .then(|| -> rusqlite::Result<TopicConfig> {
            Ok(TopicConfig {
                max_age: row.get::<_, Option<u64>>(7)?.map(Duration::from_millis),
                max_events: row.get(8)?,
                max_event_bytes: row.get(9)?,
            })
        })
        .transpose()?;
    Ok(TopicInfo {
        topic,
        head_seq: row.get(1)?,
        event_count: row.get(2)?,
        last_position: row.get(3)?,
        pruned_seq: row.get(4)?,
        pruned_position: row.get(5)?,
        config,
    })
}

/// Every listed topic, sorted by name (bytewise, as [`Topic`]'s `Ord`).
pub(crate) fn list(conn: &Connection) -> rusqlite::Result<Vec<TopicInfo>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {TOPIC_COLUMNS} FROM topics WHERE event_count > 0 OR configured = 1 ORDER BY name"
    ))?;
    let rows = stmt.query_map([], info_from_row)?;
    rows.collect()
}

pub(crate) fn one(conn: &Connection, topic: &str) -> rusqlite::Result<Option<TopicInfo>> {
    conn.prepare_cached(&format!(
        "SELECT {TOPIC_COLUMNS} FROM topics WHERE name = ?1"
    ))?
    .query_row([topic], info_from_row)
    .optional()
}
