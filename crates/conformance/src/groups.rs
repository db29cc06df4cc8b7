//! The [`GroupStore`] cases. Each takes a fresh, empty store. What a change must do is
//! what `MemoryGroupStore` does with it (`apply_change` in `tributary_core::group`).

use std::sync::Arc;
use std::time::Duration;

use tributary_core::{
    Args, DlqEntry, Event, EventProgress, Filter, GroupChange, GroupConfig, GroupStore,
    GroupStoreError, Ordering, Position, StoredGroup, Timestamp, Topic, TopicPattern,
};

const CREATED_AT: Timestamp = Timestamp(1_700_000_000_123);

fn config(name: &str) -> GroupConfig {
    GroupConfig::new(name, Filter::all())
}

/// A config with no field at its default, so a store that drops one is caught.
fn unusual_config(name: &str) -> GroupConfig {
    GroupConfig {
        name: name.to_owned(),
        filter: Filter {
            topics: vec![
                TopicPattern::new("orders.*").unwrap(),
                TopicPattern::new("audit.>").unwrap(),
            ],
            names: vec!["created".into(), "cancelled".into()],
            client_ids: vec!["c-1".into()],
            session_ids: vec!["s-1".into(), "s-2".into()],
        },
        ack_wait: Duration::from_millis(1_234),
        max_deliveries: 7,
        backoff: vec![
            Duration::from_millis(10),
            Duration::from_millis(250),
            Duration::from_secs(3),
            Duration::from_secs(86_400),
        ],
        max_in_flight: 42,
        ordering: Ordering::None,
    }
}

/// An event with every field set, and args that only survive if kept verbatim (an
/// escape, a string with spaces, nesting).
fn event(position: Position) -> Event {
    Event {
        position,
        topic: Topic::new("orders.eu").unwrap(),
        seq: position + 3,
        name: format!("created-{position}"),
        args: Args::from_json(r#"{"a":[1,2.5,{"b":"x y"}],"u":"caf\u00e9","n":null}"#).unwrap(),
        id: format!("0190b1a2-0000-7000-8000-{position:012}"),
        client_id: Some("c-1".into()),
        session_id: None,
        timestamp: Timestamp(1_700_000_000_000 + position as i64),
    }
}

fn entry(position: Position, attempts: u32, reason: &str) -> DlqEntry {
    DlqEntry {
        event: event(position),
        attempts,
        reason: reason.to_owned(),
        parked_at: Timestamp(1_700_000_100_000 + position as i64),
    }
}

fn progress(position: Position, attempts: u32, acked: bool, reason: Option<&str>) -> EventProgress {
    EventProgress {
        position,
        attempts,
        acked,
        last_reason: reason.map(str::to_owned),
        replayed: false,
    }
}

fn replayed(position: Position) -> EventProgress {
    EventProgress {
        position,
        attempts: 0,
        acked: false,
        last_reason: None,
        replayed: true,
    }
}

fn attempted(group: &str, position: Position, attempts: u32, reason: Option<&str>) -> GroupChange {
    GroupChange::Attempted {
        group: group.to_owned(),
        position,
        attempts,
        reason: reason.map(str::to_owned),
    }
}

fn acked(group: &str, position: Position) -> GroupChange {
    GroupChange::Acked {
        group: group.to_owned(),
        position,
    }
}

fn committed(group: &str, committed: Position) -> GroupChange {
    GroupChange::Committed {
        group: group.to_owned(),
        committed,
    }
}

fn forget(group: &str, position: Position) -> GroupChange {
    GroupChange::Forget {
        group: group.to_owned(),
        position,
    }
}

fn parked(group: &str, entry: DlqEntry) -> GroupChange {
    GroupChange::Parked {
        group: group.to_owned(),
        entry,
    }
}

fn replay(group: &str, position: Position) -> GroupChange {
    GroupChange::Replayed {
        group: group.to_owned(),
        position,
    }
}

fn discarded(group: &str, position: Position) -> GroupChange {
    GroupChange::Discarded {
        group: group.to_owned(),
        position,
    }
}

/// Every group, by name: the trait promises no order between groups.
async fn load_all(store: &Arc<dyn GroupStore>) -> Vec<StoredGroup> {
    let mut groups = store.load().await.expect("load");
    groups.sort_by(|a, b| a.config.name.cmp(&b.config.name));
    groups
}

async fn load_one(store: &Arc<dyn GroupStore>, name: &str) -> StoredGroup {
    let mut matching: Vec<_> = store
        .load()
        .await
        .expect("load")
        .into_iter()
        .filter(|g| g.config.name == name)
        .collect();
    assert_eq!(matching.len(), 1, "exactly one group named {name:?}");
    matching.remove(0)
}

async fn create(store: &Arc<dyn GroupStore>, name: &str, at: Position) {
    store
        .create(&config(name), at, CREATED_AT)
        .await
        .expect("create");
}

async fn apply(store: &Arc<dyn GroupStore>, changes: Vec<GroupChange>) {
    store.apply(changes).await.expect("apply");
}

pub async fn create_then_load_returns_everything(store: Arc<dyn GroupStore>) {
    assert!(
        store.load().await.unwrap().is_empty(),
        "a fresh store is empty"
    );
    let unusual = unusual_config("orders.eu-1_B");
    store
        .create(&unusual, (1 << 40) + 3, CREATED_AT)
        .await
        .unwrap();
    // The other extremes: match-all filter, no backoff at all.
    let plain = GroupConfig {
        backoff: Vec::new(),
        ..config("plain")
    };
    store
        .create(&plain, 0, Timestamp(1_600_000_000_000))
        .await
        .unwrap();
    assert_eq!(
        load_all(&store).await,
        [
            StoredGroup {
                config: unusual,
                created_at: CREATED_AT,
                committed: (1 << 40) + 3,
                progress: Vec::new(),
                dlq: Vec::new(),
            },
            StoredGroup {
                config: plain,
                created_at: Timestamp(1_600_000_000_000),
                committed: 0,
                progress: Vec::new(),
                dlq: Vec::new(),
            },
        ]
    );
}

pub async fn create_twice_is_refused_and_keeps_the_first(store: Arc<dyn GroupStore>) {
    create(&store, "g", 5).await;
    apply(&store, vec![attempted("g", 6, 1, None)]).await;
    let before = load_one(&store, "g").await;
    let err = store
        .create(&unusual_config("g"), 99, Timestamp(1))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, GroupStoreError::Exists(name) if name == "g"),
        "{err:?}"
    );
    assert_eq!(load_one(&store, "g").await, before);
    // Names are compared exactly.
    create(&store, "G", 0).await;
    assert_eq!(load_all(&store).await.len(), 2);
}

