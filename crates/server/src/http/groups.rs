//! `/api/v1/groups`: consumer groups over HTTP (docs/groups.md). Everything here is a
//! thin layer over [`tributary_groups::Groups`]: parse and check the request, call the
//! engine, write its answer as JSON.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{Extensions, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::stream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tributary_core::{Event, Filter, GroupConfig, Ordering, Position, Start};
use tributary_groups::{
    AckWait, Delivery, DeliveryId, GroupError, GroupInfo, Groups, format_duration, parse_duration,
};

use super::stream::remote_addr;
use crate::app::AppState;
use crate::connections::{OpenStream, StreamKind, StreamSettings};
use crate::error::ApiError;
use crate::extract::{JsonBody, Query, parse_json};

/// Ids one ack, nack or term may name.
const MAX_IDS: usize = 1000;
const MAX_PULL: usize = 1000;
const MAX_WAIT_MS: u64 = 60_000;
const MAX_MEMBER_LEN: usize = 128;
const MAX_DLQ_PAGE: usize = 1000;
const MAX_REASON_LEN: usize = 1000;

impl From<GroupError> for ApiError {
    fn from(e: GroupError) -> Self {
        match e {
            GroupError::NotFound(_) => ApiError::NotFound(e.to_string()),
            GroupError::Exists(_) => ApiError::GroupExists(e.to_string()),
            GroupError::InvalidConfig(m) => ApiError::InvalidParameter(m),
            GroupError::InvalidDeliveryId(_) => ApiError::InvalidDeliveryId(e.to_string()),
            GroupError::StaleDelivery(m) => ApiError::StaleDelivery(m),
            GroupError::NotInDlq(_) => ApiError::NotFound(e.to_string()),
            GroupError::Closed => ApiError::Unavailable(e.to_string()),
            GroupError::Log(e) => e.into(),
            GroupError::Store(e) => ApiError::internal(e),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    #[serde(default)]
    filter: Option<Value>,
    #[serde(default)]
    start: Option<Value>,
    #[serde(default)]
    ack_wait: Option<String>,
    #[serde(default)]
    max_deliveries: Option<u32>,
    #[serde(default)]
    backoff: Option<Vec<String>>,
    #[serde(default)]
    max_in_flight: Option<u32>,
    #[serde(default)]
    ordering: Option<Value>,
}

fn duration(field: &str, text: &str) -> Result<Duration, ApiError> {
    parse_duration(text).map_err(|m| ApiError::InvalidParameter(format!("{field}: {m}")))
}

pub async fn create(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let body: CreateBody = parse_json(&body)?;
    let filter = match body.filter {
        None | Some(Value::Null) => Filter::all(),
        Some(v) => serde_json::from_value::<Filter>(v)
            .map_err(|e| ApiError::InvalidFilter(format!("invalid filter: {e}")))?,
    };
    let mut config = GroupConfig::new(body.name, filter);
    if let Some(d) = body.ack_wait {
        config.ack_wait = duration("ack_wait", &d)?;
    }
    if let Some(n) = body.max_deliveries {
        config.max_deliveries = n;
    }
    if let Some(list) = body.backoff {
        config.backoff = list
            .iter()
            .map(|d| duration("backoff", d))
            .collect::<Result<_, _>>()?;
    }
    if let Some(n) = body.max_in_flight {
        config.max_in_flight = n;
    }
    config.ordering = match body.ordering {
        None => Ordering::PerKey,
        Some(v) => serde_json::from_value(v).map_err(|_| {
            ApiError::InvalidParameter("ordering is \"per_key\" or \"none\"".to_owned())
        })?,
    };
    let start = match body.start {
        None => Start::Latest,
        Some(Value::String(s)) if s == "earliest" => Start::Earliest,
        Some(Value::String(s)) if s == "latest" => Start::Latest,
        Some(Value::Number(n)) if n.as_u64().is_some() => Start::After(n.as_u64().unwrap_or(0)),
        Some(other) => {
            return Err(ApiError::InvalidParameter(format!(
                "start is \"earliest\", \"latest\" or a position, not {other}"
            )));
        }
    };
    let info = state.groups().create(config, start).await?;
    Ok((StatusCode::CREATED, Json(info_json(&info))).into_response())
}

pub async fn list(State(state): State<AppState>) -> Json<Value> {
    let groups: Vec<Value> = state.groups().list().iter().map(info_json).collect();
    Json(json!({ "groups": groups }))
}

pub async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(info_json(&state.groups().info(&name)?)))
}

pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.groups().delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn info_json(i: &GroupInfo) -> Value {
    let c = &i.config;
    let members: Vec<Value> = i
        .members
        .iter()
        .map(|m| json!({ "member": m.member, "in_flight": m.in_flight, "last_seen": m.last_seen }))
        .collect();
    json!({
        "name": c.name,
        "filter": c.filter,
        "ack_wait": format_duration(c.ack_wait),
        "max_deliveries": c.max_deliveries,
        "backoff": c.backoff.iter().map(|d| format_duration(*d)).collect::<Vec<_>>(),
        "max_in_flight": c.max_in_flight,
        "ordering": c.ordering,
        "created_at": i.created_at,
        "committed": i.committed,
        "head": i.head,
        "lag": i.lag,
        "in_flight": i.in_flight,
        "waiting": i.waiting,
        "dlq_size": i.dlq_size,
        "delivered": i.delivered,
        "redelivered": i.redelivered,
        "parked": i.parked,
        "truncations": i.truncations,
        "last_truncation": i.last_truncation,
        "members": members,
    })
}

/// A delivery as pulls and group streams send it. Serialized straight from the event:
/// going through a `serde_json::Value` first cost a fifth of the server's CPU when
/// members pulled in batches of 100 (every field a map entry, the args parsed again).
#[derive(Serialize)]
struct DeliveryJson<'a> {
    attempt: u32,
    delivery_id: String,
    event: &'a Event,
}

impl<'a> From<&'a Delivery> for DeliveryJson<'a> {
    fn from(d: &'a Delivery) -> Self {
        DeliveryJson {
            attempt: d.attempt,
            delivery_id: d.id.to_string(),
            event: &d.event,
        }
    }
}

#[derive(Serialize)]
struct Pulled<'a> {
    deliveries: Vec<DeliveryJson<'a>>,
}

