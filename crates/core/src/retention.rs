//! Topic settings and retention: [`TopicConfig`] (how long a topic keeps its events, how
//! many, how large one may be), [`PruneRule`] (what one pass of [`Log::prune`] removes),
//! and [`Retention`], the background pass that applies every topic's rule in small
//! batches.
//!
//! Why it works this way:
//! - **Prefixes only.** Within a topic, seq, position and time all grow together, so
//!   both rules (older than `max_age`, beyond the newest `max_events`) remove a prefix of
//!   the topic. What is left is always "from `pruned_seq + 1` on", and one number per
//!   topic ([`TopicInfo::pruned_position`](crate::TopicInfo::pruned_position)) is enough
//!   to tell a reader that it fell behind.
//! - **Small batches.** Each [`Log::prune`] call is one short write of at most
//!   [`RetentionOptions::batch`] events; appends queue between them instead of waiting
//!   for a whole topic to be cut.
//! - **Time comes from outside.** [`Retention::run_once`] takes "now", so tests prune by
//!   age without waiting, and the backends never read the clock for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{LogError, ValidationError};
use crate::event::Timestamp;
use crate::log::Log;
use crate::topic::Topic;

/// A topic's settings. Every field is optional; `None` means no limit of that kind (the
/// server's own size limits still apply).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// Events older than this are removed (`7d`, `12h`, `30m`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::duration::text::option"
    )]
    pub max_age: Option<Duration>,
    /// Only the newest this many events are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_events: Option<u64>,
    /// Largest event the topic takes, measured as
    /// [`NewEvent::size_bytes`](crate::NewEvent::size_bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_event_bytes: Option<u64>,
}

impl TopicConfig {
    /// Refuses settings that would make no sense: zero limits, an age under a second.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let field = |field, reason: &str| ValidationError::Field {
            field,
            reason: reason.to_owned(),
        };
        if self.max_age.is_some_and(|a| a < Duration::from_secs(1)) {
            return Err(field("max_age", "must be at least 1s"));
        }
        if self.max_events == Some(0) {
            return Err(field(
                "max_events",
                "must be at least 1 (delete the topic to remove every event)",
            ));
        }
        if self.max_event_bytes == Some(0) {
            return Err(field("max_event_bytes", "must be at least 1"));
        }
        Ok(())
    }

    /// Whether retention removes anything from this topic.
    pub fn has_retention(&self) -> bool {
        self.max_age.is_some() || self.max_events.is_some()
    }

    /// The rule retention applies at `now`.
    pub fn rule_at(&self, now: Timestamp) -> PruneRule {
        PruneRule {
            before: self.max_age.map(|age| {
                let age = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
                Timestamp::from_millis(now.as_millis().saturating_sub(age))
            }),
            keep_last: self.max_events,
        }
    }
}

/// What one [`Log::prune`] removes: an event goes if it is older than `before`, or if it
/// is not among the newest `keep_last` of its topic. With both `None` nothing goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PruneRule {
    pub before: Option<Timestamp>,
    pub keep_last: Option<u64>,
}

impl PruneRule {
    /// Every event of the topic (deleting it).
    pub fn everything() -> Self {
        PruneRule {
            before: None,
            keep_last: Some(0),
        }
    }

    /// Whether an event of a topic at `head_seq` goes.
    pub fn removes(&self, seq: u64, timestamp: Timestamp, head_seq: u64) -> bool {
        self.before.is_some_and(|b| timestamp < b)
            || self
                .keep_last
                .is_some_and(|k| seq <= head_seq.saturating_sub(k))
    }
}

/// Tuning for the retention pass.
#[derive(Clone, Debug)]
pub struct RetentionOptions {
    /// How often the pass runs.
    pub interval: Duration,
    /// Events removed per write at most.
    pub batch: usize,
}

impl Default for RetentionOptions {
    fn default() -> Self {
        RetentionOptions {
            interval: Duration::from_secs(10),
            batch: 1000,
        }
    }
}

