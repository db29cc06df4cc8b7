//! The bytes on the wire, over raw TCP: SSE streams on the lean path (chunked framing,
//! resume, a client going away, an error answer), and hyper's path for everything else
//! (keep-alive, heads arriving in pieces, heads too large).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tributary_server::Config;

use super::common::{Spawned, code, http, spawn};

const WAIT: Duration = Duration::from_secs(10);

/// A response read off a raw connection: status, headers (names lowercased), body
/// (de-chunked when it was chunked).
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

type Reader = BufReader<TcpStream>;

async fn connect(s: &Spawned) -> Reader {
    let socket = TcpStream::connect(s.addr).await.unwrap();
    socket.set_nodelay(true).unwrap();
    BufReader::new(socket)
}

async fn line(r: &mut Reader) -> String {
    let mut line = String::new();
    tokio::time::timeout(WAIT, r.read_line(&mut line))
        .await
        .expect("a line in time")
        .unwrap();
    line.trim_end_matches(['\r', '\n']).to_owned()
}

/// Reads a status line and headers.
async fn read_head(r: &mut Reader) -> (u16, Vec<(String, String)>) {
    let status_line = line(r).await;
    assert!(
        status_line.starts_with("HTTP/1.1 "),
        "status line {status_line:?}"
    );
    let status = status_line[9..12].parse().unwrap();
    let mut headers = Vec::new();
    loop {
        let header = line(r).await;
        if header.is_empty() {
            return (status, headers);
        }
        let (name, value) = header.split_once(':').unwrap();
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
}

/// The next chunk of a chunked body; `None` for the last (empty) one.
async fn chunk(r: &mut Reader) -> Option<Vec<u8>> {
    let size = line(r).await;
    let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16)
        .unwrap_or_else(|_| panic!("chunk size {size:?}"));
    let mut data = vec![0; size + 2];
    tokio::time::timeout(WAIT, r.read_exact(&mut data))
        .await
        .expect("a chunk in time")
        .unwrap();
    assert_eq!(&data[size..], b"\r\n");
    data.truncate(size);
    (size > 0).then_some(data)
}

/// Reads one whole response (a request on the connection must be complete).
async fn read_answer(r: &mut Reader) -> Answer {
    let (status, headers) = read_head(r).await;
    let mut answer = Answer {
        status,
        headers,
        body: Vec::new(),
    };
    if answer.header("transfer-encoding") == Some("chunked") {
        while let Some(data) = chunk(r).await {
            answer.body.extend(data);
        }
    } else if let Some(len) = answer.header("content-length") {
        answer.body = vec![0; len.parse().unwrap()];
        r.read_exact(&mut answer.body).await.unwrap();
    }
    answer
}

/// Whether the server closed the connection (EOF, or a reset) within the wait.
async fn closed(r: &mut Reader) -> bool {
    let mut rest = Vec::new();
    match tokio::time::timeout(WAIT, r.read_to_end(&mut rest)).await {
        Ok(Ok(_)) => rest.is_empty(),
        Ok(Err(_)) => true,
        Err(_) => false,
    }
}

/// SSE frames decoded from the chunks of a stream.
struct Frames {
    r: Reader,
    text: String,
}

impl Frames {
    /// The next frame (the text between blank lines), however the chunks split it.
    async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.text.find("\n\n") {
                let frame = self.text[..end].to_owned();
                self.text.drain(..end + 2);
                return Some(frame);
            }
            let data = chunk(&mut self.r).await?;
            self.text.push_str(std::str::from_utf8(&data).unwrap());
        }
    }

    /// The next frame that is not a heartbeat.
    async fn next_content(&mut self) -> Option<String> {
        loop {
            let frame = self.next().await?;
            if !frame.starts_with(':') {
                return Some(frame);
            }
        }
    }
}

/// Opens a stream on a raw connection and checks its head.
async fn open_stream(s: &Spawned, target: &str, extra_headers: &str) -> Frames {
    let mut r = connect(s).await;
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: tributary\r\n{extra_headers}Accept: text/event-stream\r\n\r\n"
    );
    r.get_mut().write_all(request.as_bytes()).await.unwrap();
    let (status, headers) = read_head(&mut r).await;
    let answer = Answer {
        status,
        headers,
        body: Vec::new(),
    };
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.header("content-type"), Some("text/event-stream"));
    assert_eq!(answer.header("transfer-encoding"), Some("chunked"));
    assert_eq!(answer.header("cache-control"), Some("no-cache"));
    assert_eq!(answer.header("content-length"), None);
    Frames {
        r,
        text: String::new(),
    }
}