pub async fn delete_removes_the_group_and_its_state(store: Arc<dyn GroupStore>) {
    // "g" last: a store that numbers its groups may give its number to the next one, so
    // leftovers of "g" would show up in the group made again below.
    create(&store, "other", 0).await;
    create(&store, "g", 0).await;
    apply(
        &store,
        vec![
            attempted("g", 1, 2, Some("boom")),
            acked("g", 2),
            parked("g", entry(3, 5, "poison")),
        ],
    )
    .await;
    assert!(store.delete("g").await.unwrap());
    assert!(!store.delete("g").await.unwrap(), "already gone");
    assert!(!store.delete("never").await.unwrap());
    let names: Vec<_> = load_all(&store)
        .await
        .into_iter()
        .map(|g| g.config.name)
        .collect();
    assert_eq!(names, ["other"]);
    // A group made again under the name starts from nothing.
    store
        .create(&unusual_config("g"), 7, Timestamp(5))
        .await
        .unwrap();
    assert_eq!(
        load_one(&store, "g").await,
        StoredGroup {
            config: unusual_config("g"),
            created_at: Timestamp(5),
            committed: 7,
            progress: Vec::new(),
            dlq: Vec::new(),
        }
    );
}

pub async fn attempted_upserts_and_keeps_the_last_reason(store: Arc<dyn GroupStore>) {
    create(&store, "g", 0).await;
    apply(&store, vec![attempted("g", 4, 1, None)]).await;
    assert_eq!(
        load_one(&store, "g").await.progress,
        [progress(4, 1, false, None)]
    );
    apply(&store, vec![attempted("g", 4, 2, Some("timeout"))]).await;
    assert_eq!(
        load_one(&store, "g").await.progress,
        [progress(4, 2, false, Some("timeout"))]
    );
    // No reason this time: the previous one stays, the count moves.
    apply(&store, vec![attempted("g", 4, 3, None)]).await;
    assert_eq!(
        load_one(&store, "g").await.progress,
        [progress(4, 3, false, Some("timeout"))]
    );
    apply(&store, vec![attempted("g", 4, 4, Some("nack: db down"))]).await;
    assert_eq!(
        load_one(&store, "g").await.progress,
        [progress(4, 4, false, Some("nack: db down"))]
    );
    // An attempt does not undo an ack.
    apply(&store, vec![acked("g", 4), attempted("g", 4, 5, None)]).await;
    assert_eq!(
        load_one(&store, "g").await.progress,
        [progress(4, 5, true, Some("nack: db down"))]
    );
}

