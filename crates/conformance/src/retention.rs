//! Cases for topic settings and retention. Each takes a fresh, empty log; they are
//! re-exported from [`crate::cases`] so that the one macro runs them all.

use std::sync::Arc;
use std::time::Duration;

use tributary_core::{
    Args, Event, EventStream, Filter, Log, LogError, NewEvent, PruneRule, ReadQuery, StreamItem,
    StreamOptions, Tail, TailConfig, Topic, TopicConfig, TopicPattern,
};

fn topic(s: &str) -> Topic {
    Topic::new(s).unwrap()
}

fn ev(t: &str, name: &str) -> NewEvent {
    NewEvent::new(topic(t), name, Args::from_json(r#"{"k":1}"#).unwrap())
}

fn pattern(p: &str) -> Filter {
    Filter::topic(TopicPattern::new(p).unwrap())
}

async fn read_all(log: &Arc<dyn Log>, filter: &Filter) -> Vec<Event> {
    log.read(ReadQuery {
        after: 0,
        up_to: *log.head().borrow(),
        filter,
        limit: 10_000,
    })
    .await
    .unwrap()
}

fn keep_last(n: u64) -> PruneRule {
    PruneRule {
        before: None,
        keep_last: Some(n),
    }
}

pub async fn topic_settings_round_trip(log: Arc<dyn Log>) {
    let config = TopicConfig {
        max_age: Some(Duration::from_secs(3600)),
        max_events: Some(10),
        max_event_bytes: Some(4096),
    };
    log.set_topic_config(&topic("a.b"), config.clone())
        .await
        .unwrap();
    // Listed before its first event, with its settings.
    let listed = log.topics().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].topic.as_str(), "a.b");
    assert_eq!(
        (listed[0].head_seq, listed[0].event_count),
        (0, 0),
        "{listed:?}"
    );
    assert_eq!(listed[0].config.as_ref(), Some(&config));
    assert_eq!(
        log.topic(&topic("a.b")).await.unwrap(),
        Some(listed[0].clone())
    );
    assert_eq!(log.topic(&topic("nope")).await.unwrap(), None);

    // Replaced whole, not merged.
    let smaller = TopicConfig {
        max_events: Some(3),
        ..TopicConfig::default()
    };
    log.set_topic_config(&topic("a.b"), smaller.clone())
        .await
        .unwrap();
    log.append(vec![ev("a.b", "x")]).await.unwrap();
    let info = log.topic(&topic("a.b")).await.unwrap().unwrap();
    assert_eq!(info.config, Some(smaller));
    assert_eq!((info.head_seq, info.event_count), (1, 1));

    assert!(log.remove_topic_config(&topic("a.b")).await.unwrap());
    assert!(!log.remove_topic_config(&topic("a.b")).await.unwrap());
    assert!(!log.remove_topic_config(&topic("never")).await.unwrap());
    let info = log.topic(&topic("a.b")).await.unwrap().unwrap();
    assert_eq!(info.config, None);
    // Still listed: it has an event.
    assert_eq!(log.topics().await.unwrap().len(), 1);
}

pub async fn prune_by_count_removes_the_oldest_first(log: Arc<dyn Log>) {
    // a gets seqs 1..=10 at odd positions, b 1..=10 at even ones.
    for _ in 0..10 {
        log.append(vec![ev("a", "x"), ev("b", "x")]).await.unwrap();
    }
    assert_eq!(log.prune(&topic("a"), keep_last(3), 4).await.unwrap(), 4);
    assert_eq!(log.prune(&topic("a"), keep_last(3), 4).await.unwrap(), 3);
    assert_eq!(log.prune(&topic("a"), keep_last(3), 4).await.unwrap(), 0);
    assert_eq!(
        log.prune(&topic("unknown"), keep_last(0), 4).await.unwrap(),
        0
    );

    let a = read_all(&log, &pattern("a")).await;
    assert_eq!(a.iter().map(|e| e.seq).collect::<Vec<_>>(), [8, 9, 10]);
    assert_eq!(read_all(&log, &pattern("b")).await.len(), 10, "b untouched");
    let from_seq = log.read_topic(&topic("a"), 0, 10).await.unwrap();
    assert_eq!(
        from_seq.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [8, 9, 10]
    );
    let after_8 = log.read_topic(&topic("a"), 8, 10).await.unwrap();
    assert_eq!(after_8.iter().map(|e| e.seq).collect::<Vec<_>>(), [9, 10]);

    let info = log.topic(&topic("a")).await.unwrap().unwrap();
    assert_eq!(
        (info.head_seq, info.event_count, info.pruned_seq),
        (10, 3, 7)
    );
    // a's seq 7 was at position 13.
    assert_eq!(info.pruned_position, 13);
    assert_eq!(log.pruned_through(&pattern("a")).await.unwrap(), 13);
    assert_eq!(log.pruned_through(&pattern("*")).await.unwrap(), 13);
    assert_eq!(log.pruned_through(&Filter::all()).await.unwrap(), 13);
    assert_eq!(log.pruned_through(&pattern("b")).await.unwrap(), 0);
    assert_eq!(log.pruned_through(&pattern("a.>")).await.unwrap(), 0);
    // The head never moves back, and the topic's seqs go on.
    assert_eq!(*log.head().borrow(), 20);
    let next = log.append(vec![ev("a", "x")]).await.unwrap();
    assert_eq!((next[0].position, next[0].seq), (21, 11));
}

