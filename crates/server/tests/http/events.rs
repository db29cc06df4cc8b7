//! Publish, SSE, history, health, metrics and shutdown: the core routes.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tributary_core::{Filter, Log, MemoryGroupStore, MemoryLog, ReadQuery};
use tributary_server::{AppState, Config, ServerError, router};

use super::common::{Spawned, http, spawn};

struct TestServer {
    addr: SocketAddr,
    log: Arc<MemoryLog>,
    client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    served: JoinHandle<Result<(), ServerError>>,
}

async fn start() -> TestServer {
    start_with(Config::default()).await
}

async fn start_with(config: Config) -> TestServer {
    let Spawned {
        addr,
        log,
        stop,
        served,
    } = spawn(config).await;
    TestServer {
        addr,
        log,
        client: http(),
        shutdown: Some(stop),
        served,
    }
}

impl TestServer {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn publish(&self, body: Value) -> (StatusCode, Value) {
        let resp = self
            .client
            .post(self.url("/api/v1/events"))
            .json(&body)
            .send()
            .await
            .unwrap();
        json_of(resp).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        json_of(self.client.get(self.url(path)).send().await.unwrap()).await
    }

    /// Publishes `n` events to `topic`, named `e<i>`.
    async fn fill(&self, topic: &str, n: usize) {
        for i in 0..n {
            let (status, _) = self
                .publish(json!({"topic": topic, "name": format!("e{i}")}))
                .await;
            assert_eq!(status, StatusCode::CREATED);
        }
    }

    fn head(&self) -> u64 {
        *self.log.head().borrow()
    }

    async fn stream(&self, query: &str) -> Sse {
        self.stream_with(query, None).await
    }

    async fn stream_with(&self, query: &str, last_event_id: Option<&str>) -> Sse {
        let mut req = self
            .client
            .get(self.url(&format!("/api/v1/events/stream?{query}")));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "stream refused: {query}");
        let headers = resp.headers();
        assert_eq!(headers["content-type"], "text/event-stream");
        assert_eq!(headers["cache-control"], "no-cache");
        assert_eq!(headers["x-accel-buffering"], "no");
        let mut sse = Sse {
            body: Box::pin(resp.bytes_stream()),
            buf: String::new(),
            wait: Duration::from_secs(10),
        };
        assert_eq!(sse.next().await, Some(Frame::Retry(1000)));
        sse
    }

    /// Triggers the graceful shutdown and waits for `serve` to return.
    async fn shut_down(mut self) -> Result<(), ServerError> {
        self.shutdown.take().unwrap().send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.served)
            .await
            .expect("serve returns after shutdown")
            .unwrap()
    }
}

async fn json_of(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("not JSON ({e}), status {status}: {text:?}"));
    (status, value)
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

#[derive(Debug, PartialEq)]
enum Frame {
    Retry(u64),
    Comment(String),
    Event { id: u64, data: Value },
    Marker { event: String, data: Value },
}

impl Frame {
    fn id(&self) -> u64 {
        match self {
            Frame::Event { id, .. } => *id,
            other => panic!("expected an event, got {other:?}"),
        }
    }
}

fn marker(event: &str, position: u64) -> Frame {
    Frame::Marker {
        event: event.to_owned(),
        data: json!({ "position": position }),
    }
}

struct Sse {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    buf: String,
    wait: Duration,
}

