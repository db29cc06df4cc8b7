//! S5: catch-up. N events are preloaded once per system, then:
//!
//! - **One reader from the start.** A Tributary SSE reader from `since=0` reads until
//!   `caught-up`, against a NATS JetStream ordered pull consumer (deliver all, no acks)
//!   reading the same N from its stream. Events/s is N over the time from asking to the
//!   last event; every event must arrive, once, in order.
//! - **Live latency with and without catch-up** (Tributary only). L SSE subscribers
//!   follow a live topic from `since=now` while one open-loop publisher sends at R
//!   events/s (as in S3). In the "with" phase C more readers read the preloaded topic
//!   over SSE at the same time, each from a random position to `caught-up`, then again
//!   from another random position, until the live subscribers have everything. The ratio
//!   is live p99 with / without; the catch-up readers' aggregate events/s is recorded.
//!
//! Both parts alternate their two sides round by round (A B A B …).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::watch;
use tributary_client::HistoryQuery;
use tributary_client::sse::SseParser;
use tributary_core::stream::MAX_BATCH_SIZE;
use tributary_core::{Filter, TopicPattern};

use super::{
    CONNECT_BOUND, connect_all, data_dir, preload_nats, preload_tributary, publish_phase,
    tributary_client, tributary_sinks,
};
use crate::load::{Clock, Mark, Received, SeqCheck, mark_of_event_json, padding, sse_subscriber};
use crate::peers::{nats_context, nats_create_stream, nats_err};
use crate::procs::{Server, start_nats, start_tributary};
use crate::rawhttp::RawStream;
use crate::report::{Goal, ScenarioReport, Table, fmt_num, ratio_cell, ratio_json};
use crate::stats::{Latency, Percentiles, Rounds};
use crate::{BenchError, Config};

const TOPIC: &str = "bench.s5";
const LIVE_TOPIC: &str = "bench.s5.live";
const NATS_STREAM: &str = "BENCH_S5";
/// One reader from the start: Tributary at least twice the NATS ordered consumer.
const GOAL_RATE: Goal = Goal::AtLeast(2.0);
/// Live p99 during catch-up at most 1.5× its value without.
const GOAL_LIVE: Goal = Goal::AtMost(1.5);
/// How long live subscribers may take to drain after publishing ends.
const DRAIN_BOUND: Duration = Duration::from_secs(15);
/// How long catch-up readers run before the publisher starts, so that the whole
/// publishing phase is under their load.
const WARM_UP: Duration = Duration::from_millis(200);
/// Catch-up readers ask for the largest page (`batch_size`) the stream allows.
const BATCH: usize = MAX_BATCH_SIZE;

/// A bound for reading (or loading) `n` events: generous, so only a stall hits it.
fn bound_for(n: u64, per_s: u64) -> Duration {
    Duration::from_secs(60).max(Duration::from_secs(n / per_s))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum System {
    Tributary,
    Nats,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Tributary => "tributary-sse",
            System::Nats => "nats-jetstream-ordered-consumer",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Without,
    With,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Without => "without catch-up",
            Phase::With => "with catch-up",
        }
    }
}

/// A small deterministic generator for start positions (SplitMix64).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform enough in `lo..=hi` for picking start positions.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// CPU time (user + system) of a process so far, from `/proc/<pid>/stat`, in clock
/// ticks; `None` where there is no such file.
fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after its `)` are space-separated,
    // utime and stime being the 12th and 13th of them.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Measures the CPU share (1.0 = one core) of the load generator and of a server over
/// a span of wall time. Linux's `/proc` counts in USER_HZ, which is 100.
struct CpuMeter {
    started: Instant,
    own: Option<u64>,
    server_pid: Option<String>,
    server: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
struct CpuShare {
    load_generator: Option<f64>,
    server: Option<f64>,
}

impl CpuMeter {
    fn start(server: &Server) -> CpuMeter {
        let server_pid = server.pid().map(|p| p.to_string());
        CpuMeter {
            started: Instant::now(),
            own: cpu_ticks("self"),
            server: server_pid.as_deref().and_then(cpu_ticks),
            server_pid,
        }
    }