pub async fn prune_by_age_removes_what_is_older(log: Arc<dyn Log>) {
    log.append(vec![ev("a", "x"), ev("a", "x"), ev("b", "x")])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    log.append(vec![ev("a", "x"), ev("a", "x")]).await.unwrap();
    let events = read_all(&log, &Filter::all()).await;
    let cut = events[3].timestamp;
    assert!(events[2].timestamp < cut);
    let rule = PruneRule {
        before: Some(cut),
        keep_last: None,
    };
    // Batches of one: each call removes one, in seq order.
    assert_eq!(log.prune(&topic("a"), rule, 1).await.unwrap(), 1);
    assert_eq!(log.topic(&topic("a")).await.unwrap().unwrap().pruned_seq, 1);
    assert_eq!(log.prune(&topic("a"), rule, 10).await.unwrap(), 1);
    assert_eq!(log.prune(&topic("a"), rule, 10).await.unwrap(), 0);
    let left = read_all(&log, &Filter::all()).await;
    assert_eq!(
        left.iter().map(|e| e.position).collect::<Vec<_>>(),
        [3, 4, 5],
        "b's old event stays: the rule was applied to a only"
    );
    // Both rules at once: whichever removes more.
    let both = PruneRule {
        before: Some(cut),
        keep_last: Some(1),
    };
    assert_eq!(log.prune(&topic("a"), both, 10).await.unwrap(), 1);
    let info = log.topic(&topic("a")).await.unwrap().unwrap();
    assert_eq!((info.pruned_seq, info.event_count), (3, 1));
    // The position and time lookups skip the hole.
    assert_eq!(log.position_before(cut).await.unwrap(), 3);
}

pub async fn removing_the_newest_events_never_reuses_positions(log: Arc<dyn Log>) {
    log.append(vec![ev("a", "x"), ev("b", "x"), ev("b", "x")])
        .await
        .unwrap();
    assert_eq!(
        log.prune(&topic("b"), PruneRule::everything(), 100)
            .await
            .unwrap(),
        2
    );
    assert_eq!(*log.head().borrow(), 3, "the head stays");
    let topics = log.topics().await.unwrap();
    assert_eq!(
        topics.iter().map(|t| t.topic.as_str()).collect::<Vec<_>>(),
        ["a"],
        "a topic with no events and no settings is not listed"
    );
    let b = log.topic(&topic("b")).await.unwrap().unwrap();
    assert_eq!((b.head_seq, b.event_count, b.pruned_seq), (2, 0, 2));
    let next = log.append(vec![ev("c", "x"), ev("b", "x")]).await.unwrap();
    assert_eq!(
        next.iter().map(|a| (a.position, a.seq)).collect::<Vec<_>>(),
        [(4, 1), (5, 3)]
    );
}

pub async fn a_removed_event_id_may_be_used_again(log: Arc<dyn Log>) {
    let mut first = ev("a", "x");
    first.id = Some("id-1".into());
    log.append(vec![first.clone()]).await.unwrap();
    let again = log.append(vec![first.clone()]).await.unwrap();
    assert!(again[0].duplicate);
    log.prune(&topic("a"), PruneRule::everything(), 10)
        .await
        .unwrap();
    // Deduplication covers what the log holds: the id is free once its event is gone.
    let fresh = log.append(vec![first]).await.unwrap();
    assert_eq!((fresh[0].position, fresh[0].duplicate), (2, false));
}

