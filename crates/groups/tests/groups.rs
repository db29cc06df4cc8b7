//! The delivery rules, checked against the in-memory log and group store. Timing tests
//! run on tokio's paused clock: no sleeps, and the deadlines are exact.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tributary_core::{
    Args, Filter, GroupChange, GroupConfig, GroupStore, GroupStoreError, Log, MemoryGroupStore,
    MemoryLog, NewEvent, Ordering, Position, Start, StoredGroup, Timestamp, Topic, TopicPattern,
};
use tributary_groups::{AckWait, DeliveryId, GroupError, Groups, GroupsOptions};

struct World {
    log: Arc<MemoryLog>,
    store: Arc<dyn GroupStore>,
    groups: Arc<Groups>,
}

impl World {
    async fn new() -> World {
        World::with(Arc::new(MemoryGroupStore::new()), GroupsOptions::default()).await
    }

    async fn with(store: Arc<dyn GroupStore>, options: GroupsOptions) -> World {
        let log = Arc::new(MemoryLog::new());
        let groups = Groups::open(log.clone() as Arc<dyn Log>, store.clone(), options)
            .await
            .unwrap();
        World { log, store, groups }
    }

    /// Closes the groups and opens them again over the same log and store: a restart.
    async fn restart(&mut self) {
        self.groups.close().await;
        self.groups = Groups::open(
            self.log.clone() as Arc<dyn Log>,
            self.store.clone(),
            GroupsOptions::default(),
        )
        .await
        .unwrap();
    }

    async fn publish(&self, topic: &str, n: u64) {
        let batch = (0..n)
            .map(|i| {
                NewEvent::new(
                    Topic::new(topic).unwrap(),
                    "tick",
                    Args::from_json(&format!("{{\"i\":{i}}}")).unwrap(),
                )
            })
            .collect();
        self.log.append(batch).await.unwrap();
    }

    async fn pull(&self, group: &str, member: &str, max: usize) -> Vec<DeliveryId> {
        self.groups
            .pull(group, member, max, Duration::ZERO)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect()
    }
}

fn config(name: &str) -> GroupConfig {
    let mut c = GroupConfig::new(
        name,
        Filter {
            topics: vec![TopicPattern::new("jobs.>").unwrap()],
            ..Filter::default()
        },
    );
    c.ack_wait = Duration::from_secs(10);
    c.backoff = vec![Duration::from_secs(1), Duration::from_secs(5)];
    c.max_deliveries = 4;
    c
}

