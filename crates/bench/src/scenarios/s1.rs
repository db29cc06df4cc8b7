//! S1: durable single-event publishes from 1/16/64 concurrent clients. Tributary
//! (synchronous = full: a 2xx means fsynced) against the like-for-like durable tier:
//! Redis Streams with `appendfsync always` (an XADD reply means fsynced), NATS
//! JetStream with `sync_interval: always` (a publish ack means fsynced), and
//! PostgreSQL with one autocommit INSERT per event (`synchronous_commit = on`: the
//! reply means the WAL is fsynced).
//!
//! Each (clients, system, round) gets a fresh server and two phases: a closed loop for
//! throughput, then an open loop at a rate both systems can carry (given, or half the
//! slower one's throughput measured before the rounds) for ack latency from the intended
//! send time.

use std::collections::HashMap;
use std::sync::Arc;

use redis::streams::StreamRangeReply;
use serde_json::{Value, json};

use super::{
    PublishRun, check_tributary_log, data_dir, publish_phase, tributary_client, tributary_sinks,
};
use crate::load::{Clock, SeqCheck, Sink, mark_of_event_json, padding};
use crate::peers::{
    check_nats_stream, check_pg_table, nats_context, nats_create_stream, nats_sinks,
    pg_create_table, pg_sinks,
};
use crate::procs::{
    RedisFsync, Server, redis_connection, start_nats, start_postgres, start_redis,
    start_tributary_with,
};
use crate::report::{Goal, ScenarioReport, Table, fmt_num, ratio_cell, ratio_json};
use crate::stats::{Percentiles, Rounds};
use crate::{BenchError, Config};

const TOPIC: &str = "bench.s1";
/// Publisher ids of the latency phase start here, so both phases share one topic or
/// stream without their seqs colliding.
const LATENCY_PUBS: u32 = 10_000;
/// The goal at 64 clients: at least 1.5× Redis `appendfsync always`.
const GOAL_REDIS: Goal = Goal::AtLeast(1.5);
/// The goal at 64 clients: at least 10× NATS JetStream `sync_interval: always`.
const GOAL_NATS: Goal = Goal::AtLeast(10.0);
/// The JetStream stream that captures [`TOPIC`].
const NATS_STREAM: &str = "BENCH_S1";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum System {
    /// synchronous = full: the WAL is fsynced before the 2xx.
    Tributary,
    /// `appendfsync always`.
    RedisAlways,
    /// synchronous = normal: survives a process crash, maybe not a power cut.
    TributaryNormal,
    /// `appendfsync everysec`: the same promise, about one second of writes at risk.
    RedisEverySec,
    /// JetStream, file storage, `sync_interval: always`.
    NatsAlways,
    /// One autocommit INSERT per event, `synchronous_commit = on`.
    Postgres,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Tributary => "tributary",
            System::RedisAlways => "redis-appendfsync-always",
            System::TributaryNormal => "tributary-synchronous-normal",
            System::RedisEverySec => "redis-appendfsync-everysec",
            System::NatsAlways => "nats-jetstream-sync-always",
            System::Postgres => "postgres-synchronous-commit-on",
        }
    }

    fn available(self, cfg: &Config) -> bool {
        match self {
            System::RedisAlways | System::RedisEverySec => cfg.redis_bin.is_some(),
            System::NatsAlways => cfg.nats_bin.is_some(),
            System::Postgres => cfg.postgres_bin_dir.is_some(),
            System::Tributary | System::TributaryNormal => true,
        }
    }

    /// The goal on Tributary / this system at 64 clients, if the issue sets one.
    fn goal(self) -> Option<Goal> {
        match self {
            System::RedisAlways => Some(GOAL_REDIS),
            System::NatsAlways => Some(GOAL_NATS),
            _ => None,
        }
    }
}

struct RunOut {
    throughput: f64,
    service: Percentiles,
    ack: Percentiles,
    open_rate: f64,
    behind: u64,
    problem: Option<String>,
}

async fn start(
    cfg: &Config,
    system: System,
) -> Result<(Server, Option<tempfile::TempDir>), BenchError> {
    match system {
        System::Tributary | System::TributaryNormal => {
            let dir = data_dir()?;
            let synchronous = (system == System::TributaryNormal).then_some("normal");
            let server = start_tributary_with(cfg, dir.path(), "127.0.0.1:0", synchronous).await?;
            Ok((server, Some(dir)))
        }
        System::RedisAlways | System::RedisEverySec => {
            let bin = cfg
                .redis_bin
                .as_deref()
                .expect("redis runs only when found");
            let fsync = if system == System::RedisAlways {
                RedisFsync::Always
            } else {
                RedisFsync::EverySec
            };
            Ok((start_redis(cfg, bin, fsync).await?, None))
        }
        System::NatsAlways => {
            let bin = cfg.nats_bin.as_deref().expect("nats runs only when found");
            let server = start_nats(cfg, bin).await?;
            nats_create_stream(&nats_context(&server).await?, NATS_STREAM, TOPIC).await?;
            Ok((server, None))
        }
        System::Postgres => {
            let dir = cfg
                .postgres_bin_dir
                .as_deref()
                .expect("postgres runs only when found");
            let server = start_postgres(cfg, dir).await?;
            pg_create_table(&server).await?;
            Ok((server, None))
        }
    }
}

