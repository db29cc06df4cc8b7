//! Consumer groups over HTTP, against the server on a real socket (in-memory log and
//! group store): the routes, their answers, and bad input refused with nothing changed.

use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tributary_server::Config;

use super::common::{code, http, spawn};

struct Server {
    base: String,
    http: reqwest::Client,
    _stop: oneshot::Sender<()>,
}

async fn start() -> Server {
    let spawned = spawn(Config::default()).await;
    Server {
        base: format!("http://{}", spawned.addr),
        http: http(),
        _stop: spawned.stop,
    }
}

impl Server {
    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url),
        };
        let req = match body {
            Some(b) => req.json(&b),
            None => req,
        };
        let res = req.send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send("POST", path, Some(body)).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send("GET", path, None).await
    }

    async fn publish(&self, topic: &str, n: usize) {
        let events: Vec<Value> = (0..n)
            .map(|i| json!({"topic": topic, "name": "job", "args": {"i": i}}))
            .collect();
        let (status, _) = self
            .post("/api/v1/events", json!({ "events": events }))
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }

    async fn pull(&self, group: &str, member: &str, max: u64) -> Vec<Value> {
        let (status, body) = self
            .post(
                &format!("/api/v1/groups/{group}/pull"),
                json!({"member": member, "max": max, "wait_ms": 2000}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["deliveries"].as_array().unwrap().clone()
    }
}

fn ids(deliveries: &[Value]) -> Vec<String> {
    deliveries
        .iter()
        .map(|d| d["delivery_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_group_is_created_shown_listed_and_deleted() {
    let s = start().await;
    s.publish("orders.eu", 2).await;
    let (status, g) = s
        .post(
            "/api/v1/groups",
            json!({"name": "billing", "filter": {"topics": ["orders.>"]}, "start": "earliest",
                   "ack_wait": "2s", "max_deliveries": 3, "backoff": ["100ms", "1s"],
                   "max_in_flight": 7, "ordering": "none"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{g}");
    assert_eq!(g["name"], "billing");
    assert_eq!(g["filter"], json!({"topics": ["orders.>"]}));
    assert_eq!(g["ack_wait"], "2s");
    assert_eq!(g["backoff"], json!(["100ms", "1s"]));
    assert_eq!(
        (&g["max_deliveries"], &g["max_in_flight"], &g["ordering"]),
        (&json!(3), &json!(7), &json!("none"))
    );
    assert_eq!(g["committed"], 0);
    assert_eq!(g["head"], 2);

    // The defaults, and `latest` by default.
    let (status, d) = s.post("/api/v1/groups", json!({"name": "audit"})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(d["ack_wait"], "30s");
    assert_eq!(d["backoff"], json!(["1s", "5s", "30s"]));
    assert_eq!(d["ordering"], "per_key");
    assert_eq!(
        (&d["max_deliveries"], &d["committed"]),
        (&json!(5), &json!(2))
    );

    let (_, list) = s.get("/api/v1/groups").await;
    let names: Vec<&str> = list["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["audit", "billing"]);
    let (status, _) = s.send("DELETE", "/api/v1/groups/audit", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = s.get("/api/v1/groups/audit").await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
}

#[tokio::test]
async fn pull_ack_nack_term_and_the_dead_letter_queue() {
    let s = start().await;
    s.post(
        "/api/v1/groups",
        json!({"name": "g", "start": "earliest", "max_deliveries": 2, "backoff": ["10ms"],
               "ordering": "none"}),
    )
    .await;
    s.publish("jobs.a", 3).await;
    let got = s.pull("g", "w1", 10).await;
    assert_eq!(got.len(), 3);
    assert_eq!(got[0]["attempt"], 1);
    assert_eq!(got[0]["delivery_id"], "1.1");
    assert_eq!(got[0]["event"]["topic"], "jobs.a");
    assert_eq!(got[0]["event"]["args"], json!({"i": 0}));
    let first = ids(&got);

    let (status, body) = s
        .post("/api/v1/groups/g/ack", json!({"delivery_ids": [first[0]]}))
        .await;
    assert_eq!((status, &body), (StatusCode::OK, &json!({"acked": 1})));
    let (status, body) = s
        .post(
            "/api/v1/groups/g/nack",
            json!({"delivery_id": first[1], "reason": "try later"}),
        )
        .await;
    assert_eq!((status, &body), (StatusCode::OK, &json!({"nacked": 1})));
    let (status, body) = s
        .post(
            "/api/v1/groups/g/term",
            json!({"delivery_ids": [first[2]], "reason": "poison"}),
        )
        .await;
    assert_eq!((status, &body), (StatusCode::OK, &json!({"terminated": 1})));

    // The nacked one comes back (attempt 2); nacked again, it has had its two.
    let again = s.pull("g", "w1", 10).await;
    assert_eq!(ids(&again), ["2.2"]);
    s.post(
        "/api/v1/groups/g/nack",
        json!({"delivery_ids": ids(&again), "reason": "still failing"}),
    )
    .await;
    let (_, dlq) = s.get("/api/v1/groups/g/dlq").await;
    let entries = dlq["entries"].as_array().unwrap();
    let summary: Vec<(u64, u64, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["id"].as_u64().unwrap(),
                e["attempts"].as_u64().unwrap(),
                e["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(summary, [(2, 2, "still failing"), (3, 1, "poison")]);
    assert_eq!(entries[0]["event"]["position"], 2);
    let (_, g) = s.get("/api/v1/groups/g").await;
    assert_eq!(
        (&g["committed"], &g["dlq_size"], &g["lag"]),
        (&json!(3), &json!(2), &json!(0))
    );

    // Paged.
    let (_, page) = s.get("/api/v1/groups/g/dlq?limit=1").await;
    assert_eq!(page["entries"].as_array().unwrap().len(), 1);
    assert_eq!(page["next_cursor"], 2);
    let (_, page) = s.get("/api/v1/groups/g/dlq?limit=1&cursor=2").await;
    assert_eq!(page["entries"][0]["id"], 3);

    // Replay one: delivered again from attempt 1. Discard the other.
    let (status, body) = s
        .post("/api/v1/groups/g/dlq/replay", json!({"ids": [2]}))
        .await;
    assert_eq!((status, &body), (StatusCode::OK, &json!({"replayed": 1})));
    let replayed = s.pull("g", "w2", 10).await;
    assert_eq!(ids(&replayed), ["2.1"]);
    let (status, _) = s.send("DELETE", "/api/v1/groups/g/dlq/3", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = s.send("DELETE", "/api/v1/groups/g/dlq/3", None).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let (_, dlq) = s.get("/api/v1/groups/g/dlq").await;
    assert_eq!(dlq["entries"], json!([]));

    let metrics = s
        .http
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("tributary_group_in_flight{group=\"g\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("tributary_group_parked_total{group=\"g\"} 2"));
    assert!(metrics.contains("tributary_group_redeliveries_total{group=\"g\"} 1"));
    assert!(metrics.contains("tributary_group_deliveries_total{group=\"g\"} 5"));
    assert!(metrics.contains("tributary_group_lag{group=\"g\"} 1"));

    // An ack that does not wait for the write takes effect as one that does.
    let (status, body) = s
        .post(
            "/api/v1/groups/g/ack",
            json!({"delivery_ids": ids(&replayed), "durable": false}),
        )
        .await;
    assert_eq!((status, &body), (StatusCode::OK, &json!({"acked": 1})));
    let (_, g) = s.get("/api/v1/groups/g").await;
    assert_eq!((&g["in_flight"], &g["lag"]), (&json!(0), &json!(0)));
}

#[tokio::test]
async fn a_stream_member_gets_deliveries_and_hands_them_on_when_it_closes() {
    let s = start().await;
    s.post("/api/v1/groups", json!({"name": "g", "start": "earliest"}))
        .await;
    let res = s
        .http
        .get(format!("{}/api/v1/groups/g/stream?member=sse-1", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut body = res.bytes_stream();
    s.publish("a", 1).await;
    s.publish("b", 1).await;
    let mut text = String::new();
    let deliveries = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            text.push_str(std::str::from_utf8(&body.next().await.unwrap().unwrap()).unwrap());
            let got: Vec<Value> = text
                .split("\n\n")
                .filter_map(|frame| frame.strip_prefix("data: "))
                .map(|d| serde_json::from_str(d).unwrap())
                .collect();
            if got.len() == 2 {
                return got;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(deliveries[0]["delivery_id"], "1.1");
    assert_eq!(deliveries[1]["event"]["topic"], "b");
    let (_, g) = s.get("/api/v1/groups/g").await;
    assert_eq!(g["members"][0]["member"], "sse-1");
    assert_eq!(g["members"][0]["in_flight"], 2);
    s.post("/api/v1/groups/g/ack", json!({"delivery_ids": ["1.1"]}))
        .await;
    // Listed with the other streams.
    let (_, list) = s.get("/api/v1/connections").await;
    let conn = &list["connections"][0];
    assert_eq!(
        (
            &conn["kind"],
            &conn["group"],
            &conn["member"],
            &conn["events_delivered"]
        ),
        (&json!("group"), &json!("g"), &json!("sse-1"), &json!(2)),
        "{conn}"
    );

    // Ended by deleting the connection, holding 2.1: another member gets it at once.
    let id = conn["id"].as_str().unwrap();
    let (status, _) = s
        .send("DELETE", &format!("/api/v1/connections/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = body.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stream ended");
    let handed = s.pull("g", "puller", 10).await;
    assert_eq!(ids(&handed), ["2.2"]);
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let s = start().await;
    s.post(
        "/api/v1/groups",
        json!({"name": "g", "start": "earliest", "max_in_flight": 5}),
    )
    .await;
    s.publish("jobs.a", 2).await;
    let held = s.pull("g", "w", 1).await;
    assert_eq!(ids(&held), ["1.1"]);
    s.post("/api/v1/groups/g/ack", json!({"delivery_ids": ["1.1"]}))
        .await;
    let held = s.pull("g", "w", 1).await;
    assert_eq!(ids(&held), ["2.1"]);
    let (_, before) = s.get("/api/v1/groups/g").await;

    let cases: Vec<(&str, &str, Value, StatusCode, &str)> = vec![
        (
            "POST",
            "/api/v1/groups",
            json!({"name": "g"}),
            StatusCode::CONFLICT,
            "group_exists",
        ),
        (
            "POST",
            "/api/v1/groups",
            json!({"name": "bad name"}),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "POST",
            "/api/v1/groups",
            json!({"name": ""}),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "POST",
            "/api/v1/groups",
            json!({}),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "POST",
            "/api/v1/groups",
            json!({"name": "x", "colour": 1}),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "POST",
            "/api/v1/groups",
            json!({"name": "x", "ack_wait": "30"}),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "POST",
            "/api/v1/groups",
            json!({"name": "x", "ack_wait": "1ms"}),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "POST",
            "/api/v1/groups",
            json!({"name": "x", "backoff": ["1y"]}),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "POST",
            "/api/v1/groups",
            json!({"name": "x", "max_deliveries": 0}),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "POST",
            "/api/v1/groups",
            json!({"name": "x", "start": "tomorrow"}),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "POST",
            "/api/v1/groups",
            json!({"name": "x", "start": -1}),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "POST",
            "/api/v1/groups",
            json!({"name": "x", "ordering": "random"}),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "POST",
            "/api/v1/groups",
            json!({"name": "x", "filter": {"topics": ["a..b"]}}),
            StatusCode::BAD_REQUEST,
            "invalid_filter",
        ),
        (
            "GET",
            "/api/v1/groups/nope",
            Value::Null,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "DELETE",
            "/api/v1/groups/nope",
            Value::Null,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "POST",
            "/api/v1/groups/nope/pull",
            json!({"member": "w"}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "POST",
            "/api/v1/groups/nope/ack",
            json!({"delivery_ids": ["2.1"]}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "GET",
            "/api/v1/groups/nope/dlq",
            Value::Null,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "GET",
            "/api/v1/groups/nope/stream?member=w",
            Value::Null,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "POST",
            "/api/v1/groups/g/pull",
            json!({}),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "POST",
            "/api/v1/groups/g/pull",
            json!({"member": ""}),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "POST",
            "/api/v1/groups/g/pull",
            json!({"member": "w", "max": 0}),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "POST",
            "/api/v1/groups/g/pull",
            json!({"member": "w", "wait_ms": 600000}),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "POST",
            "/api/v1/groups/g/ack",
            json!({"delivery_ids": ["abc"]}),
            StatusCode::BAD_REQUEST,
            "invalid_delivery_id",
        ),
        (
            "POST",
            "/api/v1/groups/g/ack",
            json!({"delivery_ids": []}),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "POST",
            "/api/v1/groups/g/ack",
            json!({}),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        // Twice, never made, the wrong attempt; and a good id beside a bad one.
        (
            "POST",
            "/api/v1/groups/g/ack",
            json!({"delivery_ids": ["1.1"]}),
            StatusCode::CONFLICT,
            "stale_delivery",
        ),
        (
            "POST",
            "/api/v1/groups/g/ack",
            json!({"delivery_ids": ["9.1"]}),
            StatusCode::CONFLICT,
            "stale_delivery",
        ),
        (
            "POST",
            "/api/v1/groups/g/ack",
            json!({"delivery_ids": ["2.2"]}),
            StatusCode::CONFLICT,
            "stale_delivery",
        ),
        (
            "POST",
            "/api/v1/groups/g/ack",
            json!({"delivery_ids": ["2.1", "2.1"]}),
            StatusCode::CONFLICT,
            "stale_delivery",
        ),
        (
            "POST",
            "/api/v1/groups/g/ack",
            json!({"delivery_ids": ["2.1", "1.1"]}),
            StatusCode::CONFLICT,
            "stale_delivery",
        ),
        (
            "POST",
            "/api/v1/groups/g/ack",
            json!({"delivery_ids": ["2.1"], "durable": "no"}),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "POST",
            "/api/v1/groups/g/nack",
            json!({"delivery_ids": ["2.1"], "durable": false}),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "POST",
            "/api/v1/groups/g/term",
            json!({"delivery_ids": ["2.1"], "durable": true}),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "POST",
            "/api/v1/groups/g/nack",
            json!({"delivery_ids": ["2.1"], "delay": "soon"}),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "POST",
            "/api/v1/groups/g/term",
            json!({"delivery_ids": ["2.1"], "delay": "1s"}),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "POST",
            "/api/v1/groups/g/dlq/replay",
            json!({"ids": [2]}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "DELETE",
            "/api/v1/groups/g/dlq/x",
            Value::Null,
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "GET",
            "/api/v1/groups/g/dlq?limit=0",
            Value::Null,
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "GET",
            "/api/v1/groups/g/dlq?cursor=x",
            Value::Null,
            StatusCode::BAD_REQUEST,
            "invalid_cursor",
        ),
        (
            "GET",
            "/api/v1/groups/g/dlq?colour=1",
            Value::Null,
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "GET",
            "/api/v1/groups/g/stream",
            Value::Null,
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
    ];
    for (method, path, body, status, want) in cases {
        let body = (!body.is_null()).then_some(body);
        let shown = format!("{method} {path} {body:?}");
        let (got, answer) = s.send(method, path, body).await;
        assert_eq!((got, code(&answer)), (status, want), "{shown}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }

    let (_, after) = s.get("/api/v1/groups/g").await;
    for field in [
        "committed",
        "in_flight",
        "dlq_size",
        "delivered",
        "lag",
        "members",
    ] {
        assert_eq!(before[field], after[field], "{field} changed");
    }
    let (_, list) = s.get("/api/v1/groups").await;
    assert_eq!(list["groups"].as_array().unwrap().len(), 1);
    // And the delivery that was held is still good.
    let (status, _) = s
        .post("/api/v1/groups/g/ack", json!({"delivery_ids": ["2.1"]}))
        .await;
    assert_eq!(status, StatusCode::OK);
}
