//! Publishing and streaming against a real server: what a web page or a producer sees.

use std::time::Duration;

use serde_json::json;

use super::harness::{Server, SseReader, all_events, event_body, get_json, metric, publish};

#[tokio::test]
async fn a_published_event_reaches_an_open_sse_stream() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut sse = SseReader::open(
        &format!("{}/api/v1/events/stream?topic=orders.>", server.url),
        None,
    )
    .await;
    // The stream opens with a retry hint and the end of (empty) history.
    let first = sse.next().await.unwrap();
    assert_eq!(first.retry, Some(1000));
    let marker = sse.next().await.unwrap();
    assert_eq!(marker.event.as_deref(), Some("caught-up"));

    let (status, ack) = publish(
        &server.url,
        &event_body("users.eu", "v1.Ignored", json!({})),
    )
    .await;
    assert_eq!(status, 201, "{ack}");
    let (status, ack) = publish(
        &server.url,
        &event_body(
            "orders.eu.created",
            "v1.OrderCreated",
            json!({"total": 12.5}),
        ),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(ack, json!({"position": 2, "seq": 1, "duplicate": false}));

    let frame = sse.next_event(Duration::from_secs(5)).await.unwrap();
    assert_eq!(frame.id, Some(2), "the SSE id is the position");
    let event = frame.json();
    assert_eq!(event["topic"], "orders.eu.created");
    assert_eq!(event["name"], "v1.OrderCreated");
    assert_eq!(event["args"], json!({"total": 12.5}));
    assert_eq!(event["seq"], 1);
    assert_eq!(event["parent_seq"], 0);
    assert!(event["id"].as_str().unwrap().len() == 36);
    assert!(event["timestamp"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn publishing_the_same_id_twice_stores_one_event() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut body = event_body("t", "n", json!({"v": 1}));
    body["id"] = json!("order-17");
    let (status, first) = publish(&server.url, &body).await;
    assert_eq!(status, 201);
    publish(&server.url, &event_body("t", "other", json!({}))).await;
    let (status, again) = publish(&server.url, &body).await;
    assert_eq!(status, 200, "a duplicate is not created");
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["position"], first["position"]);
    assert_eq!(again["seq"], first["seq"]);

    // The Idempotency-Key header works the same for a single event.
    let send = || async {
        let resp = super::harness::http()
            .post(format!("{}/api/v1/events", server.url))
            .header("Idempotency-Key", "key-9")
            .json(&event_body("t", "n", json!({})))
            .send()
            .await
            .unwrap();
        (
            resp.status().as_u16(),
            resp.json::<serde_json::Value>().await.unwrap(),
        )
    };
    let (s1, a1) = send().await;
    let (s2, a2) = send().await;
    assert_eq!((s1, s2), (201, 200));
    assert_eq!(a1["position"], a2["position"]);
    let events = all_events(&server.url).await;
    assert_eq!(events.len(), 3);
    assert_eq!(events[2]["id"], "key-9");
}

#[tokio::test]
async fn a_stale_expected_seq_is_refused_with_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    for expected in 0..3 {
        let mut body = event_body("account.1", "v1.Deposited", json!({"n": expected}));
        body["expected_seq"] = json!(expected);
        let (status, _) = publish(&server.url, &body).await;
        assert_eq!(status, 201);
    }
    let mut stale = event_body("account.1", "v1.Deposited", json!({}));
    stale["expected_seq"] = json!(1);
    let (status, err) = publish(&server.url, &stale).await;
    assert_eq!(status, 409, "{err}");
    assert_eq!(err["error"]["code"], "seq_conflict");
    assert_eq!(err["error"]["head_seq"], 3);
    assert!(err["error"]["message"].as_str().unwrap().contains('3'));
    assert_eq!(all_events(&server.url).await.len(), 3, "nothing stored");
}

#[tokio::test]
async fn a_batch_is_stored_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (status, ack) = publish(
        &server.url,
        &json!({"events": [event_body("a", "x", json!(1)), event_body("b", "x", json!(2))]}),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(
        ack,
        json!({"events": [
            {"position": 1, "seq": 1, "duplicate": false},
            {"position": 2, "seq": 1, "duplicate": false}
        ]})
    );
    let mut conflicting = event_body("a", "x", json!(3));
    conflicting["expected_seq"] = json!(0);
    let (status, _) = publish(
        &server.url,
        &json!({"events": [event_body("c", "x", json!(0)), conflicting]}),
    )
    .await;
    assert_eq!(status, 409);
    let (status, bad) = publish(
        &server.url,
        &json!({"events": [event_body("c", "x", json!(0)), {"topic": "c", "name": ""}]}),
    )
    .await;
    assert_eq!(status, 400, "{bad}");
    let events = all_events(&server.url).await;
    assert_eq!(events.len(), 2, "neither failed batch stored anything");
    let (_, topics) = get_json(&format!("{}/api/v1/topics", server.url)).await;
    let names: Vec<_> = topics["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["topic"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["a", "b"]);
}

#[tokio::test]
async fn snapshot_only_and_until_end_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let batch: Vec<_> = (0..10)
        .map(|i| event_body(if i % 2 == 0 { "even" } else { "odd" }, "n", json!(i)))
        .collect();
    publish(&server.url, &json!({ "events": batch })).await;

    let mut snap = SseReader::open(
        &format!(
            "{}/api/v1/events/stream?topic=even&snapshot_only=true&since=2",
            server.url
        ),
        None,
    )
    .await;
    let mut ids = Vec::new();
    let mut events = Vec::new();
    while let Some(frame) = snap.next().await {
        if let Some(id) = frame.id {
            ids.push(id);
        } else if let Some(name) = frame.event {
            events.push(name);
        }
    }
    assert_eq!(ids, [3, 5, 7, 9]);
    assert_eq!(events, ["caught-up", "end"], "closed after history");

    // `until` ends the stream once that position is passed, even while live.
    let mut bounded = SseReader::open(
        &format!("{}/api/v1/events/stream?until=12", server.url),
        None,
    )
    .await;
    let more: Vec<_> = (0..5).map(|i| event_body("later", "n", json!(i))).collect();
    publish(&server.url, &json!({ "events": more })).await;
    let mut ids = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(frame) = bounded.next().await {
            if let Some(id) = frame.id {
                ids.push(id);
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the stream ended by itself");
    assert_eq!(ids, (1..=12).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_appends_and_group_commits() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let publishers: Vec<_> = (0..32)
        .map(|i| {
            let url = server.url.clone();
            tokio::spawn(async move {
                publish(&url, &event_body("m", "n", json!(i))).await;
            })
        })
        .collect();
    for p in publishers {
        p.await.unwrap();
    }
    let url = &server.url;
    assert_eq!(metric(url, "tributary_appended_events_total").await, 32);
    assert_eq!(metric(url, "tributary_append_requests_total").await, 32);
    assert_eq!(
        metric(url, "tributary_log_committed_events_total").await,
        32
    );
    let commits = metric(url, "tributary_log_commits_total").await;
    assert!((1..=32).contains(&commits), "{commits} commits");
    assert_eq!(metric(url, "tributary_log_head").await, 32);
    assert_eq!(
        metric(url, "tributary_append_latency_seconds_count").await,
        32
    );
    eprintln!("metrics: 32 concurrent publishes took {commits} commits");
}