pub async fn acked_marks_progress(store: Arc<dyn GroupStore>) {
    create(&store, "g", 0).await;
    apply(
        &store,
        vec![
            attempted("g", 2, 3, Some("slow")),
            acked("g", 2),
            acked("g", 9),
        ],
    )
    .await;
    assert_eq!(
        load_one(&store, "g").await.progress,
        [
            progress(2, 3, true, Some("slow")),
            // Acked without a recorded attempt: a row of its own.
            progress(9, 0, true, None),
        ]
    );
    apply(&store, vec![acked("g", 9)]).await;
    assert_eq!(
        load_one(&store, "g").await.progress.len(),
        2,
        "acking twice is one row"
    );
}

pub async fn committed_drops_settled_progress_and_never_moves_back(store: Arc<dyn GroupStore>) {
    create(&store, "g", 10).await;
    apply(
        &store,
        vec![
            attempted("g", 11, 1, None),
            acked("g", 12),
            attempted("g", 13, 2, Some("x")),
            attempted("g", 20, 1, None),
        ],
    )
    .await;
    apply(&store, vec![committed("g", 13)]).await;
    let g = load_one(&store, "g").await;
    assert_eq!(g.committed, 13);
    assert_eq!(
        g.progress,
        [progress(20, 1, false, None)],
        "at or before 13 dropped"
    );
    // Backwards is ignored, and drops nothing more.
    apply(&store, vec![committed("g", 5), attempted("g", 14, 1, None)]).await;
    apply(&store, vec![committed("g", 12)]).await;
    let g = load_one(&store, "g").await;
    assert_eq!(g.committed, 13);
    assert_eq!(
        g.progress,
        [progress(14, 1, false, None), progress(20, 1, false, None)]
    );
    // Within one batch, in order: a row recorded after the commit that covers it is
    // dropped by the next commit only.
    apply(
        &store,
        vec![
            committed("g", 20),
            attempted("g", 15, 1, None),
            attempted("g", 21, 1, None),
        ],
    )
    .await;
    let g = load_one(&store, "g").await;
    assert_eq!(g.committed, 20);
    assert_eq!(
        g.progress,
        [progress(15, 1, false, None), progress(21, 1, false, None)]
    );
    apply(&store, vec![committed("g", 20)]).await;
    assert_eq!(
        load_one(&store, "g").await.progress,
        [progress(21, 1, false, None)]
    );
}

pub async fn forget_drops_one_progress_row(store: Arc<dyn GroupStore>) {
    create(&store, "g", 0).await;
    apply(
        &store,
        vec![
            attempted("g", 1, 1, None),
            attempted("g", 2, 1, None),
            parked("g", entry(3, 5, "poison")),
            replay("g", 3),
            committed("g", 5),
        ],
    )
    .await;
    assert_eq!(load_one(&store, "g").await.progress, [replayed(3)]);
    apply(&store, vec![attempted("g", 7, 1, None), forget("g", 3)]).await;
    assert_eq!(
        load_one(&store, "g").await.progress,
        [progress(7, 1, false, None)]
    );
    // Forgetting what is not there changes nothing.
    apply(&store, vec![forget("g", 3), forget("g", 100)]).await;
    let g = load_one(&store, "g").await;
    assert_eq!(g.progress, [progress(7, 1, false, None)]);
    assert_eq!(g.committed, 5);
}

pub async fn parked_moves_the_whole_event_to_the_dlq(store: Arc<dyn GroupStore>) {
    create(&store, "g", 0).await;
    apply(
        &store,
        vec![
            attempted("g", 4, 5, Some("boom")),
            attempted("g", 6, 1, None),
            parked("g", entry(4, 5, "max deliveries (5) reached: boom")),
        ],
    )
    .await;
    let g = load_one(&store, "g").await;
    assert_eq!(
        g.progress,
        [progress(6, 1, false, None)],
        "the parked row is gone"
    );
    assert_eq!(g.dlq, [entry(4, 5, "max deliveries (5) reached: boom")]);
    // Field by field, for a readable failure when an event does not round-trip.
    let stored = &g.dlq[0].event;
    let sent = event(4);
    assert_eq!(
        stored.args.as_json(),
        sent.args.as_json(),
        "args kept verbatim"
    );
    assert_eq!(
        (&stored.id, &stored.client_id, &stored.session_id),
        (&sent.id, &sent.client_id, &sent.session_id)
    );
    assert_eq!((stored.position, stored.seq), (sent.position, sent.seq));
    assert_eq!((&stored.topic, &stored.name), (&sent.topic, &sent.name));
    assert_eq!(stored.timestamp, sent.timestamp);
    assert_eq!(g.dlq[0].parked_at, Timestamp(1_700_000_100_004));

    // Parked again (say, replayed and failed again): the entry is replaced, not doubled.
    let mut again = entry(4, 2, "terminated by member");
    again.event.session_id = Some("s-9".into());
    again.event.args = Args::from_json("[]").unwrap();
    apply(&store, vec![parked("g", again.clone())]).await;
    assert_eq!(load_one(&store, "g").await.dlq, [again]);
}

