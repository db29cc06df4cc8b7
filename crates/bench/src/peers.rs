//! The data side of NATS JetStream and PostgreSQL as peers: creating the stream or the
//! event-log table a scenario writes to, a publisher [`Sink`] per client, and reading
//! everything back to check it against the acks, as Tributary's log and Redis's stream
//! are checked. Starting and stopping the servers is in [`crate::procs`].

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;

use crate::BenchError;
use crate::load::{Mark, SeqCheck, Sink, mark_of_event_json};
use crate::procs::{Server, postgres_connection};

pub(crate) fn nats_err<E: std::error::Error + Send + Sync + 'static>(
    context: &'static str,
) -> impl FnOnce(E) -> BenchError {
    move |e| BenchError::Nats {
        context,
        source: Box::new(e),
    }
}

/// A JetStream context on a new connection to `server`.
pub async fn nats_context(server: &Server) -> Result<jetstream::Context, BenchError> {
    let client = async_nats::connect(server.addr.to_string())
        .await
        .map_err(nats_err("connecting"))?;
    Ok(jetstream::new(client))
}

/// Creates stream `name` capturing `subject`, file storage (on disk, fsynced per message
/// by the server's `sync_interval: always`), one replica (one server), limits retention.
pub async fn nats_create_stream(
    js: &jetstream::Context,
    name: &str,
    subject: &str,
) -> Result<stream::Stream, BenchError> {
    js.create_stream(stream::Config {
        name: name.into(),
        subjects: vec![subject.into()],
        storage: stream::StorageType::File,
        num_replicas: 1,
        ..Default::default()
    })
    .await
    .map_err(nats_err("creating the stream"))
}

/// `n` publisher sinks, each on its own connection.
pub async fn nats_sinks(server: &Server, subject: &str, n: usize) -> Result<Vec<Sink>, BenchError> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(Sink::Nats {
            js: nats_context(server).await?,
            subject: subject.into(),
        });
    }
    Ok(out)
}

/// The args of every message in `stream_name`, in stream order, through an ephemeral
/// pull consumer that does not ack (reading does not change the stream).
pub async fn nats_read_all(
    js: &jetstream::Context,
    stream_name: &str,
) -> Result<Vec<Mark>, BenchError> {
    let mut stream = js
        .get_stream(stream_name)
        .await
        .map_err(nats_err("getting the stream"))?;
    let total = stream
        .info()
        .await
        .map_err(nats_err("stream info"))?
        .state
        .messages;
    let reader = stream
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(nats_err("creating a reader"))?;
    let mut messages = reader
        .messages()
        .await
        .map_err(nats_err("reading the stream"))?;
    let mut marks = Vec::with_capacity(total as usize);
    let mut seen = 0u64;
    while seen < total {
        let next = tokio::time::timeout(Duration::from_secs(10), messages.next()).await;
        let message = match next {
            Ok(Some(m)) => m.map_err(nats_err("reading a message"))?,
            // The reader stopped short: what is missing shows in the check.
            Ok(None) | Err(_) => break,
        };
        seen += 1;
        let json = format!(
            r#"{{"args":{}}}"#,
            String::from_utf8_lossy(&message.payload)
        );
        if let Some(mark) = mark_of_event_json(&json) {
            marks.push(mark);
        }
    }
    Ok(marks)
}

/// Reads the whole stream back and checks it against the acks.
pub async fn check_nats_stream(
    server: &Server,
    stream_name: &str,
    sent: &HashMap<u32, u64>,
) -> Result<Option<String>, BenchError> {
    let js = nats_context(server).await?;
    let marks = nats_read_all(&js, stream_name).await?;
    let mut check = SeqCheck::default();
    for mark in marks {
        check.observe(mark);
    }
    Ok(check
        .problem(sent)
        .map(|p| format!("stored stream vs acks: {p}")))
}

/// The event log as a PostgreSQL table: a `bigserial` position, the topic, a per-topic
/// seq, the name and the args as `jsonb` (parsed and checked on insert, as Tributary
/// checks args), and the time of insert. An index on `(topic, position)` like
/// Tributary's `events_topic`, since a log is read by topic.
const PG_SCHEMA: &str = "
    CREATE TABLE events (
        position   bigserial   PRIMARY KEY,
        topic      text        NOT NULL,
        seq        bigint      NOT NULL,
        name       text        NOT NULL,
        args       jsonb       NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX events_topic ON events (topic, position);";

/// Creates the event-log table.
pub async fn pg_create_table(server: &Server) -> Result<(), BenchError> {
    postgres_connection(server)
        .await?
        .batch_execute(PG_SCHEMA)
        .await
        .map_err(|source| BenchError::Postgres {
            context: "creating the table",
            source,
        })
}

/// `n` publisher sinks, each on its own connection with the insert prepared.
pub async fn pg_sinks(server: &Server, topic: &str, n: usize) -> Result<Vec<Sink>, BenchError> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let client = postgres_connection(server).await?;
        let insert = client
            .prepare(
                "INSERT INTO events (topic, seq, name, args) VALUES ($1, $2, $3, $4::text::jsonb)",
            )
            .await
            .map_err(|source| BenchError::Postgres {
                context: "preparing the insert",
                source,
            })?;
        out.push(Sink::Postgres {
            client,
            insert,
            topic: topic.into(),
        });
    }
    Ok(out)
}

/// Reads the table back in position order and checks it against the acks.
pub async fn check_pg_table(
    server: &Server,
    sent: &HashMap<u32, u64>,
) -> Result<Option<String>, BenchError> {
    let client = postgres_connection(server).await?;
    let rows = client
        .query("SELECT args::text FROM events ORDER BY position", &[])
        .await
        .map_err(|source| BenchError::Postgres {
            context: "reading the table back",
            source,
        })?;
    let mut check = SeqCheck::default();
    let mut unreadable = 0u64;
    for row in rows {
        let args: String = row.get(0);
        match mark_of_event_json(&format!(r#"{{"args":{args}}}"#)) {
            Some(mark) => check.observe(mark),
            None => unreadable += 1,
        }
    }
    let mut problem = check.problem(sent);
    if unreadable > 0 {
        problem = Some(format!("{unreadable} rows without a mark"));
    }
    Ok(problem.map(|p| format!("stored table vs acks: {p}")))
}
