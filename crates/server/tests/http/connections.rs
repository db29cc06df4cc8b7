//! Registered connections and the connection list, against the server on a real socket.

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tributary_server::Config;

use super::common::{http, spawn};

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

type Body = std::pin::Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// An open SSE stream and the events read off it so far.
struct Sse {
    body: Body,
    buf: String,
}

impl Sse {
    async fn open(
        s: &Server,
        path: &str,
        last_event_id: Option<u64>,
    ) -> Result<Sse, (StatusCode, reqwest::header::HeaderMap, Value)> {
        let mut req = s.http.get(format!("{}{path}", s.base));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let res = req.send().await.unwrap();
        if res.status() != StatusCode::OK {
            let status = res.status();
            let headers = res.headers().clone();
            return Err((status, headers, res.json().await.unwrap()));
        }
        Ok(Sse {
            body: Box::pin(res.bytes_stream()),
            buf: String::new(),
        })
    }

    /// The next event's JSON, or `None` when the stream ended.
    async fn next_event(&mut self) -> Option<Value> {
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                let is_event = frame.lines().any(|l| l.starts_with("id:"));
                if is_event && let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: "))
                {
                    return Some(serde_json::from_str(data).unwrap());
                }
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.body.next())
                .await
                .expect("a frame within 10 s")?
                .ok()?;
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

impl Server {
    async fn publish(&self, topic: &str, n: usize) {
        for i in 0..n {
            let res = self
                .http
                .post(format!("{}/api/v1/events", self.base))
                .json(&json!({"topic": topic, "name": "n", "args": {"i": i}}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::CREATED);
        }
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (res.status(), res.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        (res.status(), res.json().await.unwrap_or(Value::Null))
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        let res = self
            .http
            .delete(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (res.status(), res.json().await.unwrap_or(Value::Null))
    }

    async fn connections(&self) -> Vec<Value> {
        self.get("/api/v1/connections").await.1["connections"]
            .as_array()
            .unwrap()
            .clone()
    }
}

#[tokio::test]
async fn the_list_shows_a_live_stream_with_a_growing_count_and_delete_ends_it() {
    let s = start(Config::default()).await;
    assert!(s.connections().await.is_empty());
    let mut sse = Sse::open(&s, "/api/v1/events/stream?topic=a.>", None)
        .await
        .unwrap();
    s.publish("a.x", 3).await;
    for _ in 0..3 {
        sse.next_event().await.unwrap();
    }
    let list = s.connections().await;
    assert_eq!(list.len(), 1);
    let c = &list[0];
    assert_eq!(
        (&c["status"], &c["registered"]),
        (&json!("connected"), &json!(false))
    );
    assert_eq!(c["filter"], json!({"topics": ["a.>"]}));
    assert!(
        c["remote_addr"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{c}"
    );
    assert_eq!(c["events_delivered"], 3);
    assert!(c["last_event_at"].is_string());

    s.publish("a.y", 2).await;
    s.publish("b", 1).await; // not for this stream
    for _ in 0..2 {
        sse.next_event().await.unwrap();
    }
    let id = c["id"].as_str().unwrap();
    let (_, again) = s.get(&format!("/api/v1/connections/{id}/status")).await;
    assert_eq!(again["events_delivered"], 5);

    let (status, _) = s.delete(&format!("/api/v1/connections/{id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(sse.next_event().await.is_none(), "the stream ended");
    assert!(s.connections().await.is_empty());
}

#[tokio::test]
async fn a_registered_stream_keeps_its_filter_across_reconnects() {
    let s = start(Config::default()).await;
    let (status, reg) = s
        .post(
            "/api/v1/connections",
            json!({"filter": {"topics": ["orders.*"], "names": ["n"]}, "heartbeat_secs": 5, "batch_size": 10}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reg}");
    let id = reg["id"].as_str().unwrap().to_owned();
    assert_eq!(reg["status"], "connecting");
    assert_eq!(
        reg["stream_url"],
        format!("/api/v1/connections/{id}/stream")
    );
    assert_eq!(
        (&reg["heartbeat_secs"], &reg["batch_size"]),
        (&json!(5), &json!(10))
    );

    s.publish("orders.eu", 2).await; // 1, 2
    s.publish("other", 1).await; // 3
    let url = format!("/api/v1/connections/{id}/stream?since=0");
    let mut sse = Sse::open(&s, &url, None).await.unwrap();
    let first = sse.next_event().await.unwrap();
    assert_eq!(first["position"], 1);
    assert_eq!(sse.next_event().await.unwrap()["position"], 2);
    let (_, st) = s.get(&format!("/api/v1/connections/{id}/status")).await;
    assert_eq!(
        (&st["status"], &st["events_delivered"]),
        (&json!("connected"), &json!(2))
    );
    drop(sse);
    // The body is dropped when the server notices the closed socket.
    let mut status = Value::Null;
    for _ in 0..100 {
        status = s.get(&format!("/api/v1/connections/{id}/status")).await.1;
        if status["status"] == "disconnected" {
            break;
        }
        s.publish("ping", 1).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status["status"], "disconnected", "{status}");

    // Back with Last-Event-ID: it resumes after 2, with its own filter.
    s.publish("orders.us", 1).await;
    let mut sse = Sse::open(&s, &format!("/api/v1/connections/{id}/stream"), Some(2))
        .await
        .unwrap();
    let next = sse.next_event().await.unwrap();
    assert_eq!(next["topic"], "orders.us");
    let (_, st) = s.get(&format!("/api/v1/connections/{id}/status")).await;
    assert_eq!(st["events_delivered"], 3);

    assert_eq!(
        s.delete(&format!("/api/v1/connections/{id}")).await.0,
        StatusCode::NO_CONTENT
    );
    assert!(sse.next_event().await.is_none());
    let (status, body) = s.get(&format!("/api/v1/connections/{id}/status")).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::NOT_FOUND, &json!("not_found"))
    );
}

#[tokio::test]
async fn the_cap_answers_503_with_retry_after() {
    let s = start(Config {
        max_connections: 2,
        ..Config::default()
    })
    .await;
    let a = Sse::open(&s, "/api/v1/events/stream", None).await.unwrap();
    let _b = Sse::open(&s, "/api/v1/events/stream", None).await.unwrap();
    let Err((status, headers, body)) = Sse::open(&s, "/api/v1/events/stream", None).await else {
        panic!("a third stream was let in");
    };
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "5");
    assert_eq!(body["error"]["code"], "too_many_connections");
    assert_eq!(s.connections().await.len(), 2);
    drop(a);
    let mut opened = None;
    for _ in 0..100 {
        if let Ok(sse) = Sse::open(&s, "/api/v1/events/stream", None).await {
            opened = Some(sse);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(opened.is_some(), "a place freed when a stream closed");
}

#[tokio::test]
async fn bad_input_is_refused_and_registers_nothing() {
    let s = start(Config::default()).await;
    let cases = [
        (json!({"colour": 1}), "invalid_json"),
        (json!({"filter": {"topics": ["a..b"]}}), "invalid_filter"),
        (json!({"filter": {"topic": 3}}), "invalid_filter"),
        (json!({"heartbeat_secs": 0}), "invalid_parameter"),
        (json!({"batch_size": 0}), "invalid_parameter"),
    ];
    for (body, code) in cases {
        let (status, answer) = s.post("/api/v1/connections", body.clone()).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{body}"
        );
    }
    assert!(s.connections().await.is_empty());
    let (status, body) = s.get("/api/v1/connections/nope/status").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::NOT_FOUND, &json!("not_found"))
    );
    assert_eq!(
        s.delete("/api/v1/connections/nope").await.0,
        StatusCode::NOT_FOUND
    );
    let Err((status, _, _)) = Sse::open(&s, "/api/v1/connections/nope/stream", None).await else {
        panic!("opened an unknown connection");
    };
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, reg) = s.post("/api/v1/connections", json!({})).await;
    let id = reg["id"].as_str().unwrap();
    let Err((status, _, body)) = Sse::open(
        &s,
        &format!("/api/v1/connections/{id}/stream?topic=x"),
        None,
    )
    .await
    else {
        panic!("a registered stream took a filter");
    };
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_parameter"))
    );
    assert_eq!(
        s.get(&format!("/api/v1/connections/{id}/status")).await.1["status"],
        "connecting"
    );
}
