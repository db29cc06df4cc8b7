//! An async client for Tributary's HTTP API.
//!
//! - [`Client::publish`] and [`Client::publish_batch`] append events
//!   (`POST /api/v1/events`); [`ClientError::SeqConflict`] reports an `expected_seq`
//!   that did not match.
//! - [`Client::history`] reads stored events one page at a time
//!   (`GET /api/v1/events/history`); [`HistoryQuery::after`] continues with the next page.
//!   A cursor that retention overtook fails with [`ClientError::CursorExpired`], whose
//!   `resume_cursor` reads on from what is left.
//! - Topics (`/api/v1/topics`): [`Client::topics`] lists them with their heads,
//!   [`Client::topic`] shows one; [`Client::create_topic`], [`Client::set_topic`] give a
//!   topic settings (`tributary_core::TopicConfig`: `max_age`, `max_events`,
//!   `max_event_bytes`) and [`Client::delete_topic`] removes it with its events.
//! - [`Client::subscribe`] follows events over Server-Sent Events
//!   (`GET /api/v1/events/stream`): history first, then live. The [`Subscription`]
//!   reconnects by itself with exponential backoff and `Last-Event-ID`, and yields every
//!   event exactly once, in position order; [`SubscriptionEvent::Truncated`] says where
//!   retention removed events before they could be yielded.
//! - Consumer groups (`/api/v1/groups`): [`Client::create_group`] from a [`GroupSpec`],
//!   [`Client::group`] and [`Client::groups`] ([`GroupInfo`]), [`Client::delete_group`];
//!   a member [`Client::pull`]s [`Delivery`]s (long poll) and settles each with
//!   [`Client::ack`], [`Client::nack`] or [`Client::term`]; the dead-letter queue is read
//!   with [`Client::dlq`] ([`DlqPage`] of [`DlqEntry`]) and emptied with
//!   [`Client::replay`] and [`Client::discard`]. Durations go over the wire as `30s`,
//!   `1500ms` ([`format_duration`], [`parse_duration`]).
//! - Every failure is a [`ClientError`]; the server's error code (`not_found`,
//!   `stale_delivery`, ...) is [`ClientError::code`].
//!
//! # Layout
//! - `client`: [`Client`], [`HistoryQuery`], [`HistoryPage`].
//! - `groups`: [`GroupSpec`], [`GroupInfo`], [`MemberInfo`], [`Delivery`], [`DlqEntry`],
//!   [`DlqPage`], the duration format, and the consumer-group methods of [`Client`].
//! - `topics`: the topic methods of [`Client`].
//! - `subscribe`: [`Subscription`], [`SubscribeOptions`], [`SubscriptionEvent`], [`Backoff`].
//! - [`sse`]: a small incremental parser for the `text/event-stream` format.
//! - `error`: [`ClientError`].
//!
//! # Example
//! ```no_run
//! use futures::StreamExt;
//! use tributary_client::{Client, SubscribeOptions, SubscriptionEvent};
//! use tributary_core::{Args, Filter, NewEvent, Topic, TopicPattern};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::new("http://127.0.0.1:7070")?;
//! let event = NewEvent::new(
//!     Topic::new("orders.eu.created")?,
//!     "v1.OrderCreated",
//!     Args::from_json(r#"{"id":42}"#)?,
//! );
//! let appended = client.publish(event).await?;
//! println!("stored at position {}", appended.position);
//!
//! let mut events = client.subscribe(SubscribeOptions {
//!     filter: Filter::topic(TopicPattern::new("orders.>")?),
//!     since: Some(0),
//!     ..SubscribeOptions::default()
//! });
//! while let Some(item) = events.next().await {
//!     match item? {
//!         SubscriptionEvent::Event(e) => println!("{} {} {}", e.position, e.topic, e.name),
//!         SubscriptionEvent::CaughtUp { position } => println!("live after {position}"),
//!         SubscriptionEvent::Truncated { after, pruned_through } => {
//!             eprintln!("events after {after} up to {pruned_through} were removed")
//!         }
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod client;
mod error;
mod groups;
pub mod sse;
mod subscribe;
mod topics;

pub use client::{Client, HistoryPage, HistoryQuery};
pub use error::ClientError;
pub use groups::{
    Delivery, DlqEntry, DlqPage, GroupInfo, GroupSpec, MemberInfo, ParseDurationError, Truncation,
    format_duration, parse_duration,
};
pub use subscribe::{Backoff, SubscribeOptions, Subscription, SubscriptionEvent};
