//! The client against a scripted HTTP server on `127.0.0.1:0`: each accepted connection
//! gets the next canned answer, and every request is recorded. This pins down the wire
//! behaviour (query parameters, `Last-Event-ID`, reconnects, error decoding) without the
//! real server; end-to-end tests against it live elsewhere.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tributary_client::{
    Backoff, Client, ClientError, HistoryQuery, SubscribeOptions, SubscriptionEvent,
};
use tributary_core::{
    AckWait, Args, Event, Filter, NewEvent, Timestamp, Topic, TopicConfig, TopicInfo, TopicPattern,
};

/// One canned answer.
struct Answer {
    status: u16,
    content_type: &'static str,
    /// Written one at a time with a pause between, so the client reads them apart.
    chunks: Vec<Vec<u8>>,
    /// Keep the connection open (silent) after the chunks instead of closing it.
    hold_open: bool,
}

impl Answer {
    fn sse(chunks: &[&str]) -> Answer {
        Answer {
            status: 200,
            content_type: "text/event-stream",
            chunks: chunks.iter().map(|c| c.as_bytes().to_vec()).collect(),
            hold_open: false,
        }
    }

    fn json(status: u16, body: &str) -> Answer {
        Answer {
            status,
            content_type: "application/json",
            chunks: vec![body.as_bytes().to_vec()],
            hold_open: false,
        }
    }
}

/// A request as received: the head (request line and headers) and the body.
#[derive(Clone, Debug)]
struct Request {
    head: String,
    body: String,
}