/// Lets the group's task read the log and settle.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn unacked_deliveries_come_back_after_ack_wait_following_the_backoff_then_park() {
    let w = World::new().await;
    w.groups.create(config("g"), Start::Earliest).await.unwrap();
    w.publish("jobs.a", 1).await;
    settle().await;

    // Attempt 1 at t=0. Expires at 10 s; backoff[0] = 1 s, so due again at 11 s.
    assert_eq!(
        w.pull("g", "m", 10).await,
        [DeliveryId {
            position: 1,
            attempt: 1
        }]
    );
    tokio::time::advance(Duration::from_millis(10_999)).await;
    settle().await;
    assert!(w.pull("g", "m", 10).await.is_empty(), "not before 11 s");
    assert_eq!(w.groups.info("g").unwrap().waiting, 1);
    tokio::time::advance(Duration::from_millis(1)).await;
    settle().await;
    let second = w.pull("g", "m", 10).await;
    assert_eq!(second.iter().map(|d| d.attempt).collect::<Vec<_>>(), [2]);

    // Attempt 2 expires at 21 s; backoff[1] = 5 s: due at 26 s.
    tokio::time::advance(Duration::from_millis(14_999)).await;
    settle().await;
    assert!(w.pull("g", "m", 10).await.is_empty(), "not before 26 s");
    tokio::time::advance(Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(w.pull("g", "m", 10).await[0].attempt, 3);

    // The last delay repeats: attempt 3 expires at 36 s, attempt 4 is due at 41 s.
    tokio::time::advance(Duration::from_secs(15)).await;
    settle().await;
    assert_eq!(w.pull("g", "m", 10).await[0].attempt, 4);

    // Attempt 4 of 4 expires: parked, with the reason.
    tokio::time::advance(Duration::from_secs(10)).await;
    settle().await;
    assert!(w.pull("g", "m", 10).await.is_empty());
    let (dlq, _) = w.groups.dlq("g", 0, 100).unwrap();
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].event.position, 1);
    assert_eq!(dlq[0].attempts, 4);
    assert_eq!(dlq[0].reason, "ack_wait (10s) expired on delivery 4 of 4");
    let info = w.groups.info("g").unwrap();
    assert_eq!((info.committed, info.lag, info.dlq_size), (1, 0, 1));
    assert_eq!((info.delivered, info.redelivered, info.parked), (4, 3, 1));

    // Replayed, it is delivered again with fresh attempts; acked, it is done.
    assert_eq!(w.groups.replay("g", None).await.unwrap(), 1);
    let again = w.pull("g", "m", 10).await;
    assert_eq!(
        again,
        [DeliveryId {
            position: 1,
            attempt: 1
        }]
    );
    assert_eq!(
        w.groups.ack("g", &again, AckWait::Durable).await.unwrap(),
        1
    );
    assert_eq!(w.groups.dlq("g", 0, 100).unwrap().0.len(), 0);
    assert_eq!(w.groups.info("g").unwrap().lag, 0);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_pull_gets_a_redelivery_when_it_falls_due() {
    let w = World::new().await;
    w.groups.create(config("g"), Start::Earliest).await.unwrap();
    w.publish("jobs.a", 1).await;
    settle().await;
    assert_eq!(w.pull("g", "m1", 1).await.len(), 1);
    let start = tokio::time::Instant::now();
    // Never acked: it expires after ack_wait (10 s) and is due 1 s later (the backoff);
    // a pull waiting a minute gets it then, not when its wait ends.
    let got = w
        .groups
        .pull("g", "m2", 1, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].attempt, 2);
    assert_eq!(start.elapsed(), Duration::from_secs(11));
}

#[tokio::test(start_paused = true)]
async fn nack_waits_its_delay_and_the_last_nack_parks_with_its_reason() {
    let w = World::new().await;
    let mut c = config("g");
    c.max_deliveries = 2;
    w.groups.create(c, Start::Earliest).await.unwrap();
    w.publish("jobs.a", 1).await;
    settle().await;

    let first = w.pull("g", "m", 1).await;
    w.groups
        .nack(
            "g",
            &first,
            Some(Duration::from_secs(3)),
            Some("busy".into()),
        )
        .await
        .unwrap();
    tokio::time::advance(Duration::from_millis(2_999)).await;
    settle().await;
    assert!(w.pull("g", "m", 1).await.is_empty());
    tokio::time::advance(Duration::from_millis(1)).await;
    settle().await;
    let second = w.pull("g", "m", 1).await;
    assert_eq!(second[0].attempt, 2);
    w.groups
        .nack("g", &second, None, Some("bad payload".into()))
        .await
        .unwrap();
    let (dlq, _) = w.groups.dlq("g", 0, 10).unwrap();
    assert_eq!(dlq[0].reason, "bad payload");
    assert_eq!(dlq[0].attempts, 2);
}

