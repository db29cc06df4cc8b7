//! Tributary's benchmark harness: Tributary side by side with the servers users would
//! pick instead, measured the same way on the same machine.
//!
//! How it measures, and why:
//! - **Open loop.** Publishers follow a schedule of intended send times at a fixed rate;
//!   a latency is the ack (or delivery) time minus the *intended* time, so a stall that
//!   delays later sends is counted against the server instead of hidden (coordinated
//!   omission). A closed-loop run (send the next one on the ack) measures throughput.
//! - **HDR histograms** (`hdrhistogram`) in microseconds, merged across clients.
//! - **Every event is checked.** Each carries `{"pub":P,"seq":N,"sent_us":T}` in its
//!   args; every subscriber checks that each publisher's seq has no gap and no
//!   duplicate, and the stored log is read back after publish runs. A gap or duplicate
//!   fails the run ([`BenchError::Integrity`]).
//! - **Interleaved rounds** (A B A B …) because machines are noisy: each round gives a
//!   ratio, reported as the median with its min–max.
//! - **One core each.** Servers run under `taskset -c 0`, the load generator on core 1,
//!   when the machine has two cores and `taskset` exists.
//! - Everything talks only to 127.0.0.1, every run is bounded in count and time, and
//!   every process started is stopped by its PID (a guard's `Drop`, also on error).
//!
//! # Layout
//! - [`config`]: [`Config`], the sizes of `--quick` and full runs.
//! - [`stats`]: latency histograms, percentiles, the median ratio with min–max.
//! - [`load`]: the clock, event payloads, the open-loop schedule, the seq checker, a
//!   raw SSE subscriber.
//! - [`rawhttp`]: the SSE reader's own HTTP/1.1 client (one task per subscriber).
//! - [`procs`]: starting and stopping servers (Tributary, Redis, NATS, PostgreSQL, the
//!   naive ceiling).
//! - [`peers`]: NATS JetStream's and PostgreSQL's data side: stream or table, sinks,
//!   read-back checks.
//! - [`naive`]: the naive in-memory SSE server (a broadcast channel, no storage).
//! - [`report`]: the JSON result file per scenario and the human table.
//! - [`scenarios`]: S1 (durable single publishes), S2 (batches of 100), S3 (publish →
//!   deliver latency), S5 (catch-up: one reader from the start vs a JetStream ordered
//!   consumer, and live latency while readers catch up), S6 (consumer groups vs a
//!   JetStream pull consumer), S8 (kill -9 and resume).

pub mod config;
mod error;
pub mod load;
pub mod naive;
pub mod peers;
pub mod procs;
pub mod rawhttp;
pub mod report;
pub mod scenarios;
pub mod stats;

pub use config::Config;
pub use error::BenchError;
