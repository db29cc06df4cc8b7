//! S8: crash and resume. Subscribers follow a topic through the client crate's resuming
//! [`Subscription`] while a publisher sends at a steady rate; halfway, the server gets
//! `kill -9` and is started again on the same port and data. The publisher retries
//! each unacked event with the same idempotency key until it is acked, so the log must
//! hold each event once; every subscriber must see every acked event exactly once.
//!
//! Reported: gaps, duplicates delivered to the application, the restart time (kill →
//! listening again, including a 250 ms supervisor delay), and the resume time (kill →
//! the first event a subscriber gets after it, the worst subscriber's).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use tokio::sync::watch;
use tributary_client::{Client, SubscribeOptions, SubscriptionEvent};
use tributary_core::{Args, Filter, NewEvent, Topic, TopicPattern};

use super::{check_tributary_log, data_dir, tributary_client};
use crate::load::{Clock, QUIET, SeqCheck, args_json, mark_of_event_json, padding};
use crate::procs::start_tributary;
use crate::report::{ScenarioReport, Table, fmt_num};
use crate::stats::{Latency, Percentiles, median};
use crate::{BenchError, Config};

const TOPIC: &str = "bench.s8";
/// How long a subscriber may take to catch up after publishing ends.
const DRAIN_BOUND: Duration = Duration::from_secs(20);
/// Between the kill and the restart, as a supervisor would wait: long enough that
/// subscribers and the publisher find the server gone.
const RESTART_DELAY: Duration = Duration::from_millis(250);

struct Sub {
    check: SeqCheck,
    latency: Latency,
    /// Receive times, to find the first delivery after the kill.
    received_at: Vec<Instant>,
    error: Option<String>,
}

