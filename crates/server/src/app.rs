//! The application: shared state, the route table, and the answers for paths and methods
//! no route takes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use tributary_core::{Log, Tail};

use crate::config::Config;
use crate::error::ApiError;
use crate::http::{events, health, history, livestore, stream, topics};
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
    draining: AtomicBool,
}

impl AppState {
    /// Starts the shared tail over `log`, so it must be called inside a Tokio runtime.
    pub fn new(log: Arc<dyn Log>, config: Config) -> Self {
        let tail = Tail::spawn(Arc::clone(&log), config.tail.clone());
        AppState {
            inner: Arc::new(Inner {
                log,
                tail,
                config,
                metrics: Arc::default(),
                livestore: Arc::default(),
                draining: AtomicBool::new(false),
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

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// First step of a graceful shutdown: readiness fails, so load balancers stop sending
    /// traffic, and every SSE stream ends cleanly, so its client reconnects elsewhere (or
    /// later) and resumes from its `Last-Event-ID`.
    pub fn start_draining(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
        self.inner.tail.close();
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
        .route("/api/v1/topics", get(topics::list))
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
