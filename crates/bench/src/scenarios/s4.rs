//! S4: fan-out capacity. A fixed set of SSE subscribers follows one topic while the
//! publish rate is raised step by step (each step a fresh server, as in S3) until a
//! step fails: p99 publish → deliver latency over 250 ms, a gap, subscribers still
//! receiving long after publishing ended, or publishers unable to keep the rate. The
//! search then narrows between the last step that held and the first that failed. The
//! capacity is the deliveries per second of the fastest step that held, with the server's
//! CPU seconds per million deliveries there.
//!
//! Tributary (durable) against the naive in-memory SSE server. A gap from Tributary is an
//! integrity failure (its streams are pulled, so a slow reader falls behind, never skips);
//! from the naive server it is the end of its capacity (a receiver that lagged its
//! broadcast channel is cut off), which is what this scenario looks for.

use serde_json::{Value, json};

use super::fanout::{self, RunOut, Setting, System};
use crate::load::Clock;
use crate::report::{Goal, ScenarioReport, Table, fmt_num, ratio_cell, ratio_json};
use crate::stats::Rounds;
use crate::{BenchError, Config};

/// A step holds while p99 stays at or under this.
const P99_LIMIT_MS: f64 = 250.0;
/// Tributary's capacity at least twice the naive server's.
const GOAL: Goal = Goal::AtLeast(2.0);

struct Step {
    rate: f64,
    out: RunOut,
    /// Why the step failed; `None` when it held.
    failed: Option<String>,
}

/// One system's search for its capacity.
struct Ramp {
    steps: Vec<Step>,
}

impl Ramp {
    /// The step that held with the most deliveries per second.
    fn best(&self) -> Option<&Step> {
        self.steps
            .iter()
            .filter(|s| s.failed.is_none())
            .max_by(|a, b| {
                a.out
                    .deliveries_per_s()
                    .total_cmp(&b.out.deliveries_per_s())
            })
    }

    fn capacity(&self) -> f64 {
        self.best().map_or(0.0, |s| s.out.deliveries_per_s())
    }

    /// Why the search stopped: the lowest failing step's reason.
    fn stopped_by(&self) -> String {
        self.steps
            .iter()
            .filter(|s| s.failed.is_some())
            .min_by(|a, b| a.rate.total_cmp(&b.rate))
            .map_or_else(
                || "never failed (raise --s4-max-steps)".to_owned(),
                |s| {
                    format!(
                        "{} events/s: {}",
                        fmt_num(s.rate),
                        s.failed.as_deref().unwrap_or_default()
                    )
                },
            )
    }
}

fn judge(out: &RunOut) -> Option<String> {
    if out.gaps > 0 || out.duplicates > 0 {
        return Some(format!("{} gaps, {} duplicates", out.gaps, out.duplicates));
    }
    if let Some(p) = &out.problem {
        return Some(p.clone());
    }
    if out.behind > 0 {
        return Some(format!(
            "publishers fell {} events behind the schedule",
            out.behind
        ));
    }
    if out.latency.p99_ms > P99_LIMIT_MS {
        return Some(format!("p99 {} ms", fmt_num(out.latency.p99_ms)));
    }
    None
}

async fn ramp(
    cfg: &Config,
    system: System,
    round: usize,
    clock: Clock,
    failures: &mut Vec<String>,
) -> Result<Ramp, BenchError> {
    let mut steps = Vec::new();
    let mut step = async |rate: f64, steps: &mut Vec<Step>| -> Result<bool, BenchError> {
        let setting = Setting {
            subscribers: cfg.s4_subscribers,
            publishers: cfg.s4_publishers,
            rate,
            phase: cfg.s4_step,
        };
        let out = fanout::run(cfg, system, setting, clock).await?;
        if system == System::Tributary && (out.gaps > 0 || out.duplicates > 0) {
            failures.push(format!(
                "s4 tributary round={round} rate={rate}: {} gaps, {} duplicates",
                out.gaps, out.duplicates
            ));
        }
        let failed = judge(&out);
        let held = failed.is_none();
        println!(
            "  s4 {} round {round}: {} events/s x {} subscribers -> {} deliveries/s, p99 {} ms{}",
            system.name(),
            fmt_num(rate),
            cfg.s4_subscribers,
            fmt_num(out.deliveries_per_s()),
            fmt_num(out.latency.p99_ms),
            failed
                .as_deref()
                .map_or(String::new(), |f| format!(": FAILED, {f}"))
        );
        steps.push(Step { rate, out, failed });
        Ok(held)
    };
    let mut rate = cfg.s4_start_rate;
    let (mut held, mut broke) = (None::<f64>, None::<f64>);
    for _ in 0..cfg.s4_max_steps.max(1) {
        if step(rate, &mut steps).await? {
            held = Some(rate);
            rate *= cfg.s4_factor;
        } else {
            broke = Some(rate);
            break;
        }
    }
    // Narrow down between the last rate that held and the first that did not (from
    // nothing, when even the first failed), halving the gap in ratio each time.
    if let Some(mut hi) = broke {
        let mut lo = held.unwrap_or(hi / cfg.s4_factor);
        for _ in 0..cfg.s4_refine {
            let mid = (lo * hi).sqrt();
            if step(mid, &mut steps).await? {
                lo = mid;
            } else {
                hi = mid;
            }
        }
    }
    Ok(Ramp { steps })
}

