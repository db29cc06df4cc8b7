//! Property tests for the event stream: for random interleavings of appends and reads,
//! a reader starting at a random `since` sees exactly the matching events, in position
//! order, with no gap and no duplicate, across the history/live switch and across falls
//! out of the tail's window. "Matching" is decided by a naive matcher written here, not
//! by `Filter::matches`, so the two check each other.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tributary_core::{
    Args, Event, EventStream, Filter, Log, MemoryLog, NewEvent, ReadQuery, StreamItem,
    StreamOptions, Tail, TailConfig, Topic, TopicPattern,
};

const TOPICS: [&str; 5] = ["a", "a.x", "a.y.z", "b.x", "b.y.z"];
const PATTERNS: [&str; 7] = ["a", "a.*", "a.>", "*.x", ">", "b.*.z", "*.y.*"];
const NAMES: [&str; 3] = ["created", "updated", "deleted"];

/// Token-by-token matching, independent of the library's implementation.
fn naive_match(pattern: &str, topic: &str) -> bool {
    fn go(p: &[&str], t: &[&str]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(&">"), Some(_)) => true,
            (Some(&"*"), Some(_)) => go(&p[1..], &t[1..]),
            (Some(lit), Some(tok)) if lit == tok => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let t: Vec<&str> = topic.split('.').collect();
    go(&p, &t)
}

#[derive(Clone, Debug)]
struct Spec {
    patterns: Vec<usize>,
    names: Vec<usize>,
}

impl Spec {
    fn filter(&self) -> Filter {
        Filter {
            topics: self
                .patterns
                .iter()
                .map(|&i| TopicPattern::new(PATTERNS[i]).unwrap())
                .collect(),
            names: self.names.iter().map(|&i| NAMES[i].to_owned()).collect(),
            ..Filter::default()
        }
    }

    fn wants(&self, e: &Event) -> bool {
        (self.patterns.is_empty()
            || self
                .patterns
                .iter()
                .any(|&i| naive_match(PATTERNS[i], e.topic.as_str())))
            && (self.names.is_empty() || self.names.iter().any(|&i| NAMES[i] == e.name))
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// Append a batch of (topic, name) pairs.
    Append(Vec<(usize, usize)>),
    /// Let the reader take up to this many events that are due.
    Read(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        prop::collection::vec((0..TOPICS.len(), 0..NAMES.len()), 1..6).prop_map(Op::Append),
        (1usize..12).prop_map(Op::Read),
    ]
}

fn event(t: usize, n: usize) -> NewEvent {
    NewEvent::new(Topic::new(TOPICS[t]).unwrap(), NAMES[n], Args::default())
}

async fn everything(log: &Arc<dyn Log>) -> Vec<Event> {
    let head = *log.head().borrow();
    log.read(ReadQuery {
        after: 0,
        up_to: head,
        filter: &Filter::all(),
        limit: usize::MAX,
    })
    .await
    .unwrap()
}

async fn next_event(stream: &mut EventStream, caught_up: &mut Option<u64>) -> Event {
    loop {
        let item = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("a due event arrives")
            .expect("the stream does not end")
            .expect("no error");
        match item {
            StreamItem::Event(e) => return e.event.clone(),
            StreamItem::CaughtUp { position } => {
                assert!(caught_up.is_none(), "caught-up is said once");
                *caught_up = Some(position);
            }
            other => panic!("nothing is ever removed here, got {other:?}"),
        }
    }
}

fn run(
    history: Vec<(usize, usize)>,
    since_frac: f64,
    spec: Spec,
    ops: Vec<Op>,
    tail_size: usize,
    batch_size: usize,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let log: Arc<dyn Log> = Arc::new(MemoryLog::new());
        if !history.is_empty() {
            log.append(history.iter().map(|&(t, n)| event(t, n)).collect())
                .await
                .unwrap();
        }
        let head_at_start = history.len() as u64;
        let since = (since_frac * (head_at_start as f64)).floor() as u64;
        let tail = Tail::spawn(
            Arc::clone(&log),
            TailConfig {
                max_events: tail_size,
                max_bytes: usize::MAX,
                read_batch: 3,
            },
        );
        let mut stream = EventStream::new(
            Arc::clone(&tail),
            StreamOptions {
                filter: spec.filter(),
                since,
                batch_size,
                ..StreamOptions::default()
            },
        );
        let mut seen: Vec<Event> = Vec::new();
        let mut caught_up = None;
        let due = |log_events: &[Event], seen: usize| {
            log_events
                .iter()
                .filter(|e| e.position > since && spec.wants(e))
                .count()
                - seen
        };
        for op in ops {
            match op {
                Op::Append(batch) => {
                    log.append(batch.iter().map(|&(t, n)| event(t, n)).collect())
                        .await
                        .unwrap();
                }
                Op::Read(n) => {
                    let all = everything(&log).await;
                    for _ in 0..n.min(due(&all, seen.len())) {
                        seen.push(next_event(&mut stream, &mut caught_up).await);
                    }
                }
            }
        }
        let all = everything(&log).await;
        for _ in 0..due(&all, seen.len()) {
            seen.push(next_event(&mut stream, &mut caught_up).await);
        }
        let want: Vec<&Event> = all
            .iter()
            .filter(|e| e.position > since && spec.wants(e))
            .collect();
        let got: Vec<&Event> = seen.iter().collect();
        assert_eq!(got, want, "exactly the matching events, in order");
        // Nothing more is pending once everything due was read.
        assert!(
            tokio::time::timeout(Duration::from_millis(20), stream.next())
                .await
                .map_or(true, |item| matches!(
                    item,
                    Some(Ok(StreamItem::CaughtUp { .. }))
                )),
            "no extra event"
        );
        if let Some(boundary) = caught_up {
            assert!(boundary >= head_at_start.max(since));
        }
        // Keyset pages of the log agree with the naive filter too.
        let filter = spec.filter();
        let mut paged = Vec::new();
        let mut after = since;
        loop {
            let page = log
                .read(ReadQuery {
                    after,
                    up_to: all.len() as u64,
                    filter: &filter,
                    limit: batch_size,
                })
                .await
                .unwrap();
            let Some(last) = page.last() else { break };
            after = last.position;
            paged.extend(page);
        }
        assert_eq!(paged.iter().collect::<Vec<_>>(), want);
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn stream_yields_exactly_the_matching_events(
        history in prop::collection::vec((0..TOPICS.len(), 0..NAMES.len()), 0..40),
        since_frac in 0.0f64..=1.0,
        patterns in prop::collection::vec(0..PATTERNS.len(), 0..3),
        names in prop::collection::vec(0..NAMES.len(), 0..2),
        ops in prop::collection::vec(op(), 0..30),
        tail_size in 1usize..20,
        batch_size in 1usize..8,
    ) {
        run(history, since_frac, Spec { patterns, names }, ops, tail_size, batch_size);
    }
}

#[test]
fn naive_matcher_agrees_with_the_library_on_every_pair() {
    for p in PATTERNS {
        let pattern = TopicPattern::new(p).unwrap();
        for t in TOPICS {
            assert_eq!(pattern.matches(t), naive_match(p, t), "{p} vs {t}");
        }
    }
}
