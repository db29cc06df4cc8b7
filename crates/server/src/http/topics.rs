//! `GET /api/v1/topics`: every topic and how far it has come.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use tributary_core::TopicInfo;

use crate::app::AppState;
use crate::error::ApiError;

#[derive(Serialize)]
pub struct Topics {
    topics: Vec<TopicInfo>,
}

pub async fn list(State(state): State<AppState>) -> Result<Json<Topics>, ApiError> {
    let topics = state.log().topics().await?;
    Ok(Json(Topics { topics }))
}
