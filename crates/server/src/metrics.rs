//! Prometheus metrics, kept in atomics and written out by hand in the text exposition
//! format (version 0.0.4). A handful of counters does not need a metrics framework, and
//! atomics keep the hot paths (append, SSE delivery) free of locks.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tributary_core::CommitStats;

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

/// Status codes are 100..=599; one slot each keeps counting lock-free.
const STATUS_MIN: u16 = 100;
const STATUS_SLOTS: usize = 500;

pub struct Metrics {
    appended_events: AtomicU64,
    append_requests: AtomicU64,
    append_latency: Histogram,
    append_batch_size: Histogram,
    live_connections: AtomicI64,
    catching_up: AtomicI64,
    deliveries: AtomicU64,
    bytes_out: AtomicU64,
    http_requests: Box<[AtomicU64]>,
    livestore_pushes_accepted: AtomicU64,
    livestore_pushes_behind: AtomicU64,
}

/// Gauges read from elsewhere at scrape time rather than tracked here.
pub struct Snapshot {
    pub log_head: u64,
    pub tail_events: usize,
    pub tail_bytes: usize,
    pub commits: CommitStats,
    /// Events removed by topic retention and deletion since start.
    pub retention_removed: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            appended_events: AtomicU64::new(0),
            append_requests: AtomicU64::new(0),
            append_latency: Histogram::new(LATENCY_BUCKETS),
            append_batch_size: Histogram::new(BATCH_BUCKETS),
            live_connections: AtomicI64::new(0),
            catching_up: AtomicI64::new(0),
            deliveries: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            http_requests: (0..STATUS_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            livestore_pushes_accepted: AtomicU64::new(0),
            livestore_pushes_behind: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// One append request that reached the log, whether it succeeded or not: its batch
    /// size, how many events were stored (not duplicates), and how long the log took.
    pub fn record_append(&self, batch: usize, stored: usize, latency: Duration) {
        self.append_requests.fetch_add(1, Relaxed);
        self.appended_events.fetch_add(stored as u64, Relaxed);
        self.append_batch_size.observe(batch as f64);
        self.append_latency.observe(latency.as_secs_f64());
    }

    /// Counts an open SSE connection until the returned guard drops.
    pub fn live_connection(self: &Arc<Self>) -> LiveConnection {
        self.live_connections.fetch_add(1, Relaxed);
        LiveConnection(Arc::clone(self))
    }

    /// Counts a stream served on the catch-up threads until the returned guard drops.
    pub fn catching_up(self: &Arc<Self>) -> CatchingUp {
        self.catching_up.fetch_add(1, Relaxed);
        CatchingUp(Arc::clone(self))
    }

    pub fn record_sent(&self, events: u64, bytes: usize) {
        self.deliveries.fetch_add(events, Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Relaxed);
    }

    pub fn record_status(&self, status: u16) {
        if let Some(slot) = status
            .checked_sub(STATUS_MIN)
            .and_then(|i| self.http_requests.get(usize::from(i)))
        {
            slot.fetch_add(1, Relaxed);
        }
    }

    /// A LiveStore push that was stored, or refused as behind the head (the client
    /// rebases and pushes again: many of these mean heavy contention on a store).
    pub fn record_livestore_push(&self, accepted: bool) {
        let counter = if accepted {
            &self.livestore_pushes_accepted
        } else {
            &self.livestore_pushes_behind
        };
        counter.fetch_add(1, Relaxed);
    }

    /// The text exposition of every metric.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let mut out = String::with_capacity(4096);
        counter(
            &mut out,
            "tributary_appended_events_total",
            "Events stored by publish requests (duplicates not counted).",
            self.appended_events.load(Relaxed),
        );
        counter(
            &mut out,
            "tributary_append_requests_total",
            "Publish requests that reached the log.",
            self.append_requests.load(Relaxed),
        );
        self.append_latency.render(
            &mut out,
            "tributary_append_latency_seconds",
            "Time the log took to make a publish request durable.",
        );
        self.append_batch_size.render(
            &mut out,
            "tributary_append_batch_size",
            "Events per publish request.",
        );
        gauge(
            &mut out,
            "tributary_live_connections",
            "Open SSE streams.",
            self.live_connections.load(Relaxed),
        );
        gauge(
            &mut out,
            "tributary_catching_up_streams",
            "SSE streams sending history on the catch-up threads; each moves back once caught up.",
            self.catching_up.load(Relaxed),
        );
        counter(
            &mut out,
            "tributary_deliveries_total",
            "Events sent to SSE streams.",
            self.deliveries.load(Relaxed),
        );
        counter(
            &mut out,
            "tributary_bytes_out_total",
            "Bytes sent on SSE streams, heartbeats and markers included.",
            self.bytes_out.load(Relaxed),
        );
        counter(
            &mut out,
            "tributary_livestore_pushes_accepted_total",
            "LiveStore pushes stored.",
            self.livestore_pushes_accepted.load(Relaxed),
        );
        counter(
            &mut out,
            "tributary_livestore_pushes_behind_total",
            "LiveStore pushes refused with ServerAheadError (the client rebases and retries).",
            self.livestore_pushes_behind.load(Relaxed),
        );
        counter(
            &mut out,
            "tributary_log_commits_total",
            "Durable commits of the log; with group commit one carries many appends.",
            snapshot.commits.commits,
        );
        counter(
            &mut out,
            "tributary_log_committed_events_total",
            "Events stored by those commits; divided by the commits, the group-commit size.",
            snapshot.commits.events,
        );
        counter(
            &mut out,
            "tributary_retention_removed_events_total",
            "Events removed by topic retention (max_age, max_events) and topic deletion.",
            snapshot.retention_removed,
        );
        gauge(
            &mut out,
            "tributary_log_head",
            "Newest position in the log.",
            snapshot.log_head,
        );
        gauge(
            &mut out,
            "tributary_tail_events",
            "Events held by the shared in-memory tail.",
            snapshot.tail_events,
        );
        gauge(
            &mut out,
            "tributary_tail_bytes",
            "Bytes held by the shared in-memory tail.",
            snapshot.tail_bytes,
        );
        header(
            &mut out,
            "tributary_http_requests_total",
            "HTTP requests answered, by status.",
            "counter",
        );
        for (i, slot) in self.http_requests.iter().enumerate() {
            let n = slot.load(Relaxed);
            if n > 0 {
                let status = usize::from(STATUS_MIN) + i;
                let _ = writeln!(
                    out,
                    "tributary_http_requests_total{{status=\"{status}\"}} {n}"
                );
            }
        }
        out
    }
}