impl Sse {
    /// The next frame, or `None` once the server closed the stream.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(at) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..at + 2).collect();
                return Some(parse_frame(&frame[..at]));
            }
            let chunk = tokio::time::timeout(self.wait, self.body.next())
                .await
                .unwrap_or_else(|_| {
                    panic!("timed out waiting for an SSE frame; have {:?}", self.buf)
                });
            match chunk {
                Some(Ok(bytes)) => self.buf.push_str(std::str::from_utf8(&bytes).unwrap()),
                Some(Err(e)) => panic!("SSE body failed: {e}"),
                None => {
                    assert!(
                        self.buf.is_empty(),
                        "stream ended mid-frame: {:?}",
                        self.buf
                    );
                    return None;
                }
            }
        }
    }

    /// The next frame that is not a heartbeat.
    async fn next_content(&mut self) -> Option<Frame> {
        loop {
            match self.next().await {
                Some(Frame::Comment(_)) => continue,
                other => return other,
            }
        }
    }

    /// Event ids up to the `caught-up` marker, and the marker's position.
    async fn ids_until_caught_up(&mut self) -> (Vec<u64>, u64) {
        let mut ids = Vec::new();
        loop {
            match self
                .next_content()
                .await
                .expect("stream ended before caught-up")
            {
                Frame::Event { id, .. } => ids.push(id),
                Frame::Marker { event, data } if event == "caught-up" => {
                    return (ids, data["position"].as_u64().unwrap());
                }
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }
}

fn parse_frame(text: &str) -> Frame {
    if let Some(retry) = text.strip_prefix("retry: ") {
        return Frame::Retry(retry.parse().unwrap());
    }
    if let Some(comment) = text.strip_prefix(": ") {
        return Frame::Comment(comment.to_owned());
    }
    let (mut id, mut event, mut data) = (None, None, None);
    for line in text.lines() {
        let (field, value) = line.split_once(": ").expect("field: value");
        match field {
            "id" => id = Some(value.parse().unwrap()),
            "event" => event = Some(value.to_owned()),
            "data" => {
                assert!(data.is_none(), "one data line per frame");
                data = Some(serde_json::from_str(value).unwrap());
            }
            other => panic!("unexpected field {other:?} in {text:?}"),
        }
    }
    let data: Value = data.expect("a data line");
    match (id, event) {
        (Some(id), None) => {
            assert_eq!(data["position"], json!(id), "id is the position");
            Frame::Event { id, data }
        }
        (None, Some(event)) => Frame::Marker { event, data },
        other => panic!("unexpected frame shape {other:?}: {text:?}"),
    }
}

mod publish {
    use super::*;

    #[tokio::test]
    async fn single_event_is_stored_and_answered() {
        let s = start().await;
        let (status, body) = s
            .publish(json!({"topic": "orders.eu", "name": "v1.Created", "args": {"n": 1}}))
            .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(body, json!({"position": 1, "seq": 1, "duplicate": false}));
        let events = s
            .log
            .read(ReadQuery {
                after: 0,
                up_to: 10,
                filter: &Filter::all(),
                limit: 10,
            })
            .await
            .unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].name, "v1.Created");
        assert_eq!(events[0].args.as_json(), r#"{"n":1}"#);
    }

    #[tokio::test]
    async fn batch_gets_positions_and_per_topic_seqs() {
        let s = start().await;
        let (status, body) = s
            .publish(json!({"events": [
                {"topic": "a", "name": "x"},
                {"topic": "b", "name": "x"},
                {"topic": "a", "name": "y", "args": [1, 2]},
            ]}))
            .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(
            body,
            json!({"events": [
                {"position": 1, "seq": 1, "duplicate": false},
                {"position": 2, "seq": 1, "duplicate": false},
                {"position": 3, "seq": 2, "duplicate": false},
            ]})
        );
    }

    #[tokio::test]
    async fn idempotency_key_and_id_deduplicate() {
        let s = start().await;
        let send = |key: &'static str| {
            s.client
                .post(s.url("/api/v1/events"))
                .header("idempotency-key", key)
                .json(&json!({"topic": "t", "name": "n"}))
                .send()
        };
        let (status, first) = json_of(send("k-1").await.unwrap()).await;
        assert_eq!(status, StatusCode::CREATED);
        let (status, again) = json_of(send("k-1").await.unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(again, json!({"position": 1, "seq": 1, "duplicate": true}));
        assert_eq!(first["position"], again["position"]);

        // The same key in the body is the same event.
        let (status, body) = s
            .publish(json!({"topic": "t", "name": "n", "id": "k-1"}))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["duplicate"], json!(true));

        // A header and a body that disagree are refused.
        let resp = s
            .client
            .post(s.url("/api/v1/events"))
            .header("idempotency-key", "k-2")
            .json(&json!({"topic": "t", "name": "n", "id": "k-3"}))
            .send()
            .await
            .unwrap();
        let (status, body) = json_of(resp).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(error_code(&body), "invalid_event");

        // A batch of nothing but duplicates is a 200; one new event makes it a 201.
        let batch = json!({"events": [{"topic": "t", "name": "n", "id": "k-1"}]});
        assert_eq!(s.publish(batch).await.0, StatusCode::OK);
        let batch = json!({"events": [
            {"topic": "t", "name": "n", "id": "k-1"},
            {"topic": "t", "name": "n", "id": "k-4"},
        ]});
        let (status, body) = s.publish(batch).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(body["events"][0]["duplicate"], json!(true));
        assert_eq!(body["events"][1]["position"], json!(2));
        assert_eq!(s.head(), 2);
    }

    #[tokio::test]
    async fn expected_seq_conflict_answers_409_with_the_head() {
        let s = start().await;
        s.fill("room.1", 2).await;
        let (status, body) = s
            .publish(json!({"topic": "room.1", "name": "n", "expected_seq": 1}))
            .await;
        assert_eq!(status, StatusCode::CONFLICT);
        let err = &body["error"];
        assert_eq!(err["code"], "seq_conflict");
        assert_eq!(err["topic"], "room.1");
        assert_eq!(err["expected_seq"], 1);
        assert_eq!(err["head_seq"], 2);
        assert!(err["message"].is_string());
        assert_eq!(s.head(), 2);

        let (status, body) = s
            .publish(json!({"topic": "room.1", "name": "n", "expected_seq": 2}))
            .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(body["seq"], 3);
    }

    #[tokio::test]
    async fn a_conflicting_batch_stores_nothing() {
        let s = start().await;
        s.fill("a", 1).await;
        let (status, body) = s
            .publish(json!({"events": [
                {"topic": "b", "name": "n"},
                {"topic": "a", "name": "n", "expected_seq": 5},
                {"topic": "c", "name": "n"},
            ]}))
            .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["error"]["head_seq"], 1);
        assert_eq!(s.head(), 1);
        let (_, topics) = s.get("/api/v1/topics").await;
        assert_eq!(topics["topics"].as_array().unwrap().len(), 1);
    }
}