#[tokio::test(start_paused = true)]
async fn term_parks_at_once_and_discard_removes() {
    let w = World::new().await;
    w.groups.create(config("g"), Start::Earliest).await.unwrap();
    w.publish("jobs.a", 2).await;
    settle().await;
    let got = w.pull("g", "m", 10).await;
    assert_eq!(got.len(), 1, "per-key: one event of a key at a time");
    w.groups.term("g", &got, "poison").await.unwrap();
    let (dlq, _) = w.groups.dlq("g", 0, 10).unwrap();
    assert_eq!(
        (dlq[0].event.position, dlq[0].reason.as_str()),
        (1, "poison")
    );
    // Parking unblocks the key.
    assert_eq!(w.pull("g", "m", 10).await[0].position, 2);
    w.groups.discard("g", 1).await.unwrap();
    assert!(w.groups.dlq("g", 0, 10).unwrap().0.is_empty());
    assert!(matches!(
        w.groups.discard("g", 1).await,
        Err(GroupError::NotInDlq(1))
    ));
    assert!(matches!(
        w.groups.replay("g", Some(&[7])).await,
        Err(GroupError::NotInDlq(7))
    ));
}

#[tokio::test(start_paused = true)]
async fn per_key_order_holds_a_key_until_its_event_is_acked_and_spreads_keys() {
    let w = World::new().await;
    w.groups.create(config("g"), Start::Earliest).await.unwrap();
    w.publish("jobs.a", 2).await; // 1, 2
    w.publish("jobs.b", 2).await; // 3, 4
    settle().await;
    let m1 = w.pull("g", "m1", 10).await;
    let m2 = w.pull("g", "m2", 10).await;
    assert_eq!(m1.iter().map(|d| d.position).collect::<Vec<_>>(), [1, 3]);
    assert!(m2.is_empty(), "both keys are held by m1");
    w.groups.ack("g", &m1[..1], AckWait::Durable).await.unwrap();
    assert_eq!(w.pull("g", "m2", 10).await[0].position, 2);

    let mut c = config("free");
    c.ordering = Ordering::None;
    w.groups.create(c, Start::Earliest).await.unwrap();
    settle().await;
    assert_eq!(w.pull("free", "m", 10).await.len(), 4);
}

#[tokio::test(start_paused = true)]
async fn bad_acks_change_nothing() {
    let w = World::new().await;
    w.groups.create(config("g"), Start::Earliest).await.unwrap();
    w.publish("jobs.a", 1).await;
    w.publish("jobs.b", 1).await;
    settle().await;
    let got = w.pull("g", "m", 10).await;
    assert_eq!(got.len(), 2);
    let never = DeliveryId {
        position: 9,
        attempt: 1,
    };
    // One bad id in the batch: the good one is not acked either.
    let err = w
        .groups
        .ack("g", &[got[0], never], AckWait::Durable)
        .await
        .unwrap_err();
    assert!(matches!(err, GroupError::StaleDelivery(_)), "{err}");
    assert_eq!(w.groups.info("g").unwrap().in_flight, 2);
    w.groups
        .ack("g", &got[..1], AckWait::Durable)
        .await
        .unwrap();
    let twice = w
        .groups
        .ack("g", &got[..1], AckWait::Durable)
        .await
        .unwrap_err();
    assert!(twice.to_string().contains("already acked"), "{twice}");
    assert!(matches!(
        w.groups.ack("nope", &got, AckWait::Durable).await,
        Err(GroupError::NotFound(_))
    ));
    assert!("12".parse::<DeliveryId>().is_err());
    assert!("0.1".parse::<DeliveryId>().is_err());
    assert!("x.1".parse::<DeliveryId>().is_err());

    // An ack after the delivery expired and went out again is refused.
    tokio::time::advance(Duration::from_secs(11)).await;
    settle().await;
    let again = w.pull("g", "m2", 10).await;
    assert_eq!(again[0].attempt, 2);
    let stale = w
        .groups
        .ack("g", &got[1..], AckWait::Durable)
        .await
        .unwrap_err();
    assert!(stale.to_string().contains("delivered again"), "{stale}");
    assert_eq!(
        w.groups.ack("g", &again, AckWait::Durable).await.unwrap(),
        1
    );

    let mut bad = config("bad name!");
    assert!(matches!(
        w.groups.create(bad.clone(), Start::Earliest).await,
        Err(GroupError::InvalidConfig(_))
    ));
    bad.name = "ok".into();
    bad.max_deliveries = 0;
    assert!(matches!(
        w.groups.create(bad, Start::Earliest).await,
        Err(GroupError::InvalidConfig(_))
    ));
    assert!(matches!(
        w.groups.create(config("g"), Start::Earliest).await,
        Err(GroupError::Exists(_))
    ));
    assert_eq!(w.groups.names(), ["g"]);
}

