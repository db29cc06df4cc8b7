//! The load generator's parts: a clock, event payloads, the open-loop schedule and its
//! driver, the seq checker, and a raw SSE subscriber.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tributary_client::Client;
use tributary_client::sse::SseParser;
use tributary_core::{Args, NewEvent, Topic};

use crate::BenchError;
use crate::rawhttp::RawStream;
use crate::stats::Latency;

/// The harness's own time line. `sent_us` in events counts microseconds from its start;
/// every sender and receiver lives in this one process, so no wall clock (which may step)
/// is involved.
#[derive(Clone, Copy, Debug)]
pub struct Clock(Instant);

impl Clock {
    /// A clock starting now.
    pub fn start() -> Clock {
        Clock(Instant::now())
    }

    /// `t` in microseconds since the start.
    pub fn us(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.0).as_micros()).unwrap_or(u64::MAX)
    }

    /// Now, in microseconds since the start.
    pub fn now_us(&self) -> u64 {
        self.us(Instant::now())
    }
}

/// What every event carries: who sent it, its number in that sender's sequence, and
/// when it was meant to be sent.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub struct Mark {
    /// The publisher.
    #[serde(rename = "pub")]
    pub publisher: u32,
    /// Its sequence number, from 0, dense.
    pub seq: u64,
    /// Intended send time, [`Clock`] microseconds.
    pub sent_us: u64,
}

/// Reads the [`Mark`] out of an event's JSON (`{"args":{…}, …}`), as Tributary's SSE
/// data, its history and the naive server's frames all carry it.
pub fn mark_of_event_json(json: &str) -> Option<Mark> {
    #[derive(Deserialize)]
    struct Frame {
        args: Mark,
    }
    serde_json::from_str::<Frame>(json).ok().map(|f| f.args)
}