mod bad_input {
    use super::*;

    fn small_limits() -> Config {
        Config {
            max_request_bytes: 64 * 1024,
            max_event_bytes: 1024,
            max_batch_events: 5,
            ..Config::default()
        }
    }

    #[tokio::test]
    async fn bad_publishes_are_refused_and_change_nothing() {
        let s = start_with(small_limits()).await;
        s.fill("t", 2).await;
        let big_args = "x".repeat(2000);
        let huge = format!(
            r#"{{"topic":"t","name":"n","args":"{}"}}"#,
            "x".repeat(100_000)
        );
        let many: Vec<Value> = (0..6).map(|_| json!({"topic": "t", "name": "n"})).collect();
        let cases: Vec<(&str, String, Option<&str>, StatusCode, &str)> = vec![
            (
                "malformed",
                r#"{"topic":"#.into(),
                None,
                StatusCode::BAD_REQUEST,
                "invalid_json",
            ),
            (
                "empty",
                String::new(),
                None,
                StatusCode::BAD_REQUEST,
                "invalid_json",
            ),
            (
                "not an object",
                "[1,2]".into(),
                None,
                StatusCode::BAD_REQUEST,
                "invalid_json",
            ),
            (
                "wrong type",
                r#"{"topic":"t","name":5}"#.into(),
                None,
                StatusCode::BAD_REQUEST,
                "invalid_json",
            ),
            (
                "negative expected_seq",
                r#"{"topic":"t","name":"n","expected_seq":-1}"#.into(),
                None,
                StatusCode::BAD_REQUEST,
                "invalid_json",
            ),
            (
                "unknown field",
                r#"{"topic":"t","name":"n","colour":"red"}"#.into(),
                None,
                StatusCode::BAD_REQUEST,
                "invalid_json",
            ),
            (
                "missing name",
                r#"{"topic":"t"}"#.into(),
                None,
                StatusCode::BAD_REQUEST,
                "invalid_json",
            ),
            (
                "batch with extra key",
                r#"{"events":[],"topic":"t"}"#.into(),
                None,
                StatusCode::BAD_REQUEST,
                "invalid_json",
            ),
            (
                "bad event in batch",
                r#"{"events":[{"topic":"t","name":"n"},{"topic":"t"}]}"#.into(),
                None,
                StatusCode::BAD_REQUEST,
                "invalid_json",
            ),
            (
                "bad topic",
                r#"{"topic":"a..b","name":"n"}"#.into(),
                None,
                StatusCode::BAD_REQUEST,
                "invalid_topic",
            ),
            (
                "wildcard topic",
                r#"{"topic":"a.*","name":"n"}"#.into(),
                None,
                StatusCode::BAD_REQUEST,
                "invalid_topic",
            ),
            (
                "bad topic in batch",
                r#"{"events":[{"topic":"t","name":"n"},{"topic":"","name":"n"}]}"#.into(),
                None,
                StatusCode::BAD_REQUEST,
                "invalid_topic",
            ),
            (
                "empty name",
                r#"{"topic":"t","name":""}"#.into(),
                None,
                StatusCode::BAD_REQUEST,
                "invalid_event",
            ),
            (
                "empty batch",
                r#"{"events":[]}"#.into(),
                None,
                StatusCode::BAD_REQUEST,
                "invalid_event",
            ),
            (
                "oversized event",
                format!(r#"{{"topic":"t","name":"n","args":"{big_args}"}}"#),
                None,
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
            ),
            (
                "too many events",
                json!({"events": many}).to_string(),
                None,
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
            ),
            (
                "huge body",
                huge,
                None,
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
            ),
            (
                "form body",
                r#"{"topic":"t","name":"n"}"#.into(),
                Some("application/x-www-form-urlencoded"),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            ),
            (
                "text body",
                r#"{"topic":"t","name":"n"}"#.into(),
                Some("text/plain"),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            ),
        ];
        for (what, body, content_type, want_status, want_code) in cases {
            let mut req = s.client.post(s.url("/api/v1/events")).body(body);
            if let Some(ct) = content_type {
                req = req.header("content-type", ct);
            }
            let (status, body) = json_of(req.send().await.unwrap()).await;
            assert_eq!(status, want_status, "{what}: {body}");
            assert_eq!(error_code(&body), want_code, "{what}: {body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            );
            assert_eq!(s.head(), 2, "{what} changed the log");
        }

        // Idempotency-Key only names a single event.
        let resp = s
            .client
            .post(s.url("/api/v1/events"))
            .header("idempotency-key", "k")
            .json(&json!({"events": [{"topic": "t", "name": "n"}]}))
            .send()
            .await
            .unwrap();
        let (status, body) = json_of(resp).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::BAD_REQUEST, "invalid_event")
        );

        // Without a Content-Length the limit is enforced while reading.
        let chunks: Vec<Result<Bytes, std::io::Error>> = (0..20)
            .map(|_| Ok(Bytes::from(vec![b' '; 8 * 1024])))
            .collect();
        let resp = s
            .client
            .post(s.url("/api/v1/events"))
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
            .send()
            .await
            .unwrap();
        let (status, body) = json_of(resp).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
        );