impl Request {
    fn line(&self) -> &str {
        self.head.lines().next().unwrap_or_default()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

struct FakeServer {
    url: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl FakeServer {
    async fn start(answers: Vec<Answer>) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&requests);
        tokio::spawn(async move {
            for answer in answers {
                let (mut sock, _) = listener.accept().await.unwrap();
                let request = read_request(&mut sock).await;
                recorded.lock().unwrap().push(request);
                let sse = answer.content_type == "text/event-stream";
                let mut head = format!(
                    "HTTP/1.1 {} X\r\ncontent-type: {}\r\nconnection: close\r\n",
                    answer.status, answer.content_type
                );
                if !sse || answer.status != 200 {
                    let len: usize = answer.chunks.iter().map(Vec::len).sum();
                    head.push_str(&format!("content-length: {len}\r\n"));
                }
                head.push_str("\r\n");
                sock.write_all(head.as_bytes()).await.unwrap();
                for chunk in &answer.chunks {
                    sock.write_all(chunk).await.unwrap();
                    sock.flush().await.unwrap();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                if answer.hold_open {
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        drop(sock);
                    });
                }
            }
        });
        FakeServer { url, requests }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

async fn read_request(sock: &mut tokio::net::TcpStream) -> Request {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = sock.read(&mut byte).await.unwrap();
        assert!(n > 0, "client closed before sending a request");
        buf.extend_from_slice(&byte[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut request = Request {
        head,
        body: String::new(),
    };
    let len: usize = request
        .header("content-length")
        .map_or(0, |v| v.parse().unwrap());
    while buf.len() < head_end + len {
        let n = sock.read(&mut byte).await.unwrap();
        buf.extend_from_slice(&byte[..n]);
    }
    request.body = String::from_utf8(buf[head_end..head_end + len].to_vec()).unwrap();
    request
}

fn event(position: u64) -> Event {
    Event {
        position,
        topic: Topic::new("orders.eu").unwrap(),
        seq: position,
        name: "v1.Created".into(),
        args: Args::from_json(r#"{"n":1}"#).unwrap(),
        id: format!("id-{position}"),
        client_id: None,
        session_id: None,
        timestamp: Timestamp(1_767_225_600_000),
    }
}

fn frame(position: u64) -> String {
    format!(
        "id: {position}\ndata: {}\n\n",
        serde_json::to_string(&event(position)).unwrap()
    )
}

fn fast() -> Backoff {
    Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(40),
    }
}

async fn collect(
    sub: &mut tributary_client::Subscription,
) -> Vec<Result<SubscriptionEvent, String>> {
    let mut items = Vec::new();
    let deadline = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(item) = sub.next().await {
            items.push(item.map_err(|e| format!("{e:?}")));
        }
    });
    deadline.await.expect("the subscription should end");
    items
}

#[tokio::test]
async fn subscription_resumes_after_a_close_without_losing_or_doubling() {
    let e3 = frame(3);
    let (e3a, e3b) = e3.split_at(17);
    let server = FakeServer::start(vec![
        Answer::sse(&[
            "retry: 1000\n\n",
            &frame(1),
            &format!("{}event: caught-up\ndata: {{\"position\":2}}\n\n", frame(2)),
            ": heartbeat\n\n",
            e3a,
            e3b,
            // Half an event, then the connection drops: it must not be yielded.
            "id: 4\ndata: {\"posi",
        ]),
        // The server restarted; it replays 2 and 3 (as a careless server might).
        Answer::sse(&[
            &frame(2),
            &frame(3),
            &frame(4),
            "event: caught-up\ndata: {\"position\":4}\n\n",
            &frame(5),
            "event: end\ndata: {\"position\":6}\n\n",
            // Anything after `end` is ignored.
            &frame(7),
        ]),
    ])
    .await;
    let client = Client::new(&server.url).unwrap();
    let mut sub = client.subscribe(SubscribeOptions {
        filter: Filter {
            topics: vec![
                TopicPattern::new("orders.>").unwrap(),
                TopicPattern::new("x").unwrap(),
            ],
            names: vec!["v1.Created".into()],
            ..Filter::default()
        },
        since: Some(0),
        backoff: fast(),
        ..SubscribeOptions::default()
    });
    assert_eq!(sub.last_position(), Some(0));
    let items = collect(&mut sub).await;
    let ev = |p| Ok(SubscriptionEvent::Event(event(p)));
    assert_eq!(
        items,
        vec![
            ev(1),
            ev(2),
            Ok(SubscriptionEvent::CaughtUp { position: 2 }),
            ev(3),
            ev(4),
            Ok(SubscriptionEvent::CaughtUp { position: 4 }),
            ev(5),
        ]
    );
    assert_eq!(
        sub.last_position(),
        Some(6),
        "the end marker moves the cursor"
    );
    assert!(
        sub.next().await.is_none(),
        "an ended subscription stays ended"
    );

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0].line(),
        "GET /api/v1/events/stream?topic=orders.%3E&topic=x&name=v1.Created&since=0 HTTP/1.1"
    );
    assert_eq!(requests[0].header("last-event-id"), None);
    assert_eq!(
        requests[0].header("accept").as_deref(),
        Some("text/event-stream")
    );
    assert_eq!(
        requests[1].line(),
        "GET /api/v1/events/stream?topic=orders.%3E&topic=x&name=v1.Created&since=3 HTTP/1.1"
    );
    assert_eq!(requests[1].header("last-event-id").as_deref(), Some("3"));
}

#[tokio::test]
async fn caught_up_marker_becomes_the_resume_cursor() {
    let server = FakeServer::start(vec![
        Answer::sse(&["event: caught-up\ndata: {\"position\":41}\n\n"]),
        Answer::sse(&[&frame(42), "event: end\ndata: {\"position\":42}\n\n"]),
    ])
    .await;
    let client = Client::new(&server.url).unwrap();
    let mut sub = client.subscribe(SubscribeOptions {
        until: Some(42),
        backoff: fast(),
        ..SubscribeOptions::default()
    });
    assert_eq!(sub.last_position(), None);
    let items = collect(&mut sub).await;
    assert_eq!(
        items,
        vec![
            Ok(SubscriptionEvent::CaughtUp { position: 41 }),
            Ok(SubscriptionEvent::Event(event(42))),
        ]
    );
    let requests = server.requests();
    assert_eq!(
        requests[0].line(),
        "GET /api/v1/events/stream?since=now&until=42 HTTP/1.1"
    );
    assert_eq!(
        requests[1].line(),
        "GET /api/v1/events/stream?since=41&until=42 HTTP/1.1"
    );
    assert_eq!(requests[1].header("last-event-id").as_deref(), Some("41"));
}

