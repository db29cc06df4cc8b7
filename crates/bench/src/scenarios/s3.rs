//! S3: publish → deliver latency. N SSE subscribers follow one topic while one publisher
//! sends at a fixed rate (open loop); each delivery's latency is its receive time minus
//! the event's intended send time. Tributary (durable: an event is delivered once it is
//! on disk) against the naive in-memory SSE server, the fan-out ceiling.
//!
//! Both are read by the same raw SSE reader, and every subscriber must receive every
//! event, each once, in order.

use serde_json::{Value, json};

use super::fanout::{self, RunOut, Setting, System};
use crate::load::Clock;
use crate::report::{Goal, ScenarioReport, Table, fmt_num, ratio_cell, ratio_json};
use crate::stats::Rounds;
use crate::{BenchError, Config};

/// The goals on Tributary's p95 over the ceiling's: at most 1.0× at 1k subscribers,
/// 0.5× at 10k (where a server that batches its writes can beat one that relays).
fn goal(subscribers: usize) -> Option<Goal> {
    match subscribers {
        1000 => Some(Goal::AtMost(1.0)),
        10_000 => Some(Goal::AtMost(0.5)),
        _ => None,
    }
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
                let setting = Setting {
                    subscribers,
                    publishers: 1,
                    rate,
                    phase: cfg.s3_phase,
                };
                let out = fanout::run(cfg, s, setting, clock).await?;
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
        let goal = goal(subscribers);
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
