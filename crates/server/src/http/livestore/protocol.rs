//! The sync-cf wire format (see LIVESTORE_SYNC.md): the messages a LiveStore client
//! sends, the ones we answer, and the mapping between LiveStore events and log events.
//!
//! Messages are handled as JSON values rather than fully typed structs: the envelope
//! carries tracing fields we ignore, and a request we cannot read must still be answered
//! in the protocol's own error shape, with its request id when one can be found.

use serde::Deserialize;
use serde_json::{Value, json};
use tributary_core::{Args, Event};

/// Why a LiveStore request failed, as the client's error schemas name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncError {
    /// The push's parent is not the store's head: the client pulls, rebases and retries.
    ServerAhead {
        minimum_expected: u64,
        provided: u64,
    },
    /// The client knows another backend (the data was wiped): it resets.
    BackendIdMismatch { expected: String, received: String },
    /// Anything else; `cause` is shown to the developer.
    Unknown(String),
}

impl SyncError {
    pub fn unknown(cause: impl Into<String>) -> Self {
        SyncError::Unknown(cause.into())
    }

    fn to_json(&self) -> Value {
        match self {
            SyncError::ServerAhead {
                minimum_expected,
                provided,
            } => json!({
                "_tag": "ServerAheadError",
                "minimumExpectedNum": minimum_expected,
                "providedNum": provided,
            }),
            SyncError::BackendIdMismatch { expected, received } => json!({
                "_tag": "BackendIdMismatchError",
                "expected": expected,
                "received": received,
            }),
            SyncError::Unknown(cause) => json!({ "_tag": "UnknownError", "cause": cause }),
        }
    }
}

/// An RPC request: its id (echoed in every answer), its tag and its payload.
#[derive(Debug)]
pub struct Request {
    pub id: String,
    pub tag: String,
    pub payload: Value,
}

impl Request {
    /// Reads a `{"_tag":"Request",…}` message. On failure, answers the error with the
    /// request id if the message had one (else an empty one).
    pub fn parse(message: &Value) -> Result<Request, (String, SyncError)> {
        let id = match message.get("id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        let fail = |cause: &str| Err((id.clone(), SyncError::unknown(cause)));
        if message.get("_tag").and_then(Value::as_str) != Some("Request") {
            return fail("expected a message with _tag \"Request\"");
        }
        if id.is_empty() {
            return fail("the request has no id");
        }
        let Some(tag) = message.get("tag").and_then(Value::as_str) else {
            return fail("the request has no tag");
        };
        let payload = match message.get("payload") {
            Some(p @ Value::Object(_)) => p.clone(),
            _ => return fail("the request's payload is not an object"),
        };
        Ok(Request {
            id,
            tag: tag.to_owned(),
            payload,
        })
    }
}

/// `{"_tag":"Exit",…,"exit":{"_tag":"Success","value":…}}`.
pub fn exit_success(request_id: &str, value: Option<Value>) -> Value {
    let mut exit = json!({ "_tag": "Success" });
    if let Some(value) = value {
        exit["value"] = value;
    }
    json!({ "_tag": "Exit", "requestId": request_id, "exit": exit })
}

/// An `Exit` failure: the client decodes `error` with the RPC's error schema.
pub fn exit_failure(request_id: &str, error: &SyncError) -> Value {
    json!({
        "_tag": "Exit",
        "requestId": request_id,
        "exit": { "_tag": "Failure", "cause": { "_tag": "Fail", "error": error.to_json() } },
    })
}

/// One streamed value of a pull.
pub fn chunk(request_id: &str, values: Vec<Value>) -> Value {
    json!({ "_tag": "Chunk", "requestId": request_id, "values": values })
}

/// A `PullResponse`: a page of events, how many more there are, and our backend id.
pub fn pull_response(events: &[Event], remaining: u64, backend_id: &str) -> Value {
    let page_info = if remaining == 0 {
        json!({ "_tag": "NoMore" })
    } else {
        json!({ "_tag": "MoreKnown", "remaining": remaining })
    };
    json!({
        "batch": events.iter().map(encode_event).collect::<Vec<_>>(),
        "pageInfo": page_info,
        "backendId": backend_id,
    })
}

/// A log event as LiveStore's `eventEncoded` plus its metadata. Events published
/// through the plain API may lack a client or session id, which LiveStore requires.
fn encode_event(e: &Event) -> Value {
    json!({
        "eventEncoded": {
            "name": e.name,
            "args": e.args,
            "seqNum": e.seq,
            "parentSeqNum": e.parent_seq(),
            "clientId": e.client_id.as_deref().unwrap_or("tributary"),
            "sessionId": e.session_id.as_deref().unwrap_or("tributary"),
        },
        "metadata": { "_tag": "Some", "value": {
            "_tag": "SyncMessage.SyncMetadata",
            "createdAt": e.timestamp.to_rfc3339(),
        }},
    })
}

/// An event of a push batch (`LiveStoreEvent.Global.Encoded`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushedEvent {
    pub name: String,
    #[serde(default)]
    pub args: Option<Args>,
    pub seq_num: u64,
    pub parent_seq_num: u64,
    pub client_id: String,
    pub session_id: String,
}

/// `{"_tag":"None"}` or `{"_tag":"Some","value":…}`, as Effect encodes an `Option`.
pub fn option(value: Option<&Value>) -> Result<Option<&Value>, SyncError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.get("_tag").and_then(Value::as_str) {
            Some("None") => Ok(None),
            Some("Some") => v
                .get("value")
                .map(Some)
                .ok_or_else(|| SyncError::unknown("an Option \"Some\" without a value")),
            _ => Err(SyncError::unknown(format!(
                "expected an Option ({{\"_tag\":\"None\"}} or \"Some\"), got {v}"
            ))),
        },
    }
}

/// A pull cursor: the backend the client knows, and the last seqNum it has.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cursor {
    pub backend_id: String,
    pub event_sequence_number: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_carry_the_request_id_and_the_tagged_error() {
        let v = exit_failure(
            "3",
            &SyncError::ServerAhead {
                minimum_expected: 5,
                provided: 0,
            },
        );
        assert_eq!(
            v,
            json!({"_tag":"Exit","requestId":"3","exit":{"_tag":"Failure","cause":{"_tag":"Fail",
                "error":{"_tag":"ServerAheadError","minimumExpectedNum":5,"providedNum":0}}}})
        );
    }

    #[test]
    fn requests_without_an_id_or_tag_are_refused_with_what_id_there_is() {
        let (id, _) = Request::parse(&json!({"_tag":"Request","id":"7"})).unwrap_err();
        assert_eq!(id, "7");
        let (id, _) = Request::parse(&json!([1, 2])).unwrap_err();
        assert_eq!(id, "");
        assert!(option(Some(&json!({"_tag":"Maybe"}))).is_err());
        assert_eq!(option(Some(&json!({"_tag":"None"}))).unwrap(), None);
    }
}