#[tokio::test(start_paused = true)]
async fn a_member_whose_stream_closes_hands_its_deliveries_to_others() {
    let w = World::new().await;
    w.groups.create(config("g"), Start::Earliest).await.unwrap();
    w.publish("jobs.a", 1).await;
    settle().await;
    let guard = w.groups.join("g", "gone").unwrap();
    assert_eq!(w.pull("g", "gone", 10).await.len(), 1);
    assert!(w.pull("g", "other", 10).await.is_empty());
    drop(guard);
    let got = w.pull("g", "other", 10).await;
    assert_eq!(got[0].attempt, 2, "at once, without waiting for ack_wait");
    assert!(
        w.groups
            .info("g")
            .unwrap()
            .members
            .iter()
            .all(|m| m.member != "gone")
    );
}

#[tokio::test(start_paused = true)]
async fn state_survives_a_restart() {
    let mut w = World::new().await;
    w.groups.create(config("g"), Start::Earliest).await.unwrap();
    w.publish("jobs.a", 1).await; // 1: acked
    w.publish("jobs.b", 1).await; // 2: in flight at the restart
    w.publish("jobs.c", 1).await; // 3: parked
    w.publish("jobs.d", 1).await; // 4: never delivered
    settle().await;
    let got = w.pull("g", "m", 3).await;
    assert_eq!(got.len(), 3);
    w.groups
        .ack("g", &got[..1], AckWait::Durable)
        .await
        .unwrap();
    w.groups.term("g", &got[2..3], "bad").await.unwrap();

    w.restart().await;
    settle().await;
    let info = w.groups.info("g").unwrap();
    assert_eq!((info.committed, info.dlq_size), (1, 1));
    let after = w.pull("g", "m", 10).await;
    assert_eq!(
        after,
        [
            DeliveryId {
                position: 2,
                attempt: 2
            },
            DeliveryId {
                position: 4,
                attempt: 1
            }
        ],
        "the acked and the parked ones are not delivered again; attempts carry on"
    );
    w.groups.ack("g", &after, AckWait::Durable).await.unwrap();
    assert_eq!(w.groups.info("g").unwrap().committed, 4);
    assert_eq!(w.groups.dlq("g", 0, 10).unwrap().0[0].reason, "bad");

    // A replayed event survives a restart too.
    w.groups.replay("g", Some(&[3])).await.unwrap();
    w.restart().await;
    settle().await;
    assert_eq!(
        w.pull("g", "m", 10).await,
        [DeliveryId {
            position: 3,
            attempt: 1
        }]
    );
}

/// A store whose writes wait while its gate is shut, as a slow disk's would.
struct GatedStore {
    inner: MemoryGroupStore,
    open: watch::Sender<bool>,
}

impl GatedStore {
    /// An empty store, writing until its gate is shut.
    fn open() -> Arc<GatedStore> {
        Arc::new(GatedStore {
            inner: MemoryGroupStore::new(),
            open: watch::Sender::new(true),
        })
    }
}

#[async_trait]
impl GroupStore for GatedStore {
    async fn load(&self) -> Result<Vec<StoredGroup>, GroupStoreError> {
        self.inner.load().await
    }

    async fn create(
        &self,
        config: &GroupConfig,
        committed: Position,
        created_at: Timestamp,
    ) -> Result<(), GroupStoreError> {
        self.inner.create(config, committed, created_at).await
    }

    async fn delete(&self, name: &str) -> Result<bool, GroupStoreError> {
        self.inner.delete(name).await
    }