/// The args JSON of one event, padded so the args are about `bytes` long.
pub fn args_json(publisher: u32, seq: u64, sent_us: u64, pad: &str) -> String {
    format!(r#"{{"pub":{publisher},"seq":{seq},"sent_us":{sent_us},"pad":"{pad}"}}"#)
}

/// Padding that brings an event's args to roughly `payload_bytes`.
pub fn padding(payload_bytes: usize) -> String {
    "x".repeat(payload_bytes.saturating_sub(48))
}

/// Checks one receiver's view: per publisher, seqs arrive as 0, 1, 2, … with nothing
/// skipped and nothing twice.
#[derive(Clone, Debug, Default)]
pub struct SeqCheck {
    next: HashMap<u32, u64>,
    /// Events seen.
    pub count: u64,
    /// Seqs skipped over (a later seq arrived first).
    pub gaps: u64,
    /// Seqs seen again, or out of order.
    pub duplicates: u64,
    /// Each publisher's first seq seen is where its sequence starts (a reader that
    /// started mid-log), instead of 0.
    from_first_seen: bool,
}

impl SeqCheck {
    /// A check for a reader that starts anywhere in the log: per publisher, the seqs
    /// must be dense from the first one it sees.
    pub fn from_first_seen() -> SeqCheck {
        SeqCheck {
            from_first_seen: true,
            ..SeqCheck::default()
        }
    }

    /// Takes one event.
    pub fn observe(&mut self, mark: Mark) {
        self.count += 1;
        let first = if self.from_first_seen { mark.seq } else { 0 };
        let next = self.next.entry(mark.publisher).or_insert(first);
        if mark.seq == *next {
            *next += 1;
        } else if mark.seq > *next {
            self.gaps += mark.seq - *next;
            *next = mark.seq + 1;
        } else {
            self.duplicates += 1;
        }
    }

    /// Events of `sent` (per publisher, how many were acked) that never arrived at the
    /// end of the sequence.
    pub fn missing_tail(&self, sent: &HashMap<u32, u64>) -> u64 {
        sent.iter()
            .map(|(p, n)| n.saturating_sub(self.next.get(p).copied().unwrap_or(0)))
            .sum()
    }

    /// A description of what is wrong, if anything, given what was acked.
    pub fn problem(&self, sent: &HashMap<u32, u64>) -> Option<String> {
        let missing = self.missing_tail(sent);
        (self.gaps > 0 || self.duplicates > 0 || missing > 0).then(|| {
            format!(
                "{} gaps, {} duplicates, {} missing at the end ({} seen)",
                self.gaps, self.duplicates, missing, self.count
            )
        })
    }
}

/// Where a publisher sends.
pub enum Sink {
    /// `POST /api/v1/events`, one event or a batch.
    Tributary {
        /// One client per publisher, so each has its own connection.
        client: Client,
        /// The topic.
        topic: Topic,
    },
    /// `XADD key * data <the same args JSON>`.
    Redis {
        /// One connection per publisher.
        conn: MultiplexedConnection,
        /// The stream key.
        key: String,
    },
    /// A JetStream publish of the same args JSON to `subject`, waiting for the stream's
    /// ack (with `sync_interval: always`, an ack means fsynced).
    Nats {
        /// One JetStream context (one connection) per publisher.
        js: async_nats::jetstream::Context,
        /// The subject the stream captures.
        subject: String,
    },
    /// One autocommit `INSERT` per event into an event-log table.
    Postgres {
        /// One connection per publisher.
        client: tokio_postgres::Client,
        /// The prepared insert: `(topic, seq, name, args)`.
        insert: tokio_postgres::Statement,
        /// The topic column.
        topic: String,
    },
    /// The naive server's `POST /publish`.
    Naive {
        /// The HTTP client.
        http: reqwest::Client,
        /// The publish URL.
        url: String,
    },
}

impl Sink {
    /// Sends `n` events with seqs from `first_seq`, as one request; returns on the ack.
    pub async fn send(
        &mut self,
        publisher: u32,
        first_seq: u64,
        n: usize,
        sent_us: u64,
        pad: &str,
    ) -> Result<(), BenchError> {
        match self {
            Sink::Tributary { client, topic } => {
                let event = |seq: u64| {
                    let args = Args::from_json(&args_json(publisher, seq, sent_us, pad))
                        .expect("the args format is valid JSON");
                    NewEvent::new(topic.clone(), "bench.Event", args)
                };
                if n == 1 {
                    client.publish(event(first_seq)).await.map(|_| ())
                } else {
                    let events = (first_seq..first_seq + n as u64).map(event).collect();
                    client.publish_batch(events).await.map(|_| ())
                }
                .map_err(|source| BenchError::Client {
                    context: "publishing",
                    source,
                })
            }
            Sink::Redis { conn, key } => {
                let mut pipe = redis::pipe();
                for seq in first_seq..first_seq + n as u64 {
                    pipe.cmd("XADD")
                        .arg(&*key)
                        .arg("*")
                        .arg("data")
                        .arg(args_json(publisher, seq, sent_us, pad));
                }
                pipe.query_async::<Vec<String>>(conn)
                    .await
                    .map(|_| ())
                    .map_err(|source| BenchError::Redis {
                        context: "XADD",
                        source,
                    })
            }
            Sink::Nats { js, subject } => {
                for seq in first_seq..first_seq + n as u64 {
                    let payload = args_json(publisher, seq, sent_us, pad);
                    let nats_err = |context: &'static str| {
                        move |e: async_nats::jetstream::context::PublishError| BenchError::Nats {
                            context,
                            source: Box::new(e),
                        }
                    };
                    // The first await sends; the second waits for the stream's ack.
                    js.publish(subject.clone(), payload.into())
                        .await
                        .map_err(nats_err("publishing"))?
                        .await
                        .map_err(nats_err("waiting for the publish ack"))?;
                }
                Ok(())
            }
            Sink::Postgres {
                client,
                insert,
                topic,
            } => {
                for seq in first_seq..first_seq + n as u64 {
                    let args = args_json(publisher, seq, sent_us, pad);
                    client
                        .execute(
                            insert,
                            &[&topic.as_str(), &(seq as i64), &"bench.Event", &args],
                        )
                        .await
                        .map_err(|source| BenchError::Postgres {
                            context: "INSERT",
                            source,
                        })?;
                }
                Ok(())
            }
            Sink::Naive { http, url } => {
                for seq in first_seq..first_seq + n as u64 {
                    let body = format!(
                        r#"{{"topic":"bench","name":"bench.Event","args":{}}}"#,
                        args_json(publisher, seq, sent_us, pad)
                    );
                    http.post(url.as_str())
                        .body(body)
                        .send()
                        .await
                        .and_then(|r| r.error_for_status())
                        .map_err(|source| BenchError::Http {
                            context: "publishing to the naive server",
                            source,
                        })?;
                }
                Ok(())
            }
        }
    }
}

