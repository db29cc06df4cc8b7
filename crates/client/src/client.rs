//! [`Client`]: publish, history, the entry point of subscriptions, and the request
//! plumbing every call shares (topics' calls are in `topics`, consumer groups' in
//! `groups`).

use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tributary_core::{Appended, Event, Filter, NewEvent, Position, Timestamp};
use url::Url;

use crate::error::ClientError;
use crate::subscribe::{SubscribeOptions, Subscription};

/// How long [`Client::new`] waits for a TCP connection before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Client::new`] lets one publish, history or topics request take. Streams
/// have no such limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A handle to one Tributary server. Cheap to clone; clones share their connection pool.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    /// The server's base URL, always ending with `/`.
    base: Url,
    request_timeout: Option<Duration>,
}

/// What [`Client::history`] reads: a filter and where to start.
///
/// Set `cursor` (from a previous page) or `since` (a position), not both; with neither
/// the history starts at the first event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Which events to return.
    pub filter: Filter,
    /// Return events after this position.
    pub since: Option<Position>,
    /// Continue where a previous page ended ([`HistoryPage::next_cursor`]), or read on
    /// past a removal with [`ClientError::CursorExpired`]'s `resume_cursor`. Cursors are
    /// opaque strings (`"120"`, `"120~500"`): pass them back as they came.
    pub cursor: Option<String>,
    /// Return no event after this position.
    pub until: Option<Position>,
    /// Return events stored at or after this time.
    pub since_time: Option<Timestamp>,
    /// At most this many events per page; the server has its own default and maximum.
    pub limit: Option<usize>,
}

impl HistoryQuery {
    /// The same query, continuing after `page`.
    pub fn after(&self, page: &HistoryPage) -> HistoryQuery {
        self.with_cursor(page.next_cursor.clone())
    }

    /// The same query, starting at `cursor` instead (a [`HistoryPage::next_cursor`], or
    /// the `resume_cursor` of [`ClientError::CursorExpired`]).
    pub fn with_cursor(&self, cursor: impl Into<String>) -> HistoryQuery {
        HistoryQuery {
            since: None,
            since_time: None,
            cursor: Some(cursor.into()),
            ..self.clone()
        }
    }

    fn params(&self) -> Vec<(&'static str, String)> {
        let mut params = filter_params(&self.filter);
        if let Some(since) = self.since {
            params.push(("since", since.to_string()));
        }
        if let Some(cursor) = &self.cursor {
            params.push(("cursor", cursor.clone()));
        }
        if let Some(until) = self.until {
            params.push(("until", until.to_string()));
        }
        if let Some(time) = self.since_time {
            params.push(("since_time", time.to_rfc3339()));
        }
        if let Some(limit) = self.limit {
            params.push(("limit", limit.to_string()));
        }
        params
    }
}

/// One page of history.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct HistoryPage {
    /// The events, in position order.
    pub events: Vec<Event>,
    /// Where the next page starts; pass it back with [`HistoryQuery::after`].
    pub next_cursor: String,
    /// True when more events may follow this page.
    pub has_more: bool,
}

/// The query parameters that express a filter: each list value is one repeated
/// parameter, which is how the server's stream and history endpoints read them.
pub(crate) fn filter_params(filter: &Filter) -> Vec<(&'static str, String)> {
    let mut params = Vec::new();
    params.extend(filter.topics.iter().map(|t| ("topic", t.to_string())));
    params.extend(filter.names.iter().map(|n| ("name", n.clone())));
    params.extend(filter.client_ids.iter().map(|c| ("client_id", c.clone())));
    params.extend(filter.session_ids.iter().map(|s| ("session_id", s.clone())));
    params
}