        // A missing Content-Type is accepted.
        let resp = s
            .client
            .post(s.url("/api/v1/events"))
            .body(r#"{"topic":"t","name":"n"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        assert_eq!(s.head(), 3);
    }

    #[tokio::test]
    async fn bad_reads_are_refused() {
        let s = start().await;
        s.fill("t", 3).await;
        let many_topics: String = (0..101).map(|i| format!("topic=t{i}&")).collect();
        let cases: Vec<(String, &str)> = vec![
            (
                "/api/v1/events/stream?topic=a.%3E.b".into(),
                "invalid_filter",
            ),
            ("/api/v1/events/history?topic=a*".into(), "invalid_filter"),
            ("/api/v1/events/history?topic=".into(), "invalid_filter"),
            (
                "/api/v1/events/stream?filter=%7Bbad".into(),
                "invalid_filter",
            ),
            (
                r#"/api/v1/events/history?filter={"topics":["a..b"]}"#.into(),
                "invalid_filter",
            ),
            (
                r#"/api/v1/events/history?filter={"colour":["red"]}"#.into(),
                "invalid_filter",
            ),
            (
                format!("/api/v1/events/history?{many_topics}"),
                "invalid_filter",
            ),
            ("/api/v1/events/history?cursor=abc".into(), "invalid_cursor"),
            ("/api/v1/events/stream?since=-1".into(), "invalid_cursor"),
            ("/api/v1/events/stream?since=4".into(), "invalid_cursor"),
            ("/api/v1/events/history?since=99".into(), "invalid_cursor"),
            ("/api/v1/events/history?until=x".into(), "invalid_cursor"),
            (
                "/api/v1/events/history?limit=-1".into(),
                "invalid_parameter",
            ),
            ("/api/v1/events/history?limit=0".into(), "invalid_parameter"),
            (
                "/api/v1/events/history?limit=1001".into(),
                "invalid_parameter",
            ),
            (
                "/api/v1/events/history?limit=ten".into(),
                "invalid_parameter",
            ),
            (
                "/api/v1/events/history?limit=1&limit=2".into(),
                "invalid_parameter",
            ),
            ("/api/v1/events/history?bogus=1".into(), "invalid_parameter"),
            (
                "/api/v1/events/history?since=1&cursor=1".into(),
                "invalid_parameter",
            ),
            (
                "/api/v1/events/history?since_time=yesterday".into(),
                "invalid_parameter",
            ),
            (
                "/api/v1/events/history?heartbeat=5".into(),
                "invalid_parameter",
            ),
            (
                "/api/v1/events/stream?since=1&since_time=2026-01-01T00:00:00Z".into(),
                "invalid_parameter",
            ),
            ("/api/v1/events/stream?cursor=1".into(), "invalid_parameter"),
            (
                "/api/v1/events/stream?heartbeat=0".into(),
                "invalid_parameter",
            ),
            (
                "/api/v1/events/stream?heartbeat=301".into(),
                "invalid_parameter",
            ),
            (
                "/api/v1/events/stream?batch_size=0".into(),
                "invalid_parameter",
            ),
            (
                "/api/v1/events/stream?snapshot_only=maybe".into(),
                "invalid_parameter",
            ),
            (
                "/api/v1/events/stream?min_sync_level=leader".into(),
                "invalid_parameter",
            ),
        ];
        for (path, want_code) in cases {
            let (status, body) = s.get(&path).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
            assert_eq!(error_code(&body), want_code, "{path}: {body}");
        }
        for (id, want_code) in [("abc", "invalid_cursor"), ("4", "invalid_cursor")] {
            let resp = s
                .client
                .get(s.url("/api/v1/events/stream"))
                .header("last-event-id", id)
                .send()
                .await
                .unwrap();
            let (status, body) = json_of(resp).await;
            assert_eq!(
                (status, error_code(&body)),
                (StatusCode::BAD_REQUEST, want_code),
                "{id}"
            );
        }
        assert_eq!(s.head(), 3);
    }

