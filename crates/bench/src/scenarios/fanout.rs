//! One fan-out run, shared by S3 (latency at a set rate) and S4 (the rate raised until
//! the latency or a gap gives out): N raw SSE subscribers follow one topic while open-loop
//! publishers send at a fixed total rate; each delivery's latency is its receive time
//! minus the event's intended send time. Tributary (durable: an event is delivered once
//! it is on disk) or the naive in-memory SSE server, the fan-out ceiling.
//!
//! Both are read by the same raw SSE reader, and every subscriber must receive every
//! event, each once, in order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{CONNECT_BOUND, connect_all, data_dir, publish_phase, tributary_sinks};
use crate::load::{Clock, Received, Sink, padding, sse_subscriber};
use crate::procs::{Server, proc_usage, start_naive, start_tributary};
use crate::stats::{Latency, Percentiles};
use crate::{BenchError, Config};

pub(crate) const TOPIC: &str = "bench.fanout";
/// How long subscribers may take to drain after publishing ends.
const DRAIN_BOUND: Duration = Duration::from_secs(15);

/// The two systems a fan-out run compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum System {
    Tributary,
    Naive,
}

impl System {
    pub(crate) fn name(self) -> &'static str {
        match self {
            System::Tributary => "tributary",
            System::Naive => "naive-in-memory-sse",
        }
    }
}

/// One setting of a fan-out run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Setting {
    pub subscribers: usize,
    /// Concurrent publishers, the rate split evenly between them.
    pub publishers: usize,
    /// Events per second, all publishers.
    pub rate: f64,
    /// Seconds of publishing.
    pub phase: Duration,
}

/// What one run measured.
#[derive(Debug)]
pub(crate) struct RunOut {
    pub latency: Percentiles,
    /// Events received, all subscribers.
    pub deliveries: u64,
    /// Events acked to the publishers.
    pub published: u64,
    /// Intended sends never made: the publishers could not keep the rate.
    pub behind: u64,
    /// From the first intended send until every subscriber was done.
    pub elapsed: Duration,
    /// The server's CPU seconds over `elapsed`.
    pub server_cpu_s: f64,
    /// The load generator's (this process's) CPU seconds over `elapsed`.
    pub loadgen_cpu_s: f64,
    /// Seqs skipped, and seen twice or out of order, all subscribers.
    pub gaps: u64,
    pub duplicates: u64,
    /// Subscribers that missed, doubled or reordered events (or never finished).
    pub problem: Option<String>,
}

impl RunOut {
    /// Deliveries per second over the run.
    pub fn deliveries_per_s(&self) -> f64 {
        self.deliveries as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Server CPU seconds per million deliveries.
    pub fn server_cpu_s_per_million(&self) -> f64 {
        self.server_cpu_s / (self.deliveries.max(1) as f64 / 1e6)
    }
}

fn cpu_s(pid: Option<u32>) -> f64 {
    pid.and_then(proc_usage).map_or(0.0, |u| u.cpu_s)
}

/// Starts `system`, connects the subscribers, publishes for `setting.phase`, waits for
/// the subscribers to drain, and stops the server.
pub(crate) async fn run(
    cfg: &Config,
    system: System,
    setting: Setting,
    clock: Clock,
) -> Result<RunOut, BenchError> {
    let Setting {
        subscribers,
        publishers,
        rate,
        phase,
    } = setting;
    let dir = data_dir()?;
    let server: Server = match system {
        System::Tributary => start_tributary(cfg, dir.path(), "127.0.0.1:0").await?,
        System::Naive => start_naive(cfg).await?,
    };
    let base = server.base_url();
    let path = match system {
        // heartbeat high: comments are not what is measured.
        System::Tributary => {
            format!("/api/v1/events/stream?topic={TOPIC}&since=now&heartbeat=60")
        }
        System::Naive => "/stream".to_owned(),
    };
    let (expected_tx, expected_rx) = watch::channel(None);
    let deadline = Instant::now() + CONNECT_BOUND + phase * 3 + DRAIN_BOUND;
    let tasks = connect_all(
        &format!("{} subscribers", system.name()),
        subscribers,
        |ready| {
            tokio::spawn(sse_subscriber(
                server.addr,
                path.clone(),
                clock,
                ready,
                expected_rx.clone(),
                deadline,
                None,
            ))
        },
    )
    .await?;
    let sinks = match system {
        System::Tributary => tributary_sinks(&base, TOPIC, publishers.max(1))?,
        System::Naive => (0..publishers.max(1))
            .map(|_| Sink::Naive {
                http: reqwest::Client::new(),
                url: format!("{base}/publish"),
            })
            .collect(),
    };
    let pad: Arc<str> = padding(cfg.payload_bytes).into();
    let started = Instant::now();
    let (server_cpu0, own_cpu0) = (cpu_s(server.pid()), cpu_s(Some(std::process::id())));
    let published = publish_phase(sinks, 0, 1, Some(rate), phase, clock, pad).await?;
    let _ = expected_tx.send(Some(published.events));
    let mut latency = Latency::default();
    let mut problems = Vec::new();
    let (mut deliveries, mut gaps, mut duplicates) = (0, 0, 0);
    let drain_by = tokio::time::Instant::now() + DRAIN_BOUND;
    let mut unfinished = 0;
    for mut task in tasks {
        let received: Received = match tokio::time::timeout_at(drain_by, &mut task).await {
            Ok(r) => r.expect("a subscriber task panicked"),
            Err(_) => {
                // Overload, not an error of the harness: S4 looks for exactly this.
                task.abort();
                unfinished += 1;
                continue;
            }
        };
        latency.merge(&received.latency);
        deliveries += received.check.count;
        gaps += received.check.gaps;
        duplicates += received.check.duplicates;
        if let Some(p) = received.check.problem(&published.sent) {
            problems.push(match &received.error {
                Some(e) => format!("{p} ({e})"),
                None => p,
            });
        }
    }
    let elapsed = started.elapsed();
    let server_cpu_s = cpu_s(server.pid()) - server_cpu0;
    let loadgen_cpu_s = cpu_s(Some(std::process::id())) - own_cpu0;
    drop(server);
    if unfinished > 0 {
        problems.push(format!(
            "{unfinished} still receiving {} s after publishing ended",
            DRAIN_BOUND.as_secs()
        ));
    }
    let problem = (!problems.is_empty()).then(|| {
        format!(
            "{} of {subscribers} subscribers wrong, first: {}",
            problems.len(),
            problems[0]
        )
    });
    Ok(RunOut {
        latency: latency.summary(),
        deliveries,
        published: published.events,
        behind: published.behind,
        elapsed,
        server_cpu_s,
        loadgen_cpu_s,
        gaps,
        duplicates,
        problem,
    })
}
