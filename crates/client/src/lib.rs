//! An async client for Tributary's HTTP API.
//!
//! - [`Client::publish`] and [`Client::publish_batch`] append events
//!   (`POST /api/v1/events`); [`ClientError::SeqConflict`] reports an `expected_seq`
//!   that did not match.
//! - [`Client::history`] reads stored events one page at a time
//!   (`GET /api/v1/events/history`); [`HistoryQuery::after`] continues with the next page.
//! - [`Client::topics`] lists topics with their heads (`GET /api/v1/topics`).
//! - [`Client::subscribe`] follows events over Server-Sent Events
//!   (`GET /api/v1/events/stream`): history first, then live. The [`Subscription`]
//!   reconnects by itself with exponential backoff and `Last-Event-ID`, and yields every
//!   event exactly once, in position order.
//!
//! # Layout
//! - `client`: [`Client`], [`HistoryQuery`], [`HistoryPage`].
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
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod client;
mod error;
pub mod sse;
mod subscribe;

pub use client::{Client, HistoryPage, HistoryQuery};
pub use error::ClientError;
pub use subscribe::{Backoff, SubscribeOptions, Subscription, SubscriptionEvent};
