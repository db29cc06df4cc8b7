//! Graceful shutdown: SIGTERM ends open streams cleanly and the process exits 0 in time.

use std::time::Duration;

use serde_json::json;

use super::harness::{Server, SseReader, event_body, publish};

#[tokio::test]
async fn sigterm_closes_streams_and_exits_zero_within_ten_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let url = server.url.clone();
    publish(&url, &event_body("t", "n", json!({}))).await;
    let mut sse = SseReader::open(&format!("{url}/api/v1/events/stream"), None).await;
    assert_eq!(
        sse.next_event(Duration::from_secs(5)).await.unwrap().id,
        Some(1)
    );

    let (status, took) = server.terminate(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}");
    eprintln!("graceful shutdown took {took:?}");
    // The open stream ended (cleanly, without an `end` event: the client should resume).
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        let mut frames = Vec::new();
        while let Some(f) = sse.next().await {
            frames.push(f);
        }
        frames
    })
    .await
    .expect("the stream closed");
    assert!(rest.iter().all(|f| f.event.as_deref() != Some("end")));

    // The data is intact after a graceful stop.
    let server = Server::start(dir.path());
    let (status, ack) = publish(&server.url, &event_body("t", "n", json!({}))).await;
    assert_eq!(status, 201);
    assert_eq!(ack["position"], 2);
}