impl Client {
    /// A client for the server at `base_url` (`http://host:port`, optionally with a path
    /// prefix such as `http://host/tributary`). Sends nothing yet.
    pub fn new(base_url: &str) -> Result<Client, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(ClientError::Http)?;
        let mut client = Client::with_http_client(base_url, http)?;
        client.request_timeout = Some(REQUEST_TIMEOUT);
        Ok(client)
    }

    /// A client that sends through a `reqwest::Client` you configured (proxies, headers,
    /// timeouts). Set no overall timeout on it if you subscribe: a stream stays open.
    pub fn with_http_client(base_url: &str, http: reqwest::Client) -> Result<Client, ClientError> {
        let invalid = |reason: &str| ClientError::InvalidUrl {
            url: base_url.to_owned(),
            reason: reason.to_owned(),
        };
        let mut base = Url::parse(base_url).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https"));
        }
        if base.cannot_be_a_base() || base.host().is_none() {
            return Err(invalid("a host is needed"));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(invalid("a query or fragment is not allowed"));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Ok(Client {
            http,
            base,
            request_timeout: None,
        })
    }

    /// The server's base URL (ending with `/`).
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub(crate) fn endpoint(&self, path: &str) -> Url {
        self.base
            .join(path)
            .expect("a relative path joins onto an http base")
    }

    /// Appends one event and returns where it was stored. Publishing an `id` that was
    /// stored before stores nothing and returns the original with `duplicate: true`.
    ///
    /// Fails with [`ClientError::SeqConflict`] when `expected_seq` is set and is not the
    /// topic's head.
    pub async fn publish(&self, event: NewEvent) -> Result<Appended, ClientError> {
        let req = self.http.post(self.endpoint("api/v1/events")).json(&event);
        self.send_json(req, "the publish answer").await
    }

    /// Appends a batch atomically: every event is stored, or (on any error) none is.
    /// The answers are in the order of `events`. An empty batch sends nothing.
    pub async fn publish_batch(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, ClientError> {
        #[derive(Serialize)]
        struct Batch {
            events: Vec<NewEvent>,
        }
        #[derive(Deserialize)]
        struct Answer {
            events: Vec<Appended>,
        }
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let sent = events.len();
        let req = self
            .http
            .post(self.endpoint("api/v1/events"))
            .json(&Batch { events });
        let answer: Answer = self.send_json(req, "the batch publish answer").await?;
        if answer.events.len() != sent {
            return Err(ClientError::Decode {
                context: format!(
                    "published {sent} events but got {} answers",
                    answer.events.len()
                ),
                source: None,
            });
        }
        Ok(answer.events)
    }

    /// Reads one page of stored events. To read everything, repeat with
    /// [`HistoryQuery::after`] while [`HistoryPage::has_more`] is true.
    ///
    /// Fails with [`ClientError::CursorExpired`] when retention removed events after the
    /// query's `cursor` or `since` (of the topics it reads) that this reader was not told
    /// of yet: nothing is skipped silently. Its `resume_cursor` reads on from the same
    /// place, accepting the loss.
    pub async fn history(&self, query: &HistoryQuery) -> Result<HistoryPage, ClientError> {
        let req = self
            .http
            .get(self.endpoint("api/v1/events/history"))
            .query(&query.params());
        self.send_json(req, "the history page").await
    }

    /// Succeeds when the server answers its liveness check (`/healthz`).
    pub async fn health(&self) -> Result<(), ClientError> {
        self.check(self.http.get(self.endpoint("healthz"))).await
    }

    /// Succeeds when the server is ready to accept events (`/readyz`).
    pub async fn ready(&self) -> Result<(), ClientError> {
        self.check(self.http.get(self.endpoint("readyz"))).await
    }

    /// Follows the events that match `options.filter`, history first and then live,
    /// reconnecting by itself; see [`Subscription`]. Nothing is sent until the
    /// subscription is first polled.
    pub fn subscribe(&self, options: SubscribeOptions) -> Subscription {
        Subscription::new(self.clone(), options)
    }

    async fn check(&self, req: reqwest::RequestBuilder) -> Result<(), ClientError> {
        self.send(req).await.map(drop)
    }

    /// Sends a request and returns the body of a 2xx answer, or the error it carries.
    pub(crate) async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<bytes::Bytes, ClientError> {
        self.send_within(req, Duration::ZERO).await
    }

    /// [`Client::send`] for a request the server may hold for `extra` before it answers
    /// (a long poll): it gets that much longer than the usual request timeout.
    pub(crate) async fn send_within(
        &self,
        mut req: reqwest::RequestBuilder,
        extra: Duration,
    ) -> Result<bytes::Bytes, ClientError> {
        if let Some(timeout) = self.request_timeout {
            req = req.timeout(timeout + extra);
        }
        let resp = req
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(ClientError::Http)?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(ClientError::Http)?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(ClientError::from_response(status, &body))
        }
    }

    pub(crate) async fn send_json<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<T, ClientError> {
        self.send_json_within(req, what, Duration::ZERO).await
    }

    /// [`Client::send_json`] with [`Client::send_within`]'s extra time.
    pub(crate) async fn send_json_within<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
        extra: Duration,
    ) -> Result<T, ClientError> {
        let body = self.send_within(req, extra).await?;
        serde_json::from_slice(&body)
            .map_err(|e| ClientError::decode(format!("{what} is not valid"), e))
    }
}

/// True when a response's content type is `text/event-stream`.
pub(crate) fn is_event_stream(resp: &reqwest::Response) -> bool {
    resp.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("text/event-stream"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_core::TopicPattern;

    #[test]
    fn base_urls_are_checked_and_normalized() {
        let c = Client::new("http://127.0.0.1:7070").unwrap();
        assert_eq!(
            c.endpoint("api/v1/events").as_str(),
            "http://127.0.0.1:7070/api/v1/events"
        );
        let c = Client::new("http://example.com/prefix").unwrap();
        assert_eq!(
            c.endpoint("api/v1/topics").as_str(),
            "http://example.com/prefix/api/v1/topics"
        );
        for bad in [
            "",
            "127.0.0.1:7070",
            "ftp://x",
            "http://x/?a=b",
            "mailto:a@b",
        ] {
            assert!(
                matches!(Client::new(bad), Err(ClientError::InvalidUrl { .. })),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn history_params_repeat_list_values() {
        let query = HistoryQuery {
            filter: Filter {
                topics: vec![
                    TopicPattern::new("a.>").unwrap(),
                    TopicPattern::new("b").unwrap(),
                ],
                names: vec!["n".into()],
                ..Filter::default()
            },
            since: Some(4),
            limit: Some(10),
            since_time: Some(Timestamp(0)),
            ..HistoryQuery::default()
        };
        assert_eq!(
            query.params(),
            vec![
                ("topic", "a.>".to_owned()),
                ("topic", "b".to_owned()),
                ("name", "n".to_owned()),
                ("since", "4".to_owned()),
                ("since_time", "1970-01-01T00:00:00.000Z".to_owned()),
                ("limit", "10".to_owned()),
            ]
        );
        let page = HistoryPage {
            events: vec![],
            next_cursor: "c9".into(),
            has_more: true,
        };
        let next = query.after(&page);
        assert_eq!(next.cursor.as_deref(), Some("c9"));
        assert_eq!(
            (next.since, next.since_time, next.limit),
            (None, None, Some(10))
        );
    }
}
