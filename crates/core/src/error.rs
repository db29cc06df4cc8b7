//! Errors of the core and of every log backend.

use std::error::Error as StdError;

/// Why an event, topic, pattern or filter that a producer or reader sent was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    #[error("invalid topic {topic:?}: {reason}")]
    Topic { topic: String, reason: &'static str },
    #[error("invalid topic pattern {pattern:?}: {reason}")]
    Pattern {
        pattern: String,
        reason: &'static str,
    },
    #[error("invalid {field}: {reason}")]
    Field { field: &'static str, reason: String },
    #[error("an append needs at least one event")]
    EmptyBatch,
}

/// What can go wrong reading or writing a log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// `expected_seq` did not match the topic's head; nothing of the batch was stored.
    #[error(
        "topic {topic} is at seq {head}, not the expected {expected} (event {index} of the batch)"
    )]
    SeqConflict {
        topic: String,
        expected: u64,
        head: u64,
        index: usize,
    },
    /// An event is larger than its topic's `max_event_bytes`; nothing of the batch was
    /// stored.
    #[error("event {index} of the batch weighs {size} bytes; topic {topic} takes at most {max}")]
    EventTooLarge {
        topic: String,
        size: u64,
        max: u64,
        index: usize,
    },
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The log was closed (shutdown); nothing more is accepted.
    #[error("the log is closed")]
    Closed,
    /// The backend failed; the message is for operators, not clients.
    #[error("storage error: {context}")]
    Storage {
        context: String,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
}

impl LogError {
    /// Wraps a backend error with what was being done when it happened.
    pub fn storage(
        context: impl Into<String>,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        LogError::Storage {
            context: context.into(),
            source: source.into(),
        }
    }
}