    async fn apply(&self, changes: Vec<GroupChange>) -> Result<(), GroupStoreError> {
        let mut open = self.open.subscribe();
        open.wait_for(|o| *o)
            .await
            .expect("the sender lives in the store");
        self.inner.apply(changes).await
    }
}

#[tokio::test(start_paused = true)]
async fn an_applied_ack_answers_before_the_write_and_a_clean_close_still_writes_it() {
    let store = GatedStore::open();
    let mut w = World::with(store.clone(), GroupsOptions::default()).await;
    w.groups.create(config("g"), Start::Earliest).await.unwrap();
    w.publish("jobs.a", 1).await;
    w.publish("jobs.b", 1).await;
    settle().await;
    let got = w.pull("g", "m", 2).await;
    assert_eq!(got.len(), 2);

    store.open.send_replace(false);
    let durable = {
        let groups = w.groups.clone();
        let id = got[0];
        tokio::spawn(async move { groups.ack("g", &[id], AckWait::Durable).await })
    };
    let applied = tokio::time::timeout(
        Duration::from_secs(1),
        w.groups.ack("g", &got[1..], AckWait::Applied),
    )
    .await
    .expect("an applied ack does not wait for the store");
    assert_eq!(applied.unwrap(), 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!durable.is_finished(), "a durable ack waits for the store");
    assert_eq!(
        w.groups.info("g").unwrap().committed,
        2,
        "both acks took effect at once"
    );
    assert_eq!(
        store.inner.load().await.unwrap()[0].committed,
        0,
        "and neither is written yet"
    );
    assert!(
        w.pull("g", "m", 10).await.is_empty(),
        "an applied ack is not handed out again"
    );

    store.open.send_replace(true);
    assert_eq!(durable.await.unwrap().unwrap(), 1);
    w.restart().await;
    assert_eq!(store.inner.load().await.unwrap()[0].committed, 2);
    settle().await;
    assert!(
        w.pull("g", "m", 10).await.is_empty(),
        "nothing acked comes back after a restart"
    );
}

#[tokio::test(start_paused = true)]
async fn an_event_replayed_ahead_of_the_committed_position_and_acked_stays_done() {
    let mut w = World::new().await;
    w.groups.create(config("g"), Start::Earliest).await.unwrap();
    w.publish("jobs.a", 1).await; // 1: held in flight, so 2 is parked ahead of it
    w.publish("jobs.b", 1).await; // 2
    settle().await;
    let got = w.pull("g", "m", 2).await;
    w.groups.term("g", &got[1..], "bad").await.unwrap();
    w.groups.replay("g", Some(&[2])).await.unwrap();
    let again = w.pull("g", "m", 10).await;
    assert_eq!(again.iter().map(|d| d.position).collect::<Vec<_>>(), [2]);
    w.groups.ack("g", &again, AckWait::Durable).await.unwrap();
    w.groups
        .ack("g", &got[..1], AckWait::Durable)
        .await
        .unwrap();
    assert_eq!(w.groups.info("g").unwrap().committed, 2);

    w.restart().await;
    settle().await;
    assert!(
        w.pull("g", "m", 10).await.is_empty(),
        "nothing acked comes back after a restart"
    );
}

#[tokio::test(start_paused = true)]
async fn start_latest_skips_history_and_start_after_a_position_skips_to_it() {
    let w = World::new().await;
    w.publish("jobs.a", 5).await;
    w.groups
        .create(config("latest"), Start::Latest)
        .await
        .unwrap();
    w.groups
        .create(config("after"), Start::After(3))
        .await
        .unwrap();
    w.publish("jobs.b", 1).await;
    settle().await;
    let mut c = config("all");
    c.ordering = Ordering::None;
    w.groups.create(c, Start::Earliest).await.unwrap();
    settle().await;
    let ids = |v: Vec<DeliveryId>| v.into_iter().map(|d| d.position).collect::<Vec<_>>();
    assert_eq!(ids(w.pull("latest", "m", 10).await), [6]);
    assert_eq!(ids(w.pull("after", "m", 10).await), [4, 6]);
    assert_eq!(ids(w.pull("all", "m", 10).await), [1, 2, 3, 4, 5, 6]);
}

