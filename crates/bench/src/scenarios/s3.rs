//! S3: publish → deliver latency. N SSE subscribers follow one topic while one publisher
//! sends at a fixed rate (open loop); each delivery's latency is its receive time minus
//! the event's intended send time. Tributary (durable: an event is delivered once it is
//! on disk) against the naive in-memory SSE server, the fan-out ceiling.
//!
//! Both are read by the same raw SSE reader, and every subscriber must receive every
//! event, each once, in order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::{data_dir, publish_phase, tributary_sinks};
use crate::load::{Clock, Received, Sink, padding, sse_subscriber};
use crate::procs::{Server, start_naive, start_tributary};
use crate::report::{Goal, ScenarioReport, Table, fmt_num, ratio_cell, ratio_json};
use crate::stats::{Latency, Percentiles, Rounds};
use crate::{BenchError, Config};

const TOPIC: &str = "bench.s3";
/// The goal at 1k subscribers: Tributary's p95 at most the ceiling's.
const GOAL: Goal = Goal::AtMost(1.0);
/// How long subscribers may take to connect, and to drain after publishing ends.
const CONNECT_BOUND: Duration = Duration::from_secs(60);
const DRAIN_BOUND: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum System {
    Tributary,
    Naive,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Tributary => "tributary",
            System::Naive => "naive-in-memory-sse",
        }
    }
}

struct RunOut {
    latency: Percentiles,
    deliveries: u64,
    published: u64,
    problem: Option<String>,
}

async fn one_run(
    cfg: &Config,
    system: System,
    subscribers: usize,
    rate: f64,
    clock: Clock,
) -> Result<RunOut, BenchError> {
    let dir = data_dir()?;
    let server: Server = match system {
        System::Tributary => start_tributary(cfg, dir.path(), "127.0.0.1:0").await?,
        System::Naive => start_naive(cfg).await?,
    };
    let base = server.base_url();
    let url = match system {
        // heartbeat high: comments are not what is measured.
        System::Tributary => {
            format!("{base}/api/v1/events/stream?topic={TOPIC}&since=now&heartbeat=60")
        }
        System::Naive => format!("{base}/stream"),
    };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .map_err(|source| BenchError::Http {
            context: "building a client",
            source,
        })?;
    let (ready_tx, mut ready_rx) = mpsc::channel(subscribers.max(1));
    let (expected_tx, expected_rx) = watch::channel(None);
    let deadline = Instant::now() + CONNECT_BOUND + cfg.s3_phase * 3 + DRAIN_BOUND;
    let mut tasks = Vec::with_capacity(subscribers);
    for i in 0..subscribers {
        tasks.push(tokio::spawn(sse_subscriber(
            http.clone(),
            url.clone(),
            clock,
            ready_tx.clone(),
            expected_rx.clone(),
            deadline,
            None,
        )));
        // Connect in steps so the accept queue is never the thing measured.
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    drop(ready_tx);
    let connect_by = tokio::time::Instant::now() + CONNECT_BOUND;
    for got in 0..subscribers {
        match tokio::time::timeout_at(connect_by, ready_rx.recv()).await {
            Ok(Some(())) => {}
            Ok(None) | Err(_) => {
                return Err(BenchError::NotReady {
                    what: format!("{} subscribers", system.name()),
                    reason: format!(
                        "{got} of {subscribers} live within {} s",
                        CONNECT_BOUND.as_secs()
                    ),
                });
            }
        }
    }
    let sinks = match system {
        System::Tributary => tributary_sinks(&base, TOPIC, 1)?,
        System::Naive => vec![Sink::Naive {
            http: reqwest::Client::new(),
            url: format!("{base}/publish"),
        }],
    };
    let pad: Arc<str> = padding(cfg.payload_bytes).into();
    let run = publish_phase(sinks, 0, 1, Some(rate), cfg.s3_phase, clock, pad).await?;
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
                    what: format!("{} subscribers draining", system.name()),
                    secs: DRAIN_BOUND.as_secs(),
                });
            }
        };
        latency.merge(&received.latency);
        deliveries += received.check.count;
        if let Some(p) = received.check.problem(&run.sent) {
            problems.push(match &received.error {
                Some(e) => format!("{p} ({e})"),
                None => p,
            });
        }
    }
    drop(server);
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
        published: run.events,
        problem,
    })
}

/// Runs S3.
pub async fn run(cfg: &Config, clock: Clock) -> Result<ScenarioReport, BenchError> {
    let systems = [System::Tributary, System::Naive];
    let mut table = Table::new(
        format!(
            "S3 publish → deliver latency, {} B payload (ms)",
            cfg.payload_bytes
        ),
        &[
            "subscribers",
            "events/s",
            "system",
            "p50",
            "p95",
            "p99",
            "max",
            "ratio p95 (median, min–max)",
        ],
    );
    let mut failures = Vec::new();
    let mut settings = Vec::new();
    for &(subscribers, rate) in &cfg.s3_settings {
        let mut runs: Rounds<System, RunOut> = Rounds::new();
        for round in 0..cfg.rounds {
            for &s in &systems {
                let out = one_run(cfg, s, subscribers, rate, clock).await?;
                if let Some(p) = &out.problem {
                    failures.push(format!(
                        "s3 {} subscribers={subscribers} round={round}: {p}",
                        s.name()
                    ));
                }
                runs.push(s, round, out);
            }
        }
        let ratio = runs.ratio(System::Tributary, System::Naive, cfg.rounds, |o| {
            o.latency.p95_ms
        });
        let goal = (subscribers == 1000).then_some(GOAL);
        let mut systems_json = Vec::new();
        for &s in &systems {
            let med = |f: &dyn Fn(&RunOut) -> f64| runs.median_of(s, f);
            let (p50, p95, p99, max) = (
                med(&|o| o.latency.p50_ms),
                med(&|o| o.latency.p95_ms),
                med(&|o| o.latency.p99_ms),
                med(&|o| o.latency.max_ms),
            );
            table.row(vec![
                subscribers.to_string(),
                fmt_num(rate),
                s.name().into(),
                fmt_num(p50),
                fmt_num(p95),
                fmt_num(p99),
                fmt_num(max),
                if s == System::Tributary {
                    ratio_cell(ratio, goal)
                } else {
                    String::new()
                },
            ]);
            let rounds_json: Vec<Value> = runs
                .of(s)
                .iter()
                .map(|o| json!({ "latency": o.latency, "published": o.published, "deliveries": o.deliveries, "problem": o.problem }))
                .collect();
            systems_json.push(json!({
                "system": s.name(),
                "median_p50_ms": p50, "median_p95_ms": p95, "median_p99_ms": p99,
                "rounds": rounds_json,
            }));
        }
        settings.push(json!({
            "subscribers": subscribers,
            "events_per_s": rate,
            "systems": systems_json,
            "ratio_p95": ratio_json("tributary p95 / naive p95", ratio, goal),
        }));
    }
    Ok(ScenarioReport {
        name: "s3",
        json: json!({
            "scenario": "s3",
            "description": "publish -> deliver latency over SSE, one open-loop publisher, N subscribers; latency from the intended send time",
            "phase_s": cfg.s3_phase.as_secs_f64(),
            "payload_bytes": cfg.payload_bytes,
            "results": settings,
            "failures": failures,
        }),
        table,
        failures,
    })
}
