//! The schema and its migrations. The version lives in `PRAGMA user_version`; migration
//! `i` of [`MIGRATIONS`] takes the database from version `i` to `i + 1`.
//!
//! Why the schema looks this way:
//! - `position INTEGER PRIMARY KEY` is the rowid: reads are keyset range scans of the
//!   table itself, and `MAX(position)` is one b-tree descent.
//! - `parent_seq` is not stored: it is always `seq - 1`.
//! - `timestamp` is INTEGER milliseconds and never decreases with position, so the
//!   `(timestamp)` index (which ends in the rowid) answers "last position before t" with
//!   one reverse seek.
//! - One index per filter field, each ending in `position`, so a filtered page is a range
//!   scan in position order. Client and session ids are partial indexes (`IS NOT NULL`):
//!   most events carry neither, and an index entry per event for a NULL nobody asks for
//!   is one more b-tree insert on every append. A filter asks `client_id = ?`, which
//!   SQLite knows implies `IS NOT NULL`, so the partial index still serves it.
//! - `topics` keeps each topic's head, count and last position, updated in the append
//!   transaction: `expected_seq` checks and topic listings never scan events.
//! - `meta` is a one-row-per-key table for facts about the database itself. `log_id` is
//!   random, made by the migration that creates the table, so it is born with the data
//!   and dies with it (a wiped data dir gets a new one; LiveStore clients notice).
//! - `UNIQUE (topic, seq)` is also the index for reading one topic by seq.
//! - Consumer groups live in the same file as the events, so one backup holds both and a
//!   restored group never points past the restored log. A group's rows are keyed by an
//!   integer id rather than its name: progress rows are many and small, and a group
//!   deleted and created again under the same name starts from nothing.
//! - The group config is one JSON column: it is written once, read only at startup, and
//!   never queried by field, so columns per field would only make adding a setting a
//!   migration. Durations in it are milliseconds.
//! - `group_progress` is `WITHOUT ROWID`: its rows are a few integers, and the primary
//!   key `(group_id, position)` is the order `load` wants. `group_dlq` keeps its rowid
//!   because each row holds a whole event as JSON, which may be large.
//! - Topic settings are columns of `topics` (`configured` says a topic has settings at
//!   all, so a topic can be configured before its first event). `max_event_bytes` is read
//!   by every append, beside `head_seq`, in the lookup the append makes anyway.
//! - Retention removes a prefix of a topic by seq; `pruned_seq` and `pruned_position` say
//!   where it ends. The row outlives its events, so `head_seq` keeps counting and no seq
//!   is handed out twice. `meta.pruned_position` is the highest position ever removed, so
//!   that the next position never goes back even when the newest events were removed.

use rusqlite::{Connection, TransactionBehavior};
use tributary_core::LogError;

use crate::error::storage;

const MIGRATIONS: &[&str] = &[
    // 1: events and topics.
    "CREATE TABLE events (
        position   INTEGER PRIMARY KEY,
        topic      TEXT    NOT NULL,
        seq        INTEGER NOT NULL,
        name       TEXT    NOT NULL,
        args       TEXT    NOT NULL,
        id         TEXT    NOT NULL UNIQUE,
        client_id  TEXT,
        session_id TEXT,
        timestamp  INTEGER NOT NULL,
        UNIQUE (topic, seq)
    ) STRICT;
    CREATE INDEX events_topic      ON events (topic, position);
    CREATE INDEX events_name       ON events (name, position);
    CREATE INDEX events_client_id  ON events (client_id, position);
    CREATE INDEX events_session_id ON events (session_id, position);
    CREATE INDEX events_timestamp  ON events (timestamp);
    CREATE TABLE topics (
        name          TEXT    PRIMARY KEY,
        head_seq      INTEGER NOT NULL,
        event_count   INTEGER NOT NULL,
        last_position INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;",
    // 2: the log's own id.
    "CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) STRICT, WITHOUT ROWID;
    INSERT INTO meta (key, value) VALUES ('log_id', lower(hex(randomblob(16))));",
    // 3: consumer groups, their progress and their dead-letter queues.
    "CREATE TABLE consumer_groups (
        id         INTEGER PRIMARY KEY,
        name       TEXT    NOT NULL UNIQUE,
        config     TEXT    NOT NULL,
        created_at INTEGER NOT NULL,
        committed  INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE group_progress (
        group_id    INTEGER NOT NULL,
        position    INTEGER NOT NULL,
        attempts    INTEGER NOT NULL,
        acked       INTEGER NOT NULL,
        last_reason TEXT,
        replayed    INTEGER NOT NULL,
        PRIMARY KEY (group_id, position)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE group_dlq (
        group_id  INTEGER NOT NULL,
        position  INTEGER NOT NULL,
        attempts  INTEGER NOT NULL,
        reason    TEXT    NOT NULL,
        parked_at INTEGER NOT NULL,
        event     TEXT    NOT NULL,
        PRIMARY KEY (group_id, position)
    ) STRICT;",
    // 4: topic settings and retention.
    "ALTER TABLE topics ADD COLUMN pruned_seq      INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE topics ADD COLUMN pruned_position INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE topics ADD COLUMN configured      INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE topics ADD COLUMN max_age_ms      INTEGER;
    ALTER TABLE topics ADD COLUMN max_events      INTEGER;
    ALTER TABLE topics ADD COLUMN max_event_bytes INTEGER;
    INSERT INTO meta (key, value) VALUES ('pruned_position', '0');",
    // 5: client and session ids indexed only where present.
    "DROP INDEX events_client_id;
    CREATE INDEX events_client_id  ON events (client_id, position)  WHERE client_id IS NOT NULL;
    DROP INDEX events_session_id;
    CREATE INDEX events_session_id ON events (session_id, position) WHERE session_id IS NOT NULL;",
];

/// The schema version this build writes.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database up to [`SCHEMA_VERSION`], each step in its own transaction.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), LogError> {
    loop {
        // IMMEDIATE takes the write lock before reading the version, so two processes
        // opening the same new file cannot both run a step.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(storage("starting a schema migration"))?;
        let version: i64 = tx
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(storage("reading the schema version"))?;
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        let Some(step) = usize::try_from(version)
            .ok()
            .and_then(|v| MIGRATIONS.get(v))
        else {
            return Err(LogError::storage(
                "reading the schema version",
                format!(
                    "the database is at schema version {version}, this build knows up to {SCHEMA_VERSION}"
                ),
            ));
        };
        tx.execute_batch(step)
            .map_err(storage("applying a schema migration"))?;
        tx.pragma_update(None, "user_version", version + 1)
            .map_err(storage("recording the schema version"))?;
        tx.commit()
            .map_err(storage("committing a schema migration"))?;
        tracing::info!(version = version + 1, "migrated the sqlite schema");
    }
}
