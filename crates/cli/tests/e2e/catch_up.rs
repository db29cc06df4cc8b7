//! Streams that start behind the head send their history from the catch-up threads,
//! which run in Linux's `SCHED_IDLE` class unless told otherwise, and move back to the
//! main runtime once they have caught up, so that a resumed client's live events are
//! not sent at the catch-up threads' priority.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::harness::{Server, metric, publish};

const WAIT: Duration = Duration::from_secs(20);
/// History large enough that a reader who stops reading leaves the server holding
/// most of it, whatever the kernel's socket buffers take: 24 events of 400 KB.
const BIG_EVENTS: usize = 24;
const PAD: usize = 400 * 1024;

/// `SCHED_IDLE` and `SCHED_OTHER` as `/proc/.../stat` reports them.
const SCHED_IDLE: u32 = 5;
const SCHED_OTHER: u32 = 0;

/// The scheduling policy of each thread of `pid`, by thread name (`comm`, at most 15
/// bytes: the catch-up threads show as `tributary-catch`).
fn thread_policies(pid: u32) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let Ok(stat) = std::fs::read_to_string(task.unwrap().path().join("stat")) else {
            continue; // the thread ended meanwhile
        };
        let (name, rest) = stat.rsplit_once(") ").unwrap();
        let name = name.split_once(" (").unwrap().1.to_owned();
        // Field 41 of stat; the fields after the name start at field 3.
        let policy = rest.split(' ').nth(41 - 3).unwrap().parse().unwrap();
        out.push((name, policy));
    }
    out
}

fn is_catch_up(name: &str) -> bool {
    name.starts_with("tributary-catch")
}

async fn wait_for_metric(url: &str, name: &str, want: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = metric(url, name).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{name} stayed {got}, not {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens an event stream on a socket with a small receive buffer, so that a test that
/// stops reading stalls the server soon.
async fn open_stream(server: &Server, query: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let mut sock = socket.connect(server.addr.parse().unwrap()).await.unwrap();
    let request = format!(
        "GET /api/v1/events/stream?{query} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        server.addr
    );
    sock.write_all(request.as_bytes()).await.unwrap();
    sock
}

/// Reads until `needle` has arrived; a chunk holds whole SSE frames, so a frame's
/// text is never split by chunk framing. Everything read is appended to `seen`.
async fn read_until(sock: &mut TcpStream, seen: &mut Vec<u8>, needle: &str) {
    let deadline = Instant::now() + WAIT;
    let mut buf = vec![0u8; 64 * 1024];
    // Only what came since the last look (and a needle's length before it) is searched.
    let mut from = 0;
    while !seen[from..]
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
    {
        from = seen.len().saturating_sub(needle.len());
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, sock.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{needle:?} did not arrive"))
            .unwrap();
        assert!(n > 0, "the stream closed before {needle:?}");
        seen.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catching_up_runs_at_idle_priority_and_moves_back_once_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        "127.0.0.1:0",
        &[("TRIBUTARY_SYNCHRONOUS", "normal")],
    );
    let pad = "p".repeat(PAD);
    for _ in 0..BIG_EVENTS / 6 {
        let events: Vec<_> = (0..6)
            .map(|_| json!({"topic": "big", "name": "n", "args": {"pad": pad}}))
            .collect();
        let (status, body) = publish(&server.url, &json!({ "events": events })).await;
        assert_eq!(status, 201, "{body}");
    }

    // Not reading: the server is stuck sending history, on the catch-up threads.
    let mut sock = open_stream(&server, "since=0").await;
    wait_for_metric(&server.url, "tributary_catching_up_streams", 1).await;
    let policies = thread_policies(server.pid());
    let catch_up: Vec<_> = policies.iter().filter(|(n, _)| is_catch_up(n)).collect();
    assert!(!catch_up.is_empty(), "no catch-up threads in {policies:?}");
    assert!(
        catch_up.iter().all(|(_, p)| *p == SCHED_IDLE),
        "{policies:?}"
    );
    // Only those: the main runtime, the log's writer and the rest stay normal.
    assert!(
        policies
            .iter()
            .filter(|(n, _)| !is_catch_up(n))
            .all(|(_, p)| *p == SCHED_OTHER),
        "{policies:?}"
    );

    // Read it all: once caught up, the stream leaves the catch-up threads and stays
    // open and live.
    let mut seen = Vec::new();
    read_until(&mut sock, &mut seen, "event: caught-up").await;
    wait_for_metric(&server.url, "tributary_catching_up_streams", 0).await;
    assert_eq!(metric(&server.url, "tributary_live_connections").await, 1);
    let (status, body) = publish(&server.url, &json!({"topic": "big", "name": "live"})).await;
    assert_eq!(status, 201, "{body}");
    let live = format!("id: {}\n", body["position"]);
    read_until(&mut sock, &mut seen, &live).await;
    let text = String::from_utf8_lossy(&seen);
    assert_eq!(
        text.matches("\nid: ").count(),
        BIG_EVENTS + 1,
        "every event once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_threads_can_keep_the_normal_priority() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        "127.0.0.1:0",
        &[("TRIBUTARY_CATCH_UP_PRIORITY", "normal")],
    );
    let (status, body) = publish(&server.url, &json!({"topic": "t", "name": "n"})).await;
    assert_eq!(status, 201, "{body}");
    let mut sock = open_stream(&server, "since=0").await;
    let mut seen = Vec::new();
    read_until(&mut sock, &mut seen, "event: caught-up").await;
    let policies = thread_policies(server.pid());
    assert!(policies.iter().any(|(n, _)| is_catch_up(n)), "{policies:?}");
    assert!(
        policies.iter().all(|(_, p)| *p == SCHED_OTHER),
        "{policies:?}"
    );
}