#[tokio::test(start_paused = true)]
async fn a_long_poll_wakes_when_an_event_arrives() {
    let w = World::new().await;
    w.groups.create(config("g"), Start::Earliest).await.unwrap();
    let groups = Arc::clone(&w.groups);
    let waiter =
        tokio::spawn(async move { groups.pull("g", "m", 10, Duration::from_secs(30)).await });
    tokio::time::advance(Duration::from_secs(5)).await;
    w.publish("jobs.a", 1).await;
    let got = waiter.await.unwrap().unwrap();
    assert_eq!(got.len(), 1);
}

/// Four members, 50 keys, some nacks: every event is acked, and each key's events are
/// acked in position order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_order_with_four_members_and_fifty_keys() {
    let w = World::new().await;
    let mut c = config("g");
    c.ack_wait = Duration::from_secs(30);
    c.backoff = vec![Duration::from_millis(5)];
    c.max_deliveries = 100;
    c.max_in_flight = 20;
    w.groups.create(c, Start::Earliest).await.unwrap();
    for round in 0..20 {
        let batch = (0..50)
            .map(|k| {
                NewEvent::new(
                    Topic::new(format!("jobs.k{k}")).unwrap(),
                    "tick",
                    Args::from_json(&format!("{{\"round\":{round}}}")).unwrap(),
                )
            })
            .collect();
        w.log.append(batch).await.unwrap();
    }
    let acked: Arc<parking_lot::Mutex<Vec<(String, u64)>>> = Arc::default();
    let mut members = Vec::new();
    for m in 0..4 {
        let groups = Arc::clone(&w.groups);
        let acked = Arc::clone(&acked);
        members.push(tokio::spawn(async move {
            let member = format!("m{m}");
            let mut n = 0u64;
            loop {
                let got = groups
                    .pull("g", &member, 7, Duration::from_millis(200))
                    .await
                    .unwrap();
                if got.is_empty() {
                    return;
                }
                for d in got {
                    n += 1;
                    // Every 9th delivery fails once and comes back.
                    if n.is_multiple_of(9) && d.attempt == 1 {
                        groups.nack("g", &[d.id], None, None).await.unwrap();
                        continue;
                    }
                    // Recorded before the ack: the key's next event cannot go out
                    // until this ack is applied, so the records are in ack order.
                    acked.lock().push((d.event.topic.to_string(), d.event.seq));
                    groups.ack("g", &[d.id], AckWait::Durable).await.unwrap();
                }
            }
        }));
    }
    for m in members {
        m.await.unwrap();
    }
    let acked = acked.lock();
    assert_eq!(acked.len(), 1000, "every event acked once");
    let mut per_key: HashMap<&str, Vec<u64>> = HashMap::new();
    for (topic, seq) in acked.iter() {
        per_key.entry(topic).or_default().push(*seq);
    }
    assert_eq!(per_key.len(), 50);
    for (key, seqs) in per_key {
        assert_eq!(
            seqs,
            (1..=20).collect::<Vec<_>>(),
            "{key} acked out of order"
        );
    }
    assert_eq!(w.groups.info("g").unwrap().lag, 0);
}

