//! The cases. Each takes a fresh, empty log.

pub use crate::retention::*;

use std::sync::Arc;
use std::time::Duration;

use tributary_core::{
    Args, Event, EventStream, Filter, Log, LogError, NewEvent, ReadQuery, StreamItem,
    StreamOptions, Tail, TailConfig, Timestamp, Topic, TopicPattern, ValidationError,
};

fn topic(s: &str) -> Topic {
    Topic::new(s).unwrap()
}

fn ev(t: &str, name: &str) -> NewEvent {
    NewEvent::new(topic(t), name, Args::from_json(r#"{"k":1}"#).unwrap())
}

async fn all_events(log: &Arc<dyn Log>) -> Vec<Event> {
    let head = *log.head().borrow();
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = log
            .read(ReadQuery {
                after,
                up_to: head,
                filter: &Filter::all(),
                limit: 1000,
            })
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = last.position;
        out.extend(page);
    }
    out
}

pub async fn append_assigns_dense_positions_and_seqs(log: Arc<dyn Log>) {
    let a = log.append(vec![ev("a", "x"), ev("b", "x")]).await.unwrap();
    assert_eq!(
        a.iter().map(|r| (r.position, r.seq)).collect::<Vec<_>>(),
        [(1, 1), (2, 1)]
    );
    let b = log.append(vec![ev("a", "y")]).await.unwrap();
    assert_eq!((b[0].position, b[0].seq, b[0].duplicate), (3, 2, false));
    let events = all_events(&log).await;
    assert_eq!(
        events.iter().map(|e| e.position).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(events[2].topic.as_str(), "a");
    assert_eq!(events[2].seq, 2);
    assert_eq!(events[2].parent_seq(), 1);
}

pub async fn batch_is_atomic_on_seq_conflict(log: Arc<dyn Log>) {
    log.append(vec![ev("a", "x"), ev("a", "x")]).await.unwrap();
    let err = log
        .append(vec![ev("b", "fine"), ev("a", "stale").with_expected_seq(1)])
        .await
        .unwrap_err();
    match err {
        LogError::SeqConflict {
            topic,
            expected,
            head,
            index,
        } => {
            assert_eq!((topic.as_str(), expected, head, index), ("a", 1, 2, 1));
        }
        other => panic!("expected a seq conflict, got {other:?}"),
    }
    assert_eq!(*log.head().borrow(), 2);
    assert_eq!(
        all_events(&log).await.len(),
        2,
        "nothing of the batch stored"
    );
    assert!(
        log.topics()
            .await
            .unwrap()
            .iter()
            .all(|t| t.topic.as_str() != "b")
    );
    // The next append gets the next position: the failed batch burnt none.
    let r = log.append(vec![ev("b", "x")]).await.unwrap();
    assert_eq!((r[0].position, r[0].seq), (3, 1));
}

pub async fn expected_seq_at_head_is_accepted(log: Arc<dyn Log>) {
    let r = log
        .append(vec![ev("t", "x").with_expected_seq(0)])
        .await
        .unwrap();
    assert_eq!(r[0].seq, 1);
    // Within one batch each event expects the head left by the one before.
    let r = log
        .append(vec![
            ev("t", "x").with_expected_seq(1),
            ev("t", "x").with_expected_seq(2),
        ])
        .await
        .unwrap();
    assert_eq!(r.iter().map(|a| a.seq).collect::<Vec<_>>(), [2, 3]);
    let err = log
        .append(vec![ev("t", "x").with_expected_seq(0)])
        .await
        .unwrap_err();
    assert!(
        matches!(err, LogError::SeqConflict { head: 3, .. }),
        "{err:?}"
    );
}

pub async fn duplicate_ids_answer_the_original(log: Arc<dyn Log>) {
    let first = log.append(vec![ev("t", "x").with_id("k1")]).await.unwrap()[0];
    log.append(vec![ev("u", "x")]).await.unwrap();
    let again = log.append(vec![ev("t", "x").with_id("k1")]).await.unwrap()[0];
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!((again.position, again.seq), (first.position, first.seq));
    // A retry of a publish that carried expected_seq must not turn into a conflict.
    let retried = log
        .append(vec![ev("t", "x").with_id("k1").with_expected_seq(0)])
        .await
        .unwrap()[0];
    assert!(retried.duplicate);
    // Within one batch, the second use of an id is a duplicate of the first.
    let batch = log
        .append(vec![ev("t", "x").with_id("k2"), ev("t", "x").with_id("k2")])
        .await
        .unwrap();
    assert!(!batch[0].duplicate && batch[1].duplicate);
    assert_eq!(batch[0].position, batch[1].position);
    assert_eq!(all_events(&log).await.len(), 3);
}

pub async fn missing_ids_are_generated_and_unique(log: Arc<dyn Log>) {
    log.append(vec![ev("t", "x"), ev("t", "x")]).await.unwrap();
    let events = all_events(&log).await;
    assert_ne!(events[0].id, events[1].id);
    for e in &events {
        assert_eq!(e.id.len(), 36, "a UUID: {}", e.id);
        assert_eq!(&e.id[14..15], "7", "a UUIDv7: {}", e.id);
    }
}

pub async fn invalid_batches_are_refused_and_change_nothing(log: Arc<dyn Log>) {
    let err = log.append(vec![]).await.unwrap_err();
    assert!(matches!(
        err,
        LogError::Invalid(ValidationError::EmptyBatch)
    ));
    let mut bad = ev("t", "x");
    bad.name = String::new();
    let err = log.append(vec![ev("t", "x"), bad]).await.unwrap_err();
    assert!(matches!(err, LogError::Invalid(_)), "{err:?}");
    assert_eq!(*log.head().borrow(), 0);
    assert!(log.topics().await.unwrap().is_empty());
}

pub async fn reads_are_keyset_pages_that_honour_filters(log: Arc<dyn Log>) {
    let mut batch = Vec::new();
    for i in 0..30 {
        let t = ["orders.eu.created", "orders.us.created", "users.eu"][i % 3];
        let mut e = ev(t, if i % 2 == 0 { "even" } else { "odd" });
        e.client_id = Some(format!("c{}", i % 4));
        e.session_id = (i % 5 == 0).then(|| "s0".to_owned());
        batch.push(e);
    }
    log.append(batch).await.unwrap();
    let all = all_events(&log).await;
    let filters = [
        Filter::topic(TopicPattern::new("orders.>").unwrap()),
        Filter::topic(TopicPattern::new("*.eu.*").unwrap()),
        Filter::topic(TopicPattern::new("users.eu").unwrap()),
        Filter::topic(TopicPattern::new("orders.*").unwrap()),
        Filter {
            topics: vec![
                TopicPattern::new("users.*").unwrap(),
                TopicPattern::new("orders.us.created").unwrap(),
            ],
            names: vec!["odd".into()],
            ..Filter::default()
        },
        Filter {
            client_ids: vec!["c1".into(), "c2".into()],
            ..Filter::default()
        },
        Filter {
            session_ids: vec!["s0".into()],
            names: vec!["even".into()],
            ..Filter::default()
        },
    ];
    for filter in filters {
        let want: Vec<_> = all.iter().filter(|e| filter.matches(e)).cloned().collect();
        let mut got = Vec::new();
        let mut after = 0;
        loop {
            let page = log
                .read(ReadQuery {
                    after,
                    up_to: 30,
                    filter: &filter,
                    limit: 4,
                })
                .await
                .unwrap();
            assert!(page.len() <= 4);
            let Some(last) = page.last() else { break };
            after = last.position;
            got.extend(page);
        }
        assert_eq!(got, want, "filter {filter:?}");
    }
}

pub async fn read_respects_up_to_and_limit(log: Arc<dyn Log>) {
    log.append((0..10).map(|_| ev("t", "x")).collect())
        .await
        .unwrap();
    let q = |after, up_to, limit| ReadQuery {
        after,
        up_to,
        filter: &FILTER_ALL,
        limit,
    };
    let page = log.read(q(3, 6, 100)).await.unwrap();
    assert_eq!(
        page.iter().map(|e| e.position).collect::<Vec<_>>(),
        [4, 5, 6]
    );
    assert_eq!(log.read(q(3, 100, 2)).await.unwrap().len(), 2);
    assert!(log.read(q(10, 20, 5)).await.unwrap().is_empty());
    assert!(log.read(q(6, 6, 5)).await.unwrap().is_empty());
}

static FILTER_ALL: Filter = Filter {
    topics: Vec::new(),
    names: Vec::new(),
    client_ids: Vec::new(),
    session_ids: Vec::new(),
};

pub async fn head_moves_after_append(log: Arc<dyn Log>) {
    let mut head = log.head();
    assert_eq!(*head.borrow_and_update(), 0);
    let appender = {
        let log = Arc::clone(&log);
        tokio::spawn(async move { log.append(vec![ev("t", "x"), ev("t", "y")]).await })
    };
    tokio::time::timeout(Duration::from_secs(5), head.changed())
        .await
        .expect("head moves")
        .unwrap();
    appender.await.unwrap().unwrap();
    assert_eq!(*log.head().borrow(), 2);
}

pub async fn position_before_finds_time(log: Arc<dyn Log>) {
    log.append(vec![ev("t", "x")]).await.unwrap();
    let first = all_events(&log).await[0].timestamp;
    tokio::time::sleep(Duration::from_millis(15)).await;
    let between = Timestamp::now();
    tokio::time::sleep(Duration::from_millis(15)).await;
    log.append(vec![ev("t", "y")]).await.unwrap();
    assert_eq!(log.position_before(first).await.unwrap(), 0);
    assert_eq!(log.position_before(between).await.unwrap(), 1);
    assert_eq!(
        log.position_before(Timestamp::from_millis(i64::MAX / 2))
            .await
            .unwrap(),
        2
    );
}

pub async fn topics_list_heads_and_counts(log: Arc<dyn Log>) {
    log.append(vec![ev("b", "x"), ev("a", "x"), ev("b", "x")])
        .await
        .unwrap();
    let topics = log.topics().await.unwrap();
    let summary: Vec<_> = topics
        .iter()
        .map(|t| (t.topic.as_str(), t.head_seq, t.event_count, t.last_position))
        .collect();
    assert_eq!(summary, [("a", 1, 1, 2), ("b", 2, 2, 3)]);
}

pub async fn args_and_fields_round_trip(log: Arc<dyn Log>) {
    let args = r#"{"text":"grüße 👋 \"q\"\n","n":-1.5e3,"big":18446744073709551615,"list":[null,true,{}]}"#;
    let mut e = NewEvent::new(topic("t"), "v1.Thing", Args::from_json(args).unwrap());
    e.id = Some("my-id".into());
    e.client_id = Some("client-a".into());
    e.session_id = Some("session-1".into());
    let before = Timestamp::now();
    log.append(vec![e]).await.unwrap();
    let got = &all_events(&log).await[0];
    assert_eq!(got.args.as_json(), args);
    assert_eq!(got.name, "v1.Thing");
    assert_eq!(got.id, "my-id");
    assert_eq!(got.client_id.as_deref(), Some("client-a"));
    assert_eq!(got.session_id.as_deref(), Some("session-1"));
    assert!(got.timestamp >= before && got.timestamp <= Timestamp::now());
}

pub async fn concurrent_appends_stay_dense(log: Arc<dyn Log>) {
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut got = Vec::new();
                for i in 0..40 {
                    let t = if i % 2 == 0 { "shared" } else { "own" };
                    let t = format!("{t}.{}", if t == "own" { w } else { 0 });
                    let r = log
                        .append(vec![ev(&t, "x").with_id(format!("w{w}-{i}"))])
                        .await
                        .unwrap();
                    got.push(r[0]);
                }
                got
            })
        })
        .collect();
    let mut positions = Vec::new();
    for t in tasks {
        positions.extend(t.await.unwrap().into_iter().map(|a| a.position));
    }
    positions.sort_unstable();
    assert_eq!(positions, (1..=320).collect::<Vec<_>>());
    let events = all_events(&log).await;
    let mut per_topic: std::collections::HashMap<String, Vec<u64>> = Default::default();
    let mut last_ts = Timestamp::from_millis(0);
    for e in &events {
        per_topic
            .entry(e.topic.to_string())
            .or_default()
            .push(e.seq);
        assert!(e.timestamp >= last_ts, "timestamps follow positions");
        last_ts = e.timestamp;
    }
    for (t, seqs) in per_topic {
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "topic {t}"
        );
    }
}

