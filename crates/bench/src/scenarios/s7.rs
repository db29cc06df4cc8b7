//! S7: memory per idle SSE connection. N subscribers connect and wait; the server's
//! resident set (from `/proc/PID/status`) is read before they connect, once they are all
//! live and idle, and again after a burst of events has reached every one of them, with
//! the connections still open. Per connection is the growth over the first reading
//! divided by N.
//!
//! Beside Tributary: the naive in-memory SSE server (the floor of an axum/hyper SSE
//! connection) and Redis, whose idle client is a connection blocked in `XREAD BLOCK 0`
//! (Redis's own figure for an idle client is about 9.5 KB). Every subscriber must receive
//! the burst whole, each event once, in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use super::{CONNECT_BOUND, connect_all, data_dir, tributary_sinks};
use crate::load::{Clock, Received, Sink, mark_of_event_json, padding, sse_subscriber};
use crate::procs::{
    RedisFsync, Server, redis_connection, start_naive, start_redis, start_tributary,
};
use crate::report::{Goal, ScenarioReport, Table, fmt_num, ratio_cell, ratio_json};
use crate::stats::Rounds;
use crate::{BenchError, Config};

const TOPIC: &str = "bench.s7";
/// At most 8 KB (8000 bytes) of server memory per idle connection.
const GOAL_KB: Goal = Goal::AtMost(8.0);
/// How long the burst may take to reach every subscriber.
const BURST_BOUND: Duration = Duration::from_secs(60);
/// A pause before each reading, so that work just finished (accepts, a burst's writes)
/// has settled into what the server keeps; shorter in `--quick`.
fn settle(cfg: &Config) -> Duration {
    if cfg.quick {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(1)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum System {
    Tributary,
    Naive,
    Redis,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Tributary => "tributary",
            System::Naive => "naive-in-memory-sse",
            System::Redis => "redis-xread-block",
        }
    }
}

#[derive(Debug)]
struct RunOut {
    connections: usize,
    /// RSS before any subscriber, when idle with all of them, and after the burst.
    before: u64,
    idle: u64,
    after_burst: u64,
    problem: Option<String>,
}

impl RunOut {
    /// KB (1000 bytes) per connection of growth from `before` to `rss`.
    fn per_connection_kb(&self, rss: u64) -> f64 {
        rss.saturating_sub(self.before) as f64 / self.connections.max(1) as f64 / 1000.0
    }

    fn idle_kb(&self) -> f64 {
        self.per_connection_kb(self.idle)
    }

    fn burst_kb(&self) -> f64 {
        self.per_connection_kb(self.after_burst)
    }
}

/// The server's RSS after [`settle`].
async fn settled_rss(cfg: &Config, server: &Server) -> Result<u64, BenchError> {
    tokio::time::sleep(settle(cfg)).await;
    server
        .usage()
        .map(|u| u.rss_bytes)
        .ok_or_else(|| BenchError::NotReady {
            what: server.name.into(),
            reason: "its /proc entry is unreadable (has it exited?)".into(),
        })
}