    #[tokio::test]
    async fn unknown_routes_and_methods_answer_in_our_shape() {
        let s = start().await;
        let (status, body) = s.get("/api/v1/nope").await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::NOT_FOUND, "not_found")
        );
        let resp = s
            .client
            .delete(s.url("/api/v1/events"))
            .send()
            .await
            .unwrap();
        let (status, body) = json_of(resp).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
        );
        let (status, body) = s.get("/api/v1/events").await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
        );
    }
}

mod stream {
    use super::*;

    #[tokio::test]
    async fn history_then_caught_up_then_live() {
        let s = start().await;
        s.fill("orders.eu", 3).await;
        let mut sse = s.stream("").await;
        let mut events = Vec::new();
        for _ in 0..3 {
            events.push(sse.next_content().await.unwrap());
        }
        assert_eq!(events.iter().map(Frame::id).collect::<Vec<_>>(), [1, 2, 3]);
        let Frame::Event { data, .. } = &events[0] else {
            unreachable!()
        };
        assert_eq!(data["topic"], "orders.eu");
        assert_eq!(data["seq"], 1);
        assert_eq!(data["parent_seq"], 0);
        assert_eq!(data["name"], "e0");
        assert_eq!(sse.next_content().await, Some(marker("caught-up", 3)));

        s.fill("orders.eu", 2).await;
        assert_eq!(sse.next_content().await.unwrap().id(), 4);
        assert_eq!(sse.next_content().await.unwrap().id(), 5);
    }

    #[tokio::test]
    async fn filters_select_events() {
        let s = start().await;
        s.publish(json!({"topic": "orders.eu.created", "name": "a"}))
            .await;
        s.publish(json!({"topic": "orders.us.created", "name": "b"}))
            .await;
        s.publish(json!({"topic": "users.x", "name": "a"})).await;
        s.publish(json!({"topic": "orders.eu.paid", "name": "a", "client_id": "c1"}))
            .await;

        let mut sse = s.stream("topic=orders.%3E&name=a").await;
        assert_eq!(sse.ids_until_caught_up().await, (vec![1, 4], 4));
        let mut sse = s.stream("topic=orders.*.created&topic=users.%3E").await;
        assert_eq!(sse.ids_until_caught_up().await, (vec![1, 2, 3], 4));
        let filter = r#"{"client_ids":["c1"]}"#;
        let mut sse = s.stream(&format!("filter={filter}&topic=orders.%3E")).await;
        assert_eq!(sse.ids_until_caught_up().await, (vec![4], 4));

        // Live events pass the same filter.
        let mut sse = s.stream("topic=users.%3E&since=now").await;
        assert_eq!(sse.ids_until_caught_up().await, (vec![], 4));
        s.publish(json!({"topic": "orders.eu.created", "name": "a"}))
            .await;
        s.publish(json!({"topic": "users.y", "name": "a"})).await;
        assert_eq!(sse.next_content().await.unwrap().id(), 6);
    }

