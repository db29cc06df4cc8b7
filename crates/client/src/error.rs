//! [`ClientError`]: everything a client call can fail with.

use reqwest::StatusCode;
use serde::Deserialize;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The base URL given to [`Client::new`](crate::Client::new) is not usable.
    #[error("invalid server url {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The server refused the request with a 4xx or 5xx and its JSON error body (or
    /// without one: then `code` is `"unexpected_response"` and `message` holds the
    /// start of the body).
    #[error("the server answered {status}: {message} ({code})")]
    Api {
        /// The HTTP status.
        status: StatusCode,
        /// The server's stable error code, such as `"invalid_filter"`.
        code: String,
        /// A human-readable explanation.
        message: String,
    },
    /// An event's `expected_seq` was not its topic's head seq; nothing of the request was
    /// stored (HTTP 409, code `seq_conflict`).
    #[error(
        "topic {topic} is at seq {head_seq}, not the expected {expected_seq}; nothing was stored"
    )]
    SeqConflict {
        /// The topic whose head did not match.
        topic: String,
        /// The seq the event expected to follow.
        expected_seq: u64,
        /// The topic's actual head seq.
        head_seq: u64,
    },
    /// Retention removed events after the read's cursor (of the topics it reads) before
    /// they were read (HTTP 410, code `cursor_expired`). Nothing was returned, so that no
    /// gap goes unnoticed; reading again with `resume_cursor` as the cursor accepts the
    /// loss and goes on with what is left.
    #[error(
        "events after cursor {cursor} up to position {pruned_through} were removed by retention before they were read; resume with cursor {resume_cursor}"
    )]
    CursorExpired {
        /// The cursor that expired, as the server read it (the position read after).
        cursor: String,
        /// The highest position removed from the topics read.
        pruned_through: u64,
        /// The first event still stored after the cursor that the read matches, if any
        /// (among the events the refused page would have held).
        earliest_position: Option<u64>,
        /// The cursor to read on with, telling the server the loss is known (opaque, like
        /// every cursor; today `"P~T"`).
        resume_cursor: String,
    },
    /// A group name that cannot be put in a URL path (empty, `.` or `..`); nothing was
    /// sent.
    #[error("group name {name:?} cannot be addressed in a URL path")]
    InvalidGroupName {
        /// The name as given.
        name: String,
    },
    /// The request could not be sent or its answer not received (connection refused,
    /// reset, timeout, ...).
    #[error("request to the server failed")]
    Http(#[source] reqwest::Error),
    /// The server answered something this client does not understand.
    #[error("unexpected answer from the server: {context}")]
    Decode {
        /// What was being decoded, and what was wrong.
        context: String,
        /// The JSON error, when the answer was not the JSON expected.
        #[source]
        source: Option<serde_json::Error>,
    },
}

