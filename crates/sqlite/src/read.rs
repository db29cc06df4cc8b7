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
    Args, Event, Filter, LogError, Position, ReadQuery, Timestamp, Topic, TopicPattern,
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

    /// `EXPLAIN QUERY PLAN`'s lines for this statement, indented two spaces per level as
    /// the sqlite3 shell draws the tree.
    fn explain(&self, conn: &Connection) -> rusqlite::Result<Vec<String>> {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {}", self.sql))?;
        let mut rows = stmt.query(params_from_iter(&self.params))?;
        let mut depths: Vec<(i64, usize)> = Vec::new();
        let mut lines = Vec::new();
        while let Some(row) = rows.next()? {
            let (id, parent, detail): (i64, i64, String) = (row.get(0)?, row.get(1)?, row.get(3)?);
            let depth = depths
                .iter()
                .find(|(node, _)| *node == parent)
                .map_or(0, |(_, d)| d + 1);
            depths.push((id, depth));
            lines.push(format!("{}{detail}", "  ".repeat(depth)));
        }
        Ok(lines)
    }
}

impl crate::SqliteLog {
    /// The plan SQLite chooses for `query`'s page, one line per node of
    /// `EXPLAIN QUERY PLAN`, children indented. For tests of the read queries' shapes.
    #[doc(hidden)]
    pub async fn explain_read(&self, query: ReadQuery<'_>) -> Result<Vec<String>, LogError> {
        let select = select_events(&query);
        self.readers
            .run("explaining a read", move |conn| select.explain(conn))
            .await
    }
}

/// Most arms a merged read may have; a filter listing more values (only possible without
/// [`Filter::validate`], which allows 100) falls back to the single query. SQLite refuses
/// compounds of more than 500 SELECTs.
const MAX_ARMS: usize = 100;

/// The keyset page of `query`: `after < position <= up_to`, filtered, in position order.
/// Only parameter counts shape the SQL text, never user strings, so statements are
/// cached per filter shape and nothing a client sends is ever parsed as SQL.
///
/// A filter listing several values in a field is read as a merge: one arm per value,
/// each a range scan of that value's `(column, position)` index, which comes out in
/// position order already:
///
/// ```sql
/// SELECT .. FROM events WHERE position > ?1 AND position <= ?2 AND topic = ?4 AND ..
/// UNION ALL SELECT .. WHERE position > ?1 AND position <= ?2 AND topic = ?5 AND ..
/// ORDER BY position LIMIT ?3
/// ```
///
/// SQLite runs an ordered compound as a merge of co-routines and stops pulling at the
/// limit: at most `limit` rows plus one per arm pass the merge, nothing is sorted. The
/// single query `topic IN (..) ORDER BY position` needs a sort; SQLite cuts each value's
/// walk short once its `limit`-row sorter is full (about `limit` rows per value), but
/// only when it picks a plan that walks each value in position order, and otherwise
/// sorts every match up to `up_to` on every page. The arms carry no `LIMIT` of their own:
/// that would need `SELECT * FROM (.. LIMIT ?)` wrappers, whose rows SQLite materializes
/// and sorts again before merging.
pub(crate) fn select_events(query: &ReadQuery<'_>) -> Select {
    let mut select = Select {
        sql: String::new(),
        params: Vec::new(),
    };
    let after = select.bind(to_sql_int(query.after));
    let up_to = select.bind(to_sql_int(query.up_to));
    let limit = select.bind(to_sql_int(query.limit as u64));
    let range = format!("position > {after} AND position <= {up_to}");
    let fields = Fields::of(query.filter);
    let sql = match fields.driving() {
        Some(driving) => {
            let (arms, overlap) = fields.arms(&mut select, driving);
            let rest = fields.conditions_besides(&mut select, driving);
            let compound = if overlap { " UNION " } else { " UNION ALL " };
            let selects: Vec<String> = arms
                .iter()
                .map(|arm| {
                    let mut sql =
                        format!("SELECT {EVENT_COLUMNS} FROM events WHERE {range} AND {arm}");
                    for condition in &rest {
                        sql.push_str(" AND ");
                        sql.push_str(condition);
                    }
                    sql
                })
                .collect();
            format!("{} ORDER BY position LIMIT {limit}", selects.join(compound))
        }
        None => {
            let mut sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE {range}");
            for condition in filter_conditions(&mut select, query.filter) {
                sql.push_str(" AND ");
                sql.push_str(&condition);
            }
            sql.push_str(&format!(" ORDER BY position LIMIT {limit}"));
            sql
        }
    };
    select.sql = sql;
    select
}

/// Which filter field a merged read has one arm per value of.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Driving {
    Topics,
    /// An index into [`Fields::lists`].
    List(usize),
}