    fn stop(&self) -> CpuShare {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let share = |before: Option<u64>, now: Option<u64>| {
            Some(now?.saturating_sub(before?) as f64 / 100.0 / secs)
        };
        CpuShare {
            load_generator: share(self.own, cpu_ticks("self")),
            server: share(self.server, self.server_pid.as_deref().and_then(cpu_ticks)),
        }
    }
}

/// What one read of the preloaded topic over SSE saw.
#[derive(Debug, Default)]
struct Read {
    /// Events with a readable mark.
    events: u64,
    /// Events without one.
    unreadable: u64,
    /// The stream said `caught-up`.
    caught_up: bool,
    /// Told to stop before it got there.
    stopped: bool,
    error: Option<String>,
}

/// Reads `path` on `addr` (an SSE stream) until `caught-up`, `stop` turning true, or
/// `deadline`, handing every event's mark to `check`.
async fn sse_read(
    addr: SocketAddr,
    path: &str,
    check: &mut SeqCheck,
    stop: &mut watch::Receiver<bool>,
    deadline: Instant,
) -> Read {
    let mut out = Read::default();
    let deadline = tokio::time::Instant::from_std(deadline);
    let opened = tokio::select! {
        r = RawStream::open(addr, path) => r,
        _ = tokio::time::sleep_until(deadline) => {
            out.error = Some("no answer before the deadline".into());
            return out;
        }
        _ = stop.wait_for(|s| *s) => { out.stopped = true; return out; }
    };
    let mut body = match opened {
        Ok(b) => b,
        Err(e) => {
            out.error = Some(e);
            return out;
        }
    };
    let mut parser = SseParser::new();
    let mut chunk = Vec::with_capacity(64 * 1024);
    let sleep = tokio::time::sleep_until(deadline);
    tokio::pin!(sleep);
    let stopped = stop.wait_for(|s| *s);
    tokio::pin!(stopped);
    loop {
        if !chunk.is_empty() {
            // One chunk per turn: a reader with a full socket would otherwise parse for
            // as long as tokio's budget lasts, and the live subscribers sharing this
            // thread would be measured late.
            tokio::task::yield_now().await;
        }
        chunk.clear();
        tokio::select! {
            more = body.read(&mut chunk) => {
                match more {
                    Ok(true) => {}
                    Ok(false) => { out.error = Some("the stream ended before caught-up".into()); break; }
                    Err(e) => { out.error = Some(e); break; }
                }
                let events = match parser.feed(&chunk) {
                    Ok(e) => e,
                    Err(e) => { out.error = Some(format!("parsing: {e}")); break; }
                };
                for event in events {
                    match event.event.as_str() {
                        "message" => match mark_of_event_json(&event.data) {
                            Some(mark) => { out.events += 1; check.observe(mark); }
                            None => out.unreadable += 1,
                        },
                        "caught-up" => { out.caught_up = true; }
                        _ => {}
                    }
                }
                if out.caught_up {
                    break;
                }
            }
            _ = &mut sleep => {
                out.error = Some("not caught up before the deadline".into());
                break;
            }
            _ = &mut stopped => { out.stopped = true; break; }
        }
    }
    out
}

/// The stream path of a catch-up read of the preloaded topic after `since`.
fn catchup_path(since: u64) -> String {
    format!("/api/v1/events/stream?topic={TOPIC}&since={since}&batch_size={BATCH}&heartbeat=60")
}

/// The first and last position of the preloaded topic, checked to be dense (nothing
/// else was written while it was loaded), so a read after position P must bring
/// exactly `last - P` events.
async fn preloaded_positions(server: &Server, n: u64) -> Result<(u64, u64), BenchError> {
    let client = tributary_client(&server.base_url())?;
    let page = client
        .history(&HistoryQuery {
            filter: Filter::topic(TopicPattern::new(TOPIC).expect("a valid topic")),
            since: Some(0),
            limit: Some(1),
            ..HistoryQuery::default()
        })
        .await
        .map_err(|source| BenchError::Client {
            context: "reading the first preloaded event",
            source,
        })?;
    let first = page
        .events
        .first()
        .map(|e| e.position)
        .ok_or_else(|| BenchError::NotReady {
            what: "the preloaded topic".into(),
            reason: "it has no events".into(),
        })?;
    let topic = tributary_core::Topic::new(TOPIC).expect("scenario topics are valid");
    let last = client
        .topic(&topic)
        .await
        .map_err(|source| BenchError::Client {
            context: "reading the preloaded topic",
            source,
        })?
        .map_or(0, |info| info.last_position);
    if last < first || last - first + 1 != n {
        return Err(BenchError::NotReady {
            what: "the preloaded topic".into(),
            reason: format!("positions {first}..={last} for {n} events: not dense"),
        });
    }
    Ok((first, last))
}

/// One reader from the start, one round.
struct FromStart {
    events_per_s: f64,
    elapsed_s: f64,
    events: u64,
    problem: Option<String>,
}

fn from_start_problem(check: &SeqCheck, n: u64, error: Option<String>) -> Option<String> {
    let sent = HashMap::from([(0u32, n)]);
    match (check.problem(&sent), error) {
        (Some(p), Some(e)) => Some(format!("{p} ({e})")),
        (Some(p), None) => Some(p),
        (None, e) => e,
    }
}

async fn tributary_from_start(server: &Server, n: u64) -> Result<FromStart, BenchError> {
    let path = catchup_path(0);
    let (_keep, mut stop) = watch::channel(false);
    let mut check = SeqCheck::default();
    let started = Instant::now();
    let read = sse_read(
        server.addr,
        &path,
        &mut check,
        &mut stop,
        started + bound_for(n, 5000),
    )
    .await;
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    let mut error = read.error;
    if read.unreadable > 0 {
        error = Some(format!("{} events without a mark", read.unreadable));
    }
    Ok(FromStart {
        events_per_s: check.count as f64 / elapsed,
        elapsed_s: elapsed,
        events: check.count,
        problem: from_start_problem(&check, n, error),
    })
}

async fn nats_from_start(server: &Server, n: u64) -> Result<FromStart, BenchError> {
    let js = nats_context(server).await?;
    let stream = js
        .get_stream(NATS_STREAM)
        .await
        .map_err(nats_err("getting the stream"))?;
    let mut check = SeqCheck::default();
    let mut error = None;
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(started + bound_for(n, 5000));
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(nats_err("creating the ordered consumer"))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(nats_err("reading the stream"))?;
    while check.count < n {
        match tokio::time::timeout_at(deadline, messages.next()).await {
            Ok(Some(Ok(m))) => match serde_json::from_slice::<Mark>(&m.payload) {
                Ok(mark) => check.observe(mark),
                Err(_) => {
                    error = Some("a message without a mark".into());
                    break;
                }
            },
            Ok(Some(Err(e))) => {
                error = Some(format!("reading: {e}"));
                break;
            }
            Ok(None) => {
                error = Some("the consumer ended".into());
                break;
            }
            Err(_) => {
                error = Some("not all read before the deadline".into());
                break;
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    Ok(FromStart {
        events_per_s: check.count as f64 / elapsed,
        elapsed_s: elapsed,
        events: check.count,
        problem: from_start_problem(&check, n, error),
    })
}

/// What the catch-up readers of one "with" phase did.
#[derive(Debug, Default)]
struct CatchUp {
    events: u64,
    /// Reads that got to `caught-up`.
    completed_reads: u64,
    /// Reads cut off at the end of the phase.
    cut_reads: u64,
    problems: Vec<String>,
}

/// One catch-up reader: reads the preloaded topic from random positions to
/// `caught-up`, again and again, until `stop`. Each read must bring exactly the events
/// after its start, dense; a read cut off by `stop` must be dense as far as it got.
async fn catchup_reader(
    addr: SocketAddr,
    positions: (u64, u64),
    n: u64,
    seed: u64,
    mut stop: watch::Receiver<bool>,
    deadline: Instant,
) -> CatchUp {
    let (first, last) = positions;
    let mut rng = SplitMix(seed);
    let mut out = CatchUp::default();
    let sent = HashMap::from([(0u32, n)]);
    while !*stop.borrow() {
        // After `since`: from the first event (since = first - 1) to the last alone.
        let since = rng.between(first - 1, last - 1);
        let mut check = SeqCheck::from_first_seen();
        let read = sse_read(addr, &catchup_path(since), &mut check, &mut stop, deadline).await;
        out.events += read.events;
        let mut problem = None;
        if read.caught_up {
            out.completed_reads += 1;
            if let Some(p) = check.problem(&sent) {
                problem = Some(p);
            } else if read.events != last - since {
                problem = Some(format!("{} events, not {}", read.events, last - since));
            }
        } else if read.stopped {
            out.cut_reads += 1;
            if check.gaps > 0 || check.duplicates > 0 {
                problem = Some(format!(
                    "{} gaps, {} duplicates",
                    check.gaps, check.duplicates
                ));
            }
        }
        if let Some(e) = read.error {
            problem = Some(match problem {
                Some(p) => format!("{p} ({e})"),
                None => e,
            });
        }
        if read.unreadable > 0 {
            problem = Some(format!("{} events without a mark", read.unreadable));
        }
        if let Some(p) = problem {
            out.problems.push(format!("read after {since}: {p}"));
            // A broken reader stops rather than hammering a failing server.
            break;
        }
    }
    out
}

/// Live latency, one phase.
struct LiveOut {
    latency: Percentiles,
    deliveries: u64,
    published: u64,
    /// Intended live sends never made: the publisher's acks came too late to keep up.
    behind: u64,
    catchup_events: u64,
    catchup_events_per_s: f64,
    completed_reads: u64,
    cut_reads: u64,
    cpu: CpuShare,
    problem: Option<String>,
}

async fn live_phase(
    cfg: &Config,
    server: &Server,
    positions: (u64, u64),
    phase: Phase,
    round: usize,
    clock: Clock,
) -> Result<LiveOut, BenchError> {
    let base = server.base_url();
    let subscribers = cfg.s5_live_subscribers;
    let path = format!("/api/v1/events/stream?topic={LIVE_TOPIC}&since=now&heartbeat=60");
    let (expected_tx, expected_rx) = watch::channel(None);
    let deadline = Instant::now() + CONNECT_BOUND + cfg.s5_phase * 3 + DRAIN_BOUND;
    let tasks = connect_all("live subscribers", subscribers, |ready| {
        tokio::spawn(sse_subscriber(
            server.addr,
            path.clone(),
            clock,
            ready,
            expected_rx.clone(),
            deadline,
            None,
        ))
    })
    .await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut readers = Vec::new();
    // The catch-up readers get a thread (and runtime) of their own. On the live
    // subscribers' runtime, a hundred readers with full sockets would queue every live
    // delivery and every publish behind their parsing: the load generator, not the
    // server, would set the live latency. As a thread of its own the kernel shares the
    // core between the two, and the live side, mostly asleep, runs when woken.
    let catchup_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("s5-catch-up")
        .enable_all()
        .build()
        .map_err(|source| BenchError::Io {
            context: "starting the catch-up readers' runtime",
            path: "s5".into(),
            source,
        })?;
    let catchup_started = Instant::now();
    if phase == Phase::With {
        for i in 0..cfg.s5_catchup_readers {
            let seed = (round as u64) << 32 | i as u64;
            readers.push(catchup_runtime.spawn(catchup_reader(
                server.addr,
                positions,
                cfg.s5_events,
                seed,
                stop_rx.clone(),
                deadline,
            )));
        }
        tokio::time::sleep(WARM_UP).await;
    }
    let meter = CpuMeter::start(server);
    let sinks = tributary_sinks(&base, LIVE_TOPIC, 1)?;
    let pad: Arc<str> = padding(cfg.payload_bytes).into();
    let run = publish_phase(sinks, 0, 1, Some(cfg.s5_rate), cfg.s5_phase, clock, pad).await?;
    let _ = expected_tx.send(Some(run.events));
    let mut latency = Latency::default();
    let mut problems = Vec::new();
    let mut deliveries = 0;
    let drain_by = tokio::time::Instant::now() + DRAIN_BOUND;
    for task in tasks {
        let received: Received = match tokio::time::timeout_at(drain_by, task).await {
            Ok(r) => r.expect("a subscriber task panicked"),
            Err(_) => {
                return Err(BenchError::Timeout {
                    what: "live subscribers draining".into(),
                    secs: DRAIN_BOUND.as_secs(),
                });
            }
        };
        latency.merge(&received.latency);
        deliveries += received.check.count;
        if let Some(p) = received.check.problem(&run.sent) {
            problems.push(match &received.error {
                Some(e) => format!("live subscriber: {p} ({e})"),
                None => format!("live subscriber: {p}"),
            });
        }
    }
    let cpu = meter.stop();
    // The catch-up load ends only once the live subscribers have everything.
    let _ = stop_tx.send(true);
    let catchup_secs = catchup_started.elapsed().as_secs_f64().max(1e-9);
    let mut catchup = CatchUp::default();
    let join_by = tokio::time::Instant::now() + DRAIN_BOUND;
    for reader in readers {
        let r = match tokio::time::timeout_at(join_by, reader).await {
            Ok(r) => r.expect("a catch-up reader panicked"),
            Err(_) => {
                return Err(BenchError::Timeout {
                    what: "catch-up readers stopping".into(),
                    secs: DRAIN_BOUND.as_secs(),
                });
            }
        };
        catchup.events += r.events;
        catchup.completed_reads += r.completed_reads;
        catchup.cut_reads += r.cut_reads;
        problems.extend(r.problems);
    }
    // Its readers are done; dropping a runtime would block this async context.
    catchup_runtime.shutdown_background();
    // Give the server a moment to drop the streams just closed before the next phase.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let problem = (!problems.is_empty())
        .then(|| format!("{} problems, first: {}", problems.len(), problems[0]));
    Ok(LiveOut {
        latency: latency.summary(),
        deliveries,
        published: run.events,
        behind: run.behind,
        catchup_events: catchup.events,
        catchup_events_per_s: catchup.events as f64 / catchup_secs,
        completed_reads: catchup.completed_reads,
        cut_reads: catchup.cut_reads,
        cpu,
        problem,
    })
}

/// Loads `n` events into `what`, bounded; answers the seconds it took.
async fn timed_preload(
    what: &str,
    n: u64,
    load: impl std::future::Future<Output = Result<(), BenchError>>,
) -> Result<f64, BenchError> {
    let started = Instant::now();
    let bound = bound_for(n, 1000);
    tokio::time::timeout(bound, load)
        .await
        .map_err(|_| BenchError::Timeout {
            what: format!("preloading {what}"),
            secs: bound.as_secs(),
        })??;
    Ok(started.elapsed().as_secs_f64())
}

/// Runs S5.
pub async fn run(cfg: &Config, clock: Clock) -> Result<ScenarioReport, BenchError> {
    let n = cfg.s5_events;
    let pad = padding(cfg.payload_bytes);
    let mut notes = vec![format!(
        "{n} events of {} B preloaded once per system; SSE readers ask for batch_size={BATCH}; \
         the NATS ordered pull consumer keeps its client's defaults",
        cfg.payload_bytes
    )];
    let mut failures = Vec::new();

    let dir = data_dir()?;
    let tributary = start_tributary(cfg, dir.path(), "127.0.0.1:0").await?;
    let mut preload_s = vec![(
        System::Tributary,
        timed_preload(
            "tributary",
            n,
            preload_tributary(&tributary, TOPIC, n, &pad),
        )
        .await?,
    )];
    let positions = preloaded_positions(&tributary, n).await?;
    let nats = match &cfg.nats_bin {
        Some(bin) => {
            let server = start_nats(cfg, bin).await?;
            let js = nats_context(&server).await?;
            nats_create_stream(&js, NATS_STREAM, TOPIC).await?;
            preload_s.push((
                System::Nats,
                timed_preload("nats", n, preload_nats(&js, TOPIC, n, &pad)).await?,
            ));
            Some(server)
        }
        None => {
            notes.push("nats-server is not installed or was left out: Tributary alone, no ratio for the one reader (scripts/bench-peers.sh installs it)".into());
            None
        }
    };
    let mut systems = vec![System::Tributary];
    if nats.is_some() {
        systems.push(System::Nats);
    }

    // Part A: one reader from the start.
    let mut from_start: Rounds<System, FromStart> = Rounds::new();
    for round in 0..cfg.rounds {
        for &s in &systems {
            let out = match (s, &nats) {
                (System::Tributary, _) => tributary_from_start(&tributary, n).await?,
                (System::Nats, Some(server)) => nats_from_start(server, n).await?,
                (System::Nats, None) => unreachable!("nats runs only when started"),
            };
            if let Some(p) = &out.problem {
                failures.push(format!("s5 one reader {} round={round}: {p}", s.name()));
            }
            from_start.push(s, round, out);
        }
    }
    // Part B is Tributary's alone: the peer has nothing more to do.
    drop(nats);
    let rate_ratio = from_start.ratio(System::Tributary, System::Nats, cfg.rounds, |o| {
        o.events_per_s
    });

    // Part B: live latency without and with catch-up readers.
    let phases = [Phase::Without, Phase::With];
    let mut live: Rounds<Phase, LiveOut> = Rounds::new();
    for round in 0..cfg.rounds {
        for &p in &phases {
            let out = live_phase(cfg, &tributary, positions, p, round, clock).await?;
            if let Some(problem) = &out.problem {
                failures.push(format!("s5 live {} round={round}: {problem}", p.name()));
            }
            live.push(p, round, out);
        }
    }
    drop(tributary);
    let live_ratio = live.ratio(Phase::With, Phase::Without, cfg.rounds, |o| {
        o.latency.p99_ms
    });

    let mut table = Table::new(
        format!(
            "S5 catch-up, {n} events preloaded ({} B): one reader from position 0 (events/s); live p99 with {} readers catching up (ms)",
            cfg.payload_bytes, cfg.s5_catchup_readers
        ),
        &[
            "part",
            "system / phase",
            "catch-up events/s",
            "live p50",
            "live p95",
            "live p99",
            "ratio (median, min–max)",
        ],
    );
    let mut systems_json = Vec::new();
    for &s in &systems {
        let eps = from_start.median_of(s, |o| o.events_per_s);
        table.row(vec![
            "one reader from 0".into(),
            s.name().into(),
            fmt_num(eps),
            String::new(),
            String::new(),
            String::new(),
            if s == System::Tributary && nats_ran(&systems) {
                format!(
                    "tributary / nats {}",
                    ratio_cell(rate_ratio, Some(GOAL_RATE))
                )
            } else {
                String::new()
            },
        ]);
        let rounds_json: Vec<Value> = from_start
            .of(s)
            .iter()
            .map(|o| json!({ "events_per_s": o.events_per_s, "elapsed_s": o.elapsed_s, "events": o.events, "problem": o.problem }))
            .collect();
        systems_json.push(json!({
            "system": s.name(),
            "preload_s": preload_s.iter().find(|(x, _)| *x == s).map(|(_, t)| *t),
            "median_events_per_s": eps,
            "rounds": rounds_json,
        }));
    }
    let live_setting = format!(
        "{} live subscribers at {} events/s",
        cfg.s5_live_subscribers,
        fmt_num(cfg.s5_rate)
    );
    let mut phases_json = Vec::new();
    for &p in &phases {
        let med = |f: &dyn Fn(&LiveOut) -> f64| live.median_of(p, f);
        let (p50, p95, p99, max, catchup) = (
            med(&|o| o.latency.p50_ms),
            med(&|o| o.latency.p95_ms),
            med(&|o| o.latency.p99_ms),
            med(&|o| o.latency.max_ms),
            med(&|o| o.catchup_events_per_s),
        );
        table.row(vec![
            live_setting.clone(),
            format!("tributary {}", p.name()),
            if p == Phase::With {
                format!("{} (all readers)", fmt_num(catchup))
            } else {
                String::new()
            },
            fmt_num(p50),
            fmt_num(p95),
            fmt_num(p99),
            if p == Phase::With {
                format!(
                    "p99 with / without {}",
                    ratio_cell(live_ratio, Some(GOAL_LIVE))
                )
            } else {
                String::new()
            },
        ]);
        let rounds_json: Vec<Value> = live
            .of(p)
            .iter()
            .map(|o| {
                json!({
                    "latency": o.latency,
                    "published": o.published,
                    "publisher_behind": o.behind,
                    "deliveries": o.deliveries,
                    "catchup_events": o.catchup_events,
                    "catchup_events_per_s": o.catchup_events_per_s,
                    "catchup_completed_reads": o.completed_reads,
                    "catchup_cut_reads": o.cut_reads,
                    "cpu_share": o.cpu,
                    "problem": o.problem,
                })
            })
            .collect();
        phases_json.push(json!({
            "phase": p.name(),
            "catchup_readers": if p == Phase::With { cfg.s5_catchup_readers } else { 0 },
            "median_p50_ms": p50, "median_p95_ms": p95, "median_p99_ms": p99, "median_max_ms": max,
            "median_catchup_events_per_s": catchup,
            "rounds": rounds_json,
        }));
    }
    for &p in &phases {
        let behind: u64 = live.of(p).iter().map(|o| o.behind).sum();
        if behind > 0 {
            notes.push(format!(
                "{}: the live publisher fell behind its schedule ({behind} intended sends never made over the rounds): publishes were acked late, which the latencies include",
                p.name()
            ));
        }
    }
    table.notes = notes.clone();
    Ok(ScenarioReport {
        name: "s5",
        json: json!({
            "scenario": "s5",
            "description": "catch-up: one SSE reader from position 0 of a preloaded log vs a nats jetstream ordered pull consumer (deliver all), events/s; and live publish -> deliver latency of SSE subscribers (one open-loop publisher) without and with SSE readers catching up from random positions",
            "events": n,
            "payload_bytes": cfg.payload_bytes,
            "batch_size": BATCH,
            "live_subscribers": cfg.s5_live_subscribers,
            "catchup_readers": cfg.s5_catchup_readers,
            "live_events_per_s": cfg.s5_rate,
            "phase_s": cfg.s5_phase.as_secs_f64(),
            "notes": notes,
            "results": [
                {
                    "part": "one_reader_from_start",
                    "systems": systems_json,
                    "ratio_events_per_s": ratio_json("tributary / nats events/s", rate_ratio, Some(GOAL_RATE)),
                },
                {
                    "part": "live_during_catchup",
                    "phases": phases_json,
                    "ratio_p99": ratio_json("live p99 with / without catch-up", live_ratio, Some(GOAL_LIVE)),
                },
            ],
            "failures": failures,
        }),
        table,
        failures,
    })
}

fn nats_ran(systems: &[System]) -> bool {
    systems.contains(&System::Nats)
}
