//! Resuming after a reconnect: no lost and no doubled event, even across a restart.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use tributary_client::{Client, SubscribeOptions, SubscriptionEvent};

use super::harness::{Server, SseReader, event_body, publish};

#[tokio::test]
async fn last_event_id_resumes_across_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let url = server.url.clone();
    let batch: Vec<_> = (0..30).map(|i| event_body("r", "n", json!(i))).collect();
    publish(&url, &json!({ "events": batch })).await;

    let stream_url = format!("{url}/api/v1/events/stream?topic=r");
    let mut sse = SseReader::open(&stream_url, None).await;
    let mut seen = Vec::new();
    while seen.len() < 17 {
        let frame = sse.next_event(Duration::from_secs(5)).await.unwrap();
        seen.push(frame.id.unwrap());
    }
    drop(sse);

    let addr = server.addr.clone();
    server.kill9();
    let server = Server::start_with(dir.path(), &addr, &[]);
    let more: Vec<_> = (30..40).map(|i| event_body("r", "n", json!(i))).collect();
    publish(&server.url, &json!({ "events": more })).await;

    let mut sse = SseReader::open(&stream_url, seen.last().copied()).await;
    while seen.len() < 40 {
        let frame = sse.next_event(Duration::from_secs(5)).await.unwrap();
        seen.push(frame.id.unwrap());
    }
    assert_eq!(seen, (1..=40).collect::<Vec<_>>(), "no gap, no duplicate");
}

#[tokio::test]
async fn the_client_subscription_survives_restarts_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let addr = server.addr.clone();
    let url = server.url.clone();
    let client = Client::new(&url).unwrap();
    let mut sub = client.subscribe(SubscribeOptions {
        filter: tributary_core::Filter::topic(tributary_core::TopicPattern::new("s.>").unwrap()),
        since: Some(0),
        ..SubscribeOptions::default()
    });

    let mut positions = Vec::new();
    let mut values = BTreeSet::new();
    let mut published = 0;
    for round in 0..3 {
        let batch: Vec<_> = (0..50)
            .map(|i| event_body("s.x", "n", json!(published + i)))
            .collect();
        publish(&url, &json!({ "events": batch })).await;
        published += 50;
        while positions.len() < published {
            let item = tokio::time::timeout(Duration::from_secs(20), sub.next())
                .await
                .expect("the subscription keeps delivering")
                .expect("it does not end")
                .expect("no final error");
            if let SubscriptionEvent::Event(e) = item {
                positions.push(e.position);
                assert!(
                    values.insert(e.args.as_json().to_owned()),
                    "no doubled event"
                );
            }
        }
        if round < 2 {
            // Alternate a crash and a graceful stop under the open subscription.
            if round == 0 {
                server.kill9();
            } else {
                server.terminate(Duration::from_secs(10));
            }
            server = Server::start_with(dir.path(), &addr, &[]);
        }
    }
    assert_eq!(positions, (1..=150).collect::<Vec<u64>>());
    assert_eq!(sub.last_position(), Some(150));
}
