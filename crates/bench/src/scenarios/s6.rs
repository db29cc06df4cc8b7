//! S6: consumer groups. N events are preloaded, then 1 or 4 members consume them with
//! an ack per event or one ack per batch, until every event has been acked; in one
//! setting a member is "killed" mid-run (it pulls a batch and stops without acking, as
//! a crashed process would), so its deliveries must come back to the others after the
//! ack wait. Tributary's consumer groups (pull + ack over HTTP) against a NATS JetStream
//! durable pull consumer with explicit acks, both with the same ack wait, the same batch
//! size and per-event ordering off (JetStream keeps no per-key order across members).
//! Tributary runs twice: with acks answered once durable (its default) and once applied
//! (`"durable": false`); the goal is on the second, the like-for-like pair, since a
//! JetStream ack is confirmed without waiting for an fsync.
//!
//! Events/s is N over the time from the members' start to the last first-time ack.
//! Every event must be acked at least once (loss 0) or the run fails; redeliveries are
//! counted (each system says which delivery attempt it is).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use ack_table::AckTable;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use serde_json::{Value, json};
use tributary_client::{Client, GroupSpec};
use tributary_core::{AckWait, Filter, Ordering, Start, TopicPattern};

use super::{data_dir, preload_nats, preload_tributary, tributary_client};
use crate::load::{Clock, mark_of_event_json, padding};
use crate::peers::{nats_context, nats_create_stream};
use crate::procs::{start_nats, start_tributary};
use crate::report::{Goal, ScenarioReport, Table, fmt_num, ratio_cell, ratio_json};
use crate::stats::{Rounds, median};
use crate::{BenchError, Config};

const TOPIC: &str = "bench.s6";
const GROUP: &str = "s6";
const NATS_STREAM: &str = "BENCH_S6";
/// The goal: at least 1× NATS pull + ack, and no loss.
const GOAL: Goal = Goal::AtLeast(1.0);
/// Both systems stop redelivering an event after this many attempts (Tributary parks
/// it); far more than a run needs, so an event that hits it is a real problem.
const MAX_DELIVERIES: u32 = 20;

mod ack_table {
    //! Which events have been acked, shared by the members of one run.
    use std::sync::Mutex;

    /// Acks per event seq.
    pub struct AckTable {
        acks: Mutex<Vec<u32>>,
    }

    impl AckTable {
        pub fn new(n: u64) -> AckTable {
            AckTable {
                acks: Mutex::new(vec![0; n as usize]),
            }
        }

        /// Records an ack of `seq`; true when it is the event's first. `None` when the
        /// seq is not one that was preloaded.
        pub fn ack(&self, seq: u64) -> Option<bool> {
            let mut acks = self.acks.lock().expect("no member panics holding it");
            let slot = acks.get_mut(seq as usize)?;
            *slot += 1;
            Some(*slot == 1)
        }

        /// Events never acked.
        pub fn unacked(&self) -> u64 {
            let acks = self.acks.lock().expect("no member panics holding it");
            acks.iter().filter(|&&n| n == 0).count() as u64
        }

