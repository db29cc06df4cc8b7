//! The group store: the shared suite on a fresh database file per case, plus what only a
//! store inside a durable log has to show (reopening, closing, migrating an older file).

use std::sync::Arc;
use std::time::Duration;

use tributary_core::{
    DlqEntry, Filter, GroupChange, GroupConfig, GroupStore, GroupStoreError, Log, Ordering,
    Timestamp,
};
use tributary_sqlite::{SqliteLog, SqliteOptions};

use super::common::{all_events, ev, open};

tributary_conformance::group_store_conformance!(async {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteLog::open(&dir.path().join("t.db"), SqliteOptions::default()).unwrap();
    let store = Arc::new(log.group_store()) as Arc<dyn GroupStore>;
    // The log before the dir: the dir must outlive the file's last connection.
    (store, (log, dir))
});

fn config(name: &str) -> GroupConfig {
    GroupConfig {
        ack_wait: Duration::from_millis(1500),
        backoff: vec![Duration::from_millis(100), Duration::from_secs(2)],
        ordering: Ordering::None,
        ..GroupConfig::new(name, Filter::all())
    }
}

/// A group with some of everything: progress (replayed too), a dead-letter entry holding
/// a real event of the log, a committed position.
async fn fill(log: &SqliteLog, store: &dyn GroupStore, name: &str) {
    log.append(vec![ev("a", "x"), ev("b", "y"), ev("a", "z")])
        .await
        .unwrap();
    let events = all_events(log).await;
    let poison = events.last().unwrap().clone();
    store
        .create(&config(name), 0, Timestamp::from_millis(1_700_000_000_000))
        .await
        .unwrap();
    let group = name.to_owned();
    store
        .apply(vec![
            GroupChange::Attempted {
                group: group.clone(),
                position: 1,
                attempts: 2,
                reason: Some("timeout".into()),
            },
            GroupChange::Acked {
                group: group.clone(),
                position: 2,
            },
            GroupChange::Parked {
                group: group.clone(),
                entry: DlqEntry {
                    event: poison.clone(),
                    attempts: 5,
                    reason: "max deliveries".into(),
                    parked_at: Timestamp::from_millis(1_700_000_000_500),
                },
            },
            GroupChange::Parked {
                group: group.clone(),
                entry: DlqEntry {
                    event: events[0].clone(),
                    attempts: 5,
                    reason: "max deliveries".into(),
                    parked_at: Timestamp::from_millis(1_700_000_000_600),
                },
            },
            GroupChange::Replayed {
                group: group.clone(),
                position: 1,
            },
            GroupChange::Committed {
                group,
                committed: 2,
            },
        ])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_state_survives_closing_and_reopening_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let log = open(&path);
    let store = log.group_store();
    fill(&log, &store, "g").await;
    let before = store.load().await.unwrap();
    assert_eq!(before.len(), 1);
    assert_eq!(
        (
            before[0].committed,
            before[0].progress.len(),
            before[0].dlq.len()
        ),
        (2, 1, 1)
    );
    log.close().await.unwrap();
    drop((store, log));

    let log = open(&path);
    let store = log.group_store();
    assert_eq!(store.load().await.unwrap(), before);
    // And it carries on from there.
    store
        .apply(vec![GroupChange::Forget {
            group: "g".into(),
            position: 1,
        }])
        .await
        .unwrap();
    assert!(store.load().await.unwrap()[0].progress.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_log_keeps_acknowledged_group_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let log = open(&path);
    let store = log.group_store();
    fill(&log, &store, "g").await;
    let before = store.load().await.unwrap();
    drop((store, log)); // no close: every write that returned was already committed
    let log = open(&path);
    assert_eq!(log.group_store().load().await.unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_log_closes_its_group_store() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir.path().join("t.db"));
    let store = log.group_store();
    fill(&log, &store, "g").await;
    log.close().await.unwrap();
    let err = store
        .apply(vec![GroupChange::Acked {
            group: "g".into(),
            position: 3,
        }])
        .await
        .unwrap_err();
    assert!(matches!(err, GroupStoreError::Closed), "{err:?}");
    assert!(matches!(
        store.create(&config("h"), 0, Timestamp::now()).await,
        Err(GroupStoreError::Closed)
    ));
    assert!(matches!(
        store.delete("g").await,
        Err(GroupStoreError::Closed)
    ));
    // Like event reads, loading still works.
    assert_eq!(store.load().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_writes_and_appends_share_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(&dir.path().join("t.db")));
    let store = log.group_store();
    store
        .create(&config("g"), 0, Timestamp::now())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let log = Arc::clone(&log);
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                log.append(vec![ev("t", "x")]).await.unwrap();
            }
        }));
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for j in 0..25u64 {
                store
                    .apply(vec![GroupChange::Attempted {
                        group: "g".into(),
                        position: 1000 + i * 100 + j,
                        attempts: 1,
                        reason: None,
                    }])
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(*log.head().borrow(), 200);
    assert_eq!(store.load().await.unwrap()[0].progress.len(), 200);
    // Group writes are not append commits: the writer's counters are the log's own.
    assert_eq!(log.stats().events, 200);
}

