//! Opening connections: the one read-write connection the writer thread owns, and the
//! read-only ones of the reader pool. Every pragma and SQL function lives here so that
//! all connections agree on them.

use std::path::Path;
use std::time::Duration;

use rusqlite::functions::FunctionFlags;
use rusqlite::{Connection, OpenFlags};
use tributary_core::{LogError, TopicPattern};

use crate::error::storage;
use crate::options::Synchronous;

/// How long a connection waits for a lock before failing. The writer thread is the only
/// writer, so waits are short (checkpoints, another process opening the file); failing
/// fast would turn them into errors for no reason.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Statements kept prepared per connection. The writer uses a handful; readers one per
/// filter shape (how many topics, names, ... it lists), so leave room for many shapes.
const STATEMENT_CACHE: usize = 64;

/// The writer's connection: creates the file if needed and switches it to WAL, so that
/// readers never block the writer nor the writer the readers.
pub(crate) fn open_writer(path: &Path, synchronous: Synchronous) -> Result<Connection, LogError> {
    // No URI flag: a path is always a file name, never parsed as `file:...?` options.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(storage("opening the sqlite database for writing"))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(storage("setting busy_timeout"))?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(storage("switching the sqlite database to WAL"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        // Some file systems (network mounts) refuse WAL; the rollback journal would make
        // every read block the writer, which the design does not allow for.
        return Err(LogError::storage(
            "switching the sqlite database to WAL",
            format!("the database stayed in journal mode {mode:?}"),
        ));
    }
    // Set after WAL: in WAL mode FULL fsyncs the WAL on every commit (durable on 2xx),
    // NORMAL only at checkpoints.
    conn.pragma_update(None, "synchronous", synchronous.pragma_value())
        .map_err(storage("setting synchronous"))?;
    finish(&conn)?;
    Ok(conn)
}

/// A reader pool connection. Read-only at the SQLite level, so a bug in a query can never
/// write behind the writer thread's back.
pub(crate) fn open_reader(path: &Path) -> Result<Connection, LogError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(storage("opening the sqlite database for reading"))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(storage("setting busy_timeout"))?;
    finish(&conn)?;
    Ok(conn)
}

/// What every connection needs, whatever it is for.
fn finish(conn: &Connection) -> Result<(), LogError> {
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    register_topic_match(conn).map_err(storage("registering topic_match"))
}

/// `topic_match(pattern, topic)`: the one definition of wildcard matching
/// ([`TopicPattern::matches`]) made available to SQL, so filtered reads cannot disagree
/// with the in-memory filter.
fn register_topic_match(conn: &Connection) -> rusqlite::Result<()> {
    conn.create_scalar_function(
        "topic_match",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            // The pattern is a bound parameter, constant for the whole statement: parse it
            // once and let SQLite keep it as auxiliary data instead of once per row.
            let pattern = ctx.get_or_create_aux(0, |value| {
                let raw = value.as_str()?;
                TopicPattern::new(raw)
                    .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })
            })?;
            Ok(match ctx.get_raw(1).as_str_or_null()? {
                Some(topic) => pattern.matches(topic),
                None => false,
            })
        },
    )
}

/// Lets SQLite gather index statistics where they are missing or stale, so the planner
/// can weigh a scan of the position range against a filter's index. `analysis_limit`
/// keeps this to a sample, so it stays quick on a big file.
pub(crate) fn optimize(conn: &Connection) -> Result<(), LogError> {
    conn.execute_batch("PRAGMA analysis_limit = 1000; PRAGMA optimize = 0x10002;")
        .map_err(storage("optimizing the sqlite database"))
}