/// Decrements the live-connections gauge when the SSE body is dropped, however it ends.
pub struct LiveConnection(Arc<Metrics>);

impl Drop for LiveConnection {
    fn drop(&mut self) {
        self.0.live_connections.fetch_sub(1, Relaxed);
    }
}

/// Decrements the catching-up gauge when the stream leaves the catch-up threads.
pub struct CatchingUp(Arc<Metrics>);

impl Drop for CatchingUp {
    fn drop(&mut self) {
        self.0.catching_up.fetch_sub(1, Relaxed);
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, help, "counter");
    let _ = writeln!(out, "{name} {value}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    header(out, name, help, "gauge");
    let _ = writeln!(out, "{name} {value}");
}

struct Histogram {
    bounds: &'static [f64],
    /// Per bucket, not cumulative; the last slot is `+Inf`.
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    /// An `f64` kept as its bits, since there is no atomic float.
    sum: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    fn observe(&self, value: f64) {
        let i = self.bounds.partition_point(|&b| b < value);
        self.buckets[i].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        let _ = self.sum.fetch_update(Relaxed, Relaxed, |bits| {
            Some((f64::from_bits(bits) + value).to_bits())
        });
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        header(out, name, help, "histogram");
        let mut cumulative = 0;
        for (bound, bucket) in self.bounds.iter().zip(self.buckets.iter()) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.buckets[self.bounds.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{name}_sum {}", f64::from_bits(self.sum.load(Relaxed)));
        // Buckets and count are read at slightly different moments; the +Inf bucket is
        // what Prometheus checks the count against, so report that.
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

/// Per consumer group, labelled `group="…"`: lag, in flight, deliveries, redeliveries
/// and parked events. Group names are `[A-Za-z0-9_.-]`, so they need no escaping.
pub fn render_groups(out: &mut String, groups: &[tributary_groups::GroupInfo]) {
    type Field = fn(&tributary_groups::GroupInfo) -> u64;
    let families: [(&str, &str, &str, Field); 6] = [
        (
            "tributary_group_lag",
            "Matching events the group has not acked or parked yet.",
            "gauge",
            |g| g.lag,
        ),
        (
            "tributary_group_in_flight",
            "Deliveries waiting for an ack.",
            "gauge",
            |g| g.in_flight,
        ),
        (
            "tributary_group_deliveries_total",
            "Deliveries made, first attempts and redeliveries.",
            "counter",
            |g| g.delivered,
        ),
        (
            "tributary_group_redeliveries_total",
            "Deliveries of an event that had been delivered before.",
            "counter",
            |g| g.redelivered,
        ),
        (
            "tributary_group_parked_total",
            "Events moved to the dead-letter queue.",
            "counter",
            |g| g.parked,
        ),
        (
            "tributary_group_truncations_total",
            "Times retention removed matching events before the group read them.",
            "counter",
            |g| g.truncations,
        ),
    ];
    for (name, help, kind, field) in families {
        header(out, name, help, kind);
        for g in groups {
            let _ = writeln!(out, "{name}{{group=\"{}\"}} {}", g.config.name, field(g));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.record_append(1, 1, Duration::from_millis(3));
        m.record_append(20, 19, Duration::from_secs(20));
        m.record_status(201);
        let text = m.render(&Snapshot {
            log_head: 20,
            tail_events: 20,
            tail_bytes: 100,
            commits: CommitStats {
                commits: 2,
                events: 21,
            },
            retention_removed: 7,
        });
        assert!(text.contains("tributary_retention_removed_events_total 7\n"));
        assert!(text.contains("tributary_appended_events_total 20\n"));
        assert!(text.contains("tributary_log_commits_total 2\n"));
        assert!(text.contains("tributary_log_committed_events_total 21\n"));
        assert!(text.contains("tributary_append_batch_size_bucket{le=\"1\"} 1\n"));
        assert!(text.contains("tributary_append_batch_size_bucket{le=\"25\"} 2\n"));
        assert!(text.contains("tributary_append_latency_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("tributary_append_latency_seconds_bucket{le=\"10\"} 1\n"));
        assert!(text.contains("tributary_append_latency_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("tributary_append_latency_seconds_count 2\n"));
        assert!(text.contains("tributary_http_requests_total{status=\"201\"} 1\n"));
    }
}