/// When a publisher sends. `interval: None` is a closed loop (the next request goes on
/// the ack, for throughput); `Some` is an open loop of intended times `start + i *
/// interval`, and latency counts from the intended time even when the publisher is late.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// The first intended send.
    pub start: Instant,
    /// Between intended sends.
    pub interval: Option<Duration>,
    /// No send is intended at or after this.
    pub end: Instant,
    /// A publisher still catching up on its schedule stops here, and the sends it
    /// never made are counted as `behind`.
    pub hard_end: Instant,
}

/// What one publisher did.
#[derive(Debug, Default)]
pub struct Published {
    /// Events acked.
    pub events: u64,
    /// Intended sends that were never made because the publisher fell behind.
    pub behind: u64,
    /// Ack latency from the intended send time.
    pub latency: Latency,
    /// When the last ack came.
    pub finished: Option<Instant>,
}

/// Runs one publisher to its schedule: `per_request` events per request.
pub async fn drive(
    mut sink: Sink,
    publisher: u32,
    per_request: usize,
    schedule: Schedule,
    clock: Clock,
    pad: &str,
) -> Result<Published, BenchError> {
    let mut out = Published::default();
    let mut seq = 0u64;
    for i in 0u32.. {
        let intended = match schedule.interval {
            Some(interval) => schedule.start + interval * i,
            None => Instant::now().max(schedule.start),
        };
        if intended >= schedule.end {
            break;
        }
        if Instant::now() >= schedule.hard_end {
            let left = schedule
                .end
                .saturating_duration_since(intended)
                .as_secs_f64()
                / schedule.interval.map_or(1.0, |d| d.as_secs_f64());
            out.behind = left.ceil() as u64 * per_request as u64;
            break;
        }
        // A closed loop sends at once: tokio's timer rounds a deadline up to its next
        // millisecond, so sleeping until "now" added up to a millisecond to every
        // request and made the closed-loop rates those of the timer.
        if schedule.interval.is_some() || Instant::now() < schedule.start {
            tokio::time::sleep_until(intended.into()).await;
        }
        sink.send(publisher, seq, per_request, clock.us(intended), pad)
            .await?;
        let now = Instant::now();
        out.latency.record(now - intended);
        out.finished = Some(now);
        seq += per_request as u64;
    }
    out.events = seq;
    Ok(out)
}

/// After publishing has ended, how long a subscriber still missing events waits for
/// the next one before it gives up (and reports what is missing).
pub const QUIET: Duration = Duration::from_secs(3);

/// What one SSE subscriber saw.
#[derive(Debug, Default)]
pub struct Received {
    /// Its seq check.
    pub check: SeqCheck,
    /// Publish → deliver latency (receive time − intended send time).
    pub latency: Latency,
    /// The stream failed before the end, with why.
    pub error: Option<String>,
}

