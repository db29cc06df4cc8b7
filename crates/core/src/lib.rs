//! The core of Tributary: everything about events and logs that does not depend on how
//! they are stored or served. No HTTP and no SQL live here.
//!
//! # Layout
//! - [`event`]: the event model ([`Event`], [`NewEvent`], [`Appended`], [`Timestamp`]) and
//!   the validation of what producers send.
//! - [`topic`]: topic names and NATS-style patterns (`*` one token, `>` the rest).
//! - [`filter`]: which events a reader wants ([`Filter`]), shared by streams, history and
//!   every backend's queries.
//! - [`log`]: the [`Log`] trait every backend implements, and [`ReadQuery`].
//! - [`memory`]: [`MemoryLog`], the in-memory backend (tests, embedding).
//! - [`retention`]: topic settings ([`TopicConfig`]), what a prune removes
//!   ([`PruneRule`]), and [`Retention`], the background pass that applies them.
//! - [`duration`]: durations as the API writes them (`250ms`, `30s`, `7d`).
//! - [`group`]: consumer groups as data: [`GroupConfig`], the [`GroupStore`] trait that
//!   keeps their durable state, and [`MemoryGroupStore`].
//! - [`encode`]: the one place an event becomes JSON and an SSE frame.
//! - [`tail`]: [`Tail`], the shared in-memory window of recent events, each encoded once.
//! - [`stream`]: [`EventStream`], history up to the head and then live, with no gap and no
//!   duplicate at the switch.
//! - [`error`]: [`LogError`] and [`ValidationError`].

pub mod duration;
pub mod encode;
pub mod error;
pub mod event;
pub mod filter;
pub mod group;
pub mod log;
pub mod memory;
pub mod retention;
pub mod stream;
pub mod tail;
pub mod topic;

pub use encode::Encoded;
pub use error::{LogError, ValidationError};
pub use event::{Appended, Args, Event, NewEvent, Position, Timestamp};
pub use filter::Filter;
pub use group::{
    AckWait, DlqEntry, EventProgress, GroupChange, GroupConfig, GroupStore, GroupStoreError,
    MemoryGroupStore, Ordering, Start, StoredGroup,
};
pub use log::{COMMITS_CAPACITY, Commit, CommitStats, Log, ReadQuery, TopicInfo};
pub use memory::MemoryLog;
pub use retention::{PruneRule, Retention, RetentionOptions, RetentionTask, TopicConfig};
pub use stream::{EventStream, StreamItem, StreamOptions};
pub use tail::{Tail, TailConfig};
pub use topic::{Topic, TopicPattern};