/// Applies every topic's retention to a log, once ([`Retention::run_once`]) or every
/// [`RetentionOptions::interval`] ([`Retention::spawn`]).
pub struct Retention {
    log: Arc<dyn Log>,
    options: RetentionOptions,
    removed: AtomicU64,
}

impl Retention {
    pub fn new(log: Arc<dyn Log>, options: RetentionOptions) -> Arc<Self> {
        Arc::new(Retention {
            log,
            options: RetentionOptions {
                batch: options.batch.max(1),
                ..options
            },
            removed: AtomicU64::new(0),
        })
    }

    /// Events removed by retention since this value was made (for metrics).
    pub fn removed(&self) -> u64 {
        self.removed.load(Ordering::Relaxed)
    }

    /// One pass over every topic with a retention rule, as of `now`; answers how many
    /// events it removed. A topic that fails is logged and skipped, so one bad topic
    /// does not hold back the others; the first error is returned after the pass.
    pub async fn run_once(&self, now: Timestamp) -> Result<u64, LogError> {
        let mut removed = 0;
        let mut first_error = None;
        for info in self.log.topics().await? {
            let Some(config) = info.config.filter(TopicConfig::has_retention) else {
                continue;
            };
            match self.prune_topic(&info.topic, config.rule_at(now)).await {
                Ok(n) => removed += n,
                Err(e) => {
                    tracing::warn!(topic = %info.topic, error = %e, "retention failed for a topic");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(removed),
        }
    }

    /// Removes what `rule` no longer keeps from `topic`, a batch at a time.
    pub async fn prune_topic(&self, topic: &Topic, rule: PruneRule) -> Result<u64, LogError> {
        let mut removed = 0;
        loop {
            let n = self.log.prune(topic, rule, self.options.batch).await?;
            removed += n;
            self.removed.fetch_add(n, Ordering::Relaxed);
            if (n as usize) < self.options.batch {
                if removed > 0 {
                    tracing::debug!(%topic, removed, "retention removed events");
                }
                return Ok(removed);
            }
            // Let the appends that queued meanwhile go first.
            tokio::task::yield_now().await;
        }
    }

    /// Removes a topic's settings and every event it holds; answers how many events
    /// went. Its head seq is kept, so a later event of the same name continues it.
    pub async fn delete_topic(&self, topic: &Topic) -> Result<u64, LogError> {
        self.log.remove_topic_config(topic).await?;
        self.prune_topic(topic, PruneRule::everything()).await
    }

    /// Runs [`run_once`](Self::run_once) every interval with the wall clock, until the
    /// returned handle is dropped or stopped.
    pub fn spawn(self: &Arc<Self>) -> RetentionTask {
        let this = Arc::clone(self);
        let handle = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(this.options.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                match this.run_once(Timestamp::now()).await {
                    Ok(_) | Err(LogError::Closed) => {}
                    Err(e) => tracing::warn!(error = %e, "retention pass failed"),
                }
            }
        });
        RetentionTask(handle)
    }
}

/// The running retention pass; stops when dropped.
pub struct RetentionTask(tokio::task::JoinHandle<()>);

impl RetentionTask {
    /// Stops the pass; a batch being written finishes or is rolled back whole.
    pub fn stop(&self) {
        self.0.abort();
    }
}