    #[tokio::test]
    async fn last_event_id_resumes_without_gap_or_duplicate() {
        let s = start().await;
        s.fill("t", 5).await;
        let mut sse = s.stream("").await;
        assert_eq!(sse.next_content().await.unwrap().id(), 1);
        assert_eq!(sse.next_content().await.unwrap().id(), 2);
        drop(sse);

        // Written while the reader was away.
        s.fill("t", 2).await;
        // The header wins over the query's `since`, as it does for a reconnecting
        // EventSource whose URL still says where it first started.
        let mut sse = s.stream_with("since=0", Some("2")).await;
        assert_eq!(sse.ids_until_caught_up().await, (vec![3, 4, 5, 6, 7], 7));
        s.fill("t", 1).await;
        assert_eq!(sse.next_content().await.unwrap().id(), 8);
    }

    #[tokio::test]
    async fn concurrent_publishes_cross_the_switch_to_live_intact() {
        let s = Arc::new(start().await);
        s.fill("t", 50).await;
        let writer = {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                for i in 0..150 {
                    let (status, _) = s
                        .publish(json!({"topic": format!("t{}", i % 3), "name": "n"}))
                        .await;
                    assert_eq!(status, StatusCode::CREATED);
                }
            })
        };
        let mut sse = s.stream("batch_size=7").await;
        let mut ids = Vec::new();
        while ids.len() < 200 {
            match sse.next_content().await.unwrap() {
                Frame::Event { id, .. } => ids.push(id),
                Frame::Marker { event, .. } => assert_eq!(event, "caught-up"),
                other => panic!("unexpected {other:?}"),
            }
        }
        writer.await.unwrap();
        assert_eq!(ids, (1..=200).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn snapshot_only_sends_end_and_closes() {
        let s = start().await;
        s.fill("a", 2).await;
        s.fill("b", 1).await;
        let mut sse = s.stream("snapshot_only=true&topic=a").await;
        assert_eq!(sse.ids_until_caught_up().await, (vec![1, 2], 3));
        assert_eq!(sse.next_content().await, Some(marker("end", 3)));
        assert_eq!(sse.next().await, None);
    }

    #[tokio::test]
    async fn until_sends_end_and_closes() {
        let s = start().await;
        s.fill("t", 5).await;
        let mut sse = s.stream("until=2").await;
        assert_eq!(sse.next_content().await.unwrap().id(), 1);
        assert_eq!(sse.next_content().await.unwrap().id(), 2);
        assert_eq!(sse.next_content().await, Some(marker("end", 2)));
        assert_eq!(sse.next().await, None);

        // An `until` ahead of the head waits for it live.
        let mut sse = s.stream("since=4&until=7").await;
        assert_eq!(sse.ids_until_caught_up().await, (vec![5], 5));
        s.fill("t", 3).await;
        assert_eq!(sse.next_content().await.unwrap().id(), 6);
        assert_eq!(sse.next_content().await.unwrap().id(), 7);
        assert_eq!(sse.next_content().await, Some(marker("end", 7)));
        assert_eq!(sse.next().await, None);
    }

    #[tokio::test]
    async fn heartbeats_are_comments() {
        // The configured heartbeat may be shorter than the query allows, which keeps
        // this test fast in real time. (Paused time does not mix with real sockets: it
        // jumps ahead whenever the runtime waits on I/O.)
        let s = start_with(Config {
            heartbeat: Duration::from_millis(50),
            ..Config::default()
        })
        .await;
        s.fill("t", 1).await;
        let mut sse = s.stream("").await;
        assert_eq!(sse.next().await.unwrap().id(), 1);
        assert_eq!(sse.next().await, Some(marker("caught-up", 1)));
        assert_eq!(sse.next().await, Some(Frame::Comment("heartbeat".into())));
        assert_eq!(sse.next().await, Some(Frame::Comment("heartbeat".into())));
        // Events still flow between heartbeats.
        s.fill("t", 1).await;
        assert_eq!(sse.next_content().await.unwrap().id(), 2);
    }

    #[tokio::test]
    async fn the_query_sets_the_heartbeat() {
        let s = start_with(Config {
            heartbeat: Duration::from_secs(3600),
            ..Config::default()
        })
        .await;
        let mut sse = s.stream("heartbeat=1").await;
        sse.wait = Duration::from_secs(5);
        assert_eq!(sse.next().await, Some(marker("caught-up", 0)));
        let started = std::time::Instant::now();
        assert_eq!(sse.next().await, Some(Frame::Comment("heartbeat".into())));
        assert!(started.elapsed() >= Duration::from_millis(900));
    }
}

