//! Topic settings and retention over HTTP, against the server on a real socket: the
//! `/api/v1/topics` routes, their bad-input battery, per-topic event size, and what
//! history and SSE readers are told when retention overtakes their cursor.

use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tributary_core::RetentionOptions;
use tributary_server::Config;

use super::common::{code, http, spawn};

struct Server {
    base: String,
    http: reqwest::Client,
    _stop: oneshot::Sender<()>,
}

async fn start(config: Config) -> Server {
    let spawned = spawn(config).await;
    Server {
        base: format!("http://{}", spawned.addr),
        http: http(),
        _stop: spawned.stop,
    }
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let res = self.http.get(self.url(path)).send().await.unwrap();
        (res.status(), res.json().await.unwrap())
    }

    async fn send(&self, method: &str, path: &str, body: &str) -> (StatusCode, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let res = self
            .http
            .request(method, self.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        (res.status(), res.json().await.unwrap())
    }

    async fn publish(&self, topic: &str, n: usize) {
        let events: Vec<Value> = (0..n)
            .map(|i| json!({"topic": topic, "name": "tick", "args": {"i": i}}))
            .collect();
        let (status, body) = self
            .send(
                "POST",
                "/api/v1/events",
                &json!({ "events": events }).to_string(),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    /// `a` and `b` in turn, `n` rounds: a's seq k is at position 2k - 1.
    async fn publish_interleaved(&self, n: usize) {
        for _ in 0..n {
            self.publish("a", 1).await;
            self.publish("b", 1).await;
        }
    }
}

fn positions(page: &Value) -> Vec<u64> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn topics_are_created_shown_replaced_and_deleted() {
    let s = start(Config::default()).await;
    let (status, created) = s
        .send(
            "POST",
            "/api/v1/topics",
            r#"{"topic":"orders.eu","max_age":"7d","max_event_bytes":2048}"#,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["topic"], "orders.eu");
    assert_eq!(created["head_seq"], 0);
    assert_eq!(
        created["config"],
        json!({"max_age": "7d", "max_event_bytes": 2048})
    );
    let (_, list) = s.get("/api/v1/topics").await;
    assert_eq!(list["topics"].as_array().unwrap().len(), 1, "{list}");
    let (status, again) = s
        .send("POST", "/api/v1/topics", r#"{"topic":"orders.eu"}"#)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(code(&again), "topic_exists");

    // PUT replaces the settings whole and applies a new rule at once.
    s.publish("orders.eu", 10).await;
    let (status, replaced) = s
        .send("PUT", "/api/v1/topics/orders.eu", r#"{"max_events":4}"#)
        .await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    assert_eq!(replaced["config"], json!({"max_events": 4}));
    assert_eq!(
        (&replaced["event_count"], &replaced["pruned_seq"]),
        (&json!(4), &json!(6))
    );
    let (_, page) = s.get("/api/v1/events/history?topic=orders.eu").await;
    assert_eq!(positions(&page), [7, 8, 9, 10]);
    // PUT also creates.
    let (status, _) = s.send("PUT", "/api/v1/topics/other", "{}").await;
    assert_eq!(status, StatusCode::OK);
    let (status, shown) = s.get("/api/v1/topics/other").await;
    assert_eq!((status, &shown["config"]), (StatusCode::OK, &json!({})));

    let (status, deleted) = s.send("DELETE", "/api/v1/topics/orders.eu", "").await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted, json!({"topic": "orders.eu", "deleted_events": 4}));
    let (status, gone) = s.get("/api/v1/topics/orders.eu").await;
    assert_eq!((status, code(&gone)), (StatusCode::NOT_FOUND, "not_found"));
    let (status, _) = s.send("DELETE", "/api/v1/topics/orders.eu", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Its seqs go on: a seq is never handed out twice.
    let (_, answer) = s
        .send(
            "POST",
            "/api/v1/events",
            r#"{"topic":"orders.eu","name":"x","args":{}}"#,
        )
        .await;
    assert_eq!(
        (&answer["position"], &answer["seq"]),
        (&json!(11), &json!(11))
    );
}

#[tokio::test]
async fn bad_topic_settings_are_refused_and_change_nothing() {
    let s = start(Config::default()).await;
    s.publish("kept", 3).await;
    s.publish("livestore.s1", 2).await;
    let (_, before) = s.get("/api/v1/topics").await;
    let cases: &[(&str, &str, &str, StatusCode, &str)] = &[
        (
            "POST",
            "/api/v1/topics",
            "{",
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "POST",
            "/api/v1/topics",
            "[]",
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "POST",
            "/api/v1/topics",
            "{}",
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "POST",
            "/api/v1/topics",
            r#"{"topic":7}"#,
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "POST",
            "/api/v1/topics",
            r#"{"topic":"a","retention":"1d"}"#,
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "POST",
            "/api/v1/topics",
            r#"{"topic":"a","max_age":"7 days"}"#,
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "POST",
            "/api/v1/topics",
            r#"{"topic":"a","max_events":-1}"#,
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "POST",
            "/api/v1/topics",
            r#"{"topic":"a","max_events":0}"#,
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "POST",
            "/api/v1/topics",
            r#"{"topic":"a","max_age":"500ms"}"#,
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "POST",
            "/api/v1/topics",
            r#"{"topic":"a","max_event_bytes":99999999}"#,
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "POST",
            "/api/v1/topics",
            r#"{"topic":"a..b"}"#,
            StatusCode::BAD_REQUEST,
            "invalid_topic",
        ),
        (
            "POST",
            "/api/v1/topics",
            r#"{"topic":"a.*"}"#,
            StatusCode::BAD_REQUEST,
            "invalid_topic",
        ),
        (
            "POST",
            "/api/v1/topics",
            r#"{"topic":"livestore.s1","max_events":10}"#,
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "PUT",
            "/api/v1/topics/kept",
            r#"{"max_events":"ten"}"#,
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "PUT",
            "/api/v1/topics/kept",
            r#"{"topic":"kept"}"#,
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "PUT",
            "/api/v1/topics/a.%3E",
            "{}",
            StatusCode::BAD_REQUEST,
            "invalid_topic",
        ),
        (
            "DELETE",
            "/api/v1/topics/livestore.s1",
            "",
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "DELETE",
            "/api/v1/topics/never",
            "",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "GET",
            "/api/v1/topics/never",
            "",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "PATCH",
            "/api/v1/topics/kept",
            "{}",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (method, path, body, status, want) in cases {
        let (got, answer) = s.send(method, path, body).await;
        assert_eq!(
            (got, code(&answer)),
            (*status, *want),
            "{method} {path} {body}: {answer}"
        );
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let (_, after) = s.get("/api/v1/topics").await;
    assert_eq!(after, before, "nothing changed");
}

#[tokio::test]
async fn a_topic_holds_events_to_its_own_size_limit() {
    let s = start(Config::default()).await;
    let (status, _) = s
        .send(
            "POST",
            "/api/v1/topics",
            r#"{"topic":"small","max_event_bytes":100}"#,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let big = json!({"topic": "small", "name": "x", "args": "z".repeat(200)}).to_string();
    let (status, answer) = s.send("POST", "/api/v1/events", &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_eq!(code(&answer), "payload_too_large");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 100"),
        "{answer}"
    );
    let (_, info) = s.get("/api/v1/topics/small").await;
    assert_eq!(info["event_count"], 0, "nothing stored");
    let elsewhere = json!({"topic": "big", "name": "x", "args": "z".repeat(200)}).to_string();
    let (status, _) = s.send("POST", "/api/v1/events", &elsewhere).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "other topics keep the server's limit"
    );
}

#[tokio::test]
async fn history_behind_retention_is_refused_with_a_way_to_go_on() {
    let s = start(Config::default()).await;
    s.publish_interleaved(10).await;
    let (status, page) = s.get("/api/v1/events/history?topic=a&cursor=2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(positions(&page)[0], 3);

    // a keeps its newest 3 (seqs 8..=10 at positions 15, 17, 19); seq 7 was at 13.
    let (status, _) = s
        .send("PUT", "/api/v1/topics/a", r#"{"max_events":3}"#)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, gone) = s.get("/api/v1/events/history?topic=a&cursor=2").await;
    assert_eq!(status, StatusCode::GONE, "{gone}");
    assert_eq!(code(&gone), "cursor_expired");
    assert_eq!(gone["error"]["cursor"], "2");
    assert_eq!(gone["error"]["pruned_through"], 13);
    assert_eq!(gone["error"]["earliest_position"], 15);
    let resume = gone["error"]["resume_cursor"].as_str().unwrap().to_owned();
    assert_eq!(resume, "2~13");
    // `since` is a cursor too.
    let (status, _) = s.get("/api/v1/events/history?topic=a&since=12").await;
    assert_eq!(status, StatusCode::GONE);
    // Past the removed part, or on another topic: nothing to say.
    let (status, _) = s.get("/api/v1/events/history?topic=a&since=13").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s.get("/api/v1/events/history?topic=b&cursor=2").await;
    assert_eq!(status, StatusCode::OK);

    // The resume cursor reads on, in pages that carry what the reader was told.
    let mut seen = Vec::new();
    let mut cursor = resume;
    loop {
        let (status, page) = s
            .get(&format!(
                "/api/v1/events/history?topic=a&limit=1&cursor={cursor}"
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(positions(&page));
        cursor = page["next_cursor"].as_str().unwrap().to_owned();
        if page["has_more"] == false {
            break;
        }
    }
    assert_eq!(seen, [15, 17, 19]);
    // From the beginning: what is left, no error, pages that go on without one.
    let (status, first) = s.get("/api/v1/events/history?topic=a&limit=1").await;
    assert_eq!((status, positions(&first)), (StatusCode::OK, vec![15]));
    assert_eq!(first["next_cursor"], "15");
    let (status, all) = s.get("/api/v1/events/history?limit=1").await;
    assert_eq!((status, positions(&all)), (StatusCode::OK, vec![2]));
    assert_eq!(all["next_cursor"], "2~13");
    let (status, next) = s.get("/api/v1/events/history?limit=100&cursor=2~13").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(positions(&next).len(), 12, "b's 9 left and a's 3: {next}");
    // A malformed told-part is a bad cursor, not a silent read.
    let (status, bad) = s.get("/api/v1/events/history?cursor=2~x").await;
    assert_eq!(
        (status, code(&bad)),
        (StatusCode::BAD_REQUEST, "invalid_cursor")
    );
}

/// The frames of an SSE body up to the first event frame after `events` of them.
async fn sse_frames(
    s: &Server,
    path: &str,
    last_event_id: Option<&str>,
    events: usize,
) -> Vec<String> {
    let mut req = s.http.get(s.url(path));
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.bytes_stream();
    let mut buf = String::new();
    let mut frames = Vec::new();
    while frames
        .iter()
        .filter(|f: &&String| f.contains("id: "))
        .count()
        < events
    {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("a frame within 10 s")
            .expect("the stream goes on")
            .unwrap();
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            frames.push(buf.drain(..end + 2).collect());
        }
    }
    frames
}

#[tokio::test]
async fn an_sse_reader_behind_retention_is_told_then_gets_the_rest() {
    let s = start(Config::default()).await;
    s.publish_interleaved(10).await;
    let (status, _) = s
        .send("PUT", "/api/v1/topics/a", r#"{"max_events":3}"#)
        .await;
    assert_eq!(status, StatusCode::OK);

    for (path, last_event_id) in [
        ("/api/v1/events/stream?topic=a&since=2", None),
        ("/api/v1/events/stream?topic=a", Some("2")),
    ] {
        let frames = sse_frames(&s, path, last_event_id, 3).await;
        let named: Vec<&String> = frames.iter().filter(|f| f.starts_with("event: ")).collect();
        assert_eq!(
            named.first().map(|f| f.as_str()),
            Some("event: truncated\ndata: {\"after\":2,\"pruned_through\":13}\n\n"),
            "{frames:?}"
        );
        let ids: Vec<&str> = frames
            .iter()
            .filter_map(|f| f.lines().find_map(|l| l.strip_prefix("id: ")))
            .collect();
        assert_eq!(ids, ["15", "17", "19"]);
        let truncated_at = frames.iter().position(|f| f.contains("truncated")).unwrap();
        let first_event = frames.iter().position(|f| f.contains("id: ")).unwrap();
        assert!(truncated_at < first_event, "told before the events");
    }
    // From the start, nothing was promised that is missing: no marker.
    let frames = sse_frames(&s, "/api/v1/events/stream?topic=a&since=0", None, 1).await;
    assert!(
        !frames.iter().any(|f| f.contains("truncated")),
        "{frames:?}"
    );
}

#[tokio::test]
async fn the_background_pass_applies_retention_and_counts_it() {
    let s = start(Config {
        retention: RetentionOptions {
            interval: Duration::from_millis(50),
            batch: 3,
        },
        ..Config::default()
    })
    .await;
    // Configured before any event, so nothing is pruned by the PUT itself.
    let (status, _) = s
        .send("PUT", "/api/v1/topics/jobs", r#"{"max_events":5}"#)
        .await;
    assert_eq!(status, StatusCode::OK);
    s.publish("jobs", 20).await;
    s.publish("other", 20).await;
    let mut info = Value::Null;
    for _ in 0..200 {
        info = s.get("/api/v1/topics/jobs").await.1;
        if info["event_count"] == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        info["event_count"], 5,
        "pruned by the background pass: {info}"
    );
    assert_eq!(info["pruned_seq"], 15);
    let (_, other) = s.get("/api/v1/topics/other").await;
    assert_eq!(
        other["event_count"], 20,
        "a topic without settings keeps everything"
    );
    let metrics = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("tributary_retention_removed_events_total 15\n"),
        "{metrics}"
    );
}
