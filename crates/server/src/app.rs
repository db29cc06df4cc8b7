//! The application: shared state, the route table, and the answers for paths and methods
//! no route takes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use tokio_util::sync::CancellationToken;
use tributary_core::{Log, Tail};
use tributary_core::{Retention, RetentionTask};
use tributary_groups::Groups;

use crate::config::Config;
use crate::connections::Connections;
use crate::error::ApiError;
use crate::http::{connections, events, groups, health, history, livestore, stream, topics};
use crate::metrics::Metrics;

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    log: Arc<dyn Log>,
    tail: Arc<Tail>,
    config: Config,
    metrics: Arc<Metrics>,
    livestore: Arc<livestore::Stores>,
    groups: Arc<Groups>,
    connections: Arc<Connections>,
    retention: Arc<Retention>,
    /// The background retention pass; stopped when draining (or dropped with the state).
    retention_task: parking_lot::Mutex<Option<RetentionTask>>,
    draining: AtomicBool,
    /// Cancelled with `draining`, for the long polls and group streams to end on.
    drained: CancellationToken,
}

impl AppState {
    /// Starts the shared tail over `log`, so it must be called inside a Tokio runtime.
    /// `groups` are the log's consumer groups (see [`Groups::open`]).
    pub fn new(log: Arc<dyn Log>, groups: Arc<Groups>, config: Config) -> Self {
        let tail = Tail::spawn(Arc::clone(&log), config.tail.clone());
        let connections = Arc::new(Connections::new(config.max_connections));
        let retention = Retention::new(Arc::clone(&log), config.retention.clone());
        let retention_task = retention.spawn();
        AppState {
            inner: Arc::new(Inner {
                log,
                tail,
                config,
                metrics: Arc::default(),
                livestore: Arc::default(),
                groups,
                connections,
                retention,
                retention_task: parking_lot::Mutex::new(Some(retention_task)),
                draining: AtomicBool::new(false),
                drained: CancellationToken::new(),
            }),
        }
    }

    pub fn log(&self) -> &Arc<dyn Log> {
        &self.inner.log
    }

    pub fn tail(&self) -> &Arc<Tail> {
        &self.inner.tail
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// What the LiveStore endpoint shares: per-store push locks, session shutdown.
    pub fn livestore(&self) -> &Arc<livestore::Stores> {
        &self.inner.livestore
    }

    /// Every open SSE event stream, and the registered ones.
    pub fn connections(&self) -> &Arc<Connections> {
        &self.inner.connections
    }

    pub fn groups(&self) -> &Arc<Groups> {
        &self.inner.groups
    }

    /// Topic retention: the pass the background task runs, and topic deletion.
    pub fn retention(&self) -> &Arc<Retention> {
        &self.inner.retention
    }

    /// Resolves once the server starts draining.
    pub async fn drained(&self) {
        self.inner.drained.cancelled().await;
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// First step of a graceful shutdown: readiness fails, so load balancers stop sending
    /// traffic, and every SSE stream ends cleanly, so its client reconnects elsewhere (or
    /// later) and resumes from its `Last-Event-ID`.
    pub fn start_draining(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
        self.inner.drained.cancel();
        self.inner.tail.close();
        // A prune batch in flight is one transaction: stopping loses nothing.
        drop(self.inner.retention_task.lock().take());
        // WebSocket sessions end too; LiveStore clients reconnect and pull from their
        // cursor.
        self.inner.livestore.close();
    }
}

/// Every route of the server, with our 404 and 405 answers and request counting.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/events", post(events::publish))
        .route("/api/v1/events/stream", get(stream::stream))
        .route("/api/v1/events/history", get(history::history))
        .route("/api/v1/topics", get(topics::list).post(topics::create))
        .route(
            "/api/v1/topics/{topic}",
            get(topics::show)
                .put(topics::replace)
                .delete(topics::delete),
        )
        .route(
            "/api/v1/connections",
            post(connections::register).get(connections::list),
        )
        .route("/api/v1/connections/{id}", delete(connections::delete))
        .route("/api/v1/connections/{id}/status", get(connections::status))
        .route("/api/v1/connections/{id}/stream", get(connections::stream))
        .route("/api/v1/groups", post(groups::create).get(groups::list))
        .route(
            "/api/v1/groups/{group}",
            get(groups::show).delete(groups::delete),
        )
        .route("/api/v1/groups/{group}/pull", post(groups::pull))
        .route("/api/v1/groups/{group}/stream", get(groups::stream))
        .route("/api/v1/groups/{group}/ack", post(groups::ack))
        .route("/api/v1/groups/{group}/nack", post(groups::nack))
        .route("/api/v1/groups/{group}/term", post(groups::term))
        .route("/api/v1/groups/{group}/dlq", get(groups::dlq))
        .route("/api/v1/groups/{group}/dlq/replay", post(groups::replay))
        .route("/api/v1/groups/{group}/dlq/{id}", delete(groups::discard))
        .route(
            "/api/v1/livestore",
            post(livestore::http).get(livestore::websocket),
        )
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        // Applies to the routes above only, so it must come after them.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), count_status))
        .with_state(state)
}

async fn not_found(request: Request) -> ApiError {
    ApiError::NotFound(format!("no route for {}", request.uri().path()))
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

async fn count_status(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    state.metrics().record_status(response.status().as_u16());
    response
}
