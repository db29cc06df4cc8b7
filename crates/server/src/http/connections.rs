//! `/api/v1/connections`: register a stream ahead of time, list every open SSE stream
//! (registered or not), see one's status, end one. The registry itself is
//! [`crate::connections`].

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tributary_core::Filter;
use tributary_core::stream::{DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE};

use super::stream::{last_event_id, remote_addr, respond};
use super::{ReadParams, parse_bool};
use crate::app::AppState;
use crate::connections::{StreamKind, StreamSettings};
use crate::error::ApiError;
use crate::extract::{JsonBody, Query, parse_json};

const MAX_HEARTBEAT_SECS: u64 = 300;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    #[serde(default)]
    filter: Option<Value>,
    #[serde(default)]
    heartbeat_secs: Option<u64>,
    #[serde(default)]
    batch_size: Option<usize>,
}

/// `POST /api/v1/connections`: `{"filter": {...}, "heartbeat_secs": 15, "batch_size":
/// 256}`, all optional; answers the id and the URL to open the stream on.
pub async fn register(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let body: RegisterBody = parse_json(&body)?;
    let filter = match body.filter {
        None | Some(Value::Null) => Filter::all(),
        Some(v) => serde_json::from_value::<Filter>(v)
            .map_err(|e| ApiError::InvalidFilter(format!("invalid filter: {e}")))?,
    };
    filter
        .validate()
        .map_err(|e| ApiError::InvalidFilter(e.to_string()))?;
    let heartbeat = match body.heartbeat_secs {
        None => state.config().heartbeat,
        Some(s) if (1..=MAX_HEARTBEAT_SECS).contains(&s) => Duration::from_secs(s),
        Some(_) => {
            return Err(ApiError::InvalidParameter(format!(
                "heartbeat_secs is 1 to {MAX_HEARTBEAT_SECS}"
            )));
        }
    };
    let batch_size = match body.batch_size {
        None => DEFAULT_BATCH_SIZE,
        Some(n) if (1..=MAX_BATCH_SIZE).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::InvalidParameter(format!(
                "batch_size is 1 to {MAX_BATCH_SIZE}"
            )));
        }
    };
    let conn = state.connections().register(StreamSettings {
        kind: StreamKind::Events,
        filter,
        heartbeat,
        batch_size,
    })?;
    let stream_url = format!("/api/v1/connections/{}/stream", conn.id);
    let mut info = serde_json::to_value(conn.info()).map_err(ApiError::internal)?;
    info["stream_url"] = json!(stream_url);
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

pub async fn list(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "connections": state.connections().list() }))
}

pub async fn status(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let info = state.connections().get(&id)?.info();
    Ok(Json(
        serde_json::to_value(info).map_err(ApiError::internal)?,
    ))
}

/// Ends the stream if it is open, and forgets the connection.
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.connections().delete(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/connections/{id}/stream`: the registered stream, with its filter and
/// options. Where to start is the caller's (`since`, `since_time`, `Last-Event-ID`), as
/// are `until` and `snapshot_only`.
pub async fn stream(
    State(state): State<AppState>,
    Path(id): Path<String>,
    extensions: Extensions,
    headers: HeaderMap,
    mut query: Query,
) -> Result<Response, ApiError> {
    if state.is_draining() {
        return Err(ApiError::Unavailable(
            "the server is shutting down; reconnect later".to_owned(),
        ));
    }
    let conn = state.connections().get(&id)?;
    if !conn.registered {
        return Err(ApiError::NotFound(format!(
            "{id:?} is an open stream, not a registered one"
        )));
    }
    let params = ReadParams::take(&mut query, false)?;
    if params.filter != Filter::all() {
        return Err(ApiError::InvalidParameter(
            "a registered stream's filter was given when it was registered".to_owned(),
        ));
    }
    let snapshot_only = query
        .take("snapshot_only")?
        .map(|v| parse_bool("snapshot_only", &v))
        .transpose()?
        .unwrap_or(false);
    query.finish()?;
    let resume = last_event_id(&headers)?;
    let since = params.start(state.log().as_ref(), resume).await?;
    let settings = conn.settings.clone();
    let open = state
        .connections()
        .open(Some(conn), settings.clone(), remote_addr(&extensions))?;
    Ok(respond(
        &state,
        open,
        settings,
        since,
        params.until,
        snapshot_only,
    ))
}
