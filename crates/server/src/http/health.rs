//! What operators probe and scrape: `/healthz` (the process answers), `/readyz` (it can
//! take writes now) and `/metrics` (Prometheus).

use axum::Json;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde_json::{Value, json};
use tributary_core::LogError;

use crate::app::AppState;
use crate::error::ApiError;
use crate::metrics::Snapshot;

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    if state.is_draining() {
        return Err(ApiError::Unavailable(
            "the server is shutting down".to_owned(),
        ));
    }
    // Not ready is an answer, not a fault: a 503, with the detail kept for operators.
    state.log().check_writable().await.map_err(|e| match e {
        LogError::Closed => ApiError::Unavailable("the log is closed".to_owned()),
        e => {
            tracing::warn!(error = %e, detail = ?e, "readiness check failed");
            ApiError::Unavailable("the log cannot take writes now".to_owned())
        }
    })?;
    Ok(Json(json!({ "status": "ready" })))
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let (tail_events, tail_bytes) = state.tail().len();
    let mut text = state.metrics().render(&Snapshot {
        log_head: *state.log().head().borrow(),
        tail_events,
        tail_bytes,
        commits: state.log().commit_stats(),
        retention_removed: state.retention().removed(),
    });
    crate::metrics::render_groups(&mut text, &state.groups().list());
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