mod history {
    use super::*;

    fn ids(page: &Value) -> Vec<u64> {
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["position"].as_u64().unwrap())
            .collect()
    }

    #[tokio::test]
    async fn pages_follow_next_cursor() {
        let s = start().await;
        for i in 0..5 {
            let topic = if i % 2 == 0 { "a" } else { "b" };
            s.publish(json!({"topic": topic, "name": "n"})).await;
        }
        let (status, page) = s.get("/api/v1/events/history?limit=2").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ids(&page), [1, 2]);
        assert_eq!(
            (page["next_cursor"].as_str(), page["has_more"].as_bool()),
            (Some("2"), Some(true))
        );
        assert_eq!(page["events"][0]["topic"], "a");
        assert_eq!(page["events"][0]["parent_seq"], 0);
        assert!(page["events"][0]["timestamp"].is_string());

        let (_, page) = s.get("/api/v1/events/history?limit=2&cursor=2").await;
        assert_eq!(ids(&page), [3, 4]);
        let (_, page) = s.get("/api/v1/events/history?limit=2&cursor=4").await;
        assert_eq!(ids(&page), [5]);
        assert_eq!(
            (page["next_cursor"].as_str(), page["has_more"].as_bool()),
            (Some("5"), Some(false))
        );
        let (_, page) = s.get("/api/v1/events/history?limit=2&since=5").await;
        assert_eq!(ids(&page), Vec::<u64>::new());
        assert_eq!(page["next_cursor"], "5");

        // Filtered: a short page's cursor is the bound it scanned to.
        let (_, page) = s.get("/api/v1/events/history?topic=a&limit=2").await;
        assert_eq!(ids(&page), [1, 3]);
        assert_eq!(page["next_cursor"], "3");
        let (_, page) = s
            .get("/api/v1/events/history?topic=a&limit=2&cursor=3")
            .await;
        assert_eq!(ids(&page), [5]);
        assert_eq!(
            (page["next_cursor"].as_str(), page["has_more"].as_bool()),
            (Some("5"), Some(false))
        );

        let (_, page) = s.get("/api/v1/events/history?topic=b&until=3").await;
        assert_eq!(ids(&page), [2]);
        assert_eq!(page["next_cursor"], "3");
        let (_, page) = s.get("/api/v1/events/history").await;
        assert_eq!(ids(&page), [1, 2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn since_time_starts_at_a_time() {
        let s = start().await;
        s.fill("t", 3).await;
        let (_, page) = s
            .get("/api/v1/events/history?since_time=2000-01-01T00:00:00Z")
            .await;
        assert_eq!(ids(&page), [1, 2, 3]);
        let (_, page) = s
            .get("/api/v1/events/history?since_time=2999-01-01T00:00:00Z")
            .await;
        assert_eq!(ids(&page), Vec::<u64>::new());
        assert_eq!(page["next_cursor"], "3");
    }
}

mod topics {
    use super::*;

    #[tokio::test]
    async fn lists_every_topic_with_its_head() {
        let s = start().await;
        let (_, empty) = s.get("/api/v1/topics").await;
        assert_eq!(empty, json!({"topics": []}));
        s.fill("a", 2).await;
        s.fill("b.c", 1).await;
        let (status, body) = s.get("/api/v1/topics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            json!({"topics": [
                {"topic": "a", "head_seq": 2, "event_count": 2, "last_position": 2,
                 "pruned_seq": 0, "pruned_position": 0},
                {"topic": "b.c", "head_seq": 1, "event_count": 1, "last_position": 3,
                 "pruned_seq": 0, "pruned_position": 0},
            ]})
        );
    }
}

mod health {
    use super::*;