pub async fn replayed_returns_an_entry_to_delivery(store: Arc<dyn GroupStore>) {
    create(&store, "g", 0).await;
    apply(
        &store,
        vec![
            attempted("g", 3, 5, Some("boom")),
            parked("g", entry(3, 5, "boom")),
            parked("g", entry(8, 1, "terminated")),
            committed("g", 10),
        ],
    )
    .await;
    let g = load_one(&store, "g").await;
    assert_eq!((g.committed, g.progress.len(), g.dlq.len()), (10, 0, 2));

    apply(&store, vec![replay("g", 3)]).await;
    let g = load_one(&store, "g").await;
    assert_eq!(g.progress, [replayed(3)], "due again with no attempts");
    assert_eq!(g.dlq, [entry(8, 1, "terminated")]);

    // A commit past it does not drop it: it is not settled yet.
    apply(&store, vec![committed("g", 15)]).await;
    let g = load_one(&store, "g").await;
    assert_eq!((g.committed, g.progress.clone()), (15, vec![replayed(3)]));

    // Its attempts are counted and keep it replayed.
    apply(&store, vec![attempted("g", 3, 1, Some("again"))]).await;
    apply(&store, vec![committed("g", 16)]).await;
    assert_eq!(
        load_one(&store, "g").await.progress,
        [EventProgress {
            last_reason: Some("again".into()),
            attempts: 1,
            ..replayed(3)
        }]
    );

    // Replaying over a progress row starts it afresh.
    apply(
        &store,
        vec![
            attempted("g", 20, 3, Some("x")),
            acked("g", 20),
            replay("g", 20),
        ],
    )
    .await;
    let g = load_one(&store, "g").await;
    assert_eq!(g.progress[1], replayed(20));

    // Acked while still ahead of the committed position (it was parked ahead of it), a
    // replayed event is settled once the position passes it; the unacked one stays.
    apply(&store, vec![acked("g", 20), committed("g", 25)]).await;
    let g = load_one(&store, "g").await;
    assert_eq!(g.progress.len(), 1, "{:?}", g.progress);
    assert_eq!(g.progress[0].position, 3);
}

pub async fn discarded_drops_a_dlq_entry(store: Arc<dyn GroupStore>) {
    create(&store, "g", 0).await;
    apply(
        &store,
        vec![
            parked("g", entry(1, 1, "a")),
            parked("g", entry(2, 1, "b")),
            attempted("g", 5, 1, None),
        ],
    )
    .await;
    apply(&store, vec![discarded("g", 1), discarded("g", 77)]).await;
    let g = load_one(&store, "g").await;
    assert_eq!(g.dlq, [entry(2, 1, "b")]);
    assert_eq!(
        g.progress,
        [progress(5, 1, false, None)],
        "progress untouched"
    );
}

pub async fn changes_to_unknown_groups_are_ignored(store: Arc<dyn GroupStore>) {
    create(&store, "g", 0).await;
    create(&store, "gone", 0).await;
    assert!(store.delete("gone").await.unwrap());
    apply(
        &store,
        vec![
            attempted("nobody", 1, 1, None),
            attempted("g", 1, 1, None),
            parked("gone", entry(2, 1, "x")),
            committed("nobody", 50),
            parked("g", entry(2, 1, "x")),
            acked("gone", 3),
            replay("nobody", 2),
        ],
    )
    .await;
    let groups = load_all(&store).await;
    assert_eq!(groups.len(), 1, "no group made by a change");
    assert_eq!(groups[0].config.name, "g");
    assert_eq!(groups[0].committed, 0);
    assert_eq!(groups[0].progress, [progress(1, 1, false, None)]);
    assert_eq!(groups[0].dlq, [entry(2, 1, "x")]);
    // A batch of only unknown groups is fine too.
    apply(&store, vec![acked("nobody", 1)]).await;
    apply(&store, Vec::new()).await;
    assert_eq!(load_all(&store).await, groups);
}

