//! The plans SQLite picks for filters listing several values: one ordered range scan of
//! the field's `(value, position)` index per value, merged, so a page reads about
//! `limit` rows however long the range, instead of collecting and sorting every match.

use tributary_core::{Filter, Log, ReadQuery, TopicPattern};
use tributary_sqlite::SqliteLog;

use super::common::{ev, open};

fn topics(raw: &[&str]) -> Vec<TopicPattern> {
    raw.iter().map(|p| TopicPattern::new(*p).unwrap()).collect()
}

fn strings(raw: &[&str]) -> Vec<String> {
    raw.iter().map(|s| (*s).to_owned()).collect()
}

async fn plan(log: &SqliteLog, filter: &Filter) -> Vec<String> {
    log.explain_read(ReadQuery {
        after: 100,
        up_to: 3_000,
        filter,
        limit: 256,
    })
    .await
    .unwrap()
}

/// `index` is searched once per arm (`arms` times) by equality then position, nothing
/// is sorted and no table is scanned.
fn assert_merged(plan: &[String], index: &str, column: &str, arms: usize) {
    let text = plan.join("\n");
    let search =
        format!("SEARCH events USING INDEX {index} ({column}=? AND position>? AND position<?)");
    assert_eq!(
        plan.iter().filter(|line| line.contains(&search)).count(),
        arms,
        "expected {arms} searches of {index}:\n{text}"
    );
    assert!(text.contains("MERGE"), "not a merge:\n{text}");
    assert!(!text.contains("TEMP B-TREE"), "sorts:\n{text}");
    assert!(!text.contains("SCAN events"), "scans the table:\n{text}");
}

async fn check_plans(log: &SqliteLog) {
    let filter = Filter {
        topics: topics(&["t3", "t7", "t11"]),
        ..Filter::default()
    };
    assert_merged(&plan(log, &filter).await, "events_topic", "topic", 3);

    // Other fields listing several values are checked in each arm, not searched.
    let filter = Filter {
        topics: topics(&["t3", "t7", "t11"]),
        names: strings(&["n1", "n2"]),
        client_ids: strings(&["c1", "c2"]),
        ..Filter::default()
    };
    assert_merged(&plan(log, &filter).await, "events_topic", "topic", 3);

    let filter = Filter {
        names: strings(&["n0", "n1", "n2"]),
        ..Filter::default()
    };
    assert_merged(&plan(log, &filter).await, "events_name", "name", 3);

    let filter = Filter {
        topics: topics(&["t1.>"]),
        client_ids: strings(&["c0", "c1", "c2", "c3"]),
        ..Filter::default()
    };
    assert_merged(
        &plan(log, &filter).await,
        "events_client_id",
        "client_id",
        4,
    );

    let filter = Filter {
        session_ids: strings(&["s0", "s1"]),
        ..Filter::default()
    };
    assert_merged(
        &plan(log, &filter).await,
        "events_session_id",
        "session_id",
        2,
    );

    // One value: a single query, and the partial indexes (ids indexed only where
    // present) still serve the equality.
    for (filter, index) in [
        (
            Filter {
                client_ids: strings(&["c3"]),
                ..Filter::default()
            },
            "events_client_id",
        ),
        (
            Filter {
                session_ids: strings(&["s3"]),
                ..Filter::default()
            },
            "events_session_id",
        ),
    ] {
        let text = plan(log, &filter).await.join("\n");
        assert!(text.contains(&format!("USING INDEX {index}")), "{text}");
        assert!(!text.contains("TEMP B-TREE"), "sorts:\n{text}");
    }

    // Exact topics mixed with patterns: every exact topic is an ordered search of its
    // own, the patterns get arms of their own (prefix range, or the position range).
    let filter = Filter {
        topics: topics(&["t3", "t7", "t1.>", "*.x"]),
        ..Filter::default()
    };
    let plan = plan(log, &filter).await;
    let text = plan.join("\n");
    let exact = "SEARCH events USING INDEX events_topic (topic=? AND position>? AND position<?)";
    assert_eq!(
        plan.iter().filter(|l| l.contains(exact)).count(),
        2,
        "{text}"
    );
    assert!(text.contains("MERGE (UNION)"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_values_are_merged_index_searches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let log = open(&path);
    for chunk in 0..4 {
        let batch = (0..1_000)
            .map(|i| {
                let i = chunk * 1_000 + i;
                let mut e = ev(&format!("t{}", i % 20), &format!("n{}", i % 7));
                e.client_id = Some(format!("c{}", i % 11));
                e.session_id = (i % 3 == 0).then(|| format!("s{}", i % 5));
                e
            })
            .collect();
        log.append(batch).await.unwrap();
    }
    // A new file has no statistics; reopening runs `PRAGMA optimize`, which gathers them
    // and can change the planner's mind. Both must give merged searches.
    check_plans(&log).await;
    log.close().await.unwrap();
    drop(log);
    let log = open(&path);
    check_plans(&log).await;
}