    #[tokio::test]
    async fn healthz_and_readyz() {
        let s = start().await;
        assert_eq!(
            s.get("/healthz").await,
            (StatusCode::OK, json!({"status": "ok"}))
        );
        assert_eq!(
            s.get("/readyz").await,
            (StatusCode::OK, json!({"status": "ready"}))
        );
        s.log.close().await.unwrap();
        let (status, body) = s.get("/readyz").await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        );
        let (status, body) = s.publish(json!({"topic": "t", "name": "n"})).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        );
        assert_eq!(s.get("/healthz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_expose_the_counters() {
        let s = start().await;
        s.publish(json!({"events": [{"topic": "t", "name": "n"}, {"topic": "t", "name": "n"}]}))
            .await;
        let mut sse = s.stream("").await;
        assert_eq!(sse.ids_until_caught_up().await, (vec![1, 2], 2));

        let resp = s.client.get(s.url("/metrics")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "text/plain; version=0.0.4");
        let text = resp.text().await.unwrap();
        for line in [
            "# TYPE tributary_appended_events_total counter",
            "tributary_appended_events_total 2",
            "tributary_append_requests_total 1",
            "# TYPE tributary_append_latency_seconds histogram",
            "tributary_append_latency_seconds_count 1",
            "tributary_append_batch_size_bucket{le=\"2\"} 1",
            "tributary_live_connections 1",
            "tributary_deliveries_total 2",
            "tributary_log_head 2",
            "tributary_tail_events",
            "tributary_http_requests_total{status=\"201\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        let bytes_out = text
            .lines()
            .find_map(|l| l.strip_prefix("tributary_bytes_out_total "))
            .unwrap();
        assert!(bytes_out.parse::<u64>().unwrap() > 0);

        drop(sse);
        // The gauge drops once the server notices the reader has gone.
        for _ in 0..100 {
            let text = s
                .client
                .get(s.url("/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if text.contains("tributary_live_connections 0") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("live connections gauge never went back to 0");
    }
}

mod shutdown {
    use super::*;

    #[tokio::test]
    async fn shutdown_ends_open_streams_and_serve_returns() {
        let s = start().await;
        s.fill("t", 2).await;
        let mut sse = s.stream("").await;
        assert_eq!(sse.ids_until_caught_up().await, (vec![1, 2], 2));
        let log = Arc::clone(&s.log);

        let reader = tokio::spawn(async move {
            // No `end` marker: the client is meant to reconnect and resume.
            let next = sse.next_content().await;
            assert_eq!(next, None);
        });
        s.shut_down().await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("the stream closed")
            .unwrap();
        assert!(log.check_writable().await.is_err(), "the log was closed");
    }

    #[tokio::test]
    async fn shutdown_gives_up_on_a_stuck_request() {
        let s = start_with(Config {
            shutdown_timeout: Duration::from_millis(200),
            ..Config::default()
        })
        .await;
        // A publish whose body never finishes arriving.
        let body =
            futures::stream::once(async { Ok::<_, std::io::Error>(Bytes::from_static(b"{")) })
                .chain(futures::stream::pending::<Result<Bytes, std::io::Error>>());
        let stuck = s
            .client
            .post(s.url("/api/v1/events"))
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(body))
            .send();
        let stuck = tokio::spawn(stuck);
        // Let the request reach the server before shutting down.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let log = Arc::clone(&s.log);
        let started = std::time::Instant::now();
        s.shut_down().await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(log.check_writable().await.is_err());
        stuck.abort();
    }

    #[tokio::test]
    async fn draining_fails_readiness_and_refuses_new_streams() {
        let log: Arc<dyn Log> = Arc::new(MemoryLog::new());
        let groups = tributary_groups::Groups::open(
            Arc::clone(&log),
            Arc::new(MemoryGroupStore::new()),
            tributary_groups::GroupsOptions::default(),
        )
        .await
        .unwrap();
        let state = AppState::new(log, groups, Config::default());
        let state_for_app = state.clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router(state_for_app)).await });
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let get = |path: &str| client.get(format!("http://{addr}{path}")).send();

        assert_eq!(get("/readyz").await.unwrap().status(), StatusCode::OK);
        state.start_draining();
        let (status, body) = json_of(get("/readyz").await.unwrap()).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        );
        let (status, body) = json_of(get("/api/v1/events/stream").await.unwrap()).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        );
        assert_eq!(get("/healthz").await.unwrap().status(), StatusCode::OK);
    }
}
