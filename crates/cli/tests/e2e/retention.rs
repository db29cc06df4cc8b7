//! Topic retention against the real binary on SQLite: the background pass trims a busy
//! topic while other topics are published to, readers behind it are told, and settings
//! and cuts survive `kill -9`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::harness::{Server, SseReader, all_events, event_body, get_json, http, publish};

async fn put_topic(url: &str, topic: &str, body: Value) -> (u16, Value) {
    let resp = http()
        .put(format!("{url}/api/v1/topics/{topic}"))
        .json(&body)
        .send()
        .await
        .expect("PUT topic");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON answer"))
}

/// Waits (at most 20 s) until the topic holds `count` events, and answers its info.
async fn wait_for_count(url: &str, topic: &str, count: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, info) = get_json(&format!("{url}/api/v1/topics/{topic}")).await;
        assert_eq!(status, 200, "{info}");
        if info["event_count"] == count || Instant::now() > deadline {
            return info;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn retention_trims_a_topic_while_others_are_published_and_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("TRIBUTARY_RETENTION_INTERVAL_SECS", "1"),
        ("TRIBUTARY_RETENTION_BATCH", "50"),
    ];
    let server = Server::start_with(dir.path(), "127.0.0.1:0", &env);
    let url = server.url.clone();
    // Settings before the first event: the background pass does all the trimming.
    let (status, info) = put_topic(&url, "metrics.cpu", json!({"max_events": 100})).await;
    assert_eq!(status, 200, "{info}");

    // Two publishers at once, one on the trimmed topic, one on a topic that keeps all.
    let publisher = |topic: &'static str| {
        let url = url.clone();
        tokio::spawn(async move {
            for round in 0..20 {
                let batch: Vec<Value> = (0..50)
                    .map(|i| event_body(topic, "sample", json!({"round": round, "i": i})))
                    .collect();
                let (status, answer) = publish(&url, &json!({ "events": batch })).await;
                assert_eq!(status, 201, "{answer}");
            }
        })
    };
    let (cpu, audit) = (publisher("metrics.cpu"), publisher("audit"));
    cpu.await.unwrap();
    audit.await.unwrap();

    let info = wait_for_count(&url, "metrics.cpu", 100).await;
    assert_eq!(
        info["event_count"], 100,
        "trimmed to its newest 100: {info}"
    );
    assert_eq!(
        (&info["head_seq"], &info["pruned_seq"]),
        (&json!(1000), &json!(900))
    );
    let pruned_through = info["pruned_position"].as_u64().unwrap();
    let events = all_events(&url).await;
    let audit_seqs: Vec<u64> = events
        .iter()
        .filter(|e| e["topic"] == "audit")
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        audit_seqs,
        (1..=1000).collect::<Vec<_>>(),
        "audit keeps everything"
    );
    let cpu_seqs: Vec<u64> = events
        .iter()
        .filter(|e| e["topic"] == "metrics.cpu")
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        cpu_seqs,
        (901..=1000).collect::<Vec<_>>(),
        "the newest, in order"
    );

    // A reader whose cursor the cut overtook is told, on SSE and in history.
    let mut sse = SseReader::open(
        &format!("{url}/api/v1/events/stream?topic=metrics.>&since=1"),
        None,
    )
    .await;
    let told = loop {
        let frame = sse.next().await.expect("the stream stays open");
        if frame.event.as_deref() == Some("truncated") {
            break frame.json();
        }
        assert!(frame.id.is_none(), "told before any event: {frame:?}");
    };
    assert_eq!(told, json!({"after": 1, "pruned_through": pruned_through}));
    let first = sse.next_event(Duration::from_secs(5)).await.unwrap();
    assert!(first.id.unwrap() > pruned_through);
    assert_eq!(first.json()["seq"], 901);
    let (status, gone) = get_json(&format!(
        "{url}/api/v1/events/history?topic=metrics.cpu&cursor=1"
    ))
    .await;
    assert_eq!(status, 410, "{gone}");
    assert_eq!(gone["error"]["code"], "cursor_expired");
    assert_eq!(gone["error"]["pruned_through"], pruned_through);
    drop(sse);

    // kill -9 and back: the settings, the cut and the head are where they were.
    let addr = server.addr.clone();
    server.kill9();
    let server = Server::start_with(dir.path(), &addr, &env);
    let (_, info) = get_json(&format!("{}/api/v1/topics/metrics.cpu", server.url)).await;
    assert_eq!(info["config"], json!({"max_events": 100}));
    assert_eq!(info["pruned_position"], pruned_through);
    let (status, gone) = get_json(&format!(
        "{}/api/v1/events/history?topic=metrics.cpu&cursor=1",
        server.url
    ))
    .await;
    assert_eq!(status, 410, "still told after a restart: {gone}");

    // Deleting the topic that holds the newest events never lets their positions
    // come back, even across another kill -9.
    let newest: Vec<Value> = (0..3)
        .map(|i| event_body("metrics.cpu", "sample", json!(i)))
        .collect();
    let (status, answer) = publish(&server.url, &json!({ "events": newest })).await;
    assert_eq!(status, 201, "{answer}");
    let head = answer["events"][2]["position"].as_u64().unwrap();
    let resp = http()
        .delete(format!("{}/api/v1/topics/metrics.cpu", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let deleted: Value = resp.json().await.unwrap();
    let deleted = deleted["deleted_events"].as_u64().unwrap();
    assert!((100..=103).contains(&deleted), "{deleted}");
    server.kill9();
    let server = Server::start_with(dir.path(), &addr, &env);
    let (status, next) = publish(&server.url, &event_body("metrics.cpu", "sample", json!(1))).await;
    assert_eq!(status, 201, "{next}");
    assert!(
        next["position"].as_u64().unwrap() > head,
        "{next} after head {head}"
    );
    assert_eq!(next["seq"], 1004, "the topic's seqs go on");
}
