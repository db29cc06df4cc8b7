//! [`BenchError`]: why a benchmark run failed.

use std::path::PathBuf;

/// Why a benchmark could not be run. Lost or doubled events are not errors here: they
/// are a scenario's `failures` ([`crate::report::ScenarioReport`]), written into its
/// result file, and they make the binary exit 1. A missed goal is neither.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A process could not be started.
    #[error("starting {what}")]
    Spawn {
        /// What was being started.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A process started but never became ready.
    #[error("{what} did not become ready: {reason}")]
    NotReady {
        /// The process.
        what: String,
        /// What went wrong.
        reason: String,
    },
    /// A file or directory could not be read or written.
    #[error("{context} ({})", path.display())]
    Io {
        /// What was being done.
        context: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A request to Tributary failed.
    #[error("tributary: {context}")]
    Client {
        /// What was being done.
        context: &'static str,
        /// The cause.
        #[source]
        source: tributary_client::ClientError,
    },
    /// A plain HTTP request (to the naive server, or an SSE stream) failed.
    #[error("http: {context}")]
    Http {
        /// What was being done.
        context: &'static str,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// A Redis command failed.
    #[error("redis: {context}")]
    Redis {
        /// What was being done.
        context: &'static str,
        /// The cause.
        #[source]
        source: redis::RedisError,
    },
    /// The raw SQLite baseline failed.
    #[error("sqlite baseline: {context}")]
    Sqlite {
        /// What was being done.
        context: &'static str,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The raw SQLite baseline could not be given Tributary's schema.
    #[error("sqlite baseline: creating the schema")]
    Schema(#[source] tributary_core::LogError),
    /// A run did not finish in its time bound.
    #[error("{what} did not finish within {secs} s")]
    Timeout {
        /// What was waited for.
        what: String,
        /// The bound.
        secs: u64,
    },
    /// A NATS or JetStream call failed (async-nats has an error type per call, so the
    /// cause is boxed).
    #[error("nats: {context}")]
    Nats {
        /// What was being done.
        context: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A PostgreSQL call failed.
    #[error("postgres: {context}")]
    Postgres {
        /// What was being done.
        context: &'static str,
        /// The cause.
        #[source]
        source: tokio_postgres::Error,
    },
}
