//! Promise 1: a publish that got a 2xx survives `kill -9`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;

use super::harness::{Server, all_events, http};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let url = server.url.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let publishers: Vec<_> = (0..8)
        .map(|p| {
            let url = url.clone();
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let client = http();
                let mut acked = HashMap::new();
                // Bounded: stops at the kill or after 5000 events, whichever comes first.
                for i in 0..5000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let id = format!("p{p}-{i}");
                    let body = if i % 5 == 0 {
                        // Some batches too: every event of an acked batch must survive.
                        json!({"events": [
                            {"topic": format!("load.{p}"), "name": "n", "id": format!("{id}-a"), "args": {"i": i}},
                            {"topic": format!("load.{p}"), "name": "n", "id": format!("{id}-b"), "args": {"i": i}}
                        ]})
                    } else {
                        json!({"topic": format!("load.{p}"), "name": "n", "id": id, "args": {"i": i}})
                    };
                    let Ok(resp) = client
                        .post(format!("{url}/api/v1/events"))
                        .json(&body)
                        .send()
                        .await
                    else {
                        break;
                    };
                    if !resp.status().is_success() {
                        break;
                    }
                    let Ok(answer) = resp.json::<serde_json::Value>().await else {
                        break;
                    };
                    if let Some(events) = answer["events"].as_array() {
                        for (suffix, a) in ["a", "b"].iter().zip(events) {
                            acked.insert(format!("{id}-{suffix}"), a["position"].as_u64().unwrap());
                        }
                    } else {
                        acked.insert(id, answer["position"].as_u64().unwrap());
                    }
                }
                acked
            })
        })
        .collect();

    // Let load build up, then pull the plug while requests are in flight.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    let mut acked = HashMap::new();
    for p in publishers {
        acked.extend(p.await.unwrap());
    }
    assert!(acked.len() > 100, "the load ran ({} acked)", acked.len());

    let server = Server::start(dir.path());
    let events = all_events(&server.url).await;
    let positions: Vec<u64> = events
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(
        positions,
        (1..=events.len() as u64).collect::<Vec<_>>(),
        "positions are dense after the crash"
    );
    let stored: HashMap<&str, u64> = events
        .iter()
        .map(|e| (e["id"].as_str().unwrap(), e["position"].as_u64().unwrap()))
        .collect();
    for (id, position) in &acked {
        assert_eq!(
            stored.get(id.as_str()),
            Some(position),
            "acked event {id} survived"
        );
    }
    // Per-topic seqs are dense too.
    let mut seqs: HashMap<&str, Vec<u64>> = HashMap::new();
    for e in &events {
        seqs.entry(e["topic"].as_str().unwrap())
            .or_default()
            .push(e["seq"].as_u64().unwrap());
    }
    for (topic, s) in seqs {
        assert_eq!(s, (1..=s.len() as u64).collect::<Vec<_>>(), "topic {topic}");
    }
    eprintln!(
        "durability: {} acked before kill -9, {} stored after restart",
        acked.len(),
        events.len()
    );
}
