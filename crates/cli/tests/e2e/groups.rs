//! Promise 5 against the real binary: a consumer group delivers every matching event at
//! least once through a member's crash and a `kill -9` of the server, keeps each key's
//! events in order, and keeps its state (committed position, attempts, dead-letter
//! queue) across restarts.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::harness::{Server, get_json, http, publish};

const EVENTS: u64 = 20_000;
const KEYS: u64 = 50;
const MEMBERS: usize = 4;

/// What the members saw, shared by all of them.
#[derive(Default)]
struct Seen {
    /// Per key, the seqs whose ack was answered 200, in the order the acks were made.
    acked: HashMap<String, Vec<u64>>,
    /// Per position, how many times a member was handed the event to process.
    processed: BTreeMap<u64, u32>,
    /// Acks whose answer was lost (the server died under them): counted as acked unless
    /// the event comes back.
    unknown: HashMap<u64, (String, u64)>,
}

impl Seen {
    /// Takes back the record of an ack that did not count.
    fn unrecord(&mut self, topic: &str, seq: u64) {
        let list = self.acked.get_mut(topic).unwrap();
        let at = list.iter().rposition(|x| *x == seq).unwrap();
        list.remove(at);
    }
}

async fn post(url: &str, body: &Value) -> Result<(u16, Value), reqwest::Error> {
    let res = http().post(url).json(body).send().await?;
    let status = res.status().as_u16();
    let body = res.json().await.unwrap_or(Value::Null);
    Ok((status, body))
}