/// Follows one raw SSE stream (`GET path` on `addr`, through [`RawStream`]) without the
/// client crate's resume logic, so Tributary and the naive server are read the same way.
/// Says `ready` once the server marks the stream live (`caught-up` or `ready`), adds
/// each event to `progress` (a count shared by many subscribers, for a scenario that
/// waits on deliveries while the streams stay open), and stops once `expected` (set when
/// publishing is over) events have arrived, or at `deadline`.
pub async fn sse_subscriber(
    addr: SocketAddr,
    path: String,
    clock: Clock,
    ready: mpsc::Sender<()>,
    mut expected: watch::Receiver<Option<u64>>,
    deadline: Instant,
    progress: Option<Arc<AtomicU64>>,
) -> Received {
    let mut out = Received::default();
    let mut body = match RawStream::open(addr, &path).await {
        Ok(b) => b,
        Err(e) => {
            out.error = Some(e);
            return out;
        }
    };
    let mut parser = SseParser::new();
    let mut chunk = Vec::with_capacity(4096);
    let deadline = tokio::time::Instant::from_std(deadline);
    let mut last_event = tokio::time::Instant::now();
    loop {
        if !chunk.is_empty() {
            // One chunk per turn, so that a subscriber with a full socket does not keep
            // the load generator's thread from the others (whose latency it would add).
            tokio::task::yield_now().await;
        }
        // Once publishing is over, stop at the expected count, or after a quiet spell:
        // a server that lost events must end in a reported gap, not in a hang.
        let stop_at = match *expected.borrow_and_update() {
            Some(n) if out.check.count >= n => break,
            Some(_) => deadline.min(last_event + QUIET),
            None => deadline,
        };
        chunk.clear();
        tokio::select! {
            more = body.read(&mut chunk) => {
                match more {
                    Ok(true) => {}
                    Ok(false) => { out.error = Some("the stream ended".into()); break; }
                    Err(e) => { out.error = Some(e); break; }
                }
                let now = clock.now_us();
                last_event = tokio::time::Instant::now();
                let events = match parser.feed(&chunk) {
                    Ok(e) => e,
                    Err(e) => { out.error = Some(format!("parsing: {e}")); break; }
                };
                for event in events {
                    match event.event.as_str() {
                        "caught-up" | "ready" => { let _ = ready.try_send(()); }
                        "message" => {
                            if let Some(mark) = mark_of_event_json(&event.data) {
                                out.latency.record_us(now.saturating_sub(mark.sent_us));
                                out.check.observe(mark);
                                if let Some(p) = &progress {
                                    p.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ = expected.changed() => {}
            _ = tokio::time::sleep_until(stop_at) => {
                if stop_at < deadline {
                    out.error = Some(format!("nothing more arrived within {} s after publishing ended", QUIET.as_secs()));
                }
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(publisher: u32, seq: u64) -> Mark {
        Mark {
            publisher,
            seq,
            sent_us: 0,
        }
    }

    #[test]
    fn seq_check_counts_gaps_duplicates_and_a_missing_tail() {
        let mut c = SeqCheck::default();
        for (p, s) in [(0, 0), (1, 0), (0, 1), (0, 3), (0, 3), (1, 1)] {
            c.observe(mark(p, s));
        }
        assert_eq!((c.count, c.gaps, c.duplicates), (6, 1, 1));
        let sent = HashMap::from([(0, 4), (1, 3)]);
        assert_eq!(c.missing_tail(&sent), 1);
        assert!(c.problem(&sent).is_some());
        let mut ok = SeqCheck::default();
        ok.observe(mark(0, 0));
        assert!(ok.problem(&HashMap::from([(0, 1)])).is_none());
    }

    #[test]
    fn seq_check_from_first_seen_starts_where_the_reader_started() {
        let mut c = SeqCheck::from_first_seen();
        for (p, s) in [(0, 7), (0, 8), (1, 3), (0, 10), (1, 3)] {
            c.observe(mark(p, s));
        }
        assert_eq!((c.count, c.gaps, c.duplicates), (5, 1, 1));
        assert_eq!(c.missing_tail(&HashMap::from([(0, 12), (1, 4)])), 1);
    }

    #[test]
    fn args_carry_a_mark_that_reads_back() {
        let args = args_json(3, 9, 1234, &padding(100));
        assert!((90..=110).contains(&args.len()), "{}", args.len());
        let event = format!(r#"{{"position":1,"args":{args}}}"#);
        assert_eq!(
            mark_of_event_json(&event),
            Some(Mark {
                publisher: 3,
                seq: 9,
                sent_us: 1234
            })
        );
    }
}
