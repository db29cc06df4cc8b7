//! Promise 4: a reader that stops reading never makes the server buffer without bound,
//! and later gets every event.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::harness::{Server, http};

const EVENTS: usize = 100_000;
/// Args padding: 100k events of ~1.2 KB are ~120 MB, far above the bound, so a server
/// that queued them per subscriber would fail this test.
const PAD: usize = 1000;
const RSS_GROWTH_BOUND: u64 = 80 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_costs_bounded_memory_and_then_gets_everything() {
    let dir = tempfile::tempdir().unwrap();
    // A small tail so the bound is easy to state; the reader falls out of it and must be
    // served from the log.
    let server = Server::start_with(
        dir.path(),
        "127.0.0.1:0",
        &[
            ("TRIBUTARY_TAIL_MAX_EVENTS", "2000"),
            ("TRIBUTARY_SYNCHRONOUS", "normal"),
        ],
    );
    // A raw socket lets the test stop reading for real: the kernel buffers fill and the
    // server can only hold on.
    let mut sock = TcpStream::connect(&server.addr).await.unwrap();
    sock.write_all(
        format!(
            "GET /api/v1/events/stream?topic=slow HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
            server.addr
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = vec![0u8; 512];
    let n = sock.read(&mut head).await.unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"));

    let rss_before = server.rss_bytes();
    let pad = "x".repeat(PAD);
    let client = http();
    for chunk in 0..(EVENTS / 1000) {
        let batch: Vec<_> = (0..1000)
            .map(|i| json!({"topic": "slow", "name": "n", "args": {"i": chunk * 1000 + i, "pad": pad}}))
            .collect();
        let resp = client
            .post(format!("{}/api/v1/events", server.url))
            .json(&json!({ "events": batch }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201);
    }
    let rss_after = server.rss_bytes();
    let growth = rss_after.saturating_sub(rss_before);
    eprintln!(
        "slow reader: RSS {} MiB -> {} MiB while {EVENTS} events ({} MiB) were published",
        rss_before >> 20,
        rss_after >> 20,
        (EVENTS * (PAD + 200)) >> 20
    );
    assert!(
        growth < RSS_GROWTH_BOUND,
        "server memory grew by {} MiB for one stalled reader",
        growth >> 20
    );

    // Now read everything: every event, in order, exactly once.
    let mut buf = Vec::with_capacity(1 << 20);
    let mut next_expected = 1u64;
    let mut scan_from = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut chunk = vec![0u8; 1 << 16];
    while next_expected <= EVENTS as u64 {
        let n = tokio::time::timeout_at(deadline, sock.read(&mut chunk))
            .await
            .expect("the reader catches up in time")
            .unwrap();
        assert!(n > 0, "stream closed at position {next_expected}");
        buf.extend_from_slice(&chunk[..n]);
        // Find every complete `id: N` line.
        while let Some(rel) = find(&buf[scan_from..], b"\nid: ") {
            let start = scan_from + rel + 5;
            let Some(len) = find(&buf[start..], b"\n") else {
                break;
            };
            let id: u64 = std::str::from_utf8(&buf[start..start + len])
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(id, next_expected, "no gap, no duplicate");
            next_expected += 1;
            scan_from = start + len;
        }
        // Keep the buffer small: drop what has been scanned.
        if scan_from > (1 << 20) {
            buf.drain(..scan_from);
            scan_from = 0;
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