#[tokio::test(start_paused = true)]
async fn applied_acks_wait_once_the_store_falls_far_behind() {
    let store = GatedStore::open();
    let w = World::with(store.clone(), GroupsOptions::default()).await;
    let mut c = config("g");
    c.ordering = Ordering::None;
    w.groups.create(c, Start::Earliest).await.unwrap();
    // Each event makes at least two changes (delivered, acked): 5,000 events make more
    // than the journal lets applied acks run ahead of the store.
    w.publish("jobs.a", 5000).await;
    settle().await;
    store.open.send_replace(false);
    let mut blocked = None;
    'pulling: for _ in 0..100 {
        let got = w.pull("g", "m", 100).await;
        for id in got {
            let groups = w.groups.clone();
            let mut ack =
                tokio::spawn(async move { groups.ack("g", &[id], AckWait::Applied).await });
            if tokio::time::timeout(Duration::from_secs(1), &mut ack)
                .await
                .is_err()
            {
                blocked = Some((id, ack));
                break 'pulling;
            }
        }
    }
    let (id, ack) = blocked.expect("an applied ack waited for the stuck store");
    assert!(id.position < 5000, "it waited at {id} of 5000");
    store.open.send_replace(true);
    assert_eq!(
        ack.await.unwrap().unwrap(),
        1,
        "and is answered once the store catches up"
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_window_refills_as_acks_free_it_and_everything_is_delivered_in_order() {
    // A window of 8 refills once a quarter of it is free, not on every ack.
    let options = GroupsOptions {
        window: 8,
        read_batch: 500,
    };
    let w = World::with(Arc::new(MemoryGroupStore::new()), options).await;
    let mut c = config("g");
    c.ordering = Ordering::None;
    w.groups.create(c, Start::Earliest).await.unwrap();
    w.publish("jobs.a", 21).await;
    settle().await;
    let mut acked = Vec::new();
    for _ in 0..100 {
        let got = w.pull("g", "m", 3).await;
        if got.is_empty() {
            break;
        }
        for id in got {
            w.groups.ack("g", &[id], AckWait::Applied).await.unwrap();
            acked.push(id.position);
            settle().await;
        }
    }
    assert_eq!(acked, (1..=21).collect::<Vec<_>>());
    let info = w.groups.info("g").unwrap();
    assert_eq!((info.committed, info.lag, info.in_flight), (21, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_group_overtaken_by_retention_says_so_and_goes_on() {
    let log = Arc::new(MemoryLog::new());
    let groups = Groups::open(
        log.clone() as Arc<dyn Log>,
        Arc::new(MemoryGroupStore::new()) as Arc<dyn GroupStore>,
        // A window of 2: the group reads no further until those are acked.
        GroupsOptions {
            window: 2,
            read_batch: 2,
        },
    )
    .await
    .unwrap();
    let w = World {
        log,
        store: Arc::new(MemoryGroupStore::new()),
        groups,
    };
    let mut c = config("g");
    c.ordering = Ordering::None;
    w.groups.create(c, Start::Earliest).await.unwrap();
    w.publish("jobs.a", 10).await;
    settle().await;
    let first = w.pull("g", "m", 10).await;
    assert_eq!(first.iter().map(|d| d.position).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(w.groups.info("g").unwrap().truncations, 0);

    // Retention keeps the newest 3 (seqs 8..=10) while the group holds 1 and 2.
    let rule = tributary_core::PruneRule {
        before: None,
        keep_last: Some(3),
    };
    let removed = w
        .log
        .prune(&Topic::new("jobs.a").unwrap(), rule, 100)
        .await
        .unwrap();
    assert_eq!(removed, 7);
    w.groups.ack("g", &first, AckWait::Durable).await.unwrap();
    settle().await;

    let info = w.groups.info("g").unwrap();
    assert_eq!(info.truncations, 1);
    let t = info.last_truncation.expect("the truncation is recorded");
    assert_eq!((t.after, t.pruned_through), (2, 7));
    let mut rest = Vec::new();
    for _ in 0..3 {
        let got = w.pull("g", "m", 10).await;
        w.groups.ack("g", &got, AckWait::Durable).await.unwrap();
        settle().await;
        rest.extend(got.iter().map(|d| d.position));
    }
    assert_eq!(rest, [8, 9, 10], "what is left is delivered");
    assert_eq!(w.groups.info("g").unwrap().truncations, 1, "told once");
}
