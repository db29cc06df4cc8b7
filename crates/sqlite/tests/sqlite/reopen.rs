//! What is stored survives closing and reopening the file.

use std::time::Duration;

use tributary_core::{Filter, Log, LogError, PruneRule, Topic, TopicConfig, TopicInfo};
use tributary_sqlite::{SqliteLog, SqliteOptions, Synchronous};

use super::common::{all_events, ev, open};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_heads_and_ids_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    // A missing parent directory is created.
    let path = dir.path().join("data").join("t.db");
    let log = open(&path);
    log.append(vec![ev("a", "x").with_id("k1"), ev("b", "x"), ev("a", "y")])
        .await
        .unwrap();
    let before = all_events(&log).await;
    let topics_before = log.topics().await.unwrap();
    log.close().await.unwrap();
    drop(log);

    let log = open(&path);
    assert_eq!(
        *log.head().borrow(),
        3,
        "the head starts at the stored maximum"
    );
    assert_eq!(all_events(&log).await, before);
    assert_eq!(log.topics().await.unwrap(), topics_before);
    let again = log.append(vec![ev("a", "x").with_id("k1")]).await.unwrap()[0];
    assert!(again.duplicate);
    assert_eq!((again.position, again.seq), (1, 1));
    // expected_seq is checked against the stored head, and numbering continues.
    let err = log
        .append(vec![ev("a", "z").with_expected_seq(1)])
        .await
        .unwrap_err();
    assert!(
        matches!(err, LogError::SeqConflict { head: 2, .. }),
        "{err:?}"
    );
    let next = log
        .append(vec![ev("a", "z").with_expected_seq(2)])
        .await
        .unwrap()[0];
    assert_eq!((next.position, next.seq, next.duplicate), (4, 3, false));
    let a = log
        .topics()
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.topic.as_str() == "a");
    assert_eq!(
        a.map(|t: TopicInfo| (t.head_seq, t.event_count, t.last_position)),
        Some((3, 3, 4))
    );
    // Timestamps keep following positions across the reopen.
    let events = all_events(&log).await;
    assert!(events.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_log_keeps_what_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let log = open(&path);
    for i in 0..5 {
        log.append(vec![ev("t", "x").with_id(format!("id-{i}"))])
            .await
            .unwrap();
    }
    drop(log); // no close: every acknowledged append was already committed
    let log = open(&path);
    assert_eq!(*log.head().borrow(), 5);
    assert_eq!(all_events(&log).await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_work_after_close_but_appends_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir.path().join("t.db"));
    log.append(vec![ev("t", "x")]).await.unwrap();
    log.close().await.unwrap();
    log.close().await.unwrap(); // twice is fine
    assert!(matches!(
        log.append(vec![ev("t", "x")]).await,
        Err(LogError::Closed)
    ));
    assert!(matches!(log.check_writable().await, Err(LogError::Closed)));
    assert_eq!(log.topics().await.unwrap().len(), 1);
    assert_eq!(all_events(&log).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_is_in_wal_mode_with_a_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let log = open(&path);
    log.check_writable().await.unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(
        version, 5,
        "events and topics, the meta table with the log id, consumer groups, topic settings, \
         partial id indexes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    open(&path).close().await.unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = SqliteLog::open(&path, SqliteOptions::default()).err();
    assert!(matches!(err, Some(LogError::Storage { .. })), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_synchronous_opens_and_appends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let options = SqliteOptions {
        synchronous: "normal".parse::<Synchronous>().unwrap(),
        readers: 1,
        max_batch_events: 1,
    };
    let log = SqliteLog::open(&path, options).unwrap();
    // max_batch_events 1: every append is its own commit.
    for _ in 0..3 {
        log.append(vec![ev("t", "x")]).await.unwrap();
    }
    assert_eq!(log.stats().commits, 3);
    assert_eq!(all_events(&log).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_id_survives_a_reopen_and_a_new_file_gets_another() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let log = open(&path);
    let id = log.log_id().await.unwrap();
    log.append(vec![ev("a", "x")]).await.unwrap();
    log.close().await.unwrap();
    drop(log);

    let log = open(&path);
    assert_eq!(log.log_id().await.unwrap(), id, "same data, same id");
    log.close().await.unwrap();
    drop(log);

    // A wiped data dir is a new file: a new id.
    std::fs::remove_dir_all(dir.path()).unwrap();
    let log = open(&path);
    assert_ne!(log.log_id().await.unwrap(), id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_removals_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let log = open(&path);
    let config = TopicConfig {
        max_age: Some(Duration::from_secs(7 * 86_400)),
        max_events: Some(1),
        max_event_bytes: Some(1000),
    };
    let a = Topic::new("a").unwrap();
    log.set_topic_config(&a, config.clone()).await.unwrap();
    log.append(vec![ev("a", "x"), ev("a", "y"), ev("b", "x"), ev("b", "y")])
        .await
        .unwrap();
    let keep_one = PruneRule {
        before: None,
        keep_last: Some(1),
    };
    assert_eq!(log.prune(&a, keep_one, 10).await.unwrap(), 1);
    // b's events were the newest: the next position must not reuse theirs.
    let b = Topic::new("b").unwrap();
    assert_eq!(log.prune(&b, PruneRule::everything(), 10).await.unwrap(), 2);
    let topics_before = log.topics().await.unwrap();
    log.close().await.unwrap();
    drop(log);

    let log = open(&path);
    assert_eq!(*log.head().borrow(), 4, "the head counts removed positions");
    assert_eq!(log.topics().await.unwrap(), topics_before);
    assert_eq!(log.topic(&a).await.unwrap().unwrap().config, Some(config));
    // The floors readers check are read back from the file.
    assert_eq!(log.pruned_through(&Filter::all()).await.unwrap(), 4);
    let next = log.append(vec![ev("b", "z")]).await.unwrap()[0];
    assert_eq!((next.position, next.seq), (5, 3));
    assert_eq!(
        all_events(&log)
            .await
            .iter()
            .map(|e| e.position)
            .collect::<Vec<_>>(),
        [2, 5]
    );
}
