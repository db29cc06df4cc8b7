//! Topics (`/api/v1/topics`): the list with heads and counts, and one topic's settings
//! ([`TopicConfig`]: retention by age and count, largest event). The answers are
//! `tributary_core`'s [`TopicInfo`]; the [`Client`] methods that speak to these endpoints
//! are all here.
//!
//! Setting a rule that removes events (`max_age`, `max_events`) applies it once right
//! away, so the [`TopicInfo`] a [`Client::set_topic`] answers already shows the topic
//! shrunk; after that the server's retention pass keeps it so.

use serde::{Deserialize, Serialize};
use tributary_core::{Topic, TopicConfig, TopicInfo};
use url::Url;

use crate::client::Client;
use crate::error::ClientError;

impl Client {
    /// The URL of `api/v1/topics/{topic}`, with the name as one path segment.
    fn topic_endpoint(&self, topic: &Topic) -> Url {
        // A valid topic name is never empty, `.` or `..` (its tokens are non-empty), so
        // it always stays one segment; `push` percent-encodes whatever needs it.
        let mut url = self.endpoint("api/v1/topics");
        url.path_segments_mut()
            .expect("an http base has path segments")
            .push(topic.as_str());
        url
    }

    /// Every topic that holds events or has settings, with its head seq, event count,
    /// last position, how far retention has removed its events, and its settings
    /// (`GET /api/v1/topics`).
    pub async fn topics(&self) -> Result<Vec<TopicInfo>, ClientError> {
        #[derive(Deserialize)]
        struct Answer {
            topics: Vec<TopicInfo>,
        }
        let req = self.http().get(self.endpoint("api/v1/topics"));
        let answer: Answer = self.send_json(req, "the topic list").await?;
        Ok(answer.topics)
    }

    /// One topic (`GET /api/v1/topics/{topic}`); `None` when the server knows no such
    /// topic (it has neither events nor settings).
    pub async fn topic(&self, topic: &Topic) -> Result<Option<TopicInfo>, ClientError> {
        let req = self.http().get(self.topic_endpoint(topic));
        match self.send_json(req, "the topic").await {
            Ok(info) => Ok(Some(info)),
            Err(e) if e.code() == Some("not_found") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Gives a topic settings (`POST /api/v1/topics`) and returns it as it is now; it
    /// need not have events yet. A topic that has settings already fails with code
    /// `topic_exists` (see [`ClientError::code`]): change them with
    /// [`Client::set_topic`]. Settings the server refuses (a zero limit, retention on a
    /// `livestore.*` topic) fail with code `invalid_parameter`.
    pub async fn create_topic(
        &self,
        topic: &Topic,
        config: &TopicConfig,
    ) -> Result<TopicInfo, ClientError> {
        #[derive(Serialize)]
        struct Body<'a> {
            topic: &'a Topic,
            #[serde(flatten)]
            config: &'a TopicConfig,
        }
        let req = self
            .http()
            .post(self.endpoint("api/v1/topics"))
            .json(&Body { topic, config });
        self.send_json(req, "the created topic").await
    }

    /// Sets a topic's settings, replacing any it had: a limit left `None` is removed
    /// (`PUT /api/v1/topics/{topic}`). Returns the topic as it is now, with a new
    /// retention rule already applied.
    pub async fn set_topic(
        &self,
        topic: &Topic,
        config: &TopicConfig,
    ) -> Result<TopicInfo, ClientError> {
        let req = self.http().put(self.topic_endpoint(topic)).json(config);
        self.send_json(req, "the topic").await
    }

    /// Removes a topic's settings and every one of its events
    /// (`DELETE /api/v1/topics/{topic}`), and returns how many events were removed. An
    /// unknown topic fails with code `not_found`.
    pub async fn delete_topic(&self, topic: &Topic) -> Result<u64, ClientError> {
        #[derive(Deserialize)]
        struct Answer {
            deleted_events: u64,
        }
        let req = self.http().delete(self.topic_endpoint(topic));
        let answer: Answer = self.send_json(req, "the topic deletion answer").await?;
        Ok(answer.deleted_events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_become_one_path_segment() {
        let c = Client::new("http://example.com/prefix").unwrap();
        let topic = Topic::new("orders.eu-1.created_v2").unwrap();
        assert_eq!(
            c.topic_endpoint(&topic).as_str(),
            "http://example.com/prefix/api/v1/topics/orders.eu-1.created_v2"
        );
    }
}
