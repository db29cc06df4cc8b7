//! [`MemoryLog`]: the log kept in memory. It has the same semantics as the durable
//! backends (the conformance suite runs against it too) but forgets everything when
//! dropped. For tests and for embedding where durability is not wanted.

use std::collections::HashMap;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::error::LogError;
use crate::event::{Appended, Event, NewEvent, Position, Timestamp, new_event_id, validate_batch};
use crate::log::{Log, ReadQuery, TopicInfo};
use crate::topic::Topic;

#[derive(Default)]
struct State {
    /// `events[i]` has position `i + 1`.
    events: Vec<Event>,
    topics: HashMap<Topic, TopicInfo>,
    ids: HashMap<String, Appended>,
    /// Per topic, the index in `events` of each seq (`[seq - 1]`), for `read_topic`.
    by_topic: HashMap<Topic, Vec<usize>>,
    last_timestamp: Timestamp,
    closed: bool,
}

pub struct MemoryLog {
    state: Mutex<State>,
    head: watch::Sender<Position>,
    /// The data lives as long as this value, so a fresh one means a fresh log id.
    log_id: String,
}

impl Default for MemoryLog {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryLog {
    pub fn new() -> Self {
        MemoryLog {
            state: Mutex::new(State::default()),
            head: watch::Sender::new(0),
            log_id: new_event_id().replace('-', ""),
        }
    }
}

#[async_trait]
impl Log for MemoryLog {
    async fn append(&self, batch: Vec<NewEvent>) -> Result<Vec<Appended>, LogError> {
        validate_batch(&batch)?;
        let mut st = self.state.lock();
        if st.closed {
            return Err(LogError::Closed);
        }
        // Plan the whole batch against a scratch view first, so that a conflict leaves
        // the state untouched (atomicity).
        let mut heads: HashMap<&Topic, u64> = HashMap::new();
        let mut batch_ids: HashMap<&str, Appended> = HashMap::new();
        let mut next_position = st.events.len() as Position + 1;
        let mut planned = Vec::with_capacity(batch.len());
        for (index, e) in batch.iter().enumerate() {
            if let Some(orig) =
                e.id.as_deref()
                    .and_then(|id| st.ids.get(id).or_else(|| batch_ids.get(id)))
            {
                planned.push(Appended {
                    duplicate: true,
                    ..*orig
                });
                continue;
            }
            let head = *heads
                .entry(&e.topic)
                .or_insert_with(|| st.topics.get(&e.topic).map_or(0, |t| t.head_seq));
            if let Some(expected) = e.expected_seq.filter(|&x| x != head) {
                return Err(LogError::SeqConflict {
                    topic: e.topic.to_string(),
                    expected,
                    head,
                    index,
                });
            }
            let appended = Appended {
                position: next_position,
                seq: head + 1,
                duplicate: false,
            };
            next_position += 1;
            heads.insert(&e.topic, head + 1);
            if let Some(id) = e.id.as_deref() {
                batch_ids.insert(id, appended);
            }
            planned.push(appended);
        }
        // Timestamps never go backwards, so that time and position order agree.
        let timestamp = Timestamp::now().max(st.last_timestamp);
        st.last_timestamp = timestamp;
        for (e, a) in batch.into_iter().zip(&planned) {
            if a.duplicate {
                continue;
            }
            let id = e.id.unwrap_or_else(new_event_id);
            st.ids.insert(id.clone(), *a);
            let info = st
                .topics
                .entry(e.topic.clone())
                .or_insert_with(|| TopicInfo {
                    topic: e.topic.clone(),
                    head_seq: 0,
                    event_count: 0,
                    last_position: 0,
                });
            info.head_seq = a.seq;
            info.event_count += 1;
            info.last_position = a.position;
            let index = st.events.len();
            st.by_topic.entry(e.topic.clone()).or_default().push(index);
            st.events.push(Event {
                position: a.position,
                topic: e.topic,
                seq: a.seq,
                name: e.name,
                args: e.args,
                id,
                client_id: e.client_id,
                session_id: e.session_id,
                timestamp,
            });
        }
        let head = st.events.len() as Position;
        drop(st);
        self.head.send_if_modified(|h| {
            let moved = *h != head;
            *h = head;
            moved
        });
        Ok(planned)
    }

    async fn read(&self, q: ReadQuery<'_>) -> Result<Vec<Event>, LogError> {
        let st = self.state.lock();
        let up_to = q.up_to.min(st.events.len() as Position);
        if q.after >= up_to {
            return Ok(Vec::new());
        }
        Ok(st.events[q.after as usize..up_to as usize]
            .iter()
            .filter(|e| q.filter.matches(e))
            .take(q.limit)
            .cloned()
            .collect())
    }

    async fn read_topic(
        &self,
        topic: &Topic,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>, LogError> {
        let st = self.state.lock();
        let Some(indexes) = st.by_topic.get(topic) else {
            return Ok(Vec::new());
        };
        let start = usize::try_from(after_seq).unwrap_or(usize::MAX);
        Ok(indexes
            .iter()
            .skip(start)
            .take(limit)
            .map(|&i| st.events[i].clone())
            .collect())
    }

    async fn topic_head(&self, topic: &Topic) -> Result<u64, LogError> {
        Ok(self
            .state
            .lock()
            .topics
            .get(topic)
            .map_or(0, |t| t.head_seq))
    }

    async fn log_id(&self) -> Result<String, LogError> {
        Ok(self.log_id.clone())
    }

    fn head(&self) -> watch::Receiver<Position> {
        self.head.subscribe()
    }

    async fn position_before(&self, time: Timestamp) -> Result<Position, LogError> {
        let st = self.state.lock();
        Ok(st.events.partition_point(|e| e.timestamp < time) as Position)
    }

    async fn topics(&self) -> Result<Vec<TopicInfo>, LogError> {
        let st = self.state.lock();
        let mut topics: Vec<TopicInfo> = st.topics.values().cloned().collect();
        topics.sort_by(|a, b| a.topic.cmp(&b.topic));
        Ok(topics)
    }

    async fn check_writable(&self) -> Result<(), LogError> {
        if self.state.lock().closed {
            Err(LogError::Closed)
        } else {
            Ok(())
        }
    }

    async fn close(&self) -> Result<(), LogError> {
        self.state.lock().closed = true;
        Ok(())
    }
}
