//! [`BenchError`]: why a benchmark run failed.

use std::path::PathBuf;

/// Why a benchmark run failed. A missed goal is not an error; a wrong answer is.
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
    /// Events were lost, doubled or out of order: the run's figures mean nothing.
    #[error("{scenario}: {detail}")]
    Integrity {
        /// The scenario and system.
        scenario: String,
        /// What was wrong.
        detail: String,
    },
    /// A run did not finish in its time bound.
    #[error("{what} did not finish within {secs} s")]
    Timeout {
        /// What was waited for.
        what: String,
        /// The bound.
        secs: u64,
    },
}