fn check_member(member: &str) -> Result<(), ApiError> {
    if member.is_empty() || member.len() > MAX_MEMBER_LEN || member.chars().any(char::is_control) {
        return Err(ApiError::InvalidParameter(format!(
            "member is 1 to {MAX_MEMBER_LEN} characters, none of them control characters"
        )));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PullBody {
    member: String,
    #[serde(default)]
    max: Option<usize>,
    #[serde(default)]
    wait_ms: Option<u64>,
}

pub async fn pull(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let body: PullBody = parse_json(&body)?;
    check_member(&body.member)?;
    let max = body.max.unwrap_or(10);
    if !(1..=MAX_PULL).contains(&max) {
        return Err(ApiError::InvalidParameter(format!(
            "max must be between 1 and {MAX_PULL}"
        )));
    }
    let wait = body.wait_ms.unwrap_or(0);
    if wait > MAX_WAIT_MS {
        return Err(ApiError::InvalidParameter(format!(
            "wait_ms may be at most {MAX_WAIT_MS}"
        )));
    }
    let groups = Arc::clone(state.groups());
    let pulled = tokio::select! {
        pulled = groups.pull(&name, &body.member, max, Duration::from_millis(wait)) => pulled?,
        // A long poll ends early at shutdown, empty, so the client polls again later.
        () = state.drained() => Vec::new(),
    };
    Ok(Json(Pulled {
        deliveries: pulled.iter().map(DeliveryJson::from).collect(),
    })
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettleBody {
    #[serde(default)]
    delivery_ids: Option<Vec<String>>,
    #[serde(default)]
    delivery_id: Option<String>,
    #[serde(default)]
    delay: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    /// Acks only: false answers once the ack is applied, before it is written.
    #[serde(default)]
    durable: Option<bool>,
}

impl SettleBody {
    fn ids(&self) -> Result<Vec<DeliveryId>, ApiError> {
        let ids: Vec<&String> = match (&self.delivery_ids, &self.delivery_id) {
            (Some(list), None) => list.iter().collect(),
            (None, Some(one)) => vec![one],
            (Some(_), Some(_)) => {
                return Err(ApiError::InvalidParameter(
                    "give delivery_ids or delivery_id, not both".to_owned(),
                ));
            }
            (None, None) => {
                return Err(ApiError::InvalidParameter(
                    "delivery_ids is required".to_owned(),
                ));
            }
        };
        if ids.is_empty() || ids.len() > MAX_IDS {
            return Err(ApiError::InvalidParameter(format!(
                "delivery_ids takes 1 to {MAX_IDS} ids"
            )));
        }
        ids.into_iter()
            .map(|s| s.parse().map_err(ApiError::from))
            .collect()
    }

    /// Refuses `durable` where it means nothing: nacks and terms always wait for the
    /// write.
    fn no_durable(&self, what: &str) -> Result<(), ApiError> {
        match self.durable {
            Some(_) => Err(ApiError::InvalidParameter(format!(
                "{what} takes no durable: only an ack may answer before it is written"
            ))),
            None => Ok(()),
        }
    }

    fn reason(&self) -> Result<Option<String>, ApiError> {
        match &self.reason {
            Some(r) if r.len() > MAX_REASON_LEN => Err(ApiError::InvalidParameter(format!(
                "reason may be at most {MAX_REASON_LEN} bytes"
            ))),
            r => Ok(r.clone()),
        }
    }
}

pub async fn ack(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let body: SettleBody = parse_json(&body)?;
    if body.delay.is_some() || body.reason.is_some() {
        return Err(ApiError::InvalidParameter(
            "an ack takes only delivery_ids and durable".to_owned(),
        ));
    }
    let wait = match body.durable {
        Some(false) => AckWait::Applied,
        Some(true) | None => AckWait::Durable,
    };
    let n = state.groups().ack(&name, &body.ids()?, wait).await?;
    Ok(Json(json!({ "acked": n })))
}

pub async fn nack(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let body: SettleBody = parse_json(&body)?;
    body.no_durable("a nack")?;
    let delay = body
        .delay
        .as_deref()
        .map(|d| duration("delay", d))
        .transpose()?;
    let n = state
        .groups()
        .nack(&name, &body.ids()?, delay, body.reason()?)
        .await?;
    Ok(Json(json!({ "nacked": n })))
}

pub async fn term(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let body: SettleBody = parse_json(&body)?;
    body.no_durable("term")?;
    if body.delay.is_some() {
        return Err(ApiError::InvalidParameter(
            "term takes no delay: the event is parked at once".to_owned(),
        ));
    }
    let reason = body
        .reason()?
        .unwrap_or_else(|| "terminated by a member".to_owned());
    let n = state.groups().term(&name, &body.ids()?, &reason).await?;
    Ok(Json(json!({ "terminated": n })))
}

pub async fn dlq(
    State(state): State<AppState>,
    Path(name): Path<String>,
    mut query: Query,
) -> Result<Json<Value>, ApiError> {
    let limit = match query.take("limit")? {
        None => 100,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_DLQ_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::InvalidParameter(format!("limit must be between 1 and {MAX_DLQ_PAGE}"))
            })?,
    };
    let cursor: Position = match query.take("cursor")? {
        None => 0,
        Some(v) => v
            .parse()
            .map_err(|_| ApiError::InvalidCursor(format!("cursor {v:?} is not a position")))?,
    };
    query.finish()?;
    let (entries, next) = state.groups().dlq(&name, cursor, limit)?;
    let entries: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "id": e.event.position,
                "event": e.event,
                "attempts": e.attempts,
                "reason": e.reason,
                "parked_at": e.parked_at,
            })
        })
        .collect();
    Ok(Json(json!({ "entries": entries, "next_cursor": next })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    #[serde(default)]
    ids: Option<Vec<Position>>,
}

pub async fn replay(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    // An empty body means all, like `{}`.
    let body: ReplayBody = if body.iter().all(u8::is_ascii_whitespace) {
        ReplayBody { ids: None }
    } else {
        parse_json(&body)?
    };
    if body.ids.as_ref().is_some_and(|ids| ids.len() > MAX_IDS) {
        return Err(ApiError::InvalidParameter(format!(
            "ids takes at most {MAX_IDS} ids"
        )));
    }
    let n = state.groups().replay(&name, body.ids.as_deref()).await?;
    Ok(Json(json!({ "replayed": n })))
}

pub async fn discard(
    State(state): State<AppState>,
    Path((name, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let position: Position = id
        .parse()
        .map_err(|_| ApiError::InvalidParameter(format!("{id:?} is not a DLQ id (a position)")))?;
    state.groups().discard(&name, position).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/groups/{g}/stream?member=…`: deliveries as SSE messages. The member
/// holds what it was sent until it acks; when the stream closes, the rest goes to
/// other members.
pub async fn stream(
    State(state): State<AppState>,
    Path(name): Path<String>,
    extensions: Extensions,
    mut query: Query,
) -> Result<Response, ApiError> {
    if state.is_draining() {
        return Err(ApiError::Unavailable(
            "the server is shutting down; reconnect later".to_owned(),
        ));
    }
    let member = query
        .take("member")?
        .ok_or_else(|| ApiError::InvalidParameter("member is required".to_owned()))?;
    check_member(&member)?;
    let heartbeat = match query.take("heartbeat")? {
        None => state.config().heartbeat,
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|s| (1..=300).contains(s))
            .map(Duration::from_secs)
            .ok_or_else(|| {
                ApiError::InvalidParameter("heartbeat is 1 to 300 seconds".to_owned())
            })?,
    };
    query.finish()?;
    let groups: Arc<Groups> = Arc::clone(state.groups());
    let info = groups.info(&name)?;
    let guard = groups.join(&name, &member)?;
    // Listed with the other streams, and counted under the same cap.
    let open = state.connections().open(
        None,
        StreamSettings {
            kind: StreamKind::Group {
                group: name.clone(),
                member: member.clone(),
            },
            filter: info.config.filter,
            heartbeat,
            batch_size: info.config.max_in_flight as usize,
        },
        remote_addr(&extensions),
    )?;
    let ended = open.cancelled();
    let live = state.metrics().live_connection();
    let metrics = Arc::clone(state.metrics());
    struct Member {
        groups: Arc<Groups>,
        state: AppState,
        name: String,
        member: String,
        heartbeat: Duration,
        open: OpenStream,
        _guard: tributary_groups::MemberGuard,
    }
    let first = Bytes::from_static(b"retry: 1000\n\n");
    let st = Member {
        groups,
        state,
        name,
        member,
        heartbeat,
        open,
        _guard: guard,
    };
    let body = stream::unfold(Some((st, Some(first))), |st| async move {
        let (st, first) = st?;
        if let Some(first) = first {
            return Some((first, Some((st, None))));
        }
        let pulled = tokio::select! {
            pulled = st.groups.pull(&st.name, &st.member, usize::MAX, st.heartbeat) => pulled,
            () = st.state.drained() => return None,
        };
        match pulled {
            Ok(deliveries) if deliveries.is_empty() => {
                Some((Bytes::from_static(b": heartbeat\n\n"), Some((st, None))))
            }
            Ok(deliveries) => {
                st.open.record(deliveries.len() as u64);
                let mut out = String::new();
                for d in &deliveries {
                    out.push_str("data: ");
                    out.push_str(
                        &serde_json::to_string(&DeliveryJson::from(d))
                            .expect("a delivery always serializes"),
                    );
                    out.push_str("\n\n");
                }
                Some((Bytes::from(out), Some((st, None))))
            }
            // The group was deleted, or the server is closing: the stream ends.
            Err(_) => None,
        }
    });
    // A DELETE of the connection ends the stream (and the member leaves).
    let body = futures::StreamExt::take_until(body, ended.cancelled_owned());
    let body = futures::StreamExt::map(body, move |bytes| {
        let _ = &live;
        metrics.record_sent(0, bytes.len());
        Ok::<_, Infallible>(bytes)
    });
    let headers = [
        (CONTENT_TYPE, "text/event-stream"),
        (CACHE_CONTROL, "no-cache"),
    ];
    Ok((headers, Body::from_stream(body)).into_response())
}
