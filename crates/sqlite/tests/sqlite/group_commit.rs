//! The writer commits concurrent appends together, and one refused append does not drag
//! the others of its group down.

use std::sync::Arc;
use std::task::Poll;

use futures::poll;
use tributary_core::{Log, LogError};

use super::common::{all_events, ev, open};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(&dir.path().join("t.db")));
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let log = Arc::clone(&log);
            tokio::spawn(
                async move { log.append(vec![ev("t", "x").with_id(format!("{i}"))]).await },
            )
        })
        .collect();
    let mut positions = Vec::new();
    for task in tasks {
        positions.push(task.await.unwrap().unwrap()[0].position);
    }
    positions.sort_unstable();
    assert_eq!(positions, (1..=200).collect::<Vec<_>>());
    let stats = log.stats();
    assert_eq!((stats.requests, stats.events), (200, 200));
    assert!(stats.commits < 200, "no batching: {stats:?}");
}

/// Puts three appends on the writer's queue within one poll of each, so that they
/// normally land in one group; returns whether they did (one commit for the three).
async fn one_group_with_a_refused_request(
    log: &dyn Log,
    round: u32,
    stats: impl Fn() -> u64,
) -> bool {
    let t = format!("t{round}");
    let seed = log.append(vec![ev(&t, "seed")]).await.unwrap()[0];
    let commits_before = stats();
    // A: fine. B: plans an event on a new topic, then fails on a stale expected_seq, so
    // nothing of it may be written. C: fine.
    let mut a = log.append(vec![ev(&t, "a").with_expected_seq(1)]);
    let mut b = log.append(vec![
        ev(&format!("gone{round}"), "b"),
        ev(&t, "b").with_expected_seq(0),
    ]);
    let mut c = log.append(vec![ev(&format!("u{round}"), "c")]);
    // The first poll of each puts it on the queue, in this order.
    for pending in [poll!(&mut a), poll!(&mut b), poll!(&mut c)] {
        if let Poll::Ready(r) = pending {
            panic!("answered before the writer could commit: {r:?}");
        }
    }
    let (a, b, c) = (a.await.unwrap(), b.await.unwrap_err(), c.await.unwrap());
    match b {
        LogError::SeqConflict {
            topic,
            expected,
            head,
            index,
        } => assert_eq!((topic, expected, head, index), (t.clone(), 0, 2, 1)),
        other => panic!("expected a seq conflict, got {other:?}"),
    }
    // B burnt no position: C follows A directly.
    assert_eq!((a[0].position, a[0].seq), (seed.position + 1, 2));
    assert_eq!((c[0].position, c[0].seq), (seed.position + 2, 1));
    let topics = log.topics().await.unwrap();
    assert!(
        topics
            .iter()
            .all(|i| i.topic.as_str() != format!("gone{round}"))
    );
    stats() - commits_before == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_leaves_its_group_alone() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(&dir.path().join("t.db")));
    // Whether the writer wakes between two sends is up to the scheduler; every round
    // checks the outcomes, and at least one round must have had the three in one commit.
    let mut shared_commit = false;
    for round in 0..20 {
        if one_group_with_a_refused_request(log.as_ref(), round, || log.stats().commits).await {
            shared_commit = true;
            break;
        }
    }
    assert!(shared_commit, "the three appends never shared a commit");
    let events = all_events(log.as_ref()).await;
    let positions: Vec<u64> = events.iter().map(|e| e.position).collect();
    assert_eq!(
        positions,
        (1..=events.len() as u64).collect::<Vec<_>>(),
        "gapless"
    );
    assert!(events.iter().all(|e| e.name != "b"));
}
