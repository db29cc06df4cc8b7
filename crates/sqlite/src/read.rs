//! Reading: the pool of read-only connections and the queries they run, including the
//! translation of a [`Filter`] into SQL.
//!
//! Reads never go through the writer thread. In WAL mode each read sees the last commit
//! made before it started, and the writer only moves the head after committing, so every
//! position up to the head is readable here.

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::types::{Type, Value};
use rusqlite::{Connection, OptionalExtension, Row, params_from_iter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tributary_core::{
    Args, Event, Filter, LogError, Position, ReadQuery, Timestamp, Topic, TopicInfo,
};

use crate::connection::open_reader;
use crate::error::storage;

/// The columns an [`Event`] is made of, in the order [`event_from_row`] reads them.
const EVENT_COLUMNS: &str =
    "position, topic, seq, name, args, id, client_id, session_id, timestamp";

/// A fixed set of read-only connections. A read borrows one for the length of one query,
/// on a blocking thread so that SQLite's I/O never stalls the async runtime; the semaphore
/// makes callers beyond the pool size wait instead of opening more connections.
pub(crate) struct ReaderPool {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl ReaderPool {
    /// Opens every connection now, so a file that cannot be read fails `open`, not the
    /// first read.
    pub(crate) fn open(path: PathBuf, size: usize) -> Result<Self, LogError> {
        let size = size.max(1);
        let idle = (0..size)
            .map(|_| open_reader(&path))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ReaderPool {
            shared: Arc::new(Shared {
                path,
                idle: Mutex::new(idle),
                permits: Arc::new(Semaphore::new(size)),
            }),
        })
    }

    /// Runs `f` on a pooled connection on a blocking thread.
    pub(crate) async fn run<T, F>(&self, context: &'static str, f: F) -> Result<T, LogError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let permit = Arc::clone(&self.shared.permits)
            .acquire_owned()
            .await
            .map_err(storage("waiting for a sqlite reader"))?;
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            let lease = Lease::take(shared, permit)?;
            f(lease.conn()).map_err(storage(context))
        })
        .await
        .map_err(storage(context))?
    }
}

/// A connection out of the pool; goes back on drop, even when the query panicked.
struct Lease {
    conn: Option<Connection>,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    fn take(shared: Arc<Shared>, permit: OwnedSemaphorePermit) -> Result<Self, LogError> {
        let pooled = shared.idle.lock().pop();
        // Holding a permit means a connection is idle; should one ever have been lost,
        // open a replacement rather than fail the read.
        let conn = match pooled {
            Some(conn) => conn,
            None => open_reader(&shared.path)?,
        };
        Ok(Lease {
            conn: Some(conn),
            shared,
            _permit: permit,
        })
    }

    fn conn(&self) -> &Connection {
        self.conn
            .as_ref()
            .expect("a lease holds its connection until dropped")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.shared.idle.lock().push(conn);
        }
    }
}

/// A statement and its parameters, built on the async side (the query borrows its filter)
/// and run on a blocking thread.
pub(crate) struct Select {
    sql: String,
    params: Vec<Value>,
}

impl Select {
    /// `?N` for a new parameter.
    fn bind(&mut self, value: impl Into<Value>) -> String {
        self.params.push(value.into());
        format!("?{}", self.params.len())
    }

    /// `column IN (?a, ?b, ...)`.
    fn bind_in(&mut self, column: &str, values: &[String]) -> String {
        let marks: Vec<String> = values.iter().map(|v| self.bind(v.clone())).collect();
        format!("{column} IN ({})", marks.join(", "))
    }

    pub(crate) fn run(&self, conn: &Connection) -> rusqlite::Result<Vec<Event>> {
        let mut stmt = conn.prepare_cached(&self.sql)?;
        let rows = stmt.query_map(params_from_iter(&self.params), event_from_row)?;
        rows.collect()
    }
}

/// The keyset page of `query`: `after < position <= up_to`, filtered, in position order.
/// Only parameter counts shape the SQL text, never user strings, so statements are
/// cached per filter shape and nothing a client sends is ever parsed as SQL.
pub(crate) fn select_events(query: &ReadQuery<'_>) -> Select {
    let mut select = Select {
        sql: String::new(),
        params: Vec::new(),
    };
    let after = select.bind(to_sql_int(query.after));
    let up_to = select.bind(to_sql_int(query.up_to));
    let mut sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE position > {after} AND position <= {up_to}"
    );
    for condition in filter_conditions(&mut select, query.filter) {
        sql.push_str(" AND ");
        sql.push_str(&condition);
    }
    let limit = select.bind(to_sql_int(query.limit as u64));
    sql.push_str(&format!(" ORDER BY position LIMIT {limit}"));
    select.sql = sql;
    select
}

/// One SQL condition per non-empty filter field (ANDed by the caller), alternatives
/// ORed within, as [`Filter::matches`] defines.
fn filter_conditions(select: &mut Select, filter: &Filter) -> Vec<String> {
    let mut conditions = Vec::new();
    if !filter.topics.is_empty() {
        let (exact, wild): (Vec<_>, Vec<_>) = filter.topics.iter().partition(|p| p.is_exact());
        let mut alternatives = Vec::new();
        if !exact.is_empty() {
            let names: Vec<String> = exact.iter().map(|p| p.as_str().to_owned()).collect();
            alternatives.push(select.bind_in("topic", &names));
        }
        for pattern in wild {
            let prefix = pattern.literal_prefix();
            let matches = format!(
                "topic_match({}, topic)",
                select.bind(pattern.as_str().to_owned())
            );
            // Every match starts with the literal prefix: bound the scan of the topic
            // index to that range, and let topic_match decide within it.
            alternatives.push(match prefix_upper_bound(&prefix) {
                Some(upper) => format!(
                    "(topic >= {} AND topic < {} AND {matches})",
                    select.bind(prefix),
                    select.bind(upper)
                ),
                None => matches,
            });
        }
        conditions.push(format!("({})", alternatives.join(" OR ")));
    }
    // NULL client_id / session_id never equal anything in a list, as in Filter::matches.
    for (column, values) in [
        ("name", &filter.names),
        ("client_id", &filter.client_ids),
        ("session_id", &filter.session_ids),
    ] {
        if !values.is_empty() {
            conditions.push(select.bind_in(column, values));
        }
    }
    conditions
}