pub async fn progress_and_dlq_come_back_in_position_order(store: Arc<dyn GroupStore>) {
    create(&store, "g", 0).await;
    // Orders that differ as text, as insertion order and as numbers.
    let positions: [Position; 7] = [100, 9, 1 << 33, 10, 2, 1_000_001, 11];
    // Parked first: parking drops the progress row of the same position.
    apply(
        &store,
        positions
            .iter()
            .map(|&p| parked("g", entry(p, 1, "x")))
            .collect(),
    )
    .await;
    apply(
        &store,
        positions
            .iter()
            .map(|&p| attempted("g", p, 1, None))
            .collect(),
    )
    .await;
    let mut sorted = positions;
    sorted.sort_unstable();
    let g = load_one(&store, "g").await;
    assert_eq!(
        g.progress.iter().map(|p| p.position).collect::<Vec<_>>(),
        sorted
    );
    assert_eq!(
        g.dlq.iter().map(|e| e.event.position).collect::<Vec<_>>(),
        sorted
    );
}

pub async fn groups_are_kept_apart(store: Arc<dyn GroupStore>) {
    let names: Vec<String> = (0..12).map(|i| format!("group-{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        store
            .create(&unusual_config(name), i as Position, Timestamp(i as i64))
            .await
            .unwrap();
    }
    // The same positions in every group, each group with its own numbers.
    let mut changes = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let i = i as u32;
        changes.push(attempted(name, 50, i + 1, Some(name.as_str())));
        changes.push(parked(name, entry(60, i, name)));
        changes.push(committed(name, 30 + Position::from(i)));
    }
    apply(&store, changes).await;
    assert!(store.delete("group-3").await.unwrap());
    apply(
        &store,
        vec![discarded("group-4", 60), forget("group-5", 50)],
    )
    .await;

    let groups = load_all(&store).await;
    assert_eq!(groups.len(), 11);
    for g in groups {
        let name = g.config.name.clone();
        let i: u32 = name["group-".len()..].parse().unwrap();
        assert_eq!(g.config, unusual_config(&name));
        assert_eq!(g.created_at, Timestamp(i64::from(i)));
        assert_eq!(g.committed, 30 + Position::from(i), "{name}");
        let expect_progress = if i == 5 {
            vec![]
        } else {
            vec![progress(50, i + 1, false, Some(name.as_str()))]
        };
        assert_eq!(g.progress, expect_progress, "{name}");
        let expect_dlq = if i == 4 {
            vec![]
        } else {
            vec![entry(60, i, &name)]
        };
        assert_eq!(g.dlq, expect_dlq, "{name}");
    }
}

pub async fn a_large_batch_applies(store: Arc<dyn GroupStore>) {
    create(&store, "a", 0).await;
    create(&store, "b", 0).await;
    let mut changes = Vec::new();
    for p in 1..=400u64 {
        let group = if p % 2 == 0 { "a" } else { "b" };
        changes.push(attempted(group, p, 1, None));
        changes.push(acked(group, p));
    }
    for p in (1..=400u64).step_by(5) {
        changes.push(parked("a", entry(p, 3, "bulk")));
    }
    for p in 401..=520u64 {
        changes.push(attempted("b", p, 2, Some("retry")));
    }
    changes.push(committed("a", 300));
    assert!(changes.len() >= 1000, "{}", changes.len());
    apply(&store, changes).await;

    let a = load_one(&store, "a").await;
    assert_eq!(a.committed, 300);
    // Even positions after 300, less the parked ones (306, 316, ...).
    let expect: Vec<Position> = (301..=400).filter(|p| p % 2 == 0 && p % 5 != 1).collect();
    assert_eq!(
        a.progress.iter().map(|p| p.position).collect::<Vec<_>>(),
        expect
    );
    assert!(a.progress.iter().all(|p| p.acked && p.attempts == 1));
    assert_eq!(a.dlq.len(), 80);
    let b = load_one(&store, "b").await;
    assert_eq!(
        (b.committed, b.progress.len(), b.dlq.len()),
        (0, 200 + 120, 0)
    );
    assert_eq!(
        b.progress.last(),
        Some(&progress(520, 2, false, Some("retry")))
    );
}
