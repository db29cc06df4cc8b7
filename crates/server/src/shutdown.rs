//! Serving until told to stop, then stopping in the order that loses nothing:
//!
//! 1. mark the server draining, so `/readyz` answers 503 and load balancers move away;
//! 2. close the shared tail, which ends every SSE stream without an `end` marker, so
//!    clients reconnect (elsewhere, or here after a restart) and resume from their
//!    `Last-Event-ID`;
//! 3. stop accepting connections and let requests in flight (appends) finish;
//! 4. close the consumer groups (their state is flushed), then the log, which finishes
//!    its own appends in flight.
//!
//! Connections are accepted and served by [`crate::listen`]; step 3 waits for every
//! connection task it spawned, lean SSE streams and hyper connections alike. It gives up
//! after [`Config::shutdown_timeout`]: a stuck client must not keep the process from
//! exiting. Step 4 runs either way.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tributary_core::{GroupStore, Log};
use tributary_groups::{Groups, GroupsOptions};

use crate::app::{AppState, router};
use crate::config::Config;
use crate::error::ServerError;
use crate::listen;

/// Serves `log` (and its consumer groups, kept in `group_store`) over HTTP on
/// `listener` until `shutdown` resolves, then shuts down gracefully (see the module
/// docs) and returns.
pub async fn serve(
    listener: TcpListener,
    log: Arc<dyn Log>,
    group_store: Arc<dyn GroupStore>,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let timeout = config.shutdown_timeout;
    let catch_up = config.catch_up_priority;
    let groups = Groups::open(Arc::clone(&log), group_store, GroupsOptions::default())
        .await
        .map_err(ServerError::Groups)?;
    let state = AppState::new(Arc::clone(&log), Arc::clone(&groups), config);
    let app = router(state.clone());
    let draining = CancellationToken::new();
    let signal = {
        let draining = draining.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: draining connections");
            state.start_draining();
            draining.cancel();
        }
    };
    // Each connection's task, lean or hyper, so that step 3 can wait for them.
    let tracker = TaskTracker::new();
    let accepting = listen::accept(listener, app, draining.clone(), tracker.clone(), catch_up);
    // Accepting stops once the signal has marked the server draining.
    tokio::join!(signal, accepting);
    tracker.close();
    if tokio::time::timeout(timeout, tracker.wait()).await.is_err() {
        tracing::warn!(
            ?timeout,
            "requests still in flight after the shutdown timeout; closing anyway"
        );
    }
    // Step 4 either way, so that no append is left half done.
    groups.close().await;
    log.close().await.map_err(ServerError::CloseLog)
}