async fn subscriber(
    client: Client,
    mut expected: watch::Receiver<Option<u64>>,
    clock: Clock,
    deadline: Instant,
) -> Sub {
    let mut out = Sub {
        check: SeqCheck::default(),
        latency: Latency::default(),
        received_at: Vec::new(),
        error: None,
    };
    let mut events = client.subscribe(SubscribeOptions {
        filter: Filter::topic(TopicPattern::new(TOPIC).expect("valid")),
        since: Some(0),
        ..SubscribeOptions::default()
    });
    let deadline = tokio::time::Instant::from_std(deadline);
    let mut last_event = tokio::time::Instant::now();
    loop {
        let stop_at = match *expected.borrow_and_update() {
            Some(n) if out.check.count >= n => break,
            Some(_) => deadline.min(last_event + QUIET),
            None => deadline,
        };
        tokio::select! {
            item = events.next() => match item {
                Some(Ok(SubscriptionEvent::Event(event))) => {
                    let now = Instant::now();
                    last_event = now.into();
                    let json = format!(r#"{{"args":{}}}"#, event.args.as_json());
                    if let Some(mark) = mark_of_event_json(&json) {
                        out.latency.record_us(clock.us(now).saturating_sub(mark.sent_us));
                        out.check.observe(mark);
                        out.received_at.push(now);
                    }
                }
                Some(Ok(_)) => {}
                // The subscription resumes by itself; an error it yields is final.
                Some(Err(e)) => { out.error = Some(e.to_string()); break; }
                None => { out.error = Some("the subscription ended".into()); break; }
            },
            _ = expected.changed() => {}
            _ = tokio::time::sleep_until(stop_at) => break,
        }
    }
    out
}

/// One crash.
struct CrashOut {
    events: u64,
    gaps: u64,
    duplicates: u64,
    missing: u64,
    restart_ms: f64,
    resume_ms: f64,
    retries: u64,
    answered_duplicate: u64,
    ack: Percentiles,
    deliver: Percentiles,
    failures: Vec<String>,
}

/// One server, one kill -9 halfway, one restart.
async fn one_crash(cfg: &Config, clock: Clock, round: usize) -> Result<CrashOut, BenchError> {
    let dir = data_dir()?;
    let server = start_tributary(cfg, dir.path(), "127.0.0.1:0").await?;
    let addr = server.addr;
    let base = server.base_url();
    let deadline = Instant::now() + cfg.s8_phase * 3 + DRAIN_BOUND;
    let (expected_tx, expected_rx) = watch::channel(None);
    let subs: Vec<_> = (0..cfg.s8_subscribers)
        .map(|_| {
            Ok(tokio::spawn(subscriber(
                tributary_client(&base)?,
                expected_rx.clone(),
                clock,
                deadline,
            )))
        })
        .collect::<Result<_, BenchError>>()?;

    let publisher = tributary_client(&base)?;
    let pad = padding(cfg.payload_bytes);
    let topic = Topic::new(TOPIC).expect("valid");
    let interval = Duration::from_secs_f64(1.0 / cfg.s8_rate.max(1e-3));
    let start = Instant::now() + Duration::from_millis(200);
    let kill_at = start + cfg.s8_phase / 2;
    let end = start + cfg.s8_phase;
    // The crash runs beside the publisher, as it would in production: publishes in
    // flight or sent while the server is down fail, and are retried with the same id.
    let crash = {
        let cfg = cfg.clone();
        let data = dir.path().to_owned();
        tokio::spawn(async move {
            tokio::time::sleep_until(kill_at.into()).await;
            let pid = server.pid();
            server.kill9().await;
            let killed = Instant::now();
            eprintln!("s8: killed tributary (pid {pid:?}) with SIGKILL");
            tokio::time::sleep(RESTART_DELAY).await;
            let restarted = start_tributary(&cfg, &data, &addr.to_string()).await?;
            Ok::<_, BenchError>((killed, Instant::now(), restarted))
        })
    };
    let mut ack = Latency::default();
    let mut retries = 0u64;
    let mut duplicates_acked = 0u64;
    let mut seq = 0u64;
    loop {
        let intended = start + interval * seq as u32;
        if intended >= end {
            break;
        }
        tokio::time::sleep_until(intended.into()).await;
        let event = NewEvent::new(
            topic.clone(),
            "bench.Event",
            Args::from_json(&args_json(0, seq, clock.us(intended), &pad)).expect("valid JSON"),
        )
        .with_id(format!("s8-{seq}"));
        loop {
            match publisher.publish(event.clone()).await {
                Ok(appended) => {
                    duplicates_acked += u64::from(appended.duplicate);
                    break;
                }
                Err(_) if Instant::now() < deadline => {
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(source) => {
                    return Err(BenchError::Client {
                        context: "publishing through the restart",
                        source,
                    });
                }
            }
        }
        ack.record(Instant::now() - intended);
        seq += 1;
    }
    let (killed_at, restarted_at, server) = crash.await.expect("the crash task panicked")?;
    let _ = expected_tx.send(Some(seq));
    let sent = HashMap::from([(0u32, seq)]);
    let mut failures = Vec::new();
    let (mut gaps, mut dups, mut missing) = (0, 0, 0);
    let mut resume_ms: f64 = 0.0;
    let mut deliver = Latency::default();
    for (i, task) in subs.into_iter().enumerate() {
        let sub = task.await.expect("a subscriber task panicked");
        gaps += sub.check.gaps;
        dups += sub.check.duplicates;
        missing += sub.check.missing_tail(&sent);
        deliver.merge(&sub.latency);
        if let Some(p) = sub.check.problem(&sent) {
            failures.push(format!(
                "s8 round {round} subscriber {i}: {p}{}",
                sub.error.map(|e| format!(" ({e})")).unwrap_or_default()
            ));
        }
        if let Some(first) = sub.received_at.iter().find(|t| **t > killed_at) {
            resume_ms = resume_ms.max((*first - killed_at).as_secs_f64() * 1000.0);
        }
    }
    let client = tributary_client(&base)?;
    if let Some(p) = check_tributary_log(&client, TOPIC, &sent).await? {
        failures.push(format!("s8 round {round}: {p}"));
    }
    drop(server);
    let restart_ms = (restarted_at - killed_at).as_secs_f64() * 1000.0;
    Ok(CrashOut {
        events: seq,
        gaps,
        duplicates: dups,
        missing,
        restart_ms,
        resume_ms,
        retries,
        answered_duplicate: duplicates_acked,
        ack: ack.summary(),
        deliver: deliver.summary(),
        failures,
    })
}

/// Runs S8 (Tributary only: the scenario is about its own promise), one crash per round.
pub async fn run(cfg: &Config, clock: Clock) -> Result<ScenarioReport, BenchError> {
    let mut table = Table::new(
        format!(
            "S8 kill -9 and resume: {} subscribers (client crate), {} events/s, one crash per round",
            cfg.s8_subscribers,
            fmt_num(cfg.s8_rate)
        ),
        &[
            "round",
            "events",
            "gaps",
            "duplicates delivered",
            "missing",
            "restart ms",
            "resume ms (worst)",
            "publish retries",
            "deliver p99 ms",
        ],
    );
    let mut runs = Vec::new();
    let mut failures = Vec::new();
    for round in 0..cfg.rounds {
        let c = one_crash(cfg, clock, round).await?;
        table.row(vec![
            round.to_string(),
            c.events.to_string(),
            c.gaps.to_string(),
            c.duplicates.to_string(),
            c.missing.to_string(),
            fmt_num(c.restart_ms),
            fmt_num(c.resume_ms),
            c.retries.to_string(),
            fmt_num(c.deliver.p99_ms),
        ]);
        failures.extend(c.failures.iter().cloned());
        runs.push(c);
    }
    let total = |f: &dyn Fn(&CrashOut) -> u64| runs.iter().map(f).sum::<u64>();
    let (events, gaps, dups, missing) = (
        total(&|c| c.events),
        total(&|c| c.gaps),
        total(&|c| c.duplicates),
        total(&|c| c.missing),
    );
    let met = gaps == 0 && dups == 0 && missing == 0;
    let resume: Vec<f64> = runs.iter().map(|c| c.resume_ms).collect();
    let restart: Vec<f64> = runs.iter().map(|c| c.restart_ms).collect();
    table.notes.push(format!(
        "goal: 0 gaps, 0 duplicates over {} crashes: {}; resume median {} ms",
        runs.len(),
        if met { "met" } else { "MISSED" },
        fmt_num(median(&resume))
    ));
    let runs_json: Vec<_> = runs
        .iter()
        .map(|c| {
            json!({
                "events": c.events,
                "gaps": c.gaps,
                "duplicates_delivered": c.duplicates,
                "missing": c.missing,
                "restart_ms": c.restart_ms,
                "resume_ms_worst": c.resume_ms,
                "publish_retries": c.retries,
                "publishes_answered_duplicate": c.answered_duplicate,
                "ack_latency": c.ack,
                "deliver_latency": c.deliver,
            })
        })
        .collect();
    Ok(ScenarioReport {
        name: "s8",
        json: json!({
            "scenario": "s8",
            "description": "kill -9 mid-stream, restart on the same port and data after a 250 ms delay; subscribers resume with Last-Event-ID through tributary-client (default backoff)",
            "subscribers": cfg.s8_subscribers,
            "events_per_s": cfg.s8_rate,
            "phase_s": cfg.s8_phase.as_secs_f64(),
            "crashes": runs.len(),
            "events": events,
            "gaps": gaps,
            "duplicates_delivered": dups,
            "missing": missing,
            "median_restart_ms": median(&restart),
            "median_resume_ms_worst": median(&resume),
            "max_resume_ms_worst": resume.iter().copied().fold(0.0, f64::max),
            "runs": runs_json,
            "goal": "0 gaps, 0 duplicates",
            "met": met,
            "failures": failures,
        }),
        table,
        failures,
    })
}
