//! Paged reads with random filters listing several values (exact topics, patterns,
//! names, client and session ids) agree with the in-memory log, page by page.

use tributary_core::{Event, Filter, Log, MemoryLog, ReadQuery, TopicPattern};

use super::common::{ev, open};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, pool: &[&'a str]) -> &'a str {
        pool[self.below(pool.len())]
    }

    /// Up to `max` picks from `pool`, repeats allowed.
    fn some(&mut self, pool: &[&str], max: usize) -> Vec<String> {
        (0..self.below(max + 1))
            .map(|_| self.pick(pool).to_owned())
            .collect()
    }
}

const TOPICS: &[&str] = &[
    "a", "a-b", "a.b", "a.b.c", "a_b", "ab.c", "a.c.b", "b.a", "b.a.b", "c", "c.x.y",
];
/// Topics and patterns a filter may list: some match nothing stored.
const FILTER_TOPICS: &[&str] = &[
    "a", "a.b", "a.b.c", "b.a", "c", "zz", "a.>", "a.*", "*.b", ">", "*", "a.*.b", "*.*.b", "b.>",
    "ab.>", "*.a", "c.x.*", "q.>",
];
const NAMES: &[&str] = &["x", "y", "z", "w"];
const CLIENTS: &[&str] = &["k1", "k2", "k3", "k4"];
const SESSIONS: &[&str] = &["s1", "s2", "s3"];

fn positions(events: &[Event]) -> Vec<u64> {
    events.iter().map(|e| e.position).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paged_random_filters_match_the_memory_log() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = open(&dir.path().join("t.db"));
    let memory = MemoryLog::new();
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    for _ in 0..12 {
        let batch: Vec<_> = (0..1 + rng.below(80))
            .map(|_| {
                let mut e = ev(rng.pick(TOPICS), rng.pick(NAMES));
                e.client_id = (rng.below(4) != 0).then(|| rng.pick(CLIENTS).to_owned());
                e.session_id = (rng.below(3) != 0).then(|| rng.pick(SESSIONS).to_owned());
                e
            })
            .collect();
        sqlite.append(batch.clone()).await.unwrap();
        memory.append(batch).await.unwrap();
    }
    let head = *memory.head().borrow();
    assert_eq!(*sqlite.head().borrow(), head);

    for case in 0..300 {
        let filter = Filter {
            topics: rng
                .some(FILTER_TOPICS, 5)
                .into_iter()
                .map(|t| TopicPattern::new(t).unwrap())
                .collect(),
            names: rng.some(NAMES, 3),
            client_ids: rng.some(CLIENTS, 3),
            session_ids: rng.some(SESSIONS, 2),
        };
        let start = rng.below(head as usize / 2) as u64;
        let up_to = if rng.below(3) == 0 {
            u64::MAX
        } else {
            start + 1 + rng.below(head as usize + 5) as u64
        };
        let limit = if rng.below(10) == 0 {
            usize::MAX
        } else {
            1 + rng.below(40)
        };
        let all: Vec<Event> = memory
            .read(ReadQuery {
                after: start,
                up_to,
                filter: &filter,
                limit: usize::MAX,
            })
            .await
            .unwrap();
        let context =
            format!("case {case}: {filter:?}, after {start}, up_to {up_to}, limit {limit}");
        let mut after = start;
        let mut read = Vec::new();
        loop {
            let query = ReadQuery {
                after,
                up_to,
                filter: &filter,
                limit,
            };
            let got = sqlite.read(query).await.unwrap();
            let want = memory.read(query).await.unwrap();
            assert_eq!(
                positions(&got),
                positions(&want),
                "{context}, page after {after}"
            );
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(
                    (&g.topic, &g.name, &g.client_id, &g.session_id, g.seq),
                    (&w.topic, &w.name, &w.client_id, &w.session_id, w.seq),
                    "{context}"
                );
            }
            let Some(last) = got.last() else { break };
            after = last.position;
            read.extend(got);
        }
        assert_eq!(positions(&read), positions(&all), "{context}");
    }
}

/// The most values a valid filter lists (100 arms), and more (the single query).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_values_read_like_the_memory_log() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = open(&dir.path().join("t.db"));
    let memory = MemoryLog::new();
    let batch: Vec<_> = (0..300)
        .map(|i| ev(&format!("t{}", i % 37), NAMES[i % NAMES.len()]))
        .collect();
    sqlite.append(batch.clone()).await.unwrap();
    memory.append(batch).await.unwrap();
    for count in [100, 150] {
        let filter = Filter {
            topics: (0..count)
                .map(|i| TopicPattern::new(format!("t{}", i * 3)).unwrap())
                .collect(),
            names: vec!["x".into(), "y".into(), "z".into()],
            ..Filter::default()
        };
        let mut after = 10;
        loop {
            let query = ReadQuery {
                after,
                up_to: 290,
                filter: &filter,
                limit: 7,
            };
            let got = sqlite.read(query).await.unwrap();
            assert_eq!(
                positions(&got),
                positions(&memory.read(query).await.unwrap()),
                "{count} topics, after {after}"
            );
            let Some(last) = got.last() else { break };
            after = last.position;
        }
    }
}
