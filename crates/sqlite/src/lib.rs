//! Tributary's SQLite backend: [`SqliteLog`], a durable [`Log`] in one file, and
//! [`SqliteGroupStore`], the consumer groups' state kept in that same file.
//!
//! # Layout
//! - [`options`]: [`SqliteOptions`] and [`Synchronous`], what `open` can be told.
//! - `groups`: [`SqliteGroupStore`], the [`GroupStore`](tributary_core::GroupStore) of
//!   [`SqliteLog::group_store`], and the SQL that mirrors each
//!   [`GroupChange`](tributary_core::GroupChange).
//! - `connection`: opening connections, the pragmas (WAL, `synchronous`, busy timeout)
//!   and the `topic_match` SQL function.
//! - `migrate`: the schema, versioned in `PRAGMA user_version`, and why it looks so.
//! - `writer`: the writer thread, its group commit, the [`WriterStats`] it counts, and
//!   the queue the log and its group stores share to reach it.
//! - `read`: the reader pool, the read queries and the translation of filters to SQL.
//! - `topics`: topic settings and retention (the writes, the `topics` rows, and the
//!   in-memory floors readers check after each page).
//! - `error`: SQLite errors as [`LogError::Storage`].
//!
//! # Why it is built this way
//! - **One writer, group commit.** SQLite allows one writer at a time, and with
//!   `synchronous=full` each commit costs an fsync. So one thread owns the only
//!   read-write connection and commits every append waiting in its queue in one
//!   transaction: under load, one fsync serves many appends.
//! - **Check, then write.** Appends that share a transaction must not share a fate:
//!   each request is checked whole before any of it is written, so one refused for a
//!   stale `expected_seq` writes nothing, the others commit, and no position is burnt.
//! - **A reader pool.** WAL lets readers run beside the writer; reads use their own
//!   read-only connections on blocking threads and never queue behind appends. The
//!   head moves only after a commit, so everything up to it is readable.
//! - **Groups beside the events.** Group state is written by the same writer thread, in
//!   the same file: one backup holds both, and there is still only one writer.

pub mod options;

mod connection;
mod error;
mod groups;
mod migrate;
mod read;
mod topics;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tributary_core::{
    Appended, COMMITS_CAPACITY, Commit, CommitStats, Event, Filter, Log, LogError, NewEvent,
    Position, PruneRule, ReadQuery, Timestamp, Topic, TopicConfig, TopicInfo,
};

pub use groups::SqliteGroupStore;
pub use options::{ParseSynchronousError, SqliteOptions, Synchronous};
pub use writer::WriterStats;

use crate::error::storage;
use crate::read::ReaderPool;
use crate::topics::{Floors, TopicWrite};
use crate::writer::{AppendRequest, Command, Counters, Writer, WriterQueue};

/// Append requests that may wait for the writer before `append` itself waits: enough to
/// fill big groups, bounded so that a stalled disk pushes back on producers.
const QUEUE_DEPTH: usize = 4096;

/// Brings `conn`'s database to this build's schema: the tables and indexes the log
/// writes to. For the benchmark's raw-SQLite baseline, so that it inserts into exactly
/// what an append does, whatever the schema becomes.
#[doc(hidden)]
pub fn create_schema(conn: &mut rusqlite::Connection) -> Result<(), LogError> {
    migrate::migrate(conn)
}

/// A [`Log`] stored in a SQLite database file (WAL mode).
pub struct SqliteLog {
    /// Shared with the group stores; emptied by `close`.
    queue: WriterQueue,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Shared with the group stores, which load through it.
    readers: Arc<ReaderPool>,
    head: Arc<watch::Sender<Position>>,
    counters: Arc<Counters>,
    /// Read once at open: it never changes for the life of the file.
    log_id: String,
    /// Shared with the writer, which raises them as it prunes.
    floors: Floors,
    /// The writer's commits, for [`Log::commits`].
    commits: broadcast::Sender<Commit>,
}

impl SqliteLog {
    /// Opens (creating if missing, with its parent directories) the database at `path`,
    /// brings its schema up to date and starts the writer thread.
    pub fn open(path: &Path, options: SqliteOptions) -> Result<SqliteLog, LogError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(storage("creating the sqlite database's directory"))?;
        }
        let mut conn = connection::open_writer(path, options.synchronous)?;
        migrate::migrate(&mut conn)?;
        connection::optimize(&conn)?;
        let head = read::head_position(&conn).map_err(storage("reading the head position"))?;
        let log_id = read::log_id(&conn).map_err(storage("reading the log id"))?;
        let floors = Floors::load(&conn).map_err(storage("reading the topics' floors"))?;
        // Readers after the writer: the file, its WAL and the schema exist by now.
        let readers = Arc::new(ReaderPool::open(path.to_owned(), options.readers)?);
        let head = Arc::new(watch::Sender::new(head));
        let counters = Arc::new(Counters::default());
        let (commands, queue) = mpsc::channel(QUEUE_DEPTH);
        let commits = broadcast::Sender::new(COMMITS_CAPACITY);
        let writer = Writer {
            conn,
            commands: queue,
            head: Arc::clone(&head),
            counters: Arc::clone(&counters),
            max_batch_events: options.max_batch_events.max(1),
            floors: floors.clone(),
            commits: commits.clone(),
        }
        .spawn()
        .map_err(storage("starting the sqlite writer thread"))?;
        Ok(SqliteLog {
            queue: WriterQueue::new(commands),
            writer: Mutex::new(Some(writer)),
            readers,
            head,
            counters,
            log_id,
            floors,
            commits,
        })
    }

    /// What the writer has done so far; cheap, for metrics.
    pub fn stats(&self) -> WriterStats {
        self.counters.snapshot()
    }

    /// The consumer groups' state, kept in this log's database file and written by its
    /// writer thread. Every call returns a handle on the same state. Closing the log
    /// closes it: writes then fail with
    /// [`GroupStoreError::Closed`](tributary_core::GroupStoreError::Closed), so close the
    /// groups before the log.
    pub fn group_store(&self) -> SqliteGroupStore {
        SqliteGroupStore::new(self.queue.clone(), Arc::clone(&self.readers))
    }

    /// Sends `command` to the writer and waits for its answer.
    async fn ask<T>(
        &self,
        command: Command,
        answer: oneshot::Receiver<Result<T, LogError>>,
    ) -> Result<T, LogError> {
        self.queue.ask(command, answer).await?
    }
}