/// Runs S4.
pub async fn run(cfg: &Config, clock: Clock) -> Result<ScenarioReport, BenchError> {
    let systems = [System::Tributary, System::Naive];
    let mut table = Table::new(
        format!(
            "S4 fan-out capacity: {} subscribers, {} publishers, rate ×{} per step from {}/s, {} s per step, {} B payload; a step holds while p99 ≤ {P99_LIMIT_MS} ms, with no gap and the rate kept",
            cfg.s4_subscribers,
            cfg.s4_publishers,
            cfg.s4_factor,
            fmt_num(cfg.s4_start_rate),
            cfg.s4_step.as_secs_f64(),
            cfg.payload_bytes
        ),
        &[
            "system",
            "events/s held",
            "deliveries/s",
            "p99 there (ms)",
            "server CPU-s / 1M deliveries",
            "load generator CPU-s / 1M",
            "first failure",
            "capacity ratio (median, min–max)",
        ],
    );
    let mut failures = Vec::new();
    let mut ramps: Rounds<System, Ramp> = Rounds::new();
    for round in 0..cfg.rounds {
        for &s in &systems {
            let r = ramp(cfg, s, round, clock, &mut failures).await?;
            ramps.push(s, round, r);
        }
    }
    let ratio = ramps.ratio(System::Tributary, System::Naive, cfg.rounds, Ramp::capacity);
    let mut systems_json = Vec::new();
    for &s in &systems {
        let med = |f: &dyn Fn(&Step) -> f64| ramps.median_of(s, |r| r.best().map_or(0.0, f));
        let rate = med(&|b| b.rate);
        let capacity = ramps.median_of(s, Ramp::capacity);
        let p99 = med(&|b| b.out.latency.p99_ms);
        let cpu = med(&|b| b.out.server_cpu_s_per_million());
        let loadgen = med(&|b| b.out.loadgen_cpu_s / (b.out.deliveries.max(1) as f64 / 1e6));
        let stopped: Vec<String> = ramps.of(s).iter().map(|r| r.stopped_by()).collect();
        table.row(vec![
            s.name().into(),
            fmt_num(rate),
            fmt_num(capacity),
            fmt_num(p99),
            fmt_num(cpu),
            fmt_num(loadgen),
            stopped.first().cloned().unwrap_or_default(),
            if s == System::Tributary {
                ratio_cell(ratio, Some(GOAL))
            } else {
                String::new()
            },
        ]);
        let rounds_json: Vec<Value> = ramps
            .of(s)
            .iter()
            .map(|r| {
                let steps: Vec<Value> = r
                    .steps
                    .iter()
                    .map(|st| {
                        json!({
                            "events_per_s": st.rate,
                            "held": st.failed.is_none(),
                            "failed_because": st.failed,
                            "deliveries": st.out.deliveries,
                            "deliveries_per_s": st.out.deliveries_per_s(),
                            "published": st.out.published,
                            "behind": st.out.behind,
                            "latency": st.out.latency,
                            "server_cpu_s": st.out.server_cpu_s,
                            "server_cpu_s_per_million_deliveries": st.out.server_cpu_s_per_million(),
                            "loadgen_cpu_s": st.out.loadgen_cpu_s,
                            "gaps": st.out.gaps,
                            "duplicates": st.out.duplicates,
                        })
                    })
                    .collect();
                json!({
                    "capacity_deliveries_per_s": r.capacity(),
                    "stopped_by": r.stopped_by(),
                    "steps": steps,
                })
            })
            .collect();
        systems_json.push(json!({
            "system": s.name(),
            "median_capacity_deliveries_per_s": capacity,
            "median_events_per_s_held": rate,
            "median_p99_ms_at_capacity": p99,
            "median_server_cpu_s_per_million_deliveries": cpu,
            "median_loadgen_cpu_s_per_million_deliveries": loadgen,
            "rounds": rounds_json,
        }));
    }
    Ok(ScenarioReport {
        name: "s4",
        json: json!({
            "scenario": "s4",
            "description": "fan-out capacity over SSE: the publish rate raised until p99 > 250 ms, a gap, an unfinished drain or a missed schedule; deliveries/s of the fastest step that held",
            "subscribers": cfg.s4_subscribers,
            "publishers": cfg.s4_publishers,
            "start_events_per_s": cfg.s4_start_rate,
            "factor": cfg.s4_factor,
            "step_s": cfg.s4_step.as_secs_f64(),
            "p99_limit_ms": P99_LIMIT_MS,
            "payload_bytes": cfg.payload_bytes,
            "systems": systems_json,
            "ratio_capacity": ratio_json("tributary deliveries/s / naive deliveries/s", ratio, Some(GOAL)),
            "failures": failures,
        }),
        table,
        failures,
    })
}
