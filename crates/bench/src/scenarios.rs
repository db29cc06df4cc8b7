//! The scenarios, and what they share: running a set of publishers to one schedule, and
//! reading Tributary's log back to check it holds exactly what was acked.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use tributary_client::{Client, HistoryQuery};
use tributary_core::{Filter, TopicPattern};

use crate::BenchError;
use crate::load::{
    Clock, Published, Schedule, SeqCheck, Sink, args_json, drive, mark_of_event_json,
};
use crate::procs::Server;
use crate::stats::Latency;

mod fanout;
pub mod s1;
pub mod s2;
pub mod s3;
pub mod s4;
pub mod s5;
pub mod s6;
pub mod s7;
pub mod s8;

/// Many publishers, one phase.
#[derive(Debug, Default)]
pub struct PublishRun {
    /// Events acked, all publishers.
    pub events: u64,
    /// Intended sends never made (publishers fell behind the schedule).
    pub behind: u64,
    /// From the schedule's start to the last ack.
    pub elapsed: Duration,
    /// Ack latencies, all publishers.
    pub latency: Latency,
    /// Per publisher, events acked.
    pub sent: HashMap<u32, u64>,
}

impl PublishRun {
    /// Acked events per second.
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs `sinks` (publisher ids from `first_pub`) for `phase`: closed loop when
/// `total_rate` is `None`, else open loop with the rate split evenly and the
/// publishers' schedules staggered across one interval.
pub async fn publish_phase(
    sinks: Vec<Sink>,
    first_pub: u32,
    per_request: usize,
    total_rate: Option<f64>,
    phase: Duration,
    clock: Clock,
    pad: Arc<str>,
) -> Result<PublishRun, BenchError> {
    let n = sinks.len().max(1);
    // Requests per second per publisher (a batch is one request).
    let interval =
        total_rate.map(|r| Duration::from_secs_f64(n as f64 * per_request as f64 / r.max(1e-3)));
    let start = Instant::now() + Duration::from_millis(20);
    let mut tasks = Vec::new();
    for (i, sink) in sinks.into_iter().enumerate() {
        let offset = interval.map_or(Duration::ZERO, |iv| iv.mul_f64(i as f64 / n as f64));
        let schedule = Schedule {
            start: start + offset,
            interval,
            end: start + phase,
            hard_end: start + phase * 2,
        };
        let pad = pad.clone();
        let publisher = first_pub + i as u32;
        tasks.push(tokio::spawn(async move {
            drive(sink, publisher, per_request, schedule, clock, &pad)
                .await
                .map(|p| (publisher, p))
        }));
    }
    let mut run = PublishRun::default();
    let mut last = start;
    for task in tasks {
        let (publisher, p): (u32, Published) = task.await.expect("a publisher task panicked")?;
        run.events += p.events;
        run.behind += p.behind;
        run.latency.merge(&p.latency);
        run.sent.insert(publisher, p.events);
        if let Some(f) = p.finished {
            last = last.max(f);
        }
    }
    run.elapsed = last.saturating_duration_since(start);
    Ok(run)
}

/// Reads every event of `topic` back from Tributary's history and checks it against
/// what was acked: each publisher's seqs complete, none twice. `None` when all is well.
pub async fn check_tributary_log(
    client: &Client,
    topic: &str,
    sent: &HashMap<u32, u64>,
) -> Result<Option<String>, BenchError> {
    let pattern = TopicPattern::new(topic).expect("scenario topics are valid");
    let mut query = HistoryQuery {
        filter: Filter::topic(pattern),
        since: Some(0),
        limit: Some(1000),
        ..HistoryQuery::default()
    };
    let mut check = SeqCheck::default();
    let mut unreadable = 0u64;
    loop {
        let page = client
            .history(&query)
            .await
            .map_err(|source| BenchError::Client {
                context: "reading the log back",
                source,
            })?;
        for event in &page.events {
            let json = format!(r#"{{"args":{}}}"#, event.args.as_json());
            match mark_of_event_json(&json) {
                Some(mark) => check.observe(mark),
                None => unreadable += 1,
            }
        }
        if !page.has_more || page.events.is_empty() {
            break;
        }
        query = query.after(&page);
    }
    let mut problem = check.problem(sent);
    if unreadable > 0 {
        problem = Some(format!("{unreadable} stored events without a mark"));
    }
    Ok(problem.map(|p| format!("stored log vs acks: {p}")))
}

/// One Tributary client per publisher (each with its own connection pool).
pub fn tributary_sinks(base_url: &str, topic: &str, n: usize) -> Result<Vec<Sink>, BenchError> {
    (0..n)
        .map(|_| {
            let client = Client::new(base_url).map_err(|source| BenchError::Client {
                context: "creating a client",
                source,
            })?;
            Ok(Sink::Tributary {
                client,
                topic: tributary_core::Topic::new(topic).expect("scenario topics are valid"),
            })
        })
        .collect()
}

/// Publishes `n` events (pub 0, seqs 0..n) to `topic` in batches of 100, each batch
/// waited for.
pub(crate) async fn preload_tributary(
    server: &Server,
    topic: &str,
    n: u64,
    pad: &str,
) -> Result<(), BenchError> {
    let mut sink = tributary_sinks(&server.base_url(), topic, 1)?
        .pop()
        .expect("one sink");
    let mut seq = 0;
    while seq < n {
        let k = (n - seq).min(100);
        sink.send(0, seq, k as usize, 0, pad).await?;
        seq += k;
    }
    Ok(())
}

/// Publishes `n` events (pub 0, seqs 0..n) to `subject`, up to 1000 acks outstanding
/// at a time.
pub(crate) async fn preload_nats(
    js: &async_nats::jetstream::Context,
    subject: &str,
    n: u64,
    pad: &str,
) -> Result<(), BenchError> {
    let nats_err = |context: &'static str| {
        move |e: async_nats::jetstream::context::PublishError| BenchError::Nats {
            context,
            source: Box::new(e),
        }
    };
    let mut seq = 0;
    while seq < n {
        let k = (n - seq).min(1000);
        let mut acks = Vec::with_capacity(k as usize);
        for s in seq..seq + k {
            let payload = args_json(0, s, 0, pad);
            acks.push(
                js.publish(subject.to_owned(), payload.into())
                    .await
                    .map_err(nats_err("preloading"))?,
            );
        }
        for ack in acks {
            ack.await.map_err(nats_err("preload ack"))?;
        }
        seq += k;
    }
    Ok(())
}

/// How long all of a run's subscribers may take to connect.
pub(crate) const CONNECT_BOUND: Duration = Duration::from_secs(90);

/// Starts `n` subscribers, each made by `spawn` from a sender it signals once its stream
/// is live, in steps of 100 (so the server's accept queue is never what is measured),
/// and waits until all are live, within [`CONNECT_BOUND`]. `what` names them in the
/// error.
pub(crate) async fn connect_all<T: Send + 'static>(
    what: &str,
    n: usize,
    mut spawn: impl FnMut(mpsc::Sender<()>) -> JoinHandle<T>,
) -> Result<Vec<JoinHandle<T>>, BenchError> {
    let (ready_tx, mut ready_rx) = mpsc::channel(n.max(1));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        tasks.push(spawn(ready_tx.clone()));
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    drop(ready_tx);
    let connect_by = tokio::time::Instant::now() + CONNECT_BOUND;
    for got in 0..n {
        match tokio::time::timeout_at(connect_by, ready_rx.recv()).await {
            Ok(Some(())) => {}
            Ok(None) | Err(_) => {
                for task in &tasks {
                    task.abort();
                }
                return Err(BenchError::NotReady {
                    what: what.to_owned(),
                    reason: format!("{got} of {n} live within {} s", CONNECT_BOUND.as_secs()),
                });
            }
        }
    }
    Ok(tasks)
}

/// A Tributary client for checks and setup.
pub fn tributary_client(base_url: &str) -> Result<Client, BenchError> {
    Client::new(base_url).map_err(|source| BenchError::Client {
        context: "creating a client",
        source,
    })
}

/// A fresh temp data directory.
pub fn data_dir() -> Result<tempfile::TempDir, BenchError> {
    tempfile::Builder::new()
        .prefix("tributary-bench-data-")
        .tempdir()
        .map_err(|source| BenchError::Io {
            context: "creating a data dir",
            path: std::env::temp_dir(),
            source,
        })
}