/// The smallest string greater than every string that starts with `prefix` (SQLite
/// compares text bytewise). `None` when there is no bound: an empty prefix.
fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut upper = prefix.to_owned();
    let last = upper.pop()?;
    // Topics are ASCII, so the next code point is the next byte.
    upper.push(char::from_u32(last as u32 + 1)?);
    Some(upper)
}

/// Positions and limits are u64 but SQLite integers are i64: "everything" (u64::MAX)
/// becomes the largest i64.
fn to_sql_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn event_from_row(row: &Row<'_>) -> rusqlite::Result<Event> {
    let topic: String = row.get(1)?;
    let topic = Topic::new(topic)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(1, Type::Text, Box::new(e)))?;
    Ok(Event {
        position: row.get(0)?,
        topic,
        seq: row.get(2)?,
        name: row.get(3)?,
        args: Args::from_stored(row.get(4)?),
        id: row.get(5)?,
        client_id: row.get(6)?,
        session_id: row.get(7)?,
        timestamp: Timestamp::from_millis(row.get(8)?),
    })
}

/// One topic's events after `after_seq`, in seq order: a range scan of the
/// `UNIQUE (topic, seq)` index, never OFFSET.
pub(crate) fn topic_events(
    conn: &Connection,
    topic: &str,
    after_seq: u64,
    limit: usize,
) -> rusqlite::Result<Vec<Event>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE topic = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
    ))?;
    let rows = stmt.query_map(
        rusqlite::params![topic, to_sql_int(after_seq), to_sql_int(limit as u64)],
        event_from_row,
    )?;
    rows.collect()
}

/// The seq of a topic's newest event, 0 if it has none.
pub(crate) fn topic_head(conn: &Connection, topic: &str) -> rusqlite::Result<u64> {
    let mut stmt = conn.prepare_cached("SELECT head_seq FROM topics WHERE name = ?1")?;
    Ok(stmt
        .query_row([topic], |row| row.get(0))
        .optional()?
        .unwrap_or(0))
}

/// The id the schema migration made for this database.
pub(crate) fn log_id(conn: &Connection) -> rusqlite::Result<String> {
    conn.query_row("SELECT value FROM meta WHERE key = 'log_id'", [], |row| {
        row.get(0)
    })
}

/// The newest stored position (0 when empty).
pub(crate) fn head_position(conn: &Connection) -> rusqlite::Result<Position> {
    conn.query_row("SELECT COALESCE(MAX(position), 0) FROM events", [], |row| {
        row.get(0)
    })
}

/// The last position stored strictly before `time`. Timestamps never decrease with
/// position, so this is one reverse seek on the `(timestamp)` index (whose entries end
/// in the position).
pub(crate) fn position_before(conn: &Connection, time: Timestamp) -> rusqlite::Result<Position> {
    let mut stmt = conn.prepare_cached(
        "SELECT position FROM events WHERE timestamp < ?1
         ORDER BY timestamp DESC, position DESC LIMIT 1",
    )?;
    Ok(stmt
        .query_row([time.as_millis()], |row| row.get(0))
        .optional()?
        .unwrap_or(0))
}

/// Every topic, sorted by name (bytewise, as [`Topic`]'s `Ord`).
pub(crate) fn topics(conn: &Connection) -> rusqlite::Result<Vec<TopicInfo>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, head_seq, event_count, last_position FROM topics ORDER BY name",
    )?;
    let rows = stmt.query_map([], |row| {
        let name: String = row.get(0)?;
        let topic = Topic::new(name)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, Type::Text, Box::new(e)))?;
        Ok(TopicInfo {
            topic,
            head_seq: row.get(1)?,
            event_count: row.get(2)?,
            last_position: row.get(3)?,
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use tributary_core::TopicPattern;

    use super::*;

    #[test]
    fn upper_bound_covers_exactly_the_prefix() {
        assert_eq!(prefix_upper_bound("orders.").as_deref(), Some("orders/"));
        assert_eq!(prefix_upper_bound(""), None);
    }

    #[test]
    fn filters_become_bound_parameters_only() {
        let filter = Filter {
            topics: vec![
                TopicPattern::new("a.b").unwrap(),
                TopicPattern::new("orders.>").unwrap(),
                TopicPattern::new("*.x").unwrap(),
            ],
            names: vec!["x'); DROP TABLE events; --".into()],
            ..Filter::default()
        };
        let select = select_events(&ReadQuery {
            after: 0,
            up_to: u64::MAX,
            filter: &filter,
            limit: 10,
        });
        assert!(!select.sql.contains("DROP"), "{}", select.sql);
        assert!(!select.sql.contains("orders"), "{}", select.sql);
        assert_eq!(select.params[1], Value::Integer(i64::MAX));
        assert!(
            select.sql.ends_with("ORDER BY position LIMIT ?9"),
            "{}",
            select.sql
        );
    }
}
