//! [`Config`]: what a run measures and at which sizes.

use std::path::PathBuf;
use std::time::Duration;

/// Everything a run needs to know. [`Config::quick`] and [`Config::full`] give the two
/// standard sizes; the binary's flags adjust either.
#[derive(Clone, Debug)]
pub struct Config {
    /// Tiny sizes, for the test suite.
    pub quick: bool,
    /// Interleaved rounds per comparison.
    pub rounds: usize,
    /// The `tributary` binary.
    pub tributary_bin: PathBuf,
    /// The bench binary itself, started again as the naive SSE server.
    pub self_bin: PathBuf,
    /// `redis-server`, when installed.
    pub redis_bin: Option<PathBuf>,
    /// `nats-server` (2.15, with JetStream), when installed.
    pub nats_bin: Option<PathBuf>,
    /// The directory with PostgreSQL's `initdb` and `postgres`, when installed.
    pub postgres_bin_dir: Option<PathBuf>,
    /// Where result files go.
    pub out: PathBuf,
    /// Pin servers to core 0 with `taskset` (the load generator pins itself to core 1).
    pub pin: bool,
    /// Length of one measured phase (one system, one setting, one round).
    pub phase: Duration,
    /// S1: concurrent publishers.
    pub s1_clients: Vec<usize>,
    /// S1: total open-loop rate for the latency phase; `None` picks half the slower
    /// system's throughput, measured before the rounds.
    pub s1_rate: Option<f64>,
    /// S1: also the relaxed tier (Tributary synchronous = normal vs Redis everysec).
    pub s1_relaxed: bool,
    /// S2: concurrent batch publishers to Tributary.
    pub s2_clients: Vec<usize>,
    /// S2: events per request.
    pub s2_batch: usize,
    /// S3: (subscribers, events per second) settings.
    pub s3_settings: Vec<(usize, f64)>,
    /// S3: seconds of publishing per setting.
    pub s3_phase: Duration,
    /// S8: subscribers.
    pub s8_subscribers: usize,
    /// S8: events per second.
    pub s8_rate: f64,
    /// S8: seconds of publishing; the server is killed halfway.
    pub s8_phase: Duration,
    /// S6: events preloaded before the members consume.
    pub s6_events: u64,
    /// S6: deliveries per pull (and per ack, when acking per batch).
    pub s6_batch: usize,
    /// S6: the ack wait of both systems (a killed member's deliveries come back after it).
    pub s6_ack_wait: Duration,
    /// Payload size of each event's args, in bytes (roughly: the JSON is padded to it).
    pub payload_bytes: usize,
    /// Make the naive server skip every n-th publish (to test that a gap fails the run).
    pub naive_drop_every: Option<u64>,
    /// S7: idle connections, one measurement per count.
    pub s7_connections: Vec<usize>,
    /// S7: events in the burst every connection receives.
    pub s7_burst: usize,
    /// S4: subscribers following the topic.
    pub s4_subscribers: usize,
    /// S4: concurrent publishers (one durable publisher cannot reach high rates alone).
    pub s4_publishers: usize,
    /// S4: the first rate tried, events per second.
    pub s4_start_rate: f64,
    /// S4: the rate's factor from one step to the next.
    pub s4_factor: f64,
    /// S4: at most this many rising steps.
    pub s4_max_steps: usize,
    /// S4: steps that narrow the capacity down after the first failure.
    pub s4_refine: usize,
    /// S4: seconds of publishing per step.
    pub s4_step: Duration,
    /// S5: events preloaded for the catch-up readers.
    pub s5_events: u64,
    /// S5: SSE subscribers following the live topic.
    pub s5_live_subscribers: usize,
    /// S5: SSE readers catching up from random positions during the "with" phase.
    pub s5_catchup_readers: usize,
    /// S5: events per second of the live publisher.
    pub s5_rate: f64,
    /// S5: seconds of live publishing per phase.
    pub s5_phase: Duration,
}

impl Config {
    /// Tiny sizes: seconds in all, so the harness runs in the test suite.
    pub fn quick(tributary_bin: PathBuf, self_bin: PathBuf, out: PathBuf) -> Config {
        Config {
            quick: true,
            rounds: 2,
            tributary_bin,
            self_bin,
            redis_bin: None,
            nats_bin: None,
            postgres_bin_dir: None,
            out,
            pin: true,
            phase: Duration::from_millis(400),
            s1_clients: vec![1, 16],
            s1_rate: None,
            s1_relaxed: false,
            s2_clients: vec![1, 4],
            s2_batch: 100,
            s3_settings: vec![(20, 20.0)],
            s3_phase: Duration::from_secs(1),
            s8_subscribers: 2,
            s8_rate: 100.0,
            s8_phase: Duration::from_secs(2),
            s6_events: 1000,
            s6_batch: 100,
            s6_ack_wait: Duration::from_secs(2),
            payload_bytes: 100,
            naive_drop_every: None,
            s7_connections: vec![50],
            s7_burst: 20,
            s4_subscribers: 20,
            s4_publishers: 2,
            s4_start_rate: 50.0,
            s4_factor: 4.0,
            s4_max_steps: 2,
            s4_refine: 0,
            s4_step: Duration::from_millis(500),
            s5_events: 5000,
            s5_live_subscribers: 5,
            s5_catchup_readers: 5,
            s5_rate: 20.0,
            s5_phase: Duration::from_secs(1),
        }
    }

    /// The sizes of the issue: 1/16/64 publishers, 1k subscribers at 20/s, 10k at 10/s.
    pub fn full(tributary_bin: PathBuf, self_bin: PathBuf, out: PathBuf) -> Config {
        Config {
            quick: false,
            rounds: 5,
            phase: Duration::from_secs(3),
            s1_clients: vec![1, 16, 64],
            s1_relaxed: true,
            s3_settings: vec![(1000, 20.0), (10_000, 10.0)],
            s3_phase: Duration::from_secs(10),
            // The 1k subscribers; 20 events/s keeps the load generator, which
            // reads through the client crate, well inside its one core.
            s8_subscribers: 1000,
            s8_rate: 20.0,
            s8_phase: Duration::from_secs(8),
            s6_events: 50_000,
            s7_connections: vec![1000, 10_000],
            s7_burst: 100,
            s4_subscribers: 1000,
            s4_publishers: 8,
            s4_start_rate: 20.0,
            s4_factor: 1.5,
            s4_max_steps: 14,
            s4_refine: 2,
            s4_step: Duration::from_secs(4),
            s5_events: 1_000_000,
            s5_live_subscribers: 100,
            s5_catchup_readers: 100,
            s5_phase: Duration::from_secs(10),
            ..Config::quick(tributary_bin, self_bin, out)
        }
    }
}
