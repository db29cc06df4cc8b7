//! [`MemoryLog`]: the log kept in memory. It has the same semantics as the durable
//! backends (the conformance suite runs against it too) but forgets everything when
//! dropped. For tests and for embedding where durability is not wanted.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::{broadcast, watch};

use crate::encode::Encoded;
use crate::error::LogError;
use crate::event::{Appended, Event, NewEvent, Position, Timestamp, new_event_id, validate_batch};
use crate::filter::Filter;
use crate::log::{COMMITS_CAPACITY, Commit, Log, ReadQuery, TopicInfo};
use crate::retention::{PruneRule, TopicConfig};
use crate::topic::Topic;

struct TopicState {
    info: TopicInfo,
    /// The positions of the seqs still stored, oldest first: `[0]` has
    /// `info.pruned_seq + 1`.
    positions: VecDeque<Position>,
}

#[derive(Default)]
struct State {
    /// By position; retention leaves holes.
    events: BTreeMap<Position, Event>,
    /// The last position handed out, stored or since removed.
    last_position: Position,
    topics: HashMap<Topic, TopicState>,
    /// The ids of the stored events (a removed event's id may be used again).
    ids: HashMap<String, Appended>,
    last_timestamp: Timestamp,
    closed: bool,
}

impl State {
    fn topic_mut(&mut self, topic: &Topic) -> &mut TopicState {
        self.topics
            .entry(topic.clone())
            .or_insert_with(|| TopicState {
                info: TopicInfo::empty(topic.clone()),
                positions: VecDeque::new(),
            })
    }
}

pub struct MemoryLog {
    state: Mutex<State>,
    head: watch::Sender<Position>,
    commits: broadcast::Sender<Commit>,
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
            commits: broadcast::Sender::new(COMMITS_CAPACITY),
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
        let mut next_position = st.last_position + 1;
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
            let known = st.topics.get(&e.topic);
            if let Some(max) = known.and_then(|t| t.info.config.as_ref()?.max_event_bytes)
                && e.size_bytes() as u64 > max
            {
                return Err(LogError::EventTooLarge {
                    topic: e.topic.to_string(),
                    size: e.size_bytes() as u64,
                    max,
                    index,
                });
            }
            let head = *heads
                .entry(&e.topic)
                .or_insert_with(|| known.map_or(0, |t| t.info.head_seq));
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
        let keep = self.commits.receiver_count() > 0;
        let mut committed = Vec::new();
        for (e, a) in batch.into_iter().zip(&planned) {
            if a.duplicate {
                continue;
            }
            let id = e.id.unwrap_or_else(new_event_id);
            st.ids.insert(id.clone(), *a);
            let topic = st.topic_mut(&e.topic);
            topic.info.head_seq = a.seq;
            topic.info.event_count += 1;
            topic.info.last_position = a.position;
            topic.positions.push_back(a.position);
            st.last_position = a.position;
            let event = Event {
                position: a.position,
                topic: e.topic,
                seq: a.seq,
                name: e.name,
                args: e.args,
                id,
                client_id: e.client_id,
                session_id: e.session_id,
                timestamp,
            };
            if keep {
                committed.push(Arc::new(Encoded::new(event.clone())));
            }
            st.events.insert(a.position, event);
        }
        let head = st.last_position;
        // Sent under the lock, so that commits go out in position order.
        if !committed.is_empty() {
            let _ = self.commits.send(committed.into());
        }
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
        if q.after >= q.up_to {
            return Ok(Vec::new());
        }
        Ok(st
            .events
            .range(q.after + 1..=q.up_to)
            .map(|(_, e)| e)
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
        let Some(t) = st.topics.get(topic) else {
            return Ok(Vec::new());
        };
        let skip =
            usize::try_from(after_seq.saturating_sub(t.info.pruned_seq)).unwrap_or(usize::MAX);
        Ok(t.positions
            .iter()
            .skip(skip)
            .take(limit)
            .filter_map(|p| st.events.get(p).cloned())
            .collect())
    }

    async fn topic_head(&self, topic: &Topic) -> Result<u64, LogError> {
        Ok(self
            .state
            .lock()
            .topics
            .get(topic)
            .map_or(0, |t| t.info.head_seq))
    }

    async fn log_id(&self) -> Result<String, LogError> {
        Ok(self.log_id.clone())
    }

    fn head(&self) -> watch::Receiver<Position> {
        self.head.subscribe()
    }

    fn commits(&self) -> Option<broadcast::Receiver<Commit>> {
        Some(self.commits.subscribe())
    }

    async fn position_before(&self, time: Timestamp) -> Result<Position, LogError> {
        // Timestamps never decrease with position: the last one before `time` is found
        // walking back from the newest.
        let st = self.state.lock();
        Ok(st
            .events
            .values()
            .rev()
            .find(|e| e.timestamp < time)
            .map_or(0, |e| e.position))
    }

    async fn topics(&self) -> Result<Vec<TopicInfo>, LogError> {
        let st = self.state.lock();
        let mut topics: Vec<TopicInfo> = st
            .topics
            .values()
            .map(|t| t.info.clone())
            .filter(TopicInfo::is_listed)
            .collect();
        topics.sort_by(|a, b| a.topic.cmp(&b.topic));
        Ok(topics)
    }

    async fn topic(&self, topic: &Topic) -> Result<Option<TopicInfo>, LogError> {
        Ok(self.state.lock().topics.get(topic).map(|t| t.info.clone()))
    }

    async fn set_topic_config(&self, topic: &Topic, config: TopicConfig) -> Result<(), LogError> {
        let mut st = self.state.lock();
        if st.closed {
            return Err(LogError::Closed);
        }
        st.topic_mut(topic).info.config = Some(config);
        Ok(())
    }

    async fn remove_topic_config(&self, topic: &Topic) -> Result<bool, LogError> {
        let mut st = self.state.lock();
        if st.closed {
            return Err(LogError::Closed);
        }
        Ok(st
            .topics
            .get_mut(topic)
            .and_then(|t| t.info.config.take())
            .is_some())
    }

    async fn prune(&self, topic: &Topic, rule: PruneRule, limit: usize) -> Result<u64, LogError> {
        let mut guard = self.state.lock();
        let st = &mut *guard;
        if st.closed {
            return Err(LogError::Closed);
        }
        let Some(t) = st.topics.get_mut(topic) else {
            return Ok(0);
        };
        let mut removed = 0;
        while (removed as usize) < limit {
            let Some(&position) = t.positions.front() else {
                break;
            };
            let event = &st.events[&position];
            if !rule.removes(event.seq, event.timestamp, t.info.head_seq) {
                break;
            }
            t.positions.pop_front();
            let event = st
                .events
                .remove(&position)
                .expect("indexed events are stored");
            st.ids.remove(&event.id);
            t.info.pruned_seq = event.seq;
            t.info.pruned_position = position;
            t.info.event_count -= 1;
            removed += 1;
        }
        Ok(removed)
    }

    async fn pruned_through(&self, filter: &Filter) -> Result<Position, LogError> {
        let st = self.state.lock();
        Ok(st
            .topics
            .values()
            .filter(|t| t.info.pruned_position > 0 && filter.matches_topic(t.info.topic.as_str()))
            .map(|t| t.info.pruned_position)
            .max()
            .unwrap_or(0))
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
