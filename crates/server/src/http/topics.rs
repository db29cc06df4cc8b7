//! `/api/v1/topics`: every topic and how far it has come, and a topic's settings
//! (retention by age and count, largest event).
//!
//! - `GET /api/v1/topics`, `GET /api/v1/topics/{topic}`: heads, counts, where retention
//!   has cut (`pruned_seq`), and the settings.
//! - `POST /api/v1/topics` `{"topic", "max_age"?, "max_events"?, "max_event_bytes"?}`:
//!   gives a topic settings (it need not have events yet); 409 `topic_exists` if it has
//!   some already.
//! - `PUT /api/v1/topics/{topic}` with the settings alone: sets or replaces them.
//! - `DELETE /api/v1/topics/{topic}`: removes the settings and every event of the topic
//!   (not for LiveStore stores, `livestore.*`, whose clients need their whole history).
//!
//! Retention itself runs in the background ([`tributary_core::Retention`]); setting a
//! rule also applies it once right away, so the answer to a PUT that shrinks a topic
//! already shows the topic shrunk.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::json;
use tributary_core::{Timestamp, Topic, TopicConfig, TopicInfo};

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{JsonBody, parse_json};

/// Topics whose events LiveStore clients replay from seq 1; removing any would break them.
const LIVESTORE_PREFIX: &str = "livestore.";

#[derive(Serialize)]
pub struct Topics {
    topics: Vec<TopicInfo>,
}

pub async fn list(State(state): State<AppState>) -> Result<Json<Topics>, ApiError> {
    let topics = state.log().topics().await?;
    Ok(Json(Topics { topics }))
}

pub async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<TopicInfo>, ApiError> {
    let topic = Topic::new(name)?;
    Ok(Json(listed(&state, &topic).await?))
}

pub async fn create(
    State(state): State<AppState>,
    body: JsonBody,
) -> Result<(StatusCode, Json<TopicInfo>), ApiError> {
    // The topic's name beside its settings: take it out, and the settings' own parser
    // refuses anything else it does not know.
    let mut fields: serde_json::Map<String, serde_json::Value> = parse_json(&body.0)?;
    let name = match fields.remove("topic") {
        Some(serde_json::Value::String(name)) => name,
        Some(_) => {
            return Err(ApiError::InvalidJson(
                "invalid JSON: `topic` must be a string".to_owned(),
            ));
        }
        None => {
            return Err(ApiError::InvalidJson(
                "invalid JSON: missing field `topic`".to_owned(),
            ));
        }
    };
    let config: TopicConfig = serde_json::from_value(fields.into())
        .map_err(|e| ApiError::InvalidJson(format!("invalid JSON: {e}")))?;
    let topic = Topic::new(name)?;
    check(&state, &topic, &config)?;
    let existing = state.log().topic(&topic).await?;
    if existing.is_some_and(|t| t.config.is_some()) {
        return Err(ApiError::TopicExists(format!(
            "topic {topic} has settings already; change them with PUT /api/v1/topics/{topic}"
        )));
    }
    let info = configure(&state, &topic, config).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

pub async fn replace(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: JsonBody,
) -> Result<Json<TopicInfo>, ApiError> {
    let topic = Topic::new(name)?;
    let config: TopicConfig = parse_json(&body.0)?;
    check(&state, &topic, &config)?;
    Ok(Json(configure(&state, &topic, config).await?))
}

pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let topic = Topic::new(name)?;
    listed(&state, &topic).await?;
    if is_livestore(&topic) {
        // Its seqs go on after a delete, so a new LiveStore client would find no event
        // to chain its first push to, and be refused forever.
        return Err(ApiError::InvalidParameter(format!(
            "topic {topic} is a LiveStore store, whose clients need its whole history: \
             it cannot be deleted"
        )));
    }
    // In a task of its own: a client that hangs up does not leave the topic half gone.
    let retention = state.retention().clone();
    let deleted = {
        let topic = topic.clone();
        tokio::spawn(async move { retention.delete_topic(&topic).await })
            .await
            .map_err(ApiError::internal)??
    };
    Ok(Json(json!({ "topic": topic, "deleted_events": deleted })))
}

/// The topic, if it is listed (has events or settings); 404 otherwise.
async fn listed(state: &AppState, topic: &Topic) -> Result<TopicInfo, ApiError> {
    state
        .log()
        .topic(topic)
        .await?
        .filter(TopicInfo::is_listed)
        .ok_or_else(|| ApiError::NotFound(format!("no topic named {topic}")))
}

fn check(state: &AppState, topic: &Topic, config: &TopicConfig) -> Result<(), ApiError> {
    config
        .validate()
        .map_err(|e| ApiError::InvalidParameter(e.to_string()))?;
    let server_max = state.config().max_event_bytes as u64;
    if let Some(max) = config.max_event_bytes.filter(|&m| m > server_max) {
        return Err(ApiError::InvalidParameter(format!(
            "invalid max_event_bytes: {max} is more than the server takes ({server_max})"
        )));
    }
    if is_livestore(topic) && config.has_retention() {
        return Err(ApiError::InvalidParameter(format!(
            "topic {topic} is a LiveStore store, whose clients need its whole history: \
             it takes no max_age or max_events"
        )));
    }
    Ok(())
}

fn is_livestore(topic: &Topic) -> bool {
    topic.as_str().starts_with(LIVESTORE_PREFIX)
}

async fn configure(
    state: &AppState,
    topic: &Topic,
    config: TopicConfig,
) -> Result<TopicInfo, ApiError> {
    let rule = config.rule_at(Timestamp::now());
    let prune = config.has_retention();
    state.log().set_topic_config(topic, config).await?;
    if prune {
        state.retention().prune_topic(topic, rule).await?;
    }
    state
        .log()
        .topic(topic)
        .await?
        .ok_or_else(|| ApiError::internal(format!("topic {topic} vanished after being configured")))
}
