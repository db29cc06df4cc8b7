//! The HTTP handlers, one module per resource, and the read parameters that the stream
//! and history endpoints share (so that a filter or cursor means the same in both).

pub mod connections;
pub mod events;
pub mod groups;
pub mod health;
pub mod history;
pub mod livestore;
pub mod stream;
pub mod topics;

use std::ops::RangeInclusive;

use tributary_core::{Filter, Log, Position, Timestamp, TopicPattern};

use crate::error::ApiError;
use crate::extract::Query;

/// Where a read starts, as the request put it.
#[derive(Clone, Copy, Debug)]
enum Start {
    Beginning,
    After(Position),
    /// `since=now`: whatever the head is when the request is served.
    Now,
    Time(Timestamp),
}

/// What to read: which events, from where, up to where.
#[derive(Debug)]
pub(crate) struct ReadParams {
    pub filter: Filter,
    start: Start,
    /// Inclusive.
    pub until: Option<Position>,
    /// From a history cursor `P~T`: the reader already knows that retention removed
    /// events up to position `T`, and is not told again.
    pub told_through: Position,
}

impl ReadParams {
    /// Takes `topic`, `name`, `client_id`, `session_id` (each repeatable), `filter`,
    /// `since` (and `cursor` when `cursor_key`), `since_time` and `until` from the query.
    pub fn take(q: &mut Query, cursor_key: bool) -> Result<Self, ApiError> {
        let mut filter = match q.take("filter")? {
            Some(json) => serde_json::from_str::<Filter>(&json)
                .map_err(|e| ApiError::InvalidFilter(format!("invalid `filter`: {e}")))?,
            None => Filter::all(),
        };
        for topic in q.take_all("topic") {
            filter.topics.push(TopicPattern::new(topic)?);
        }
        filter.names.extend(q.take_all("name"));
        filter.client_ids.extend(q.take_all("client_id"));
        filter.session_ids.extend(q.take_all("session_id"));
        filter
            .validate()
            .map_err(|e| ApiError::InvalidFilter(e.to_string()))?;

        let since = q.take("since")?;
        let cursor = if cursor_key { q.take("cursor")? } else { None };
        let since_time = q.take("since_time")?;
        let given = [since.is_some(), cursor.is_some(), since_time.is_some()];
        if given.iter().filter(|&&g| g).count() > 1 {
            return Err(ApiError::InvalidParameter(
                "give at most one of `since`, `cursor` and `since_time`".to_owned(),
            ));
        }
        let mut told_through = 0;
        let start = if let Some(since) = since {
            match since.as_str() {
                "now" => Start::Now,
                s => Start::After(parse_position("since", s)?),
            }
        } else if let Some(cursor) = cursor {
            let (after, told) = parse_cursor(&cursor)?;
            told_through = told;
            Start::After(after)
        } else if let Some(time) = since_time {
            let time = Timestamp::parse_rfc3339(&time).map_err(|_| {
                ApiError::InvalidParameter(format!("`since_time` {time:?} is not an RFC 3339 time"))
            })?;
            Start::Time(time)
        } else {
            Start::Beginning
        };
        let until = q
            .take("until")?
            .map(|u| parse_position("until", &u))
            .transpose()?;
        Ok(ReadParams {
            filter,
            start,
            until,
            told_through,
        })
    }

    /// The position to read after. `resume` (a `Last-Event-ID`) wins over what the query
    /// said. A position beyond the head is refused rather than waited for: it most
    /// likely comes from another log, and waiting would hide that.
    pub async fn start(
        &self,
        log: &dyn Log,
        resume: Option<Position>,
    ) -> Result<Position, ApiError> {
        let head = *log.head().borrow();
        let start = match resume.map(Start::After).unwrap_or(self.start) {
            Start::Beginning => 0,
            Start::Now => head,
            Start::After(position) => position,
            Start::Time(time) => log.position_before(time).await?,
        };
        if start > head {
            return Err(ApiError::InvalidCursor(format!(
                "position {start} is beyond the log's head ({head})"
            )));
        }
        Ok(start)
    }
}

/// A history cursor: `P` (read after position `P`), or `P~T` (the same, knowing that
/// events up to position `T` were removed by retention).
pub(crate) fn parse_cursor(value: &str) -> Result<(Position, Position), ApiError> {
    match value.split_once('~') {
        None => Ok((parse_position("cursor", value)?, 0)),
        Some((after, told)) => Ok((
            parse_position("cursor", after)?,
            parse_position("cursor", told)?,
        )),
    }
}

/// The cursor to read on after `position` for a reader that knows of removals up to
/// `told_through`; the inverse of [`parse_cursor`].
pub(crate) fn format_cursor(position: Position, told_through: Position) -> String {
    if told_through > position {
        format!("{position}~{told_through}")
    } else {
        position.to_string()
    }
}

/// A position (cursor) in a query or header: a decimal u64.
pub(crate) fn parse_position(what: &str, value: &str) -> Result<Position, ApiError> {
    value.trim().parse().map_err(|_| {
        ApiError::InvalidCursor(format!(
            "`{what}` must be a position (a whole number), got {value:?}"
        ))
    })
}

pub(crate) fn parse_in_range(
    key: &str,
    value: &str,
    range: RangeInclusive<u64>,
) -> Result<u64, ApiError> {
    value
        .parse()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            ApiError::InvalidParameter(format!(
                "`{key}` must be a whole number from {} to {}, got {value:?}",
                range.start(),
                range.end()
            ))
        })
}

pub(crate) fn parse_bool(key: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(ApiError::InvalidParameter(format!(
            "`{key}` must be true or false, got {value:?}"
        ))),
    }
}