        /// Acks beyond the first (an event acked twice was delivered twice and both
        /// deliveries were settled: allowed by at least once, counted).
        pub fn extra_acks(&self) -> u64 {
            let acks = self.acks.lock().expect("no member panics holding it");
            acks.iter().map(|&n| u64::from(n.saturating_sub(1))).sum()
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AckMode {
    /// One ack request per delivery, each waited for.
    PerEvent,
    /// One ack for all the deliveries of a pull.
    PerBatch,
}

impl AckMode {
    fn name(self) -> &'static str {
        match self {
            AckMode::PerEvent => "per-event",
            AckMode::PerBatch => "per-batch",
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Setting {
    members: usize,
    ack: AckMode,
    /// Member 0 pulls a batch once a third of the events are acked (in `--quick`, its
    /// first batch) and stops there.
    kill: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum System {
    /// Acks answered once durable (the default).
    Tributary,
    /// Acks with `"durable": false`: answered once applied, as a JetStream ack is.
    TributaryApplied,
    Nats,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Tributary => "tributary",
            System::TributaryApplied => "tributary-ack-applied",
            System::Nats => "nats-jetstream-pull-explicit-ack",
        }
    }

    /// The goal applies to the like-for-like pair: a JetStream ack is confirmed without
    /// an fsync (see `docs/benchmarks.md`), as an applied ack is answered without one.
    fn goal(self) -> Option<Goal> {
        (self == System::TributaryApplied).then_some(GOAL)
    }
}

/// What the members of one run share.
struct Shared {
    n: u64,
    /// Acked events after which the killed member dies (on its next pull that brings
    /// something).
    kill_after: u64,
    table: AckTable,
    acked: AtomicU64,
    deliveries: AtomicU64,
    redeliveries: AtomicU64,
    /// Acks the server refused (an expired delivery acked late), not counted as acks.
    refused_acks: AtomicU64,
    /// Deliveries whose payload had no readable mark.
    unreadable: AtomicU64,
    /// Deliveries the killed member dropped without acking.
    dropped: AtomicU64,
    last_first_ack: std::sync::Mutex<Option<Instant>>,
    stop: AtomicBool,
}

impl Shared {
    fn new(n: u64, kill_after: u64) -> Shared {
        Shared {
            n,
            kill_after,
            table: AckTable::new(n),
            acked: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            redeliveries: AtomicU64::new(0),
            refused_acks: AtomicU64::new(0),
            unreadable: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            last_first_ack: std::sync::Mutex::new(None),
            stop: AtomicBool::new(false),
        }
    }

    fn done(&self) -> bool {
        self.stop.load(AtomicOrdering::Relaxed)
            || self.acked.load(AtomicOrdering::Relaxed) >= self.n
    }

    /// Whether the killed member should die now.
    fn kill_due(&self) -> bool {
        self.acked.load(AtomicOrdering::Relaxed) >= self.kill_after
    }

    fn delivered(&self, attempt: u64) {
        self.deliveries.fetch_add(1, AtomicOrdering::Relaxed);
        if attempt > 1 {
            self.redeliveries.fetch_add(1, AtomicOrdering::Relaxed);
        }
    }

    fn acked(&self, seq: u64) {
        match self.table.ack(seq) {
            Some(true) => {
                self.acked.fetch_add(1, AtomicOrdering::Relaxed);
                *self.last_first_ack.lock().expect("no panics holding it") = Some(Instant::now());
            }
            Some(false) => {}
            None => {
                self.unreadable.fetch_add(1, AtomicOrdering::Relaxed);
            }
        }
    }
}

fn seq_of(args_json: &str) -> Option<u64> {
    mark_of_event_json(&format!(r#"{{"args":{args_json}}}"#)).map(|m| m.seq)
}

struct RunOut {
    events_per_s: f64,
    elapsed_s: f64,
    deliveries: u64,
    redeliveries: u64,
    extra_acks: u64,
    refused_acks: u64,
    dropped_by_killed_member: u64,
    loss: u64,
    problem: Option<String>,
}

async fn tributary_member(
    client: Client,
    name: String,
    setting: Setting,
    wait: AckWait,
    killed: bool,
    batch: usize,
    shared: Arc<Shared>,
) -> Result<(), BenchError> {
    let client_err = |context| move |source| BenchError::Client { context, source };
    while !shared.done() {
        let dying = killed && shared.kill_due();
        let deliveries = client
            .pull(GROUP, &name, batch, Duration::from_millis(500))
            .await
            .map_err(client_err("pulling"))?;
        for d in &deliveries {
            shared.delivered(u64::from(d.attempt));
        }
        // Killed: what it holds is never acked, and must come back after ack_wait. An
        // empty pull (the others took everything waiting) holds nothing to test with,
        // so it dies on the next pull that brings something.
        if dying && !deliveries.is_empty() {
            shared
                .dropped
                .fetch_add(deliveries.len() as u64, AtomicOrdering::Relaxed);
            return Ok(());
        }
        let seqs: Vec<Option<u64>> = deliveries
            .iter()
            .map(|d| seq_of(d.event.args.as_json()))
            .collect();
        match setting.ack {
            AckMode::PerEvent => {
                for (d, seq) in deliveries.iter().zip(&seqs) {
                    match client.ack_with(GROUP, &[&d.delivery_id], wait).await {
                        Ok(_) => match seq {
                            Some(s) => shared.acked(*s),
                            None => {
                                shared.unreadable.fetch_add(1, AtomicOrdering::Relaxed);
                            }
                        },
                        Err(e) if e.code() == Some("stale_delivery") => {
                            shared.refused_acks.fetch_add(1, AtomicOrdering::Relaxed);
                        }
                        Err(e) => return Err(client_err("acking")(e)),
                    }
                }
            }
            AckMode::PerBatch => {
                let ids: Vec<&str> = deliveries.iter().map(|d| d.delivery_id.as_str()).collect();
                match client.ack_with(GROUP, &ids, wait).await {
                    Ok(_) => {
                        for seq in &seqs {
                            match seq {
                                Some(s) => shared.acked(*s),
                                None => {
                                    shared.unreadable.fetch_add(1, AtomicOrdering::Relaxed);
                                }
                            }
                        }
                    }
                    // One stale id refuses the whole batch; ack the rest one by one.
                    Err(e) if e.code() == Some("stale_delivery") => {
                        for (d, seq) in deliveries.iter().zip(&seqs) {
                            match client.ack_with(GROUP, &[&d.delivery_id], wait).await {
                                Ok(_) => {
                                    if let Some(s) = seq {
                                        shared.acked(*s);
                                    }
                                }
                                Err(_) => {
                                    shared.refused_acks.fetch_add(1, AtomicOrdering::Relaxed);
                                }
                            }
                        }
                    }
                    Err(e) => return Err(client_err("acking")(e)),
                }
            }
        }
    }
    Ok(())
}

async fn nats_member(
    server_addr: String,
    setting: Setting,
    killed: bool,
    batch: usize,
    shared: Arc<Shared>,
) -> Result<(), BenchError> {
    fn nats_err<E: std::error::Error + Send + Sync + 'static>(
        context: &'static str,
    ) -> impl FnOnce(E) -> BenchError {
        move |e| BenchError::Nats {
            context,
            source: Box::new(e),
        }
    }
    let client = async_nats::connect(server_addr)
        .await
        .map_err(nats_err("connecting"))?;
    let js = jetstream::new(client);
    let stream = js
        .get_stream(NATS_STREAM)
        .await
        .map_err(nats_err("getting the stream"))?;
    let consumer: consumer::PullConsumer =
        stream
            .get_consumer(GROUP)
            .await
            .map_err(|source| BenchError::Nats {
                context: "getting the consumer",
                source,
            })?;
    while !shared.done() {
        let dying = killed && shared.kill_due();
        let mut messages = consumer
            .batch()
            .max_messages(batch)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .map_err(nats_err("pulling"))?;
        let mut got = Vec::with_capacity(batch);
        while let Some(m) = messages.next().await {
            let m = m.map_err(|source| BenchError::Nats {
                context: "reading a delivery",
                source,
            })?;
            let attempt = m.info().map(|i| i.delivered.max(1) as u64).unwrap_or(1);
            shared.delivered(attempt);
            got.push(m);
        }
        // As for Tributary: it dies holding something.
        if dying && !got.is_empty() {
            shared
                .dropped
                .fetch_add(got.len() as u64, AtomicOrdering::Relaxed);
            return Ok(());
        }
        let seqs: Vec<Option<u64>> = got
            .iter()
            .map(|m| seq_of(&String::from_utf8_lossy(&m.payload)))
            .collect();
        // double_ack waits for the server to confirm each ack, as a Tributary ack waits
        // for its answer (applied or durable, whichever the run asks for).
        match setting.ack {
            AckMode::PerEvent => {
                for (m, seq) in got.iter().zip(&seqs) {
                    match m.double_ack().await {
                        Ok(()) => match seq {
                            Some(s) => shared.acked(*s),
                            None => {
                                shared.unreadable.fetch_add(1, AtomicOrdering::Relaxed);
                            }
                        },
                        Err(_) => {
                            shared.refused_acks.fetch_add(1, AtomicOrdering::Relaxed);
                        }
                    }
                }
            }
            AckMode::PerBatch => {
                // JetStream has no multi-message ack for one member (AckAll would ack
                // other members' deliveries too), so a batch's acks go out together and
                // are waited for together: one round trip's wait per batch.
                let results = futures::future::join_all(got.iter().map(|m| m.double_ack())).await;
                for (r, seq) in results.into_iter().zip(&seqs) {
                    match (r, seq) {
                        (Ok(()), Some(s)) => shared.acked(*s),
                        (Ok(()), None) => {
                            shared.unreadable.fetch_add(1, AtomicOrdering::Relaxed);
                        }
                        (Err(_), _) => {
                            shared.refused_acks.fetch_add(1, AtomicOrdering::Relaxed);
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

async fn one_run(cfg: &Config, system: System, setting: Setting) -> Result<RunOut, BenchError> {
    let n = cfg.s6_events;
    let pad = padding(cfg.payload_bytes);
    // A third of the way in; the quick run's thousand events go by within one pull and
    // ack of the member to be killed, so there it dies holding its first batch.
    let kill_after = if cfg.quick { 0 } else { n / 3 };
    let shared = Arc::new(Shared::new(n, kill_after));
    let batch = cfg.s6_batch;
    let _dir;
    let server;
    let mut tasks = Vec::new();
    let started;
    match system {
        System::Tributary | System::TributaryApplied => {
            let wait = if system == System::Tributary {
                AckWait::Durable
            } else {
                AckWait::Applied
            };
            let dir = data_dir()?;
            server = start_tributary(cfg, dir.path(), "127.0.0.1:0").await?;
            _dir = Some(dir);
            preload_tributary(&server, TOPIC, n, &pad).await?;
            let client = tributary_client(&server.base_url())?;
            let spec = GroupSpec::new(GROUP)
                .filter(Filter::topic(
                    TopicPattern::new(TOPIC).expect("a valid topic"),
                ))
                .start(Start::Earliest)
                .ack_wait(cfg.s6_ack_wait)
                .backoff(Vec::new())
                .max_deliveries(MAX_DELIVERIES)
                .max_in_flight(batch as u32)
                .ordering(Ordering::None);
            client
                .create_group(&spec)
                .await
                .map_err(|source| BenchError::Client {
                    context: "creating the group",
                    source,
                })?;
            started = Instant::now();
            for m in 0..setting.members {
                let client = tributary_client(&server.base_url())?;
                tasks.push(tokio::spawn(tributary_member(
                    client,
                    format!("member-{m}"),
                    setting,
                    wait,
                    setting.kill && m == 0,
                    batch,
                    shared.clone(),
                )));
            }
        }
        System::Nats => {
            let bin = cfg.nats_bin.as_deref().expect("nats runs only when found");
            server = start_nats(cfg, bin).await?;
            _dir = None;
            let js = nats_context(&server).await?;
            let stream = nats_create_stream(&js, NATS_STREAM, TOPIC).await?;
            preload_nats(&js, TOPIC, n, &pad).await?;
            stream
                .create_consumer(consumer::pull::Config {
                    durable_name: Some(GROUP.into()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: cfg.s6_ack_wait,
                    deliver_policy: consumer::DeliverPolicy::All,
                    max_deliver: i64::from(MAX_DELIVERIES),
                    ..Default::default()
                })
                .await
                .map_err(|e| BenchError::Nats {
                    context: "creating the consumer",
                    source: Box::new(e),
                })?;
            started = Instant::now();
            for m in 0..setting.members {
                tasks.push(tokio::spawn(nats_member(
                    server.addr.to_string(),
                    setting,
                    setting.kill && m == 0,
                    batch,
                    shared.clone(),
                )));
            }
        }
    }
    // Bounded: far longer than any run should take, then the members are told to stop
    // and whatever is unacked is reported as lost.
    let bound = Duration::from_secs(120).max(Duration::from_millis(n / 20));
    let watchdog = {
        let shared = shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(bound).await;
            shared.stop.store(true, AtomicOrdering::Relaxed);
        })
    };
    let mut problem = None;
    for task in tasks {
        if let Err(e) = task.await.expect("a member task panicked") {
            shared.stop.store(true, AtomicOrdering::Relaxed);
            problem = Some(format!("a member failed: {e}"));
        }
    }
    watchdog.abort();
    drop(server);
    let last = shared
        .last_first_ack
        .lock()
        .expect("no panics holding it")
        .unwrap_or(started);
    let elapsed = last
        .saturating_duration_since(started)
        .as_secs_f64()
        .max(1e-9);
    let loss = shared.table.unacked();
    let unreadable = shared.unreadable.load(AtomicOrdering::Relaxed);
    if loss > 0 {
        problem = Some(format!(
            "{loss} of {n} events never acked{}",
            problem.map_or(String::new(), |p| format!(" ({p})"))
        ));
    } else if unreadable > 0 {
        problem = Some(format!("{unreadable} deliveries without a readable mark"));
    }
    let dropped = shared.dropped.load(AtomicOrdering::Relaxed);
    if setting.kill && dropped == 0 && problem.is_none() {
        problem =
            Some("the killed member held nothing when it died: the kill tested nothing".into());
    }
    Ok(RunOut {
        events_per_s: (n - loss) as f64 / elapsed,
        elapsed_s: elapsed,
        deliveries: shared.deliveries.load(AtomicOrdering::Relaxed),
        redeliveries: shared.redeliveries.load(AtomicOrdering::Relaxed),
        extra_acks: shared.table.extra_acks(),
        refused_acks: shared.refused_acks.load(AtomicOrdering::Relaxed),
        dropped_by_killed_member: dropped,
        loss,
        problem,
    })
}

/// Runs S6.
pub async fn run(cfg: &Config, _clock: Clock) -> Result<ScenarioReport, BenchError> {
    let settings = [
        Setting {
            members: 1,
            ack: AckMode::PerEvent,
            kill: false,
        },
        Setting {
            members: 1,
            ack: AckMode::PerBatch,
            kill: false,
        },
        Setting {
            members: 4,
            ack: AckMode::PerEvent,
            kill: false,
        },
        Setting {
            members: 4,
            ack: AckMode::PerBatch,
            kill: false,
        },
        Setting {
            members: 4,
            ack: AckMode::PerBatch,
            kill: true,
        },
    ];
    let mut systems = vec![System::Tributary, System::TributaryApplied];
    let mut notes = vec![format!(
        "{} events preloaded per run, pulls of up to {}, ack wait {} ms for both systems, ordering none",
        cfg.s6_events,
        cfg.s6_batch,
        cfg.s6_ack_wait.as_millis()
    )];
    if cfg.nats_bin.is_some() {
        systems.push(System::Nats);
    } else {
        notes.push("nats-server is not installed or was left out: Tributary alone, no ratio (scripts/bench-peers.sh installs it)".into());
    }
    let mut table = Table::new(
        "S6 consumer group: preloaded events consumed and acked (events/s from the members' start to the last first ack)",
        &[
            "members",
            "ack",
            "kill",
            "system",
            "events/s",
            "redeliveries",
            "loss",
            "this / NATS events/s (median, min–max)",
        ],
    );
    // The quick run only proves the scenario works (the kill run waits out the ack wait
    // in each round): one round.
    let rounds = if cfg.quick { 1 } else { cfg.rounds };
    let mut failures = Vec::new();
    let mut results = Vec::new();
    for setting in settings {
        let mut runs: Rounds<System, RunOut> = Rounds::new();
        for round in 0..rounds {
            for &s in &systems {
                let out = one_run(cfg, s, setting).await?;
                if let Some(p) = &out.problem {
                    failures.push(format!(
                        "s6 {} members={} ack={} kill={} round={round}: {p}",
                        s.name(),
                        setting.members,
                        setting.ack.name(),
                        setting.kill
                    ));
                }
                runs.push(s, round, out);
            }
        }
        let ratio_of = |s: System| runs.ratio(s, System::Nats, rounds, |o: &RunOut| o.events_per_s);
        let mut systems_json = Vec::new();
        for &s in &systems {
            let mine = runs.of(s);
            let eps = median(&mine.iter().map(|o| o.events_per_s).collect::<Vec<_>>());
            let redeliveries = median(
                &mine
                    .iter()
                    .map(|o| o.redeliveries as f64)
                    .collect::<Vec<_>>(),
            );
            let loss: u64 = mine.iter().map(|o| o.loss).sum();
            table.row(vec![
                setting.members.to_string(),
                setting.ack.name().into(),
                if setting.kill {
                    "one member".into()
                } else {
                    String::new()
                },
                s.name().into(),
                fmt_num(eps),
                fmt_num(redeliveries),
                loss.to_string(),
                if s == System::Nats {
                    String::new()
                } else {
                    ratio_cell(ratio_of(s), s.goal())
                },
            ]);
            let rounds_json: Vec<Value> = mine
                .iter()
                .map(|o| {
                    json!({
                        "events_per_s": o.events_per_s,
                        "elapsed_s": o.elapsed_s,
                        "deliveries": o.deliveries,
                        "redeliveries": o.redeliveries,
                        "extra_acks": o.extra_acks,
                        "refused_acks": o.refused_acks,
                        "dropped_by_killed_member": o.dropped_by_killed_member,
                        "loss": o.loss,
                        "problem": o.problem,
                    })
                })
                .collect();
            systems_json.push(json!({
                "system": s.name(),
                "median_events_per_s": eps,
                "median_redeliveries": redeliveries,
                "loss": loss,
                "rounds": rounds_json,
            }));
        }
        results.push(json!({
            "members": setting.members,
            "ack": setting.ack.name(),
            "kill_one_member": setting.kill,
            "systems": systems_json,
            "ratio_events_per_s": ratio_json(
                "tributary-ack-applied / nats events/s",
                ratio_of(System::TributaryApplied),
                System::TributaryApplied.goal(),
            ),
            "ratio_events_per_s_durable_acks": ratio_json(
                "tributary / nats events/s",
                ratio_of(System::Tributary),
                System::Tributary.goal(),
            ),
        }));
    }
    table.notes = notes.clone();
    Ok(ScenarioReport {
        name: "s6",
        json: json!({
            "scenario": "s6",
            "description": "consumer group: preloaded events consumed by 1 or 4 pull members, ack per event or per batch, one setting with a member killed mid-run (it drops a pulled batch unacked); tributary groups (acks answered once durable, and once applied with durable=false) vs a nats jetstream durable pull consumer with explicit acks (double_ack: each ack confirmed), same ack wait and batch; the goal is on the applied acks, loss must be 0",
            "events": cfg.s6_events,
            "batch": cfg.s6_batch,
            "ack_wait_ms": cfg.s6_ack_wait.as_millis() as u64,
            "payload_bytes": cfg.payload_bytes,
            "notes": notes,
            "results": results,
            "failures": failures,
        }),
        table,
        failures,
    })
}