async fn publish(s: &Spawned, topic: &str) -> u64 {
    let resp = http()
        .post(format!("http://{}/api/v1/events", s.addr))
        .json(&json!({"topic": topic, "name": "n"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let body: Value = resp.json().await.unwrap();
    body["position"].as_u64().unwrap()
}

/// A stream of topic `x` from `since=now`, read past `retry` and `caught-up`: live.
async fn open_live(s: &Spawned) -> Frames {
    let mut frames = open_stream(s, "/api/v1/events/stream?topic=x&since=now", "").await;
    assert_eq!(frames.next().await.as_deref(), Some("retry: 1000"));
    let caught_up = frames.next_content().await.unwrap();
    assert!(caught_up.starts_with("event: caught-up\n"), "{caught_up:?}");
    frames
}

fn id_of(frame: &str) -> u64 {
    frame
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap_or_else(|| panic!("no id in {frame:?}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn an_sse_stream_is_chunked_and_resumes_from_last_event_id() {
    let s = spawn(Config::default()).await;
    let mut frames = open_live(&s).await;

    let first = publish(&s, "x").await;
    let event = frames.next_content().await.unwrap();
    assert_eq!(id_of(&event), first);
    assert!(event.contains("\"topic\":\"x\""), "{event:?}");
    drop(frames);

    let second = publish(&s, "x").await;
    let third = publish(&s, "x").await;
    let resume = format!("Last-Event-ID: {first}\r\n");
    let mut frames = open_stream(&s, "/api/v1/events/stream?topic=x&since=0", &resume).await;
    assert_eq!(frames.next().await.as_deref(), Some("retry: 1000"));
    assert_eq!(id_of(&frames.next_content().await.unwrap()), second);
    assert_eq!(id_of(&frames.next_content().await.unwrap()), third);
    let caught_up = frames.next_content().await.unwrap();
    assert!(caught_up.starts_with("event: caught-up\n"), "{caught_up:?}");
}

#[tokio::test]
async fn a_finished_stream_ends_its_chunks_and_closes() {
    let s = spawn(Config::default()).await;
    publish(&s, "x").await;
    let mut frames = open_stream(&s, "/api/v1/events/stream?topic=x&snapshot_only=true", "").await;
    assert_eq!(frames.next().await.as_deref(), Some("retry: 1000"));
    assert_eq!(id_of(&frames.next_content().await.unwrap()), 1);
    assert!(
        frames
            .next_content()
            .await
            .unwrap()
            .starts_with("event: caught-up\n")
    );
    assert!(
        frames
            .next_content()
            .await
            .unwrap()
            .starts_with("event: end\n")
    );
    // The last chunk, then the server closes.
    assert_eq!(frames.next().await, None);
    assert!(closed(&mut frames.r).await);
}

/// `GET /api/v1/connections`.
async fn connections(s: &Spawned) -> Value {
    http()
        .get(format!("http://{}/api/v1/connections", s.addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn listed(s: &Spawned) -> usize {
    connections(s).await["connections"]
        .as_array()
        .unwrap()
        .len()
}

#[tokio::test]
async fn a_client_closing_its_socket_leaves_the_connection_list() {
    let s = spawn(Config::default()).await;
    let mut frames = open_live(&s).await;
    // Bytes a client sends mid-stream are ignored.
    frames.r.get_mut().write_all(b"stray bytes").await.unwrap();
    assert_eq!(listed(&s).await, 1);
    let remote = frames.r.get_ref().local_addr().unwrap().to_string();
    let list = connections(&s).await;
    assert_eq!(list["connections"][0]["remote_addr"], remote.as_str());

    drop(frames);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while listed(&s).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed stream is still listed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_refused_stream_gets_the_json_error_and_the_connection_closes() {
    let s = spawn(Config::default()).await;
    let mut r = connect(&s).await;
    r.get_mut()
        .write_all(b"GET /api/v1/events/stream?since=abc HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let answer = read_answer(&mut r).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(answer.header("date").is_some());
    let body = answer.json();
    assert_eq!(code(&body), "invalid_cursor");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("since"),
        "{body}"
    );
    assert!(closed(&mut r).await);

    // The same answer as through an HTTP client, which sees what it saw before.
    let resp = http()
        .get(format!("http://{}/api/v1/events/stream?since=abc", s.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(resp.json::<Value>().await.unwrap(), body);
}

#[tokio::test]
async fn other_requests_keep_the_connection_alive() {
    let s = spawn(Config::default()).await;
    let mut r = connect(&s).await;
    let event = r#"{"topic":"k","name":"kept"}"#;
    let publish = format!(
        "POST /api/v1/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{event}",
        event.len()
    );
    r.get_mut().write_all(publish.as_bytes()).await.unwrap();
    let answer = read_answer(&mut r).await;
    assert_eq!(answer.status, 201, "{answer:?}");
    assert_ne!(answer.header("connection"), Some("close"));

    r.get_mut()
        .write_all(b"GET /api/v1/events/history?topic=k HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let answer = read_answer(&mut r).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["events"][0]["name"], "kept");
}

/// Writes `request` a few bytes at a time, each write its own segment.
async fn trickle(r: &mut Reader, request: &[u8]) {
    for piece in request.chunks(97) {
        r.get_mut().write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test]
async fn heads_arriving_in_pieces_are_served_on_both_paths() {
    let s = spawn(Config::default()).await;
    // Past the first head buffer, so that it grows while the head comes in.
    let pad = "p".repeat(3000);

    let mut r = connect(&s).await;
    let request = format!("GET /healthz HTTP/1.1\r\nHost: t\r\nX-Pad: {pad}\r\n\r\n");
    trickle(&mut r, request.as_bytes()).await;
    assert_eq!(read_answer(&mut r).await.status, 200);

    let mut r = connect(&s).await;
    let request = format!(
        "GET /api/v1/events/stream?topic=x&snapshot_only=true HTTP/1.1\r\nHost: t\r\nX-Pad: {pad}\r\n\r\n"
    );
    trickle(&mut r, request.as_bytes()).await;
    let answer = read_answer(&mut r).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("text/event-stream"));
    let text = String::from_utf8(answer.body).unwrap();
    assert!(text.starts_with("retry: 1000\n\n"), "{text:?}");
    assert!(text.contains("event: end\n"), "{text:?}");
}

#[tokio::test]
async fn a_head_longer_than_the_lean_buffer_is_served_by_hyper() {
    let s = spawn(Config::default()).await;
    let pad = "p".repeat(8000);
    let mut r = connect(&s).await;
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Pad-1: {pad}\r\nX-Pad-2: {pad}\r\nX-Pad-3: {pad}\r\n\r\n"
    );
    r.get_mut().write_all(request.as_bytes()).await.unwrap();
    assert_eq!(read_answer(&mut r).await.status, 200);
    // And the connection is kept for the next request.
    r.get_mut()
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_answer(&mut r).await.status, 200);
}

#[tokio::test]
async fn too_many_headers_get_431() {
    let s = spawn(Config::default()).await;
    let headers: String = (0..150).map(|i| format!("X-H-{i}: v\r\n")).collect();
    for target in ["/healthz", "/api/v1/events/stream?topic=x"] {
        let mut r = connect(&s).await;
        let request = format!("GET {target} HTTP/1.1\r\nHost: t\r\n{headers}\r\n");
        r.get_mut().write_all(request.as_bytes()).await.unwrap();
        let answer = read_answer(&mut r).await;
        assert_eq!(answer.status, 431, "{target}: {answer:?}");
    }
}

#[tokio::test]
async fn an_oversized_head_gets_431() {
    let s = spawn(Config::default()).await;
    let r = connect(&s).await;
    // Beyond what hyper buffers for a head (about 400 KiB).
    let request = format!(
        "GET /api/v1/events/stream HTTP/1.1\r\nHost: t\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(4 * 1024 * 1024)
    );
    let (mut read, mut write) = r.into_inner().into_split();
    // The server stops reading midway, so the write may fail: the answer is what counts.
    let writer = tokio::spawn(async move {
        let _ = write.write_all(request.as_bytes()).await;
        write
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, read.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer:?}");
    writer.abort();
}

#[tokio::test]
async fn a_page_of_history_goes_out_in_few_chunks_of_whole_frames_in_order() {
    let s = spawn(Config::default()).await;
    // 40 events of about 2 KB: one page, more than one chunk's worth.
    let events: Vec<Value> = (0..40)
        .map(|i| json!({"topic": "x", "name": "n", "args": {"i": i, "pad": "p".repeat(2000)}}))
        .collect();
    let resp = http()
        .post(format!("http://{}/api/v1/events", s.addr))
        .json(&json!({ "events": events }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);

    let mut frames = open_stream(
        &s,
        "/api/v1/events/stream?topic=x&since=0&batch_size=100",
        "",
    )
    .await;
    assert_eq!(chunk(&mut frames.r).await.unwrap(), b"retry: 1000\n\n");
    let mut ids = Vec::new();
    let mut chunks = 0;
    loop {
        let data = String::from_utf8(chunk(&mut frames.r).await.unwrap()).unwrap();
        assert!(
            data.ends_with("\n\n"),
            "a chunk ends a frame: {:?}",
            &data[data.len() - 20..]
        );
        if data.starts_with("event: caught-up\n") {
            break;
        }
        chunks += 1;
        ids.extend(data.split_terminator("\n\n").map(id_of));
    }
    assert_eq!(ids, (1..=40).collect::<Vec<u64>>());
    assert!(
        (2..=4).contains(&chunks),
        "40 events of 2 KB in {chunks} chunks"
    );
}
