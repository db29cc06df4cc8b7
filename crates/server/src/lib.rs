//! Tributary's HTTP server: publish events, follow them over Server-Sent Events, page
//! through history, list topics, consume through consumer groups, and answer health
//! checks and metrics scrapes, all over any [`tributary_core::Log`].
//!
//! [`serve`] runs the server until a shutdown signal and then drains it gracefully;
//! [`router`] with [`AppState::new`] gives the same application for embedding or tests.
//!
//! # Layout
//! - [`config`]: [`Config`], the limits and timings an operator tunes.
//! - [`app`]: [`AppState`] (log, shared tail, config, metrics, draining flag), the route
//!   table, and the 404/405 answers.
//! - [`connections`]: every open SSE stream and the registered ones, and the cap on
//!   open streams.
//! - [`error`]: [`ApiError`], the one mapping from failures to status and stable code,
//!   and [`ServerError`].
//! - [`extract`]: the JSON body and query-string extractors that refuse bad input in our
//!   error shape (the query one takes repeated keys and refuses unknown ones).
//! - [`http`]: one module per resource: `events` (publish), `stream` (SSE), `history`,
//!   `topics`, `groups` (consumer groups, docs/groups.md), `health` (healthz, readyz,
//!   metrics), `livestore` (the LiveStore sync-cf
//!   protocol over HTTP and WebSocket); the read parameters shared by stream and history
//!   live in `http.rs` itself.
//! - [`listen`]: the accept loop, and the lean HTTP/1.1 path that serves SSE streams
//!   without hyper's per-connection buffers (everything else goes to hyper).
//! - [`metrics`]: counters, gauges and histograms in atomics, written out as Prometheus
//!   text.
//! - [`shutdown`]: [`serve`] and the order a graceful shutdown goes in.

pub mod app;
pub mod config;
pub mod connections;
pub mod error;
pub mod extract;
pub mod http;
pub mod listen;
pub mod metrics;
pub mod shutdown;

pub use app::{AppState, router};
pub use config::{CatchUpPriority, Config};
pub use error::{ApiError, ServerError};
pub use shutdown::serve;