impl ClientError {
    /// The HTTP status the server answered, for [`ClientError::Api`],
    /// [`ClientError::SeqConflict`] and [`ClientError::CursorExpired`].
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            ClientError::SeqConflict { .. } => Some(StatusCode::CONFLICT),
            ClientError::CursorExpired { .. } => Some(StatusCode::GONE),
            ClientError::Http(e) => e.status(),
            _ => None,
        }
    }

    /// The server's stable error code, for [`ClientError::Api`],
    /// [`ClientError::SeqConflict`] (`"seq_conflict"`) and [`ClientError::CursorExpired`]
    /// (`"cursor_expired"`): what a caller matches on, such as `"not_found"`,
    /// `"topic_exists"`, `"group_exists"` or `"stale_delivery"`.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            ClientError::SeqConflict { .. } => Some("seq_conflict"),
            ClientError::CursorExpired { .. } => Some("cursor_expired"),
            _ => None,
        }
    }

    pub(crate) fn decode(context: impl Into<String>, source: serde_json::Error) -> Self {
        ClientError::Decode {
            context: context.into(),
            source: Some(source),
        }
    }

    /// Builds the error for a non-2xx answer from its status and body.
    pub(crate) fn from_response(status: StatusCode, body: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct Body {
            error: ErrorObject,
        }
        #[derive(Deserialize)]
        struct ErrorObject {
            code: String,
            #[serde(default)]
            message: String,
            topic: Option<String>,
            expected_seq: Option<u64>,
            head_seq: Option<u64>,
            cursor: Option<String>,
            pruned_through: Option<u64>,
            earliest_position: Option<u64>,
            resume_cursor: Option<String>,
        }
        match serde_json::from_slice::<Body>(body) {
            Ok(Body { error }) => match error {
                ErrorObject {
                    code,
                    topic: Some(topic),
                    expected_seq: Some(expected_seq),
                    head_seq: Some(head_seq),
                    ..
                } if status == StatusCode::CONFLICT && code == "seq_conflict" => {
                    ClientError::SeqConflict {
                        topic,
                        expected_seq,
                        head_seq,
                    }
                }
                ErrorObject {
                    code,
                    cursor: Some(cursor),
                    pruned_through: Some(pruned_through),
                    earliest_position,
                    resume_cursor: Some(resume_cursor),
                    ..
                } if status == StatusCode::GONE && code == "cursor_expired" => {
                    ClientError::CursorExpired {
                        cursor,
                        pruned_through,
                        earliest_position,
                        resume_cursor,
                    }
                }
                ErrorObject { code, message, .. } => ClientError::Api {
                    status,
                    code,
                    message,
                },
            },
            Err(_) => {
                // Not our error shape (a proxy, a crash page): keep enough to debug.
                let text = String::from_utf8_lossy(body);
                let mut message: String = text.trim().chars().take(300).collect();
                if message.is_empty() {
                    message = status
                        .canonical_reason()
                        .unwrap_or("no explanation")
                        .to_owned();
                }
                ClientError::Api {
                    status,
                    code: "unexpected_response".to_owned(),
                    message,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_conflict_is_recognized() {
        let body = br#"{"error":{"code":"seq_conflict","message":"no","topic":"a.b","expected_seq":3,"head_seq":5}}"#;
        match ClientError::from_response(StatusCode::CONFLICT, body) {
            ClientError::SeqConflict {
                topic,
                expected_seq,
                head_seq,
            } => assert_eq!((topic.as_str(), expected_seq, head_seq), ("a.b", 3, 5)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn cursor_expired_is_recognized() {
        // The body as the server writes it (earliest_position may be null).
        let body = br#"{"error":{"code":"cursor_expired","message":"events after position 3 up to 7 may have been removed by retention","cursor":"3","pruned_through":7,"earliest_position":8,"resume_cursor":"3~7"}}"#;
        let e = ClientError::from_response(StatusCode::GONE, body);
        match &e {
            ClientError::CursorExpired {
                cursor,
                pruned_through,
                earliest_position,
                resume_cursor,
            } => assert_eq!(
                (
                    cursor.as_str(),
                    *pruned_through,
                    *earliest_position,
                    resume_cursor.as_str()
                ),
                ("3", 7, Some(8), "3~7")
            ),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(e.code(), Some("cursor_expired"));
        assert_eq!(e.status(), Some(StatusCode::GONE));
        assert!(e.to_string().contains("resume with cursor 3~7"), "{e}");

        let body = br#"{"error":{"code":"cursor_expired","message":"m","cursor":"3","pruned_through":7,"earliest_position":null,"resume_cursor":"3~7"}}"#;
        assert!(matches!(
            ClientError::from_response(StatusCode::GONE, body),
            ClientError::CursorExpired {
                earliest_position: None,
                ..
            }
        ));
        // Without its fields it is still told by its code.
        let body = br#"{"error":{"code":"cursor_expired","message":"gone"}}"#;
        let e = ClientError::from_response(StatusCode::GONE, body);
        assert!(matches!(&e, ClientError::Api { .. }), "{e:?}");
        assert_eq!(e.code(), Some("cursor_expired"));
    }

    #[test]
    fn api_errors_keep_code_and_message() {
        let body = br#"{"error":{"code":"invalid_filter","message":"bad topic"}}"#;
        let e = ClientError::from_response(StatusCode::BAD_REQUEST, body);
        assert!(
            matches!(&e, ClientError::Api { status, code, message }
                if *status == StatusCode::BAD_REQUEST && code == "invalid_filter" && message == "bad topic"),
            "{e:?}"
        );
        assert_eq!(e.status(), Some(StatusCode::BAD_REQUEST));
        assert_eq!(e.code(), Some("invalid_filter"));
    }

    #[test]
    fn group_errors_are_told_apart_by_code() {
        let stale = ClientError::from_response(
            StatusCode::CONFLICT,
            br#"{"error":{"code":"stale_delivery","message":"1201.1 is not a current delivery"}}"#,
        );
        let missing = ClientError::from_response(
            StatusCode::NOT_FOUND,
            br#"{"error":{"code":"not_found","message":"no group billing"}}"#,
        );
        assert_eq!(stale.code(), Some("stale_delivery"));
        assert_eq!(stale.status(), Some(StatusCode::CONFLICT));
        assert_eq!(missing.code(), Some("not_found"));
        assert!(stale.to_string().contains("1201.1"), "{stale}");
    }

    #[test]
    fn foreign_bodies_are_kept_readable() {
        let e = ClientError::from_response(StatusCode::BAD_GATEWAY, b"<html>upstream down</html>");
        assert!(
            matches!(&e, ClientError::Api { code, message, .. }
                if code == "unexpected_response" && message.contains("upstream down")),
            "{e:?}"
        );
        let e = ClientError::from_response(StatusCode::SERVICE_UNAVAILABLE, b"");
        assert!(e.to_string().contains("Service Unavailable"), "{e}");
    }
}