pub async fn closed_log_refuses_appends(log: Arc<dyn Log>) {
    log.append(vec![ev("t", "x")]).await.unwrap();
    log.close().await.unwrap();
    let err = log.append(vec![ev("t", "x")]).await.unwrap_err();
    assert!(matches!(err, LogError::Closed), "{err:?}");
    assert!(log.check_writable().await.is_err());
    // What was stored stays readable.
    assert_eq!(all_events(&log).await.len(), 1);
}

pub async fn stream_switches_from_history_to_live_without_gap(log: Arc<dyn Log>) {
    log.append(
        (0..50)
            .map(|i| ev(if i % 2 == 0 { "a" } else { "b" }, "x"))
            .collect(),
    )
    .await
    .unwrap();
    let tail = Tail::spawn(
        Arc::clone(&log),
        TailConfig {
            max_events: 16,
            ..TailConfig::default()
        },
    );
    let mut stream = EventStream::new(
        Arc::clone(&tail),
        StreamOptions {
            filter: Filter::topic(TopicPattern::new("a").unwrap()),
            since: 10,
            batch_size: 7,
            ..StreamOptions::default()
        },
    );
    let writer = {
        let log = Arc::clone(&log);
        tokio::spawn(async move {
            for i in 0..50 {
                log.append(vec![ev(if i % 2 == 0 { "a" } else { "b" }, "x")])
                    .await
                    .unwrap();
                if i % 10 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let mut positions = Vec::new();
    let mut caught_up = 0;
    while positions.len() < 45 {
        let item = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("stream keeps up")
            .unwrap()
            .unwrap();
        match item {
            StreamItem::Event(e) => positions.push(e.event.position),
            StreamItem::CaughtUp { .. } => caught_up += 1,
            other => panic!("nothing was removed, got {other:?}"),
        }
    }
    writer.await.unwrap();
    let want: Vec<u64> = (11..=100).filter(|p| p % 2 == 1).collect();
    assert_eq!(positions, want);
    assert_eq!(caught_up, 1);
}

pub async fn read_topic_pages_by_seq(log: Arc<dyn Log>) {
    assert!(log.read_topic(&topic("a"), 0, 10).await.unwrap().is_empty());
    assert_eq!(log.topic_head(&topic("a")).await.unwrap(), 0);
    for i in 0..5 {
        log.append(vec![ev("a", &format!("a{i}")), ev("b", "x")])
            .await
            .unwrap();
    }
    assert_eq!(log.topic_head(&topic("a")).await.unwrap(), 5);
    assert_eq!(log.topic_head(&topic("b")).await.unwrap(), 5);
    // Keyset pages: each starts after the last seq of the one before.
    let first = log.read_topic(&topic("a"), 0, 2).await.unwrap();
    assert_eq!(
        first
            .iter()
            .map(|e| (e.seq, e.name.as_str()))
            .collect::<Vec<_>>(),
        [(1, "a0"), (2, "a1")]
    );
    assert!(first.iter().all(|e| e.topic.as_str() == "a"));
    assert_eq!(first[1].position, 3, "positions stay the log's own");
    let rest = log.read_topic(&topic("a"), 2, 100).await.unwrap();
    assert_eq!(rest.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4, 5]);
    assert!(
        log.read_topic(&topic("a"), 5, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(log.read_topic(&topic("a"), 0, 0).await.unwrap().is_empty());
    assert!(log.read_topic(&topic("c"), 0, 10).await.unwrap().is_empty());
}

pub async fn log_id_is_stable(log: Arc<dyn Log>) {
    let id = log.log_id().await.unwrap();
    assert!(id.len() >= 16, "long enough to be unguessable: {id:?}");
    log.append(vec![ev("a", "x")]).await.unwrap();
    assert_eq!(log.log_id().await.unwrap(), id, "appends do not change it");
}

/// Two logs made fresh (new memory, a new file) never share an id: that is how a
/// client tells a wiped server from the one it knew.
pub async fn fresh_logs_have_different_ids(a: Arc<dyn Log>, b: Arc<dyn Log>) {
    assert_ne!(a.log_id().await.unwrap(), b.log_id().await.unwrap());
}

/// A log that hands over its commits ([`Log::commits`]) hands over exactly what readers
/// will read: every stored event once, in position order, each commit dense, nothing of
/// a refused request or of a duplicate. A log that does not offer them passes.
pub async fn commits_hand_over_what_readers_will_read(log: Arc<dyn Log>) {
    let Some(mut commits) = log.commits() else {
        return;
    };
    log.append(vec![ev("a", "x").with_id("one"), ev("b", "y")])
        .await
        .unwrap();
    // A duplicate stores nothing; the new event beside it is stored.
    log.append(vec![ev("a", "again").with_id("one"), ev("a", "z")])
        .await
        .unwrap();
    // Refused whole: nothing of it may be handed over.
    log.append(vec![ev("c", "no"), ev("a", "stale").with_expected_seq(1)])
        .await
        .unwrap_err();
    // Many concurrent appends, which a backend may commit together.
    let appends: Vec<_> = (0..20)
        .map(|i| {
            let log = Arc::clone(&log);
            tokio::spawn(async move { log.append(vec![ev("d", &format!("n{i}"))]).await })
        })
        .collect();
    for a in appends {
        a.await.unwrap().unwrap();
    }
    let mut handed = Vec::new();
    while let Ok(commit) = commits.try_recv() {
        assert!(!commit.is_empty(), "an empty commit was handed over");
        for pair in commit.windows(2) {
            assert_eq!(
                pair[1].event.position,
                pair[0].event.position + 1,
                "a commit is dense"
            );
        }
        handed.extend(commit.iter().map(|e| e.event.clone()));
    }
    assert_eq!(handed, all_events(&log).await);
    assert_eq!(handed.len(), 23);
}