/// One member: pulls, "processes", acks; retries through connection errors (the
/// server's restart). The member that `crashes` stops after its fifth pull without
/// acking what it holds.
async fn member(
    url: String,
    name: String,
    seen: Arc<Mutex<Seen>>,
    done: Arc<AtomicBool>,
    acked_total: Arc<AtomicU64>,
    crashes: bool,
) {
    let mut pulls = 0;
    while !done.load(Ordering::Relaxed) {
        let pulled = post(
            &format!("{url}/api/v1/groups/work/pull"),
            &json!({"member": name, "max": 50, "wait_ms": 500}),
        )
        .await;
        let deliveries = match pulled {
            Ok((200, body)) => body["deliveries"].as_array().cloned().unwrap_or_default(),
            // Down (restarting) or refusing while it drains: try again shortly.
            _ => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if deliveries.is_empty() {
            continue;
        }
        pulls += 1;
        {
            let mut s = seen.lock().unwrap();
            for d in &deliveries {
                let position = d["event"]["position"].as_u64().unwrap();
                *s.processed.entry(position).or_default() += 1;
                // Back again: the ack whose answer was lost did not land.
                if let Some((topic, seq)) = s.unknown.remove(&position) {
                    s.unrecord(&topic, seq);
                }
            }
        }
        if crashes && pulls == 5 {
            return;
        }
        // Recorded before the ack is sent: the key's next event cannot be handed out
        // until this ack is applied, so per key the records are in ack order. A record
        // whose ack fails is taken back.
        let mut recorded = Vec::new();
        {
            let mut s = seen.lock().unwrap();
            for d in &deliveries {
                let topic = d["event"]["topic"].as_str().unwrap().to_owned();
                let seq = d["event"]["seq"].as_u64().unwrap();
                s.acked.entry(topic.clone()).or_default().push(seq);
                recorded.push((topic, seq, d["delivery_id"].clone()));
            }
        }
        let ids: Vec<Value> = recorded.iter().map(|(_, _, id)| id.clone()).collect();
        let batch = post(
            &format!("{url}/api/v1/groups/work/ack"),
            &json!({ "delivery_ids": ids }),
        )
        .await;
        // Per record: Some(true) acked, Some(false) refused, None unknown.
        let outcomes: Vec<Option<bool>> = match batch {
            Ok((200, _)) => vec![Some(true); recorded.len()],
            // One stale id (a delivery from before the restart) refuses the batch: ack
            // one by one to find out which still count.
            Ok((409, _)) => {
                let mut outcomes = Vec::new();
                for r in &recorded {
                    let one = post(
                        &format!("{url}/api/v1/groups/work/ack"),
                        &json!({ "delivery_ids": [r.2] }),
                    )
                    .await;
                    outcomes.push(match one {
                        Ok((200, _)) => Some(true),
                        Ok((409, _)) => Some(false),
                        _ => None,
                    });
                }
                outcomes
            }
            // The server died under the ack: it may or may not have landed.
            _ => vec![None; recorded.len()],
        };
        let mut s = seen.lock().unwrap();
        for ((topic, seq, id), outcome) in recorded.iter().zip(outcomes) {
            match outcome {
                Some(true) => {
                    acked_total.fetch_add(1, Ordering::Relaxed);
                }
                Some(false) => s.unrecord(topic, *seq),
                None => {
                    let position: u64 = id
                        .as_str()
                        .unwrap()
                        .split('.')
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap();
                    s.unknown.insert(position, (topic.clone(), *seq));
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_is_acked_through_a_member_crash_and_a_server_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let url = server.url.clone();
    let addr = server.addr.clone();
    let (status, body) = post(
        &format!("{url}/api/v1/groups"),
        &json!({"name": "work", "filter": {"topics": ["work.>"]}, "start": "earliest",
                "ack_wait": "2s", "backoff": ["100ms"], "max_deliveries": 100,
                "max_in_flight": 50}),
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{body}");
    for batch in 0..EVENTS / 500 {
        let events: Vec<Value> = (0..500)
            .map(|i| {
                let n = batch * 500 + i;
                json!({"topic": format!("work.k{}", n % KEYS), "name": "job", "args": {"n": n}})
            })
            .collect();
        let (status, _) = publish(&url, &json!({ "events": events })).await;
        assert_eq!(status, 201);
    }
    // Noise the group's filter leaves out.
    publish(&url, &json!({"topic": "other", "name": "x", "args": {}})).await;

    let seen = Arc::new(Mutex::new(Seen::default()));
    let done = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let members: Vec<_> = (0..MEMBERS)
        .map(|m| {
            tokio::spawn(member(
                url.clone(),
                format!("m{m}"),
                Arc::clone(&seen),
                Arc::clone(&done),
                Arc::clone(&acked),
                m == MEMBERS - 1,
            ))
        })
        .collect();

    // kill -9 once the members are well into it; come back on the same port.
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.load(Ordering::Relaxed) < EVENTS / 2 {
        assert!(Instant::now() < deadline, "no progress before the kill");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let at_kill = acked.load(Ordering::Relaxed);
    server.kill9();
    let server = Server::start_with(dir.path(), &addr, &[]);

    let settled = loop {
        let (_, g) = get_json(&format!("{url}/api/v1/groups/work")).await;
        assert!(g.get("error").is_none(), "the group after the restart: {g}");
        if g["lag"] == 0 && g["in_flight"] == 0 {
            break g;
        }
        assert!(
            Instant::now() < deadline,
            "not done within 120 s: {g} (acked {})",
            acked.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    done.store(true, Ordering::Relaxed);
    for m in members {
        m.await.unwrap();
    }

    let seen = seen.lock().unwrap();
    // Every event acked at least once; none of another topic delivered.
    let processed: u64 = seen.processed.values().map(|n| u64::from(*n)).sum();
    assert_eq!(
        seen.processed.keys().copied().collect::<Vec<_>>(),
        (1..=EVENTS).collect::<Vec<_>>()
    );
    let acked_seqs: usize = seen.acked.values().map(Vec::len).sum();
    assert_eq!(
        acked_seqs as u64, EVENTS,
        "each event acked exactly once with a 200"
    );
    // Per key, the acks went in seq order: 1, 2, 3, ...
    assert_eq!(seen.acked.len() as u64, KEYS);
    for (key, seqs) in &seen.acked {
        let want: Vec<u64> = (1..=EVENTS / KEYS).collect();
        assert_eq!(seqs, &want, "{key} acked out of order");
    }
    assert_eq!(settled["committed"], EVENTS + 1);
    assert_eq!(settled["dlq_size"], 0);
    eprintln!(
        "groups e2e: {EVENTS} events, {MEMBERS} members (one crashed after 5 pulls), server \
         kill -9 after {at_kill} acks; {processed} deliveries processed, {} duplicates \
         ({} redeliveries counted by the restarted server)",
        processed - EVENTS,
        settled["redelivered"]
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_state_and_the_dead_letter_queue_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let url = server.url.clone();
    let addr = server.addr.clone();
    // Published first, so that the group's first read of the log takes all four.
    for i in 0..4 {
        publish(&url, &json!({"topic": "t", "name": "n", "args": {"i": i}})).await;
    }
    post(
        &format!("{url}/api/v1/groups"),
        &json!({"name": "g", "start": "earliest", "max_deliveries": 3, "ordering": "none"}),
    )
    .await
    .unwrap();
    let (_, pulled) = post(
        &format!("{url}/api/v1/groups/g/pull"),
        &json!({"member": "a", "max": 4, "wait_ms": 5000}),
    )
    .await
    .unwrap();
    let ids: Vec<&str> = pulled["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["delivery_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["1.1", "2.1", "3.1", "4.1"]);
    post(
        &format!("{url}/api/v1/groups/g/ack"),
        &json!({"delivery_ids": ["1.1"]}),
    )
    .await
    .unwrap();
    post(
        &format!("{url}/api/v1/groups/g/term"),
        &json!({"delivery_ids": ["2.1"], "reason": "poison pill"}),
    )
    .await
    .unwrap();
    post(
        &format!("{url}/api/v1/groups/g/ack"),
        &json!({"delivery_ids": ["4.1"]}),
    )
    .await
    .unwrap();
    // 3.1 is in flight at the kill.
    server.kill9();
    let server = Server::start_with(dir.path(), &addr, &[]);

    let (_, g) = get_json(&format!("{url}/api/v1/groups/g")).await;
    assert_eq!(g["committed"], 2, "{g}");
    assert_eq!(g["dlq_size"], 1);
    let (_, dlq) = get_json(&format!("{url}/api/v1/groups/g/dlq")).await;
    assert_eq!(dlq["entries"][0]["id"], 2);
    assert_eq!(dlq["entries"][0]["reason"], "poison pill");
    assert_eq!(dlq["entries"][0]["event"]["args"], json!({"i": 1}));
    // Only the one in flight comes back, as its second attempt.
    let (_, pulled) = post(
        &format!("{url}/api/v1/groups/g/pull"),
        &json!({"member": "b", "max": 10, "wait_ms": 1000}),
    )
    .await
    .unwrap();
    let ids: Vec<&str> = pulled["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["delivery_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["3.2"]);
    let (status, body) = post(
        &format!("{url}/api/v1/groups/g/ack"),
        &json!({"delivery_ids": ["3.1"]}),
    )
    .await
    .unwrap();
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("stale_delivery"))
    );
    drop(server);
}
