//! The LiveStore sync-cf endpoint against the real binary: the protocol's edge cases
//! over HTTP, and live pulls over WebSocket. Real LiveStore clients are driven by the
//! node tests in tests/livestore.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::harness::{Server, all_events, http, publish};

/// One sync-cf HTTP call; returns the messages of the answer (always HTTP 200).
async fn rpc(url: &str, store: &str, tag: &str, id: &str, payload: Value) -> Vec<Value> {
    let body = json!({"_tag": "Request", "id": id, "tag": tag, "payload": payload,
        "headers": [], "traceId": "t", "spanId": "s", "sampled": false});
    raw(
        url,
        &format!("storeId={store}&transport=http"),
        body.to_string(),
    )
    .await
}

async fn raw(url: &str, query: &str, body: String) -> Vec<Value> {
    let resp = http()
        .post(format!("{url}/api/v1/livestore?{query}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// A chained batch `from+1 ..= from+n` of `v1.ItemAdded` events by one client.
fn batch(from: u64, n: u64, client: &str) -> Vec<Value> {
    (from + 1..=from + n)
        .map(|seq| {
            json!({"name": "v1.ItemAdded", "args": {"id": format!("{client}-{seq}"), "n": seq},
            "seqNum": seq, "parentSeqNum": seq - 1, "clientId": client, "sessionId": "s1"})
        })
        .collect()
}

fn push_payload(store: &str, batch: Vec<Value>, backend_id: Option<&str>) -> Value {
    let backend = match backend_id {
        Some(id) => json!({"_tag": "Some", "value": id}),
        None => json!({"_tag": "None"}),
    };
    json!({"storeId": store, "batch": batch, "backendId": backend})
}

fn pull_payload(store: &str, cursor: Option<(&str, u64)>) -> Value {
    let cursor = match cursor {
        Some((backend, seq)) => json!({"_tag": "Some",
            "value": {"backendId": backend, "eventSequenceNumber": seq}}),
        None => json!({"_tag": "None"}),
    };
    json!({"storeId": store, "cursor": cursor})
}

/// The error of an `Exit` failure, checking the envelope on the way.
fn failure(messages: &[Value], id: &str) -> Value {
    assert_eq!(messages.len(), 1, "{messages:?}");
    let exit = &messages[0];
    assert_eq!(exit["_tag"], "Exit", "{exit}");
    assert_eq!(exit["requestId"], id, "{exit}");
    assert_eq!(exit["exit"]["_tag"], "Failure", "{exit}");
    assert_eq!(exit["exit"]["cause"]["_tag"], "Fail", "{exit}");
    exit["exit"]["cause"]["error"].clone()
}

fn success(messages: &[Value], id: &str) -> Value {
    let exit = messages.last().unwrap();
    assert_eq!(exit["_tag"], "Exit", "{messages:?}");
    assert_eq!(exit["requestId"], id);
    assert_eq!(exit["exit"]["_tag"], "Success", "{messages:?}");
    exit["exit"]["value"].clone()
}

async fn topic_events(url: &str, store: &str) -> Vec<Value> {
    let topic = format!("livestore.{store}");
    all_events(url)
        .await
        .into_iter()
        .filter(|e| e["topic"] == topic.as_str())
        .collect()
}

/// The backend id, from an empty pull.
async fn backend_id(url: &str, store: &str) -> String {
    let answer = rpc(
        url,
        store,
        "SyncHttpRpc.Pull",
        "1",
        pull_payload(store, None),
    )
    .await;
    answer[0]["values"][0]["backendId"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn http_protocol_edge_cases_answer_in_the_protocols_shape_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let url = &server.url;
    let store = "edge_1";

    let pong = rpc(
        url,
        store,
        "SyncHttpRpc.Ping",
        "0",
        json!({"storeId": store}),
    )
    .await;
    assert_eq!(success(&pong, "0"), json!({"_tag": "SyncMessage.Pong"}));

    let empty = rpc(
        url,
        store,
        "SyncHttpRpc.Push",
        "2",
        push_payload(store, vec![], None),
    )
    .await;
    assert_eq!(failure(&empty, "2")["_tag"], "UnknownError");

    // seqNum 2 after parent 0, and a batch whose second event skips one.
    let mut gap = batch(0, 1, "a");
    gap[0]["seqNum"] = json!(2);
    let gap = rpc(
        url,
        store,
        "SyncHttpRpc.Push",
        "3",
        push_payload(store, gap, None),
    )
    .await;
    let error = failure(&gap, "3");
    assert_eq!(error["_tag"], "UnknownError");
    assert!(
        error["cause"].as_str().unwrap().contains("chain"),
        "{error}"
    );
    let mut broken = batch(0, 3, "a");
    broken[2]["parentSeqNum"] = json!(1);
    broken[2]["seqNum"] = json!(2);
    let broken = rpc(
        url,
        store,
        "SyncHttpRpc.Push",
        "4",
        push_payload(store, broken, None),
    )
    .await;
    assert_eq!(failure(&broken, "4")["_tag"], "UnknownError");

    let unknown = rpc(url, store, "SyncHttpRpc.Frobnicate", "5", json!({})).await;
    let error = failure(&unknown, "5");
    assert_eq!(error["_tag"], "UnknownError");
    assert!(error["cause"].as_str().unwrap().contains("Frobnicate"));

    let malformed = raw(url, "storeId=edge_1&transport=http", "{not json".to_owned()).await;
    assert_eq!(failure(&malformed, "")["_tag"], "UnknownError");

    for bad in ["a.b", "a%3Eb", "", "x%20y", &"x".repeat(129)] {
        let messages = raw(
            url,
            &format!("storeId={bad}&transport=http"),
            json!({"_tag": "Request", "id": "6", "tag": "SyncHttpRpc.Push",
                "payload": push_payload(bad, batch(0, 1, "a"), None)})
            .to_string(),
        )
        .await;
        let error = failure(&messages, "6");
        assert_eq!(error["_tag"], "UnknownError");
        assert!(
            error["cause"].as_str().unwrap().contains("storeId"),
            "{error}"
        );
    }
    assert!(
        all_events(url).await.is_empty(),
        "refused requests store nothing"
    );

    // 250 events in pushes of 100, 100 and 50; a retried push is not doubled.
    let backend = backend_id(url, store).await;
    for (from, n) in [(0, 100), (100, 100), (200, 50)] {
        let ok = rpc(
            url,
            store,
            "SyncHttpRpc.Push",
            "7",
            push_payload(store, batch(from, n, "a"), Some(&backend)),
        )
        .await;
        assert_eq!(success(&ok, "7"), json!({}));
    }
    let retry = rpc(
        url,
        store,
        "SyncHttpRpc.Push",
        "8",
        push_payload(store, batch(200, 50, "a"), Some(&backend)),
    )
    .await;
    assert_eq!(success(&retry, "8"), json!({}), "a retried push succeeds");
    let stored = topic_events(url, store).await;
    assert_eq!(stored.len(), 250, "and stores nothing twice");
    assert_eq!(stored[249]["seq"], 250);
    assert_eq!(stored[0]["name"], "v1.ItemAdded");
    assert_eq!(stored[0]["client_id"], "a");
    assert_eq!(stored[0]["session_id"], "s1");
    assert_eq!(stored[0]["args"], json!({"id": "a-1", "n": 1}));

    // A push behind the head: the client must pull and rebase.
    let behind = rpc(
        url,
        store,
        "SyncHttpRpc.Push",
        "9",
        push_payload(store, batch(0, 2, "b"), Some(&backend)),
    )
    .await;
    assert_eq!(
        failure(&behind, "9"),
        json!({"_tag": "ServerAheadError", "minimumExpectedNum": 250, "providedNum": 0})
    );
    let ahead = rpc(
        url,
        store,
        "SyncHttpRpc.Push",
        "9",
        push_payload(store, batch(300, 1, "b"), Some(&backend)),
    )
    .await;
    assert_eq!(failure(&ahead, "9")["minimumExpectedNum"], 250);
    assert_eq!(topic_events(url, store).await.len(), 250);

    // Pull pages: at most 100 events per value, one value per Chunk (streamed, so the
    // server holds one page at a time), with what remains.
    let pulled = rpc(
        url,
        store,
        "SyncHttpRpc.Pull",
        "10",
        pull_payload(store, None),
    )
    .await;
    assert_eq!(pulled.len(), 4);
    success(&pulled, "10");
    let values: Vec<Value> = pulled[..3]
        .iter()
        .map(|chunk| {
            assert_eq!(chunk["_tag"], "Chunk");
            assert_eq!(chunk["requestId"], "10");
            let values = chunk["values"].as_array().unwrap();
            assert_eq!(values.len(), 1);
            values[0].clone()
        })
        .collect();
    let shape: Vec<(usize, Value)> = values
        .iter()
        .map(|v| (v["batch"].as_array().unwrap().len(), v["pageInfo"].clone()))
        .collect();
    assert_eq!(
        shape,
        [
            (100, json!({"_tag": "MoreKnown", "remaining": 150})),
            (100, json!({"_tag": "MoreKnown", "remaining": 50})),
            (50, json!({"_tag": "NoMore"})),
        ]
    );
    let first = &values[0]["batch"][0];
    assert_eq!(
        first["eventEncoded"],
        json!({"name": "v1.ItemAdded", "args": {"id": "a-1", "n": 1}, "seqNum": 1,
            "parentSeqNum": 0, "clientId": "a", "sessionId": "s1"})
    );
    assert_eq!(first["metadata"]["_tag"], "Some");
    assert_eq!(
        first["metadata"]["value"]["_tag"],
        "SyncMessage.SyncMetadata"
    );
    assert_eq!(values[2]["backendId"], backend.as_str());
    let tail = rpc(
        url,
        store,
        "SyncHttpRpc.Pull",
        "11",
        pull_payload(store, Some((&backend, 240))),
    )
    .await;
    let batch_240 = tail[0]["values"][0]["batch"].as_array().unwrap();
    assert_eq!(batch_240.len(), 10);
    assert_eq!(batch_240[0]["eventEncoded"]["seqNum"], 241);

    // Another backend: on pull and on push.
    let mismatch = rpc(
        url,
        store,
        "SyncHttpRpc.Pull",
        "12",
        pull_payload(store, Some(("other", 3))),
    )
    .await;
    assert_eq!(
        failure(&mismatch, "12"),
        json!({"_tag": "BackendIdMismatchError", "expected": backend, "received": "other"})
    );
    let mismatch = rpc(
        url,
        store,
        "SyncHttpRpc.Push",
        "13",
        push_payload(store, batch(250, 1, "a"), Some("other")),
    )
    .await;
    assert_eq!(failure(&mismatch, "13")["_tag"], "BackendIdMismatchError");
    assert_eq!(topic_events(url, store).await.len(), 250);

    // An event published through the plain API, at the head, is a LiveStore event too.
    let (status, _) = publish(
        url,
        &json!({"topic": "livestore.edge_1", "name": "v1.ItemAdded",
        "args": {"id": "api", "n": 0}, "client_id": "api", "session_id": "api",
        "expected_seq": 250}),
    )
    .await;
    assert_eq!(status, 201);
    let tail = rpc(
        url,
        store,
        "SyncHttpRpc.Pull",
        "14",
        pull_payload(store, Some((&backend, 250))),
    )
    .await;
    assert_eq!(
        tail[0]["values"][0]["batch"][0]["eventEncoded"]["clientId"],
        "api"
    );
    assert_eq!(
        tail[0]["values"][0]["batch"][0]["eventEncoded"]["seqNum"],
        251
    );

    // Another store starts at 1, and the same backend id serves it.
    let other = rpc(
        url,
        "edge_2",
        "SyncHttpRpc.Push",
        "15",
        push_payload("edge_2", batch(0, 1, "a"), Some(&backend)),
    )
    .await;
    success(&other, "15");
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(server: &Server, store: &str) -> Socket {
    let url = format!(
        "ws://{}/api/v1/livestore?storeId={store}&transport=ws",
        server.addr
    );
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

async fn send(ws: &mut Socket, message: Value) {
    ws.send(Message::text(message.to_string())).await.unwrap();
}

async fn recv(ws: &mut Socket) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message within 5 s")
            .unwrap()
            .unwrap();
        if let Message::Text(text) = frame {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

fn request(id: &str, tag: &str, payload: Value) -> Value {
    json!({"_tag": "Request", "id": id, "tag": tag, "payload": payload, "headers": []})
}

#[tokio::test]
async fn ws_live_pulls_get_every_push_the_pushers_own_included() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let store = "live";
    let mut a = connect(&server, store).await;
    let mut b = connect(&server, store).await;

    send(&mut a, json!({"_tag": "Ping"})).await;
    assert_eq!(recv(&mut a).await, json!({"_tag": "Pong"}));

    let mut live = pull_payload(store, None);
    live["live"] = json!(true);
    send(&mut a, request("1", "SyncWsRpc.Pull", live.clone())).await;
    send(&mut b, request("1", "SyncWsRpc.Pull", live)).await;
    for ws in [&mut a, &mut b] {
        let first = recv(ws).await;
        assert_eq!(first["_tag"], "Chunk");
        assert_eq!(first["values"][0]["batch"], json!([]));
        assert_eq!(first["values"][0]["pageInfo"]["_tag"], "NoMore");
    }

    send(
        &mut a,
        request(
            "2",
            "SyncWsRpc.Push",
            push_payload(store, batch(0, 2, "a"), None),
        ),
    )
    .await;
    // The pusher gets its Exit and its own events back as a Chunk, in either order.
    let mut got = [recv(&mut a).await, recv(&mut a).await];
    got.sort_by_key(|m| m["_tag"].as_str().unwrap().to_owned());
    assert_eq!(got[1]["_tag"], "Exit");
    assert_eq!(got[1]["requestId"], "2");
    assert_eq!(got[1]["exit"]["_tag"], "Success");
    assert_eq!(got[0]["requestId"], "1");
    let echo = &got[0]["values"][0]["batch"];
    assert_eq!(echo.as_array().unwrap().len(), 2);
    let other = recv(&mut b).await;
    assert_eq!(other["_tag"], "Chunk");
    assert_eq!(&other["values"][0]["batch"], echo);

    // A push behind the head over WS: an Exit failure, and no Chunk.
    send(
        &mut b,
        request(
            "2",
            "SyncWsRpc.Push",
            push_payload(store, batch(0, 1, "b"), None),
        ),
    )
    .await;
    let refused = recv(&mut b).await;
    assert_eq!(
        refused["exit"]["cause"]["error"]["_tag"],
        "ServerAheadError"
    );
    assert_eq!(refused["exit"]["cause"]["error"]["minimumExpectedNum"], 2);

    // A publish through the plain API reaches live pullers too.
    publish(
        &server.url,
        &json!({"topic": "livestore.live", "name": "v1.ItemAdded",
        "client_id": "api", "session_id": "api"}),
    )
    .await;
    let from_api = recv(&mut b).await;
    assert_eq!(
        from_api["values"][0]["batch"][0]["eventEncoded"]["seqNum"],
        3
    );

    // A bad storeId is refused before the upgrade.
    let bad = format!(
        "ws://{}/api/v1/livestore?storeId=a.b&transport=ws",
        server.addr
    );
    assert!(tokio_tungstenite::connect_async(bad).await.is_err());
}
