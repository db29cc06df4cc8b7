//! Filtered reads agree with the in-memory log on topics chosen to sit at the edges of
//! the prefix ranges the SQL uses (`-` and `_` sort either side of `.`).

use tributary_core::{Filter, Log, MemoryLog, ReadQuery, TopicPattern};

use super::common::{ev, open};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_reads_match_the_memory_log() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = open(&dir.path().join("t.db"));
    let memory = MemoryLog::new();
    let topics = ["a", "a-b", "a.b", "a.b.c", "a_b", "ab.c", "a.c.b", "b.a.b"];
    let batch: Vec<_> = topics
        .iter()
        .cycle()
        .take(40)
        .enumerate()
        .map(|(i, t)| {
            let mut e = ev(t, if i % 3 == 0 { "x" } else { "y" });
            e.session_id = (i % 2 == 0).then(|| "s".to_owned());
            e
        })
        .collect();
    sqlite.append(batch.clone()).await.unwrap();
    memory.append(batch).await.unwrap();
    let patterns = [
        "a", "a.>", "a.*", "*.b", ">", "*", "a.*.b", "*.*.b", "a-b", "ab.>",
    ];
    for pattern in patterns {
        for names in [vec![], vec!["x".to_owned()]] {
            let filter = Filter {
                topics: vec![TopicPattern::new(pattern).unwrap()],
                names,
                session_ids: vec!["s".into()],
                ..Filter::default()
            };
            let query = ReadQuery {
                after: 3,
                up_to: 37,
                filter: &filter,
                limit: 100,
            };
            let got = sqlite.read(query).await.unwrap();
            let want = memory.read(query).await.unwrap();
            let positions = |events: &[tributary_core::Event]| -> Vec<u64> {
                events.iter().map(|e| e.position).collect()
            };
            assert_eq!(positions(&got), positions(&want), "{filter:?}");
        }
    }
}
