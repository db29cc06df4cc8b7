//! Every way a request can fail, and the one place each becomes a status and a stable
//! string code. Clients match on the code, so codes never change meaning; messages are
//! for people and may.

use std::error::Error as StdError;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tributary_core::{LogError, ValidationError};

/// A request the server refused or could not serve. Its response body is
/// `{"error":{"code":"…","message":"…"}}`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The body is not JSON, or not JSON of the expected shape.
    #[error("{0}")]
    InvalidJson(String),
    /// An event's fields were refused.
    #[error("{0}")]
    InvalidEvent(String),
    #[error("{0}")]
    InvalidTopic(String),
    /// A topic pattern or filter was refused.
    #[error("{0}")]
    InvalidFilter(String),
    /// A position to read from is not a number, or lies beyond the log's head.
    #[error("{0}")]
    InvalidCursor(String),
    /// A query parameter is unknown, repeated or out of range.
    #[error("{0}")]
    InvalidParameter(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// `expected_seq` was not the topic's head; nothing was stored.
    #[error("topic {topic} is at seq {head_seq}, not the expected {expected_seq}")]
    SeqConflict {
        topic: String,
        expected_seq: u64,
        head_seq: u64,
    },
    #[error("{0}")]
    NotFound(String),
    /// A read's cursor is older than what retention kept of the topics it reads: events
    /// after it may be gone. Nothing is skipped silently; `resume_cursor` reads on from
    /// the same place, accepting the loss.
    #[error(
        "events after position {cursor} up to {pruned_through} may have been removed by retention"
    )]
    CursorExpired {
        cursor: u64,
        pruned_through: u64,
        /// The first event still stored after the cursor that the read matches.
        earliest_position: Option<u64>,
        resume_cursor: String,
    },
    /// A topic with settings of its own exists; change them with PUT.
    #[error("{0}")]
    TopicExists(String),
    /// A consumer group of that name exists.
    #[error("{0}")]
    GroupExists(String),
    /// A delivery id is not `POSITION.ATTEMPT`.
    #[error("{0}")]
    InvalidDeliveryId(String),
    /// A delivery id names no delivery in flight (already acked, expired and handed out
    /// again, or never made); nothing was changed.
    #[error("{0}")]
    StaleDelivery(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Draining for shutdown, or the log is closed.
    #[error("{0}")]
    Unavailable(String),
    /// The cap on open streams is reached; answered with `Retry-After`.
    #[error("{0}")]
    TooManyConnections(String),
    /// A fault of ours. The detail goes to the log, never to the client.
    #[error("internal error: {0}")]
    Internal(#[source] Box<dyn StdError + Send + Sync>),
}

impl ApiError {
    pub fn internal(source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        ApiError::Internal(source.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidJson(_)
            | ApiError::InvalidEvent(_)
            | ApiError::InvalidTopic(_)
            | ApiError::InvalidFilter(_)
            | ApiError::InvalidCursor(_)
            | ApiError::InvalidParameter(_)
            | ApiError::InvalidDeliveryId(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::SeqConflict { .. }
            | ApiError::GroupExists(_)
            | ApiError::StaleDelivery(_) => StatusCode::CONFLICT,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::CursorExpired { .. } => StatusCode::GONE,
            ApiError::TopicExists(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable(_) | ApiError::TooManyConnections(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code clients match on.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::InvalidEvent(_) => "invalid_event",
            ApiError::InvalidTopic(_) => "invalid_topic",
            ApiError::InvalidFilter(_) => "invalid_filter",
            ApiError::InvalidCursor(_) => "invalid_cursor",
            ApiError::InvalidParameter(_) => "invalid_parameter",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::SeqConflict { .. } => "seq_conflict",
            ApiError::NotFound(_) => "not_found",
            ApiError::CursorExpired { .. } => "cursor_expired",
            ApiError::TopicExists(_) => "topic_exists",
            ApiError::GroupExists(_) => "group_exists",
            ApiError::InvalidDeliveryId(_) => "invalid_delivery_id",
            ApiError::StaleDelivery(_) => "stale_delivery",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::TooManyConnections(_) => "too_many_connections",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        match e {
            ValidationError::Topic { .. } => ApiError::InvalidTopic(e.to_string()),
            ValidationError::Pattern { .. } => ApiError::InvalidFilter(e.to_string()),
            _ => ApiError::InvalidEvent(e.to_string()),
        }
    }
}

impl From<LogError> for ApiError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::SeqConflict {
                topic,
                expected,
                head,
                ..
            } => ApiError::SeqConflict {
                topic,
                expected_seq: expected,
                head_seq: head,
            },
            LogError::Invalid(v) => v.into(),
            e @ LogError::EventTooLarge { .. } => ApiError::PayloadTooLarge(e.to_string()),
            LogError::Closed => ApiError::Unavailable("the log is closed".to_owned()),
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let code = self.code();
        let body = match &self {
            ApiError::SeqConflict {
                topic,
                expected_seq,
                head_seq,
            } => json!({ "error": {
                "code": code,
                "message": self.to_string(),
                "topic": topic,
                "expected_seq": expected_seq,
                "head_seq": head_seq,
            }}),
            ApiError::CursorExpired {
                cursor,
                pruned_through,
                earliest_position,
                resume_cursor,
            } => json!({ "error": {
                "code": code,
                "message": self.to_string(),
                "cursor": cursor.to_string(),
                "pruned_through": pruned_through,
                "earliest_position": earliest_position,
                "resume_cursor": resume_cursor,
            }}),
            ApiError::Internal(source) => {
                tracing::error!(error = %source, detail = ?source, "request failed");
                json!({ "error": { "code": code, "message": "internal server error" } })
            }
            _ => json!({ "error": { "code": code, "message": self.to_string() } }),
        };
        let mut response = (status, axum::Json(body)).into_response();
        if matches!(self, ApiError::TooManyConnections(_)) {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("5"),
            );
        }
        response
    }
}

impl From<crate::connections::ConnectionError> for ApiError {
    fn from(e: crate::connections::ConnectionError) -> Self {
        use crate::connections::ConnectionError;
        match e {
            ConnectionError::Full(_) | ConnectionError::TooManyRegistered(_) => {
                ApiError::TooManyConnections(e.to_string())
            }
            ConnectionError::NotFound(_) => ApiError::NotFound(e.to_string()),
        }
    }
}

/// Why [`crate::serve`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error("server i/o failed")]
    Io(#[from] std::io::Error),
    #[error("closing the log failed")]
    CloseLog(#[source] LogError),
    #[error("opening the consumer groups failed")]
    Groups(#[source] tributary_groups::GroupError),
}
