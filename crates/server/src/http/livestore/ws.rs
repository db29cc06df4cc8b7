//! One WebSocket session: one JSON message per text frame both ways. Pings are answered
//! at once, pushes in order, and each pull runs as its own task so that a live pull
//! (which never ends) does not hold up the pushes that follow it.
//!
//! Live pulls follow the log's head rather than a push notification of our own: any
//! append moves it, so events pushed over HTTP, over another socket, or published
//! through the plain API all reach every live puller, the pusher included (that echo is
//! how a client confirms its own events).

use std::collections::HashMap;

use axum::extract::ws::{Message, WebSocket};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::protocol::{self, Request, SyncError, exit_failure, exit_success};
use super::{Params, open_store, push};
use crate::app::AppState;

/// Messages waiting for the socket. Bounded: a client that stops reading stalls its own
/// pulls (they wait to send) instead of growing our memory.
const OUTBOX: usize = 64;

pub(super) async fn session(socket: WebSocket, state: AppState, params: Params) {
    let (mut sink, mut incoming) = socket.split();
    let (outbox, mut queued) = mpsc::channel::<Value>(OUTBOX);
    let writer = tokio::spawn(async move {
        while let Some(message) = queued.recv().await {
            let text = message.to_string();
            if sink.send(Message::Text(text.into())).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut pulls: HashMap<String, JoinHandle<()>> = HashMap::new();
    let closing = state.livestore().closing().clone();
    loop {
        let frame = tokio::select! {
            frame = incoming.next() => frame,
            () = closing.cancelled() => break,
        };
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            // Pings are answered by axum; binary frames are not part of the protocol.
            Some(Ok(_)) => continue,
        };
        pulls.retain(|_, task| !task.is_finished());
        let answer = match serde_json::from_str::<Value>(&text) {
            Ok(message) => handle(&state, &params, &message, &outbox, &mut pulls).await,
            Err(e) => Some(exit_failure(
                "",
                &SyncError::unknown(format!("the message is not JSON: {e}")),
            )),
        };
        if let Some(answer) = answer
            && outbox.send(answer).await.is_err()
        {
            break;
        }
    }
    for (_, task) in pulls {
        task.abort();
    }
    drop(outbox);
    let _ = writer.await;
}

/// Handles one message; returns the answer to send, if any.
async fn handle(
    state: &AppState,
    params: &Params,
    message: &Value,
    outbox: &mpsc::Sender<Value>,
    pulls: &mut HashMap<String, JoinHandle<()>>,
) -> Option<Value> {
    match message.get("_tag").and_then(Value::as_str) {
        Some("Ping") => return Some(json!({ "_tag": "Pong" })),
        Some("Interrupt") => {
            if let Some(task) = message
                .get("requestId")
                .and_then(Value::as_str)
                .and_then(|id| pulls.remove(id))
            {
                task.abort();
            }
            return None;
        }
        // Flow control and end of input need nothing from us.
        Some("Ack" | "Eof") => return None,
        _ => {}
    }
    let request = match Request::parse(message) {
        Ok(r) => r,
        Err((id, error)) => return Some(exit_failure(&id, &error)),
    };
    let store = match open_store(state, params, &request.payload).await {
        Ok(store) => store,
        Err(error) => return Some(exit_failure(&request.id, &error)),
    };
    match request.tag.as_str() {
        "SyncWsRpc.Pull" => {
            let after = match store.cursor(&request.payload) {
                Ok(after) => after,
                Err(error) => return Some(exit_failure(&request.id, &error)),
            };
            let live = request.payload.get("live").and_then(Value::as_bool) == Some(true);
            let outbox = outbox.clone();
            let id = request.id.clone();
            let task = tokio::spawn(pull(store, id.clone(), after, live, outbox));
            if let Some(old) = pulls.insert(id, task) {
                old.abort();
            }
            None
        }
        "SyncWsRpc.Push" => Some(match push(state, &store, &request.payload).await {
            Ok(()) => exit_success(&request.id, Some(json!({}))),
            Err(error) => exit_failure(&request.id, &error),
        }),
        other => Some(exit_failure(
            &request.id,
            &SyncError::unknown(format!(
                "unknown request tag {other:?} (expected SyncWsRpc.Pull or .Push)"
            )),
        )),
    }
}

/// Sends what the store holds after `after`, one page per Chunk (the outbox is bounded,
/// so a large store is sent at the pace the client reads it); then, if live, a further
/// Chunk whenever the store grows, and never an Exit.
async fn pull(
    store: super::Store,
    id: String,
    mut after: u64,
    live: bool,
    outbox: mpsc::Sender<Value>,
) {
    let mut head = store.log.head();
    // Seen before the first read: an append after this point moves the head again.
    head.borrow_and_update();
    let mut first = true;
    loop {
        let mut pull = match store.pull(after).await {
            Ok(pull) => pull,
            Err(error) => {
                let _ = outbox.send(exit_failure(&id, &error)).await;
                return;
            }
        };
        loop {
            match pull.next_page().await {
                // A live round with nothing new sends nothing; the first always answers.
                Ok(Some(page)) if first || pull.after() > after => {
                    if outbox.send(protocol::chunk(&id, vec![page])).await.is_err() {
                        return;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(error) => {
                    let _ = outbox.send(exit_failure(&id, &error)).await;
                    return;
                }
            }
        }
        after = pull.after();
        if !live {
            let _ = outbox.send(exit_success(&id, None)).await;
            return;
        }
        first = false;
        if head.changed().await.is_err() {
            return;
        }
    }
}
