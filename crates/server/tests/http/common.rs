//! Starting a server for one test, and what every module's checks share.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tributary_core::{GroupStore, Log, MemoryGroupStore, MemoryLog};
use tributary_server::{Config, ServerError, serve};

/// A server running `serve` over a fresh in-memory log and group store. Dropping `stop`
/// (or sending on it) shuts it down gracefully; `served` is what `serve` returned.
pub struct Spawned {
    pub addr: SocketAddr,
    pub log: Arc<MemoryLog>,
    pub stop: oneshot::Sender<()>,
    pub served: JoinHandle<Result<(), ServerError>>,
}

pub async fn spawn(config: Config) -> Spawned {
    let log = Arc::new(MemoryLog::new());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(serve(
        listener,
        Arc::clone(&log) as Arc<dyn Log>,
        Arc::new(MemoryGroupStore::new()) as Arc<dyn GroupStore>,
        config,
        async move {
            let _ = stopped.await;
        },
    ));
    Spawned {
        addr,
        log,
        stop,
        served,
    }
}

/// An HTTP client that never goes through a proxy: these servers are on 127.0.0.1.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// The stable code of an error answer (`""` for anything else).
pub fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}