impl Drop for RetentionTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Args, MemoryLog, NewEvent, ReadQuery};

    #[test]
    fn config_reads_and_writes_with_units() {
        let config: TopicConfig =
            serde_json::from_str(r#"{"max_age":"7d","max_events":10}"#).unwrap();
        assert_eq!(config.max_age, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(config.max_events, Some(10));
        assert_eq!(
            serde_json::to_string(&config).unwrap(),
            r#"{"max_age":"7d","max_events":10}"#
        );
        assert!(serde_json::from_str::<TopicConfig>(r#"{"max_age":"7 days"}"#).is_err());
        assert!(serde_json::from_str::<TopicConfig>(r#"{"retention":1}"#).is_err());
        assert!(serde_json::from_str::<TopicConfig>(r#"{"max_events":-1}"#).is_err());
    }

    #[test]
    fn zero_limits_are_refused() {
        for bad in [
            TopicConfig {
                max_events: Some(0),
                ..TopicConfig::default()
            },
            TopicConfig {
                max_event_bytes: Some(0),
                ..TopicConfig::default()
            },
            TopicConfig {
                max_age: Some(Duration::from_millis(999)),
                ..TopicConfig::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert!(TopicConfig::default().validate().is_ok());
    }

    #[test]
    fn a_rule_removes_by_age_or_by_count() {
        let config = TopicConfig {
            max_age: Some(Duration::from_secs(60)),
            max_events: Some(3),
            max_event_bytes: None,
        };
        let rule = config.rule_at(Timestamp::from_millis(100_000));
        assert_eq!(rule.before, Some(Timestamp::from_millis(40_000)));
        // Old enough, whatever its seq.
        assert!(rule.removes(10, Timestamp::from_millis(39_999), 10));
        // Young, but not among the newest 3 of 10.
        assert!(rule.removes(7, Timestamp::from_millis(90_000), 10));
        assert!(!rule.removes(8, Timestamp::from_millis(90_000), 10));
        assert!(!rule.removes(1, Timestamp::from_millis(40_000), 3));
        assert!(PruneRule::everything().removes(5, Timestamp::from_millis(0), 5));
        assert!(!PruneRule::default().removes(1, Timestamp::from_millis(0), 5));
    }

    #[tokio::test]
    async fn a_pass_applies_each_topics_rule_as_of_the_time_it_is_given() {
        let log: Arc<dyn Log> = Arc::new(MemoryLog::new());
        let topic = |t: &str| Topic::new(t).unwrap();
        let minute = TopicConfig {
            max_age: Some(Duration::from_secs(60)),
            ..TopicConfig::default()
        };
        let two = TopicConfig {
            max_events: Some(2),
            ..TopicConfig::default()
        };
        log.set_topic_config(&topic("old"), minute).await.unwrap();
        log.set_topic_config(&topic("many"), two).await.unwrap();
        log.set_topic_config(&topic("sized"), TopicConfig::default())
            .await
            .unwrap();
        for t in ["old", "many", "free", "sized"] {
            let batch = (0..3)
                .map(|_| NewEvent::new(topic(t), "x", Args::null()))
                .collect();
            log.append(batch).await.unwrap();
        }
        let filter = crate::Filter::all();
        let events = log
            .read(ReadQuery {
                after: 0,
                up_to: 12,
                filter: &filter,
                limit: 100,
            })
            .await
            .unwrap();
        let newest = events.last().unwrap().timestamp.as_millis();
        let at = |ms: i64| Timestamp::from_millis(newest + ms);
        // Batches of one: the pass keeps going until each topic is within its rule.
        let retention = Retention::new(
            Arc::clone(&log),
            RetentionOptions {
                interval: Duration::from_secs(1),
                batch: 1,
            },
        );

        // A minute has not passed yet: only the count rule removes anything.
        assert_eq!(retention.run_once(at(59_000)).await.unwrap(), 1);
        assert_eq!(retention.run_once(at(59_000)).await.unwrap(), 0);
        // Now every event of "old" is more than a minute old.
        assert_eq!(retention.run_once(at(61_000)).await.unwrap(), 3);
        assert_eq!(retention.removed(), 4);
        let count = |t: &'static str| {
            let log = Arc::clone(&log);
            async move { log.topic(&topic(t)).await.unwrap().unwrap().event_count }
        };
        assert_eq!(count("old").await, 0);
        assert_eq!(count("many").await, 2);
        assert_eq!(count("free").await, 3, "no settings: kept");
        assert_eq!(count("sized").await, 3, "settings without retention: kept");
        // Deleting takes the settings and every event.
        assert_eq!(retention.delete_topic(&topic("many")).await.unwrap(), 2);
        assert_eq!(
            log.topic(&topic("many")).await.unwrap().unwrap().config,
            None
        );
    }
}
