//! Which events a reader wants. Every reader (stream, history, later consumer groups)
//! and every backend query uses the same [`Filter`], so they cannot disagree.

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;
use crate::event::Event;
use crate::topic::TopicPattern;

/// Most values a single filter field may list; bounds the work of one query.
pub const MAX_FILTER_VALUES: usize = 100;

/// An event matches when every non-empty list has a match (lists are ORed within,
/// ANDed across). An empty filter matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[serde(default, skip_serializing_if = "Vec::is_empty", alias = "topic")]
    pub topics: Vec<TopicPattern>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", alias = "name")]
    pub names: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", alias = "client_id")]
    pub client_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", alias = "session_id")]
    pub session_ids: Vec<String>,
}

impl Filter {
    pub fn all() -> Self {
        Filter::default()
    }

    pub fn topic(pattern: TopicPattern) -> Self {
        Filter {
            topics: vec![pattern],
            ..Filter::default()
        }
    }

    pub fn is_all(&self) -> bool {
        self.topics.is_empty()
            && self.names.is_empty()
            && self.client_ids.is_empty()
            && self.session_ids.is_empty()
    }

    /// Refuses filters too large to serve.
    pub fn validate(&self) -> Result<(), ValidationError> {
        for (field, len) in [
            ("topic", self.topics.len()),
            ("name", self.names.len()),
            ("client_id", self.client_ids.len()),
            ("session_id", self.session_ids.len()),
        ] {
            if len > MAX_FILTER_VALUES {
                return Err(ValidationError::Field {
                    field,
                    reason: format!("at most {MAX_FILTER_VALUES} values, got {len}"),
                });
            }
        }
        Ok(())
    }

    /// Whether events of `topic` can match (the topic patterns alone).
    pub fn matches_topic(&self, topic: &str) -> bool {
        self.topics.is_empty() || self.topics.iter().any(|p| p.matches(topic))
    }

    pub fn matches(&self, event: &Event) -> bool {
        self.matches_topic(event.topic.as_str())
            && (self.names.is_empty() || self.names.contains(&event.name))
            && (self.client_ids.is_empty()
                || event
                    .client_id
                    .as_ref()
                    .is_some_and(|c| self.client_ids.contains(c)))
            && (self.session_ids.is_empty()
                || event
                    .session_id
                    .as_ref()
                    .is_some_and(|s| self.session_ids.contains(s)))
    }
}