/// A filter's values as the merged read uses them: duplicates dropped (first one kept),
/// so that arms of exact values never overlap, and exact topics apart from patterns.
struct Fields {
    exact_topics: Vec<String>,
    wild_topics: Vec<TopicPattern>,
    /// `(column, values)` for names, client ids and session ids, in that order.
    lists: [(&'static str, Vec<String>); 3],
}

impl Fields {
    fn of(filter: &Filter) -> Fields {
        let mut exact_topics = Vec::new();
        let mut wild_topics = Vec::new();
        for pattern in &filter.topics {
            if pattern.is_exact() {
                exact_topics.push(pattern.as_str().to_owned());
            } else {
                wild_topics.push(pattern.clone());
            }
        }
        Fields {
            exact_topics: distinct(exact_topics),
            wild_topics: distinct(wild_topics),
            lists: [
                ("name", distinct(filter.names.clone())),
                ("client_id", distinct(filter.client_ids.clone())),
                ("session_id", distinct(filter.session_ids.clone())),
            ],
        }
    }

    fn topic_count(&self) -> usize {
        self.exact_topics.len() + self.wild_topics.len()
    }

    /// The field to merge over, `None` when every field lists at most one value (one
    /// equality is an ordered index range already; a lone pattern is left to the planner,
    /// as before). Exact topics first: they are the most selective, and topics is the
    /// field readers list several of. Then names, client ids and session ids. Patterns
    /// only last: a pattern's arm is a prefix range of the topic index, which is not in
    /// position order, or a scan of the position range.
    fn driving(&self) -> Option<Driving> {
        let topics = self.topic_count();
        let choice = if topics >= 2 && !self.exact_topics.is_empty() {
            Driving::Topics
        } else if let Some(i) = self.lists.iter().position(|(_, values)| values.len() >= 2) {
            Driving::List(i)
        } else if topics >= 2 {
            Driving::Topics
        } else {
            return None;
        };
        let arms = match choice {
            Driving::Topics => topics,
            Driving::List(i) => self.lists[i].1.len(),
        };
        (arms <= MAX_ARMS).then_some(choice)
    }

    /// One condition per arm of `driving`, each usable as an index range in position
    /// order (a pattern's prefix range aside), and whether two arms may match the same
    /// event (patterns overlap each other and exact topics), which calls for `UNION`.
    fn arms(&self, select: &mut Select, driving: Driving) -> (Vec<String>, bool) {
        match driving {
            Driving::List(i) => {
                let (column, values) = &self.lists[i];
                let arms = values
                    .iter()
                    .map(|v| format!("{column} = {}", select.bind(v.clone())))
                    .collect();
                (arms, false)
            }
            Driving::Topics => {
                let mut arms: Vec<String> = self
                    .exact_topics
                    .iter()
                    .map(|t| format!("topic = {}", select.bind(t.clone())))
                    .collect();
                for pattern in &self.wild_topics {
                    arms.push(wildcard_condition(select, pattern));
                }
                (arms, !self.wild_topics.is_empty())
            }
        }
    }

    /// The conditions of every field but `driving`, repeated in each arm. A lone exact
    /// value stays indexable (`column = ?`, in position order too); anything else gets
    /// its column as `+column`, which keeps SQLite from answering an arm with that
    /// field's index, out of position order, and sorting all its matches.
    fn conditions_besides(&self, select: &mut Select, driving: Driving) -> Vec<String> {
        let mut conditions = Vec::new();
        if driving != Driving::Topics && self.topic_count() > 0 {
            if self.wild_topics.is_empty() && self.exact_topics.len() == 1 {
                conditions.push(format!(
                    "topic = {}",
                    select.bind(self.exact_topics[0].clone())
                ));
            } else {
                let mut alternatives = Vec::new();
                if !self.exact_topics.is_empty() {
                    alternatives.push(select.bind_in("+topic", &self.exact_topics));
                }
                // The prefix range only helps an index scan; topic_match alone decides.
                for pattern in &self.wild_topics {
                    alternatives.push(format!(
                        "topic_match({}, topic)",
                        select.bind(pattern.as_str().to_owned())
                    ));
                }
                conditions.push(format!("({})", alternatives.join(" OR ")));
            }
        }
        for (i, (column, values)) in self.lists.iter().enumerate() {
            if driving == Driving::List(i) || values.is_empty() {
                continue;
            }
            conditions.push(if let [value] = values.as_slice() {
                format!("{column} = {}", select.bind(value.clone()))
            } else {
                select.bind_in(&format!("+{column}"), values)
            });
        }
        conditions
    }
}

/// `values` without repeats, in first-seen order.
fn distinct<T: PartialEq>(values: Vec<T>) -> Vec<T> {
    let mut kept = Vec::with_capacity(values.len());
    for value in values {
        if !kept.contains(&value) {
            kept.push(value);
        }
    }
    kept
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
            alternatives.push(wildcard_condition(select, pattern));
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

/// The topics `pattern` matches. Every match starts with the pattern's literal prefix:
/// bound the scan of the topic index to that range, and let topic_match decide within it.
fn wildcard_condition(select: &mut Select, pattern: &TopicPattern) -> String {
    let prefix = pattern.literal_prefix();
    let matches = format!(
        "topic_match({}, topic)",
        select.bind(pattern.as_str().to_owned())
    );
    match prefix_upper_bound(&prefix) {
        Some(upper) => format!(
            "(topic >= {} AND topic < {} AND {matches})",
            select.bind(prefix),
            select.bind(upper)
        ),
        None => matches,
    }
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

/// The newest position handed out (0 when none): the newest stored, or a newer one that
/// was since removed.
pub(crate) fn head_position(conn: &Connection) -> rusqlite::Result<Position> {
    let stored: Position =
        conn.query_row("SELECT COALESCE(MAX(position), 0) FROM events", [], |row| {
            row.get(0)
        })?;
    Ok(stored.max(pruned_position(conn)?))
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

/// The highest position retention ever removed (0 if none).
pub(crate) fn pruned_position(conn: &Connection) -> rusqlite::Result<Position> {
    conn.prepare_cached("SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'pruned_position'")?
        .query_row([], |row| row.get(0))
        .optional()
        .map(Option::unwrap_or_default)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(raw: &[&str]) -> Vec<TopicPattern> {
        raw.iter().map(|p| TopicPattern::new(*p).unwrap()).collect()
    }

    fn page(filter: &Filter) -> Select {
        select_events(&ReadQuery {
            after: 0,
            up_to: u64::MAX,
            filter,
            limit: 10,
        })
    }

    #[test]
    fn upper_bound_covers_exactly_the_prefix() {
        assert_eq!(prefix_upper_bound("orders.").as_deref(), Some("orders/"));
        assert_eq!(prefix_upper_bound(""), None);
    }

    #[test]
    fn filters_become_bound_parameters_only() {
        let filter = Filter {
            topics: patterns(&["a.b", "orders.>", "*.x"]),
            names: vec!["x'); DROP TABLE events; --".into()],
            ..Filter::default()
        };
        let select = page(&filter);
        assert!(!select.sql.contains("DROP"), "{}", select.sql);
        assert!(!select.sql.contains("orders"), "{}", select.sql);
        assert_eq!(select.params[1], Value::Integer(i64::MAX));
        assert_eq!(select.params[2], Value::Integer(10));
        assert!(
            select.sql.ends_with("ORDER BY position LIMIT ?3"),
            "{}",
            select.sql
        );
        // Every placeholder has a value and every value a placeholder.
        assert_eq!(select.params.len(), 9);
        assert!(select.sql.contains("?9") && !select.sql.contains("?10"));
    }

    #[test]
    fn several_values_merge_one_arm_per_value() {
        let filter = Filter {
            topics: patterns(&["a", "b", "c", "a"]),
            names: vec!["x".into(), "y".into()],
            client_ids: vec!["k".into()],
            ..Filter::default()
        };
        let sql = page(&filter).sql;
        // Topics drive (the repeated "a" only once); the other fields repeat in each arm,
        // names with their index disabled, the lone client id as an equality.
        assert_eq!(sql.matches("UNION ALL").count(), 2, "{sql}");
        assert_eq!(sql.matches("+name IN (?7, ?8)").count(), 3, "{sql}");
        assert_eq!(sql.matches("client_id = ?9").count(), 3, "{sql}");

        // Patterns overlap: UNION drops an event two arms return.
        let filter = Filter {
            topics: patterns(&["a", "a.>", "*.b"]),
            ..Filter::default()
        };
        let sql = page(&filter).sql;
        assert_eq!(sql.matches(" UNION SELECT").count(), 2, "{sql}");

        // Names drive when no exact topic is listed; a pattern is then only checked.
        let filter = Filter {
            topics: patterns(&["a.>"]),
            names: vec!["x".into(), "y".into(), "z".into()],
            ..Filter::default()
        };
        let sql = page(&filter).sql;
        assert_eq!(sql.matches("UNION ALL").count(), 2, "{sql}");
        assert!(!sql.contains("topic >="), "{sql}");

        // One value per field: the single query, as before.
        let filter = Filter {
            topics: patterns(&["a"]),
            names: vec!["x".into()],
            ..Filter::default()
        };
        assert!(!page(&filter).sql.contains("UNION"));
    }
}