async fn sinks(server: &Server, system: System, n: usize) -> Result<Vec<Sink>, BenchError> {
    match system {
        System::Tributary | System::TributaryNormal => {
            tributary_sinks(&server.base_url(), TOPIC, n)
        }
        System::RedisAlways | System::RedisEverySec => {
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                out.push(Sink::Redis {
                    conn: redis_connection(server).await?,
                    key: TOPIC.into(),
                });
            }
            Ok(out)
        }
        System::NatsAlways => nats_sinks(server, TOPIC, n).await,
        System::Postgres => pg_sinks(server, TOPIC, n).await,
    }
}

async fn check(
    server: &Server,
    system: System,
    sent: &HashMap<u32, u64>,
) -> Result<Option<String>, BenchError> {
    match system {
        System::Tributary | System::TributaryNormal => {
            check_tributary_log(&tributary_client(&server.base_url())?, TOPIC, sent).await
        }
        System::RedisAlways | System::RedisEverySec => {
            let mut conn = redis_connection(server).await?;
            check_redis_stream(&mut conn, sent).await
        }
        System::NatsAlways => check_nats_stream(server, NATS_STREAM, sent).await,
        System::Postgres => check_pg_table(server, sent).await,
    }
}

/// Reads the whole stream back with XRANGE, a page at a time, and checks it like
/// Tributary's log: each publisher's seqs complete, none twice.
async fn check_redis_stream(
    conn: &mut redis::aio::MultiplexedConnection,
    sent: &HashMap<u32, u64>,
) -> Result<Option<String>, BenchError> {
    let mut check = SeqCheck::default();
    let mut unreadable = 0u64;
    let mut start = "-".to_owned();
    loop {
        let page: StreamRangeReply = redis::cmd("XRANGE")
            .arg(TOPIC)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .map_err(|source| BenchError::Redis {
                context: "XRANGE",
                source,
            })?;
        for entry in &page.ids {
            let mark = entry
                .get::<String>("data")
                .and_then(|data| mark_of_event_json(&format!(r#"{{"args":{data}}}"#)));
            match mark {
                Some(mark) => check.observe(mark),
                None => unreadable += 1,
            }
        }
        match page.ids.last() {
            // "(" makes the next page start after this entry (Redis 6.2+).
            Some(last) => start = format!("({}", last.id),
            None => break,
        }
    }
    let mut problem = check.problem(sent);
    if unreadable > 0 {
        problem = Some(format!("{unreadable} stream entries without a mark"));
    }
    Ok(problem.map(|p| format!("stored stream vs acks: {p}")))
}

/// One closed-loop phase on a fresh server: the calibration run.
async fn throughput_only(
    cfg: &Config,
    system: System,
    clients: usize,
    clock: Clock,
) -> Result<f64, BenchError> {
    let (server, _dir) = start(cfg, system).await?;
    let pad: Arc<str> = padding(cfg.payload_bytes).into();
    let run = publish_phase(
        sinks(&server, system, clients).await?,
        0,
        1,
        None,
        cfg.phase / 2,
        clock,
        pad,
    )
    .await?;
    Ok(run.rate())
}

async fn one_run(
    cfg: &Config,
    system: System,
    clients: usize,
    rate: f64,
    clock: Clock,
) -> Result<RunOut, BenchError> {
    let (server, _dir) = start(cfg, system).await?;
    let pad: Arc<str> = padding(cfg.payload_bytes).into();
    let closed = publish_phase(
        sinks(&server, system, clients).await?,
        0,
        1,
        None,
        cfg.phase,
        clock,
        pad.clone(),
    )
    .await?;
    let open: PublishRun = publish_phase(
        sinks(&server, system, clients).await?,
        LATENCY_PUBS,
        1,
        Some(rate),
        cfg.phase,
        clock,
        pad,
    )
    .await?;
    let mut sent = closed.sent.clone();
    sent.extend(open.sent.iter().map(|(k, v)| (*k, *v)));
    let problem = check(&server, system, &sent).await?;
    Ok(RunOut {
        throughput: closed.rate(),
        service: closed.latency.summary(),
        ack: open.latency.summary(),
        open_rate: open.events as f64 / cfg.phase.as_secs_f64(),
        behind: open.behind,
        problem,
    })
}

/// Runs S1.
pub async fn run(cfg: &Config, clock: Clock) -> Result<ScenarioReport, BenchError> {
    let mut tiers = vec![(
        "durable",
        System::Tributary,
        vec![System::RedisAlways, System::NatsAlways, System::Postgres],
    )];
    if cfg.s1_relaxed {
        tiers.push((
            "relaxed",
            System::TributaryNormal,
            vec![System::RedisEverySec],
        ));
    }
    let mut notes = Vec::new();
    for (bin, missing) in [
        (cfg.redis_bin.is_some(), "redis-server"),
        (cfg.nats_bin.is_some(), "nats-server"),
        (
            cfg.postgres_bin_dir.is_some(),
            "PostgreSQL (initdb, postgres)",
        ),
    ] {
        if !bin {
            notes.push(format!(
                "{missing} is not installed or was left out: skipped, no ratio against it (scripts/bench-peers.sh installs it)"
            ));
        }
    }
    let mut table = Table::new(
        "S1 single-event publishes (events/s closed loop; ack latency ms open loop at the given rate)",
        &[
            "clients",
            "tier",
            "system",
            "events/s",
            "open-loop rate",
            "ack p50",
            "ack p95",
            "ack p99",
            "Tributary / this events/s (median, min–max)",
        ],
    );
    let mut failures = Vec::new();
    let mut per_clients = Vec::new();
    for &clients in &cfg.s1_clients {
        for (tier, primary, peers) in &tiers {
            let (tier, primary) = (*tier, *primary);
            let peers: Vec<System> = peers.iter().copied().filter(|s| s.available(cfg)).collect();
            let systems: Vec<System> = std::iter::once(primary)
                .chain(peers.iter().copied())
                .collect();
            let rate = match cfg.s1_rate {
                Some(r) => r,
                None => {
                    let mut slowest = f64::INFINITY;
                    for &s in &systems {
                        slowest = slowest.min(throughput_only(cfg, s, clients, clock).await?);
                    }
                    (slowest * 0.5).max(1.0)
                }
            };
            let mut runs: Rounds<System, RunOut> = Rounds::new();
            for round in 0..cfg.rounds {
                for &s in &systems {
                    let out = one_run(cfg, s, clients, rate, clock).await?;
                    if let Some(p) = &out.problem {
                        failures.push(format!(
                            "s1 {} clients={clients} round={round}: {p}",
                            s.name()
                        ));
                    }
                    runs.push(s, round, out);
                }
            }
            let ratio_of =
                |peer: System| runs.ratio(primary, peer, cfg.rounds, |o: &RunOut| o.throughput);
            let goal_of = |peer: System| {
                (clients == 64 && tier == "durable")
                    .then(|| peer.goal())
                    .flatten()
            };
            let mut systems_json = Vec::new();
            for &s in &systems {
                let med = |f: &dyn Fn(&RunOut) -> f64| runs.median_of(s, f);
                let (eps, p50, p95, p99) = (
                    med(&|o| o.throughput),
                    med(&|o| o.ack.p50_ms),
                    med(&|o| o.ack.p95_ms),
                    med(&|o| o.ack.p99_ms),
                );
                table.row(vec![
                    clients.to_string(),
                    tier.into(),
                    s.name().into(),
                    fmt_num(eps),
                    fmt_num(rate),
                    fmt_num(p50),
                    fmt_num(p95),
                    fmt_num(p99),
                    if s == primary {
                        String::new()
                    } else {
                        ratio_cell(ratio_of(s), goal_of(s))
                    },
                ]);
                let rounds_json: Vec<Value> = runs
                    .of(s)
                    .iter()
                    .map(|o| {
                        json!({
                            "events_per_s": o.throughput,
                            "closed_loop_latency": o.service,
                            "open_loop_rate_achieved": o.open_rate,
                            "open_loop_behind": o.behind,
                            "ack_latency": o.ack,
                            "problem": o.problem,
                        })
                    })
                    .collect();
                systems_json.push(json!({
                    "system": s.name(),
                    "median_events_per_s": eps,
                    "median_ack_p50_ms": p50,
                    "median_ack_p95_ms": p95,
                    "median_ack_p99_ms": p99,
                    "rounds": rounds_json,
                }));
            }
            let ratios_json: Vec<Value> = peers
                .iter()
                .map(|&peer| {
                    ratio_json(
                        &format!("{} / {} events/s", primary.name(), peer.name()),
                        ratio_of(peer),
                        goal_of(peer),
                    )
                })
                .collect();
            per_clients.push(json!({
                "clients": clients,
                "tier": tier,
                "open_loop_rate": rate,
                "systems": systems_json,
                "ratios_events_per_s": ratios_json,
            }));
        }
    }
    table.notes = notes.clone();
    Ok(ScenarioReport {
        name: "s1",
        json: json!({
            "scenario": "s1",
            "description": "single-event publishes, like durability with like (durable: tributary synchronous=full vs redis appendfsync always, nats jetstream sync_interval always, postgres one autocommit insert per event with synchronous_commit on; relaxed: synchronous=normal vs redis everysec); closed loop for events/s, open loop for ack latency from the intended send time",
            "phase_s": cfg.phase.as_secs_f64(),
            "payload_bytes": cfg.payload_bytes,
            "notes": notes,
            "results": per_clients,
            "failures": failures,
        }),
        table,
        failures,
    })
}