#[tokio::test]
async fn a_4xx_on_connect_is_final() {
    let server = FakeServer::start(vec![Answer::json(
        400,
        r#"{"error":{"code":"invalid_filter","message":"bad pattern \"a..b\""}}"#,
    )])
    .await;
    let client = Client::new(&server.url).unwrap();
    let mut sub = client.subscribe(SubscribeOptions {
        backoff: fast(),
        ..SubscribeOptions::default()
    });
    match sub.next().await {
        Some(Err(ClientError::Api { status, code, .. })) => {
            assert_eq!((status.as_u16(), code.as_str()), (400, "invalid_filter"));
        }
        other => panic!("expected a final api error, got {other:?}"),
    }
    assert!(sub.next().await.is_none());
}

#[tokio::test]
async fn server_errors_and_silent_connections_are_retried() {
    let mut silent = Answer::sse(&["retry: 1000\n\n"]);
    silent.hold_open = true;
    let server = FakeServer::start(vec![
        Answer::json(503, r#"{"error":{"code":"shutting_down","message":"bye"}}"#),
        Answer::json(502, "<html>bad gateway</html>"),
        // Connected, then nothing: not even a heartbeat within three intervals.
        silent,
        Answer::sse(&[&frame(1), "event: end\ndata: {\"position\":1}\n\n"]),
    ])
    .await;
    let client = Client::new(&server.url).unwrap();
    let mut sub = client.subscribe(SubscribeOptions {
        snapshot_only: true,
        heartbeat: Some(Duration::from_secs(1)),
        backoff: fast(),
        ..SubscribeOptions::default()
    });
    let items = collect(&mut sub).await;
    assert_eq!(items, vec![Ok(SubscriptionEvent::Event(event(1)))]);
    let requests = server.requests();
    assert_eq!(requests.len(), 4);
    assert!(
        requests[3]
            .line()
            .contains("?since=now&snapshot_only=true&heartbeat=1 "),
        "{}",
        requests[3].line()
    );
}

#[tokio::test]
async fn a_stream_that_is_not_sse_is_an_error() {
    let server = FakeServer::start(vec![Answer::json(200, "{}")]).await;
    let client = Client::new(&server.url).unwrap();
    let mut sub = client.subscribe(SubscribeOptions::default());
    assert!(matches!(
        sub.next().await,
        Some(Err(ClientError::Decode { .. }))
    ));
    assert!(sub.next().await.is_none());
}

#[tokio::test]
async fn publish_sends_the_event_and_reads_the_answer() {
    let server = FakeServer::start(vec![
        Answer::json(201, r#"{"position":9,"seq":2,"duplicate":false}"#),
        Answer::json(
            409,
            r#"{"error":{"code":"seq_conflict","message":"no","topic":"t","expected_seq":1,"head_seq":2}}"#,
        ),
        Answer::json(
            200,
            r#"{"events":[{"position":10,"seq":3,"duplicate":false},{"position":9,"seq":2,"duplicate":true}]}"#,
        ),
    ])
    .await;
    let client = Client::new(&server.url).unwrap();
    let new = NewEvent::new(
        Topic::new("t").unwrap(),
        "n",
        Args::from_json(r#"{"a":[1, 2]}"#).unwrap(),
    )
    .with_id("k1");
    let appended = client.publish(new.clone()).await.unwrap();
    assert_eq!(
        (appended.position, appended.seq, appended.duplicate),
        (9, 2, false)
    );

    let conflict = client
        .publish(new.clone().with_expected_seq(1))
        .await
        .unwrap_err();
    assert!(
        matches!(&conflict, ClientError::SeqConflict { topic, expected_seq: 1, head_seq: 2 } if topic == "t"),
        "{conflict:?}"
    );

    let answers = client
        .publish_batch(vec![new.clone(), new.clone()])
        .await
        .unwrap();
    assert_eq!(answers.len(), 2);
    assert!(answers[1].duplicate);
    assert!(client.publish_batch(vec![]).await.unwrap().is_empty());

    let requests = server.requests();
    assert_eq!(requests.len(), 3, "an empty batch sends nothing");
    assert_eq!(requests[0].line(), "POST /api/v1/events HTTP/1.1");
    assert_eq!(
        requests[0].body,
        r#"{"topic":"t","name":"n","args":{"a":[1,2]},"id":"k1"}"#
    );
    assert!(requests[1].body.contains(r#""expected_seq":1"#));
    let batch: serde_json::Value = serde_json::from_str(&requests[2].body).unwrap();
    assert_eq!(batch["events"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn history_and_topics_decode_pages() {
    let page = serde_json::json!({
        "events": [event(1), event(2)],
        "next_cursor": "2",
        "has_more": true,
    });
    let server = FakeServer::start(vec![
        Answer::json(200, &page.to_string()),
        Answer::json(
            200,
            r#"{"topics":[{"topic":"orders.eu","head_seq":2,"event_count":2,"last_position":2}]}"#,
        ),
        Answer::json(200, "not json"),
    ])
    .await;
    let client = Client::new(&format!("{}/", server.url)).unwrap();
    let query = HistoryQuery {
        filter: Filter::topic(TopicPattern::new("orders.*").unwrap()),
        since: Some(0),
        limit: Some(2),
        ..HistoryQuery::default()
    };
    let got = client.history(&query).await.unwrap();
    assert_eq!(got.events, vec![event(1), event(2)]);
    assert!(got.has_more);
    assert_eq!(got.next_cursor, "2");

    let topics = client.topics().await.unwrap();
    assert_eq!(topics[0].topic.as_str(), "orders.eu");
    assert_eq!(topics[0].last_position, 2);

    let bad = client.history(&query.after(&got)).await.unwrap_err();
    assert!(matches!(bad, ClientError::Decode { .. }), "{bad:?}");

    let requests = server.requests();
    assert_eq!(
        requests[0].line(),
        "GET /api/v1/events/history?topic=orders.*&since=0&limit=2 HTTP/1.1"
    );
    assert_eq!(requests[1].line(), "GET /api/v1/topics HTTP/1.1");
    assert_eq!(
        requests[2].line(),
        "GET /api/v1/events/history?topic=orders.*&cursor=2&limit=2 HTTP/1.1"
    );
}

#[tokio::test]
async fn connection_refused_is_an_http_error_for_requests() {
    // Bind then drop to get a port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = Client::new(&format!("http://127.0.0.1:{port}")).unwrap();
    let err = client.topics().await.unwrap_err();
    assert!(matches!(err, ClientError::Http(_)), "{err:?}");
}

#[tokio::test]
async fn group_calls_send_the_documented_requests_and_keep_error_codes() {
    let event = r#"{"position":8,"topic":"jobs.7","seq":1,"parent_seq":0,"name":"v1.Job","args":{},"id":"e8","timestamp":"2026-11-22T03:00:00.000Z"}"#;
    let server = FakeServer::start(vec![
        Answer::json(
            200,
            &format!(r#"{{"deliveries":[{{"delivery_id":"8.1","attempt":1,"event":{event}}}]}}"#),
        ),
        Answer::json(200, r#"{"acked":1}"#),
        Answer::json(
            409,
            r#"{"error":{"code":"stale_delivery","message":"8.1 is not a current delivery"}}"#,
        ),
        Answer::json(200, r#"{"nacked":1}"#),
        Answer::json(200, r#"{"terminated":1}"#),
        Answer::json(200, r#"{"replayed":2}"#),
        Answer::json(200, r#"{"replayed":1}"#),
        Answer::json(
            404,
            r#"{"error":{"code":"not_found","message":"no group named \"gone\""}}"#,
        ),
        Answer::json(204, ""),
    ])
    .await;
    let client = Client::new(&server.url).unwrap();

    let pulled = client
        .pull("work", "w-1", 10, Duration::from_millis(5000))
        .await
        .unwrap();
    assert_eq!(pulled.len(), 1);
    assert_eq!(
        (pulled[0].delivery_id.as_str(), pulled[0].event.position),
        ("8.1", 8)
    );
    assert_eq!(client.ack("work", &["8.1"]).await.unwrap(), 1);
    let stale = client
        .ack_with("work", &["8.1"], AckWait::Applied)
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Some("stale_delivery"), "{stale:?}");
    let n = client
        .nack(
            "work",
            &[String::from("8.2")],
            Some(Duration::from_millis(1500)),
            Some("exit status 1"),
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(client.term("work", &["8.3"], "poison").await.unwrap(), 1);
    assert_eq!(client.replay("work", None).await.unwrap(), 2);
    assert_eq!(client.replay("work", Some(&[8])).await.unwrap(), 1);
    let missing = client.group("gone").await.unwrap_err();
    assert_eq!(missing.code(), Some("not_found"), "{missing:?}");
    client.discard("work", 8).await.unwrap();
    // An empty list is answered without a request.
    assert_eq!(client.ack::<&str>("work", &[]).await.unwrap(), 0);

    let requests = server.requests();
    let lines: Vec<&str> = requests.iter().map(Request::line).collect();
    assert_eq!(
        lines,
        [
            "POST /api/v1/groups/work/pull HTTP/1.1",
            "POST /api/v1/groups/work/ack HTTP/1.1",
            "POST /api/v1/groups/work/ack HTTP/1.1",
            "POST /api/v1/groups/work/nack HTTP/1.1",
            "POST /api/v1/groups/work/term HTTP/1.1",
            "POST /api/v1/groups/work/dlq/replay HTTP/1.1",
            "POST /api/v1/groups/work/dlq/replay HTTP/1.1",
            "GET /api/v1/groups/gone HTTP/1.1",
            "DELETE /api/v1/groups/work/dlq/8 HTTP/1.1",
        ]
    );
    let body = |i: usize| -> serde_json::Value { serde_json::from_str(&requests[i].body).unwrap() };
    assert_eq!(
        body(0),
        serde_json::json!({"member": "w-1", "max": 10, "wait_ms": 5000})
    );
    assert_eq!(body(1), serde_json::json!({"delivery_ids": ["8.1"]}));
    assert_eq!(
        body(2),
        serde_json::json!({"delivery_ids": ["8.1"], "durable": false})
    );
    assert_eq!(
        body(3),
        serde_json::json!({"delivery_ids": ["8.2"], "delay": "1500ms", "reason": "exit status 1"})
    );
    assert_eq!(
        body(4),
        serde_json::json!({"delivery_ids": ["8.3"], "reason": "poison"})
    );
    assert_eq!(body(5), serde_json::json!({}));
    assert_eq!(body(6), serde_json::json!({"ids": [8]}));
}

/// A topic as the server answers it, after retention kept the newest 3 of 10 events.
const TOPIC_INFO: &str = r#"{"topic":"orders.eu","head_seq":10,"event_count":3,"last_position":10,"pruned_seq":7,"pruned_position":7,"config":{"max_age":"7d","max_events":3}}"#;

#[tokio::test]
async fn topic_calls_send_the_documented_requests_and_map_errors() {
    let server = FakeServer::start(vec![
        Answer::json(201, TOPIC_INFO),
        Answer::json(
            409,
            r#"{"error":{"code":"topic_exists","message":"topic orders.eu has settings already; change them with PUT /api/v1/topics/orders.eu"}}"#,
        ),
        Answer::json(200, TOPIC_INFO),
        Answer::json(
            200,
            r#"{"topic":"orders.eu","head_seq":10,"event_count":3,"last_position":10,"pruned_seq":7,"pruned_position":7,"config":{"max_events":5}}"#,
        ),
        Answer::json(
            400,
            r#"{"error":{"code":"invalid_parameter","message":"invalid max_events: must be at least 1"}}"#,
        ),
        Answer::json(200, r#"{"topic":"orders.eu","deleted_events":3}"#),
        Answer::json(
            404,
            r#"{"error":{"code":"not_found","message":"no topic named orders.eu"}}"#,
        ),
        Answer::json(
            404,
            r#"{"error":{"code":"not_found","message":"no topic named orders.eu"}}"#,
        ),
        Answer::json(
            200,
            &format!(r#"{{"topics":[{TOPIC_INFO},{{"topic":"plain","head_seq":1,"event_count":1,"last_position":11,"pruned_seq":0,"pruned_position":0}}]}}"#),
        ),
    ])
    .await;
    let client = Client::new(&server.url).unwrap();
    let topic = Topic::new("orders.eu").unwrap();
    let config = TopicConfig {
        max_age: Some(Duration::from_secs(7 * 86_400)),
        max_events: Some(3),
        max_event_bytes: Some(65_536),
    };

    let created: TopicInfo = client.create_topic(&topic, &config).await.unwrap();
    assert_eq!((created.event_count, created.pruned_seq), (3, 7));
    assert_eq!(
        created.config.as_ref().and_then(|c| c.max_age),
        Some(Duration::from_secs(7 * 86_400))
    );
    let exists = client.create_topic(&topic, &config).await.unwrap_err();
    assert_eq!(exists.code(), Some("topic_exists"), "{exists:?}");
    assert_eq!(exists.status().map(|s| s.as_u16()), Some(409));

    let shown = client.topic(&topic).await.unwrap();
    assert_eq!(shown.as_ref(), Some(&created));

    let five = TopicConfig {
        max_events: Some(5),
        ..TopicConfig::default()
    };
    let set = client.set_topic(&topic, &five).await.unwrap();
    assert_eq!(set.config, Some(five.clone()));
    let zero = TopicConfig {
        max_events: Some(0),
        ..TopicConfig::default()
    };
    let refused = client.set_topic(&topic, &zero).await.unwrap_err();
    assert_eq!(refused.code(), Some("invalid_parameter"), "{refused:?}");

    assert_eq!(client.delete_topic(&topic).await.unwrap(), 3);
    assert_eq!(client.topic(&topic).await.unwrap(), None, "404 is no topic");
    let missing = client.delete_topic(&topic).await.unwrap_err();
    assert_eq!(missing.code(), Some("not_found"), "{missing:?}");

    let listed = client.topics().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0], created);
    assert_eq!(listed[1].config, None, "a topic without settings");

    let requests = server.requests();
    let lines: Vec<&str> = requests.iter().map(Request::line).collect();
    assert_eq!(
        lines,
        [
            "POST /api/v1/topics HTTP/1.1",
            "POST /api/v1/topics HTTP/1.1",
            "GET /api/v1/topics/orders.eu HTTP/1.1",
            "PUT /api/v1/topics/orders.eu HTTP/1.1",
            "PUT /api/v1/topics/orders.eu HTTP/1.1",
            "DELETE /api/v1/topics/orders.eu HTTP/1.1",
            "GET /api/v1/topics/orders.eu HTTP/1.1",
            "DELETE /api/v1/topics/orders.eu HTTP/1.1",
            "GET /api/v1/topics HTTP/1.1",
        ]
    );
    let body = |i: usize| -> serde_json::Value { serde_json::from_str(&requests[i].body).unwrap() };
    assert_eq!(
        body(0),
        serde_json::json!({"topic": "orders.eu", "max_age": "7d", "max_events": 3, "max_event_bytes": 65536})
    );
    assert_eq!(body(3), serde_json::json!({"max_events": 5}));
    assert_eq!(
        requests[3].header("content-type").as_deref(),
        Some("application/json")
    );
}

#[tokio::test]
async fn truncated_is_yielded_once_and_does_not_move_the_cursor() {
    let server = FakeServer::start(vec![
        // The stream from position 1: retention removed up to 7, then the connection drops.
        Answer::sse(&[
            "retry: 1000\n\n",
            "event: truncated\ndata: {\"after\":1,\"pruned_through\":7}\n\n",
        ]),
        // The reconnect is told the same again, which is not news; then what is left,
        // and later a removal that is.
        Answer::sse(&[
            "retry: 1000\n\n",
            "event: truncated\ndata: {\"after\":1,\"pruned_through\":7}\n\n",
            &frame(8),
            &frame(9),
            "event: caught-up\ndata: {\"position\":9}\n\n",
            "event: truncated\ndata: {\"after\":9,\"pruned_through\":12}\n\n",
            &frame(13),
            "event: end\ndata: {\"position\":13}\n\n",
        ]),
    ])
    .await;
    let client = Client::new(&server.url).unwrap();
    let mut sub = client.subscribe(SubscribeOptions {
        filter: Filter::topic(TopicPattern::new("orders.eu").unwrap()),
        since: Some(1),
        until: Some(13),
        backoff: fast(),
        ..SubscribeOptions::default()
    });
    let first = sub.next().await.unwrap().unwrap();
    assert_eq!(
        first,
        SubscriptionEvent::Truncated {
            after: 1,
            pruned_through: 7
        }
    );
    assert_eq!(sub.last_position(), Some(1), "a truncation is no delivery");
    let rest = collect(&mut sub).await;
    let ev = |p| Ok(SubscriptionEvent::Event(event(p)));
    assert_eq!(
        rest,
        vec![
            ev(8),
            ev(9),
            Ok(SubscriptionEvent::CaughtUp { position: 9 }),
            Ok(SubscriptionEvent::Truncated {
                after: 9,
                pruned_through: 12
            }),
            ev(13),
        ]
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[1].line(),
        "GET /api/v1/events/stream?topic=orders.eu&since=1&until=13 HTTP/1.1",
        "the reconnect resumes where the last delivery was, not past the removal"
    );
    assert_eq!(requests[1].header("last-event-id").as_deref(), Some("1"));
}

#[tokio::test]
async fn an_expired_history_cursor_fails_and_its_resume_cursor_reads_on() {
    let page = serde_json::json!({
        "events": [event(8), event(9), event(10)],
        "next_cursor": "10",
        "has_more": false,
    });
    let server = FakeServer::start(vec![
        // As the server words it (crates/server/src/error.rs).
        Answer::json(
            410,
            r#"{"error":{"code":"cursor_expired","message":"events after position 1 up to 7 may have been removed by retention","cursor":"1","pruned_through":7,"earliest_position":8,"resume_cursor":"1~7"}}"#,
        ),
        Answer::json(200, &page.to_string()),
    ])
    .await;
    let client = Client::new(&server.url).unwrap();
    let query = HistoryQuery {
        filter: Filter::topic(TopicPattern::new("orders.eu").unwrap()),
        cursor: Some("1".into()),
        ..HistoryQuery::default()
    };
    let expired = client.history(&query).await.unwrap_err();
    assert_eq!(expired.code(), Some("cursor_expired"));
    let ClientError::CursorExpired {
        pruned_through,
        earliest_position,
        resume_cursor,
        ..
    } = expired
    else {
        panic!("expected CursorExpired, got {expired:?}");
    };
    assert_eq!((pruned_through, earliest_position), (7, Some(8)));
    let resumed = client
        .history(&query.with_cursor(resume_cursor))
        .await
        .unwrap();
    assert_eq!(resumed.events, vec![event(8), event(9), event(10)]);

    let requests = server.requests();
    assert_eq!(
        requests[0].line(),
        "GET /api/v1/events/history?topic=orders.eu&cursor=1 HTTP/1.1"
    );
    // `~` goes percent-encoded in a query string, which the server decodes.
    assert_eq!(
        requests[1].line(),
        "GET /api/v1/events/history?topic=orders.eu&cursor=1%7E7 HTTP/1.1"
    );
}
