//! `GET /api/v1/events/history`: one page of past events at a time.
//!
//! Pages are keyset reads (`after < position <= up_to`), so following `next_cursor`
//! walks the log with no gap and no duplicate however it grows meanwhile.
//!
//! A cursor that retention has overtaken (events of the topics read were removed after
//! it) is answered 410 `cursor_expired`, never with a page that silently lacks them. The
//! answer's `resume_cursor` (`P~T`) reads on from the same place, accepting the loss up
//! to `T`; a read from the beginning (no cursor) starts at what is left, as asked.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use tributary_core::{Event, ReadQuery};

use super::{ReadParams, format_cursor, parse_in_range};
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::Query;

const DEFAULT_LIMIT: u64 = 100;
const MAX_LIMIT: u64 = 1000;

#[derive(Serialize)]
pub struct Page {
    events: Vec<Event>,
    /// Opaque to clients; today the decimal position to read after.
    next_cursor: String,
    has_more: bool,
}

pub async fn history(
    State(state): State<AppState>,
    mut query: Query,
) -> Result<Json<Page>, ApiError> {
    let params = ReadParams::take(&mut query, true)?;
    let limit = query
        .take("limit")?
        .map(|v| parse_in_range("limit", &v, 1..=MAX_LIMIT))
        .transpose()?
        .unwrap_or(DEFAULT_LIMIT) as usize;
    query.finish()?;

    let log = state.log();
    let after = params.start(log.as_ref(), None).await?;
    let head = *log.head().borrow();
    let up_to = params.until.map_or(head, |until| until.min(head));
    let events = if after < up_to {
        log.read(ReadQuery {
            after,
            up_to,
            filter: &params.filter,
            limit,
        })
        .await?
    } else {
        Vec::new()
    };
    // Asked after the read: a removal the read saw is counted by now.
    let pruned_through = log.pruned_through(&params.filter).await?;
    let told_through = if after == 0 {
        pruned_through
    } else {
        params.told_through
    };
    if pruned_through > after.max(told_through) {
        return Err(ApiError::CursorExpired {
            cursor: after,
            pruned_through,
            earliest_position: events.first().map(|e| e.position),
            resume_cursor: format_cursor(after, pruned_through),
        });
    }
    let has_more = events.len() == limit;
    // A short page scanned everything up to `up_to`, matching or not, so the next read
    // can start there; `max` keeps a cursor past `until` from moving backwards.
    let next = match events.last() {
        Some(last) if has_more => last.position,
        _ => up_to.max(after),
    };
    Ok(Json(Page {
        events,
        next_cursor: format_cursor(next, told_through),
        has_more,
    }))
}