/// Migrations 1 and 2 exactly as released in schema version 2. Frozen: a file made by
/// that build looks like this whatever the migrations become.
const SCHEMA_2: &str = "
    CREATE TABLE events (
        position   INTEGER PRIMARY KEY,
        topic      TEXT    NOT NULL,
        seq        INTEGER NOT NULL,
        name       TEXT    NOT NULL,
        args       TEXT    NOT NULL,
        id         TEXT    NOT NULL UNIQUE,
        client_id  TEXT,
        session_id TEXT,
        timestamp  INTEGER NOT NULL,
        UNIQUE (topic, seq)
    ) STRICT;
    CREATE INDEX events_topic      ON events (topic, position);
    CREATE INDEX events_name       ON events (name, position);
    CREATE INDEX events_client_id  ON events (client_id, position);
    CREATE INDEX events_session_id ON events (session_id, position);
    CREATE INDEX events_timestamp  ON events (timestamp);
    CREATE TABLE topics (
        name          TEXT    PRIMARY KEY,
        head_seq      INTEGER NOT NULL,
        event_count   INTEGER NOT NULL,
        last_position INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) STRICT, WITHOUT ROWID;
    PRAGMA user_version = 2;
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_2_database_migrates_and_keeps_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(SCHEMA_2).unwrap();
        conn.execute_batch(
            "INSERT INTO events (position, topic, seq, name, args, id, client_id, session_id, timestamp)
             VALUES (1, 'a', 1, 'x', '{\"k\":1}', 'id-1', 'c', NULL, 1700000000000),
                    (2, 'a', 2, 'y', '[]', 'id-2', NULL, 's', 1700000000001);
             INSERT INTO topics (name, head_seq, event_count, last_position) VALUES ('a', 2, 2, 2);
             INSERT INTO meta (key, value) VALUES ('log_id', '0123456789abcdef0123456789abcdef');",
        )
        .unwrap();
    }

    let log = open(&path);
    assert_eq!(*log.head().borrow(), 2);
    assert_eq!(
        log.log_id().await.unwrap(),
        "0123456789abcdef0123456789abcdef"
    );
    let events = all_events(&log).await;
    assert_eq!(
        events
            .iter()
            .map(|e| (e.id.as_str(), e.args.as_json()))
            .collect::<Vec<_>>(),
        [("id-1", r#"{"k":1}"#), ("id-2", "[]")]
    );
    let store = log.group_store();
    assert!(store.load().await.unwrap().is_empty());
    fill(&log, &store, "g").await;
    let groups = store.load().await.unwrap();
    log.close().await.unwrap();
    drop((store, log));

    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 5);
    drop(conn);
    // Opening again migrates nothing and finds everything.
    let log = open(&path);
    assert_eq!(*log.head().borrow(), 5);
    assert_eq!(log.group_store().load().await.unwrap(), groups);
}