async fn one_run(
    cfg: &Config,
    system: System,
    connections: usize,
    clock: Clock,
) -> Result<RunOut, BenchError> {
    let dir = data_dir()?;
    let server: Server = match system {
        System::Tributary => start_tributary(cfg, dir.path(), "127.0.0.1:0").await?,
        System::Naive => start_naive(cfg).await?,
        System::Redis => {
            let bin = cfg
                .redis_bin
                .as_ref()
                .expect("Redis runs only when installed");
            start_redis(cfg, bin, RedisFsync::Always).await?
        }
    };
    let base = server.base_url();
    let pad = padding(cfg.payload_bytes);
    let mut sink = match system {
        System::Tributary => tributary_sinks(&base, TOPIC, 1)?.remove(0),
        System::Naive => Sink::Naive {
            http: reqwest::Client::new(),
            url: format!("{base}/publish"),
        },
        System::Redis => Sink::Redis {
            conn: redis_connection(&server).await?,
            key: TOPIC.into(),
        },
    };
    // One event no subscriber will see (they start after it), so that what a first
    // write sets up (the log's writer, caches) is in the first reading.
    sink.send(1, 0, 1, clock.now_us(), &pad).await?;
    let before = settled_rss(cfg, &server).await?;

    let path = match system {
        System::Tributary => format!("/api/v1/events/stream?topic={TOPIC}&since=now"),
        System::Naive => "/stream".to_owned(),
        System::Redis => String::new(),
    };
    let (expected_tx, expected_rx) = watch::channel(None);
    let progress = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + CONNECT_BOUND + BURST_BOUND + settle(cfg) * 4;
    let what = format!("{} subscribers", system.name());
    let tasks = connect_all(&what, connections, |ready| match system {
        System::Redis => tokio::spawn(redis_subscriber(
            server.addr,
            ready,
            expected_rx.clone(),
            deadline,
            Arc::clone(&progress),
        )),
        _ => tokio::spawn(sse_subscriber(
            server.addr,
            path.clone(),
            clock,
            ready,
            expected_rx.clone(),
            deadline,
            Some(Arc::clone(&progress)),
        )),
    })
    .await?;
    let idle = settled_rss(cfg, &server).await?;

    let burst = cfg.s7_burst.max(1);
    sink.send(0, 0, burst, clock.now_us(), &pad).await?;
    let want = burst as u64 * connections as u64;
    let burst_by = Instant::now() + BURST_BOUND;
    while progress.load(Ordering::Relaxed) < want && Instant::now() < burst_by {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after_burst = settled_rss(cfg, &server).await?;

    let _ = expected_tx.send(Some(burst as u64));
    let sent = std::collections::HashMap::from([(0u32, burst as u64)]);
    let mut problems = Vec::new();
    for task in tasks {
        let received: Received = task.await.expect("a subscriber task panicked");
        if let Some(p) = received.check.problem(&sent) {
            problems.push(match &received.error {
                Some(e) => format!("{p} ({e})"),
                None => p,
            });
        }
    }
    drop(server);
    let problem = (!problems.is_empty()).then(|| {
        format!(
            "{} of {connections} subscribers wrong, first: {}",
            problems.len(),
            problems[0]
        )
    });
    Ok(RunOut {
        connections,
        before,
        idle,
        after_burst,
        problem,
    })
}

/// A Redis client that follows stream [`TOPIC`] as an SSE subscriber follows a topic:
/// `XREAD BLOCK 0` from the last id it has, again and again. Raw RESP over its own
/// socket, so that each subscriber is one connection and one blocked client in Redis.
async fn redis_subscriber(
    addr: SocketAddr,
    ready: mpsc::Sender<()>,
    mut expected: watch::Receiver<Option<u64>>,
    deadline: Instant,
    progress: Arc<AtomicU64>,
) -> Received {
    let mut out = Received::default();
    let mut socket = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => {
            out.error = Some(format!("connecting: {e}"));
            return out;
        }
    };
    let deadline = tokio::time::Instant::from_std(deadline);
    let mut buf = BytesMut::with_capacity(4096);
    // From 0-0, not `$`: the stream is empty when subscribers connect, so nothing old is
    // read, and a burst that comes before some XREAD reaches Redis is not missed.
    let mut last_id = b"0-0".to_vec();
    loop {
        if matches!(*expected.borrow_and_update(), Some(n) if out.check.count >= n) {
            break;
        }
        let command = resp::command(&[
            b"XREAD",
            b"BLOCK",
            b"0",
            b"COUNT",
            b"10000",
            b"STREAMS",
            TOPIC.as_bytes(),
            &last_id,
        ]);
        if let Err(e) = socket.write_all(&command).await {
            out.error = Some(format!("writing: {e}"));
            break;
        }
        // The first XREAD is on the wire: this client now waits like an idle one.
        let _ = ready.try_send(());
        let reply = loop {
            match resp::parse(&buf) {
                Ok(Some((value, used))) => {
                    let _ = buf.split_to(used);
                    break Ok(value);
                }
                Ok(None) => {}
                Err(e) => break Err(format!("parsing: {e}")),
            }
            tokio::select! {
                read = socket.read_buf(&mut buf) => match read {
                    Ok(0) => break Err("the connection closed".into()),
                    Ok(_) => {}
                    Err(e) => break Err(format!("reading: {e}")),
                },
                _ = expected.changed() => {
                    if matches!(*expected.borrow(), Some(n) if out.check.count >= n) {
                        return out;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return out,
            }
        };
        let entries = match reply.and_then(|v| resp::xread_entries(v, TOPIC.as_bytes())) {
            Ok(e) => e,
            Err(e) => {
                out.error = Some(e);
                break;
            }
        };
        for (id, data) in entries {
            let json = format!(r#"{{"args":{}}}"#, String::from_utf8_lossy(&data));
            if let Some(mark) = mark_of_event_json(&json) {
                out.check.observe(mark);
                progress.fetch_add(1, Ordering::Relaxed);
            }
            last_id = id;
        }
    }
    out
}

/// Just enough RESP2 for `XREAD`.
mod resp {
    /// A reply.
    #[derive(Debug, PartialEq)]
    pub enum Value {
        Nil,
        Simple(Vec<u8>),
        Int(i64),
        Bulk(Vec<u8>),
        Array(Vec<Value>),
    }

    /// A command as an array of bulk strings.
    pub fn command(args: &[&[u8]]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// One whole reply from the front of `buf` and the bytes it took, `None` when `buf`
    /// holds only part of one.
    pub fn parse(buf: &[u8]) -> Result<Option<(Value, usize)>, String> {
        parse_at(buf, 0)
    }

    fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
        let rest = buf.get(at..)?;
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        Some((&rest[..end], at + end + 2))
    }

    fn number(bytes: &[u8]) -> Result<i64, String> {
        std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("not a number: {:?}", String::from_utf8_lossy(bytes)))
    }

    fn parse_at(buf: &[u8], at: usize) -> Result<Option<(Value, usize)>, String> {
        let Some((head, next)) = line(buf, at) else {
            return Ok(None);
        };
        let (kind, rest) = head.split_first().ok_or("an empty reply line")?;
        match kind {
            b'+' => Ok(Some((Value::Simple(rest.to_vec()), next))),
            b'-' => Err(format!("redis: {}", String::from_utf8_lossy(rest))),
            b':' => Ok(Some((Value::Int(number(rest)?), next))),
            b'$' => {
                let len = number(rest)?;
                if len < 0 {
                    return Ok(Some((Value::Nil, next)));
                }
                let end = next + len as usize;
                if buf.len() < end + 2 {
                    return Ok(None);
                }
                Ok(Some((Value::Bulk(buf[next..end].to_vec()), end + 2)))
            }
            b'*' => {
                let len = number(rest)?;
                if len < 0 {
                    return Ok(Some((Value::Nil, next)));
                }
                let mut items = Vec::with_capacity(len as usize);
                let mut at = next;
                for _ in 0..len {
                    match parse_at(buf, at)? {
                        Some((item, after)) => {
                            items.push(item);
                            at = after;
                        }
                        None => return Ok(None),
                    }
                }
                Ok(Some((Value::Array(items), at)))
            }
            other => Err(format!("unknown reply type {:?}", *other as char)),
        }
    }

    /// A stream entry's id and its `data` field.
    pub type Entry = (Vec<u8>, Vec<u8>);

    /// The entries of an `XREAD` reply for one stream `key`.
    pub fn xread_entries(reply: Value, key: &[u8]) -> Result<Vec<Entry>, String> {
        let bad = || "an XREAD reply of an unexpected shape".to_owned();
        let Value::Array(streams) = reply else {
            return Err(bad());
        };
        let mut out = Vec::new();
        for stream in streams {
            let Value::Array(mut pair) = stream else {
                return Err(bad());
            };
            let (Some(Value::Array(entries)), Some(Value::Bulk(name))) = (pair.pop(), pair.pop())
            else {
                return Err(bad());
            };
            if name != key {
                return Err(format!(
                    "a reply for stream {:?}",
                    String::from_utf8_lossy(&name)
                ));
            }
            for entry in entries {
                let Value::Array(mut entry) = entry else {
                    return Err(bad());
                };
                let (Some(Value::Array(fields)), Some(Value::Bulk(id))) =
                    (entry.pop(), entry.pop())
                else {
                    return Err(bad());
                };
                let data = fields
                    .chunks(2)
                    .find_map(|kv| match kv {
                        [Value::Bulk(k), Value::Bulk(v)] if k == b"data" => Some(v.clone()),
                        _ => None,
                    })
                    .ok_or_else(bad)?;
                out.push((id, data));
            }
        }
        Ok(out)
    }
}

/// Runs S7.
pub async fn run(cfg: &Config, clock: Clock) -> Result<ScenarioReport, BenchError> {
    let mut systems = vec![System::Tributary, System::Naive];
    if cfg.redis_bin.is_some() {
        systems.push(System::Redis);
    }
    let mut table = Table::new(
        format!(
            "S7 server memory per SSE connection (KB = 1000 bytes of RSS), burst of {} events of {} B",
            cfg.s7_burst, cfg.payload_bytes
        ),
        &[
            "connections",
            "system",
            "RSS before (MB)",
            "per idle connection (KB)",
            "per connection after the burst (KB)",
            "idle vs redis (median, min–max)",
        ],
    );
    if cfg.redis_bin.is_none() {
        table.notes.push(
            "redis-server is not installed: no Redis row (scripts/bench-peers.sh installs it)"
                .into(),
        );
    }
    let mut failures = Vec::new();
    let mut results = Vec::new();
    for &connections in &cfg.s7_connections {
        let mut runs: Rounds<System, RunOut> = Rounds::new();
        for round in 0..cfg.rounds {
            for &s in &systems {
                let out = one_run(cfg, s, connections, clock).await?;
                if let Some(p) = &out.problem {
                    failures.push(format!(
                        "s7 {} connections={connections} round={round}: {p}",
                        s.name()
                    ));
                }
                runs.push(s, round, out);
            }
        }
        let vs_redis = runs.ratio(
            System::Tributary,
            System::Redis,
            cfg.rounds,
            RunOut::idle_kb,
        );
        let mut systems_json = Vec::new();
        for &s in &systems {
            let before_mb = runs.median_of(s, |o| o.before as f64 / 1e6);
            let idle = runs.median_of(s, RunOut::idle_kb);
            let burst = runs.median_of(s, RunOut::burst_kb);
            let idle_cell = if s == System::Tributary {
                let verdict = if GOAL_KB.met(idle) { "met" } else { "MISSED" };
                format!("{} {verdict} ({} KB)", fmt_num(idle), GOAL_KB.describe())
            } else {
                fmt_num(idle)
            };
            table.row(vec![
                connections.to_string(),
                s.name().into(),
                fmt_num(before_mb),
                idle_cell,
                fmt_num(burst),
                if s == System::Tributary && cfg.redis_bin.is_some() {
                    ratio_cell(vs_redis, None)
                } else {
                    String::new()
                },
            ]);
            let rounds_json: Vec<Value> = runs
                .of(s)
                .iter()
                .map(|o| {
                    json!({
                        "rss_before_bytes": o.before, "rss_idle_bytes": o.idle,
                        "rss_after_burst_bytes": o.after_burst,
                        "idle_kb_per_connection": o.idle_kb(),
                        "after_burst_kb_per_connection": o.burst_kb(),
                        "problem": o.problem,
                    })
                })
                .collect();
            let mut system_json = json!({
                "system": s.name(),
                "median_rss_before_mb": before_mb,
                "median_idle_kb_per_connection": idle,
                "median_after_burst_kb_per_connection": burst,
                "rounds": rounds_json,
            });
            if s == System::Tributary {
                system_json["goal_idle_kb"] = GOAL_KB.describe().into();
                system_json["goal_met"] = GOAL_KB.met(idle).into();
            }
            systems_json.push(system_json);
        }
        results.push(json!({
            "connections": connections,
            "systems": systems_json,
            "ratio_idle_vs_redis": ratio_json("tributary idle KB / redis idle KB", vs_redis, None),
        }));
    }
    Ok(ScenarioReport {
        name: "s7",
        json: json!({
            "scenario": "s7",
            "description": "server RSS per SSE connection (per blocked XREAD client for Redis): idle, then after a burst reached every connection, connections still open",
            "burst_events": cfg.s7_burst,
            "payload_bytes": cfg.payload_bytes,
            "results": results,
            "failures": failures,
        }),
        table,
        failures,
    })
}

#[cfg(test)]
mod tests {
    use super::resp::{Value, command, parse, xread_entries};

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        assert_eq!(command(&[b"PING"]), b"*1\r\n$4\r\nPING\r\n");
    }

    #[test]
    fn an_xread_reply_parses_whole_and_not_before() {
        let reply = b"*1\r\n*2\r\n$1\r\nk\r\n*2\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$4\r\ndata\r\n$2\r\n{}\r\n*2\r\n$3\r\n2-0\r\n*2\r\n$4\r\ndata\r\n$1\r\nx\r\n";
        for cut in 0..reply.len() {
            assert_eq!(parse(&reply[..cut]).unwrap(), None, "cut at {cut}");
        }
        let (value, used) = parse(reply).unwrap().unwrap();
        assert_eq!(used, reply.len());
        let entries = xread_entries(value, b"k").unwrap();
        assert_eq!(
            entries,
            vec![
                (b"1-0".to_vec(), b"{}".to_vec()),
                (b"2-0".to_vec(), b"x".to_vec())
            ]
        );
        assert!(parse(b"-ERR no\r\n").is_err());
        assert_eq!(parse(b"$-1\r\n").unwrap(), Some((Value::Nil, 5)));
        assert!(xread_entries(Value::Int(1), b"k").is_err());
    }
}
