//! `POST /api/v1/events`: publish one event, or a batch that is stored atomically.
//!
//! The body is one event (`{"topic","name","args",…}`) or `{"events":[…]}`. Everything
//! is checked before the log is called, so a refused request changes nothing.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tributary_core::{Appended, Args, NewEvent, Topic};

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{JsonBody, parse_json};

/// An event as the body carries it. It mirrors [`NewEvent`] except that the topic is a
/// plain string, so that a bad topic is reported as `invalid_topic` rather than as a
/// JSON error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventBody {
    topic: String,
    name: String,
    #[serde(default)]
    args: Args,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    expected_seq: Option<u64>,
}

#[derive(Serialize)]
struct BatchAnswer {
    events: Vec<Appended>,
}

pub async fn publish(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let config = state.config();
    let idempotency_key = idempotency_key(&headers)?;
    let (bodies, single) = parse_body(&body)?;
    if !single && idempotency_key.is_some() {
        return Err(ApiError::InvalidEvent(
            "Idempotency-Key applies to a single event; give each event of a batch its own id"
                .to_owned(),
        ));
    }
    if bodies.is_empty() {
        return Err(ApiError::InvalidEvent(
            "a batch needs at least one event".to_owned(),
        ));
    }
    if bodies.len() > config.max_batch_events {
        return Err(ApiError::PayloadTooLarge(format!(
            "a batch holds at most {} events, got {}",
            config.max_batch_events,
            bodies.len()
        )));
    }
    let batch = bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            // Only a batch names the event at fault; a single event is the whole body.
            let at = |e: ApiError| if single { e } else { prefix_error(e, i) };
            let event = to_new_event(body, idempotency_key.as_deref()).map_err(at)?;
            if event.size_bytes() > config.max_event_bytes {
                return Err(at(ApiError::PayloadTooLarge(format!(
                    "an event may weigh at most {} bytes, this one weighs {}",
                    config.max_event_bytes,
                    event.size_bytes()
                ))));
            }
            Ok(event)
        })
        .collect::<Result<Vec<_>, _>>()?;

    let count = batch.len();
    let started = Instant::now();
    let result = state.log().append(batch).await;
    let stored = result.as_ref().map_or(0, |appended| {
        appended.iter().filter(|a| !a.duplicate).count()
    });
    state
        .metrics()
        .record_append(count, stored, started.elapsed());
    let appended = result?;

    // 201 when anything was created; a pure replay of earlier publishes is a 200.
    let status = if stored > 0 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(if single {
        (status, axum::Json(appended[0])).into_response()
    } else {
        (status, axum::Json(BatchAnswer { events: appended })).into_response()
    })
}

/// The events of the body, and whether it was a single event rather than a batch.
fn parse_body(body: &[u8]) -> Result<(Vec<EventBody>, bool), ApiError> {
    // Peek at the top-level keys first: `args` is kept as raw JSON text, which serde can
    // only borrow from the original input, so the body cannot go through a `Value`.
    let fields: BTreeMap<String, &RawValue> = parse_json(body)?;
    match fields.get("events") {
        Some(events) if fields.len() == 1 => {
            let events: Vec<EventBody> = parse_json(events.get().as_bytes())?;
            Ok((events, false))
        }
        Some(_) => Err(ApiError::InvalidJson(
            "a batch body holds only `events`".to_owned(),
        )),
        None => Ok((vec![parse_json(body)?], true)),
    }
}

fn to_new_event(body: EventBody, idempotency_key: Option<&str>) -> Result<NewEvent, ApiError> {
    let id = match (body.id, idempotency_key) {
        (Some(id), Some(key)) if id != key => {
            return Err(ApiError::InvalidEvent(format!(
                "the body's id {id:?} differs from the Idempotency-Key {key:?}"
            )));
        }
        (id, key) => id.or_else(|| key.map(str::to_owned)),
    };
    let event = NewEvent {
        topic: Topic::new(body.topic)?,
        name: body.name,
        args: body.args,
        id,
        client_id: body.client_id,
        session_id: body.session_id,
        expected_seq: body.expected_seq,
    };
    event.validate()?;
    Ok(event)
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::InvalidEvent(
            "Idempotency-Key given more than once".to_owned(),
        ));
    }
    let key = value
        .to_str()
        .map_err(|_| ApiError::InvalidEvent("Idempotency-Key must be visible ASCII".to_owned()))?;
    Ok(Some(key.to_owned()))
}

fn prefix_error(e: ApiError, index: usize) -> ApiError {
    let at = |m: String| format!("event {index} of the batch: {m}");
    match e {
        ApiError::InvalidEvent(m) => ApiError::InvalidEvent(at(m)),
        ApiError::InvalidTopic(m) => ApiError::InvalidTopic(at(m)),
        ApiError::PayloadTooLarge(m) => ApiError::PayloadTooLarge(at(m)),
        other => other,
    }
}
