//! Promise 6: bad input gets a clear 4xx with a JSON error body, and changes nothing.

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::harness::{Server, all_events, get_json, http, publish};

struct Case {
    what: &'static str,
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, &'static str)>,
    body: Option<Vec<u8>>,
    status: u16,
    code: &'static str,
}

fn post(what: &'static str, body: impl Into<Vec<u8>>, status: u16, code: &'static str) -> Case {
    Case {
        what,
        method: "POST",
        path: "/api/v1/events".into(),
        headers: vec![("content-type", "application/json")],
        body: Some(body.into()),
        status,
        code,
    }
}

fn get(what: &'static str, path: &str, status: u16, code: &'static str) -> Case {
    Case {
        what,
        method: "GET",
        path: path.into(),
        headers: vec![],
        body: None,
        status,
        code,
    }
}

#[tokio::test]
async fn every_bad_input_is_a_json_4xx_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let seed: Vec<_> = (0..3)
        .map(|i| json!({"topic": "seed", "name": "n", "args": {"i": i}}))
        .collect();
    publish(&server.url, &json!({ "events": seed })).await;
    let before = all_events(&server.url).await;
    let (_, topics_before) = get_json(&format!("{}/api/v1/topics", server.url)).await;

    let big_event = format!(
        r#"{{"topic":"t","name":"n","args":"{}"}}"#,
        "x".repeat(1024 * 1024 + 10)
    );
    let mut cases = vec![
        post(
            "malformed JSON",
            r#"{"topic": "t", "name": "#,
            400,
            "invalid_json",
        ),
        post("not an object", "[1,2,3]", 400, "invalid_json"),
        post(
            "wrong type",
            r#"{"topic":"t","name":5}"#,
            400,
            "invalid_json",
        ),
        post("missing name", r#"{"topic":"t"}"#, 400, "invalid_json"),
        post(
            "unknown field",
            r#"{"topic":"t","name":"n","colour":"red"}"#,
            400,
            "invalid_json",
        ),
        post(
            "negative expected_seq",
            r#"{"topic":"t","name":"n","expected_seq":-1}"#,
            400,
            "invalid_json",
        ),
        post(
            "bad topic",
            r#"{"topic":"a..b","name":"n"}"#,
            400,
            "invalid_topic",
        ),
        post(
            "wildcard topic",
            r#"{"topic":"orders.*","name":"n"}"#,
            400,
            "invalid_topic",
        ),
        post(
            "empty name",
            r#"{"topic":"t","name":""}"#,
            400,
            "invalid_event",
        ),
        post("empty batch", r#"{"events":[]}"#, 400, "invalid_event"),
        post(
            "one bad event in a batch",
            r#"{"events":[{"topic":"t","name":"n"},{"topic":"t"}]}"#,
            400,
            "invalid_json",
        ),
        post("oversized event", big_event, 413, "payload_too_large"),
        Case {
            what: "not JSON content",
            headers: vec![("content-type", "text/plain")],
            ..post(
                "",
                r#"{"topic":"t","name":"n"}"#,
                415,
                "unsupported_media_type",
            )
        },
        Case {
            what: "conflicting idempotency key",
            headers: vec![
                ("content-type", "application/json"),
                ("idempotency-key", "a"),
            ],
            ..post(
                "",
                r#"{"topic":"t","name":"n","id":"b"}"#,
                400,
                "invalid_event",
            )
        },
        get(
            "bad wildcard",
            "/api/v1/events/stream?topic=a.>.b",
            400,
            "invalid_filter",
        ),
        get(
            "bad filter JSON",
            "/api/v1/events/stream?filter=%7Bbad",
            400,
            "invalid_filter",
        ),
        get(
            "unknown filter field",
            "/api/v1/events/history?filter=%7B%22colour%22%3A1%7D",
            400,
            "invalid_filter",
        ),
        get(
            "non-numeric since",
            "/api/v1/events/stream?since=abc",
            400,
            "invalid_cursor",
        ),
        get(
            "since beyond head",
            "/api/v1/events/stream?since=999",
            400,
            "invalid_cursor",
        ),
        get(
            "bad cursor",
            "/api/v1/events/history?cursor=zz",
            400,
            "invalid_cursor",
        ),
        get(
            "negative limit",
            "/api/v1/events/history?limit=-1",
            400,
            "invalid_parameter",
        ),
        get(
            "zero limit",
            "/api/v1/events/history?limit=0",
            400,
            "invalid_parameter",
        ),
        get(
            "limit too large",
            "/api/v1/events/history?limit=5000",
            400,
            "invalid_parameter",
        ),
        get(
            "bad since_time",
            "/api/v1/events/history?since_time=yesterday",
            400,
            "invalid_parameter",
        ),
        get(
            "bad bool",
            "/api/v1/events/stream?snapshot_only=maybe",
            400,
            "invalid_parameter",
        ),
        get(
            "zero heartbeat",
            "/api/v1/events/stream?heartbeat=0",
            400,
            "invalid_parameter",
        ),
        get(
            "unknown parameter",
            "/api/v1/events/history?colour=red",
            400,
            "invalid_parameter",
        ),
        get("unknown path", "/api/v1/nothing-here", 404, "not_found"),
        Case {
            what: "wrong method",
            method: "DELETE",
            ..get("", "/api/v1/events", 405, "method_not_allowed")
        },
    ];
    cases.push(Case {
        what: "non-numeric Last-Event-ID",
        headers: vec![("last-event-id", "xyz")],
        ..get("", "/api/v1/events/stream", 400, "invalid_cursor")
    });

    let client = http();
    for case in cases {
        let method = reqwest::Method::from_bytes(case.method.as_bytes()).unwrap();
        let mut req = client.request(method, format!("{}{}", server.url, case.path));
        for (k, v) in &case.headers {
            req = req.header(*k, *v);
        }
        if let Some(body) = case.body {
            req = req.body(body);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.what));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{}: body is not JSON: {text:?}", case.what));
        assert_eq!(status, case.status, "{}: {body}", case.what);
        assert_eq!(body["error"]["code"], case.code, "{}: {body}", case.what);
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            !message.is_empty(),
            "{}: a message says what is wrong",
            case.what
        );
    }

    let (status, _) = get_json(&format!("{}/healthz", server.url)).await;
    assert_eq!(status, 200, "the server stayed up");
    assert_eq!(
        all_events(&server.url).await,
        before,
        "the log is unchanged"
    );
    let (_, topics_after) = get_json(&format!("{}/api/v1/topics", server.url)).await;
    assert_eq!(topics_after, topics_before);
}

/// A body over the request limit is refused from its Content-Length, before it is sent:
/// a client that asks `Expect: 100-continue` (curl does for large bodies) gets the 413
/// instead of a go-ahead, and uploads nothing.
#[tokio::test]
async fn an_oversized_request_is_refused_before_its_body_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut sock = TcpStream::connect(&server.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/events HTTP/1.1\r\nHost: {}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nexpect: 100-continue\r\n\r\n",
        server.addr,
        9 * 1024 * 1024
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let n = sock.read(&mut buf).await.unwrap();
            answer.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&answer);
            if n == 0 || (text.contains("\r\n\r\n") && text.ends_with('}')) {
                return text.into_owned();
            }
        }
    })
    .await
    .expect("an answer without the body");
    assert!(read.starts_with("HTTP/1.1 413"), "{read}");
    assert!(
        !read.contains("100 Continue"),
        "no go-ahead for an oversized body"
    );
    let body: Value = serde_json::from_str(read.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");
    assert!(all_events(&server.url).await.is_empty());
}