#[async_trait]
impl Log for SqliteLog {
    async fn append(&self, batch: Vec<NewEvent>) -> Result<Vec<Appended>, LogError> {
        // Validation needs no database: refuse here, before taking a place in a group.
        tributary_core::event::validate_batch(&batch)?;
        let (reply, answer) = oneshot::channel();
        self.ask(Command::Append(AppendRequest { batch, reply }), answer)
            .await
    }

    async fn read(&self, query: ReadQuery<'_>) -> Result<Vec<Event>, LogError> {
        if query.after >= query.up_to || query.limit == 0 {
            return Ok(Vec::new());
        }
        let select = read::select_events(&query);
        self.readers
            .run("reading events", move |conn| select.run(conn))
            .await
    }

    async fn read_topic(
        &self,
        topic: &Topic,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>, LogError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let topic = topic.as_str().to_owned();
        self.readers
            .run("reading a topic by seq", move |conn| {
                read::topic_events(conn, &topic, after_seq, limit)
            })
            .await
    }

    async fn topic_head(&self, topic: &Topic) -> Result<u64, LogError> {
        let topic = topic.as_str().to_owned();
        self.readers
            .run("reading a topic's head", move |conn| {
                read::topic_head(conn, &topic)
            })
            .await
    }

    async fn log_id(&self) -> Result<String, LogError> {
        Ok(self.log_id.clone())
    }

    fn head(&self) -> watch::Receiver<Position> {
        self.head.subscribe()
    }

    async fn position_before(&self, time: Timestamp) -> Result<Position, LogError> {
        self.readers
            .run("finding a position by time", move |conn| {
                read::position_before(conn, time)
            })
            .await
    }

    async fn topics(&self) -> Result<Vec<TopicInfo>, LogError> {
        self.readers.run("listing topics", topics::list).await
    }

    async fn topic(&self, topic: &Topic) -> Result<Option<TopicInfo>, LogError> {
        let topic = topic.as_str().to_owned();
        self.readers
            .run("reading a topic", move |conn| topics::one(conn, &topic))
            .await
    }

    async fn set_topic_config(&self, topic: &Topic, config: TopicConfig) -> Result<(), LogError> {
        let (reply, answer) = oneshot::channel();
        let write = TopicWrite::Configure {
            topic: topic.clone(),
            config,
            reply,
        };
        self.ask(Command::Topic(write), answer).await
    }

    async fn remove_topic_config(&self, topic: &Topic) -> Result<bool, LogError> {
        let (reply, answer) = oneshot::channel();
        let write = TopicWrite::Unconfigure {
            topic: topic.clone(),
            reply,
        };
        self.ask(Command::Topic(write), answer).await
    }

    async fn prune(&self, topic: &Topic, rule: PruneRule, limit: usize) -> Result<u64, LogError> {
        if limit == 0 {
            return Ok(0);
        }
        let (reply, answer) = oneshot::channel();
        let write = TopicWrite::Prune {
            topic: topic.clone(),
            rule,
            limit,
            reply,
        };
        self.ask(Command::Topic(write), answer).await
    }

    async fn pruned_through(&self, filter: &Filter) -> Result<Position, LogError> {
        Ok(self.floors.highest(filter))
    }

    async fn check_writable(&self) -> Result<(), LogError> {
        let (reply, answer) = oneshot::channel();
        self.ask(Command::CheckWritable(reply), answer).await
    }

    async fn close(&self) -> Result<(), LogError> {
        // The writer drains what is queued (and what appends and group writes in flight
        // still send), then stops.
        self.queue.close();
        let Some(writer) = self.writer.lock().take() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || writer.join())
            .await
            .map_err(storage("waiting for the sqlite writer to stop"))?
            .map_err(|_| LogError::storage("the sqlite writer thread", "panicked"))
    }

    fn commits(&self) -> Option<broadcast::Receiver<Commit>> {
        Some(self.commits.subscribe())
    }

    fn commit_stats(&self) -> CommitStats {
        let stats = self.stats();
        CommitStats {
            commits: stats.commits,
            events: stats.events,
        }
    }
}