pub async fn max_event_bytes_refuses_the_whole_batch(log: Arc<dyn Log>) {
    log.set_topic_config(
        &topic("small"),
        TopicConfig {
            max_event_bytes: Some(64),
            ..TopicConfig::default()
        },
    )
    .await
    .unwrap();
    let big = NewEvent::new(
        topic("small"),
        "x",
        Args::from_json(&format!("\"{}\"", "z".repeat(100))).unwrap(),
    );
    let mut other_topic = big.clone();
    other_topic.topic = topic("other");
    let err = log
        .append(vec![ev("small", "x"), big.clone()])
        .await
        .unwrap_err();
    match err {
        LogError::EventTooLarge {
            topic, index, max, ..
        } => assert_eq!((topic.as_str(), index, max), ("small", 1, 64)),
        other => panic!("expected EventTooLarge, got {other:?}"),
    }
    assert_eq!(*log.head().borrow(), 0, "nothing of the batch was stored");
    // Other topics are not held to it.
    log.append(vec![other_topic, ev("small", "x")])
        .await
        .unwrap();
    assert_eq!(*log.head().borrow(), 2);
}

async fn next_item(stream: &mut EventStream) -> StreamItem {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the stream answers")
        .expect("the stream goes on")
        .expect("no error")
}

pub async fn a_stream_behind_retention_is_told(log: Arc<dyn Log>) {
    for _ in 0..6 {
        log.append(vec![ev("a", "x"), ev("b", "x")]).await.unwrap();
    }
    // a keeps seqs 5 and 6 (positions 9 and 11); seq 4 was at position 7.
    log.prune(&topic("a"), keep_last(2), 100).await.unwrap();
    let tail = Tail::spawn(Arc::clone(&log), TailConfig::default());
    let open = |since| {
        EventStream::new(
            Arc::clone(&tail),
            StreamOptions {
                filter: pattern("a"),
                since,
                batch_size: 1,
                ..StreamOptions::default()
            },
        )
    };

    // From a cursor the removal overtook: told first, then what is left, in order.
    let mut behind = open(2);
    match next_item(&mut behind).await {
        StreamItem::Truncated {
            after,
            pruned_through,
        } => assert_eq!((after, pruned_through), (2, 7)),
        other => panic!("expected the truncation marker, got {other:?}"),
    }
    let mut seen = Vec::new();
    loop {
        match next_item(&mut behind).await {
            StreamItem::Event(e) => seen.push(e.event.position),
            StreamItem::CaughtUp { .. } => break,
            other => panic!("told once only, got {other:?}"),
        }
    }
    assert_eq!(seen, [9, 11]);

    // From the beginning: what is left, with no marker (nothing promised is missing).
    let mut fresh = open(0);
    assert!(matches!(next_item(&mut fresh).await, StreamItem::Event(e) if e.event.position == 9));
    // From a cursor past the removal: nothing to tell.
    let mut ahead = open(7);
    assert!(matches!(next_item(&mut ahead).await, StreamItem::Event(e) if e.event.position == 9));
    // A stream on another topic is not concerned.
    let mut b = EventStream::new(
        Arc::clone(&tail),
        StreamOptions {
            filter: pattern("b"),
            since: 1,
            ..StreamOptions::default()
        },
    );
    assert!(matches!(next_item(&mut b).await, StreamItem::Event(e) if e.event.position == 2));
}

pub async fn live_streams_go_on_past_removed_positions(log: Arc<dyn Log>) {
    let tail = Tail::spawn(Arc::clone(&log), TailConfig::default());
    let mut stream = EventStream::new(Arc::clone(&tail), StreamOptions::default());
    assert!(matches!(
        next_item(&mut stream).await,
        StreamItem::CaughtUp { position: 0 }
    ));
    // Removed right away, maybe before the tail read them: the tail must not wait for
    // them forever.
    log.append(vec![ev("gone", "x"), ev("gone", "x")])
        .await
        .unwrap();
    log.prune(&topic("gone"), PruneRule::everything(), 10)
        .await
        .unwrap();
    log.append(vec![ev("kept", "x")]).await.unwrap();
    let mut kept = Vec::new();
    while kept.is_empty() {
        if let StreamItem::Event(e) = next_item(&mut stream).await
            && e.event.topic.as_str() == "kept"
        {
            kept.push(e.event.position);
        }
    }
    assert_eq!(kept, [3]);
}
