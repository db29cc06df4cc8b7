//! `tributary publish`: one event from flags, or many as NDJSON from stdin.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tributary_client::{Client, ClientError};
use tributary_core::{Appended, Args as EventArgs, NewEvent, Topic};

use crate::{Conn, parse_topic, print_line};

/// Events per request with --stdin when --batch-size is not given.
const DEFAULT_BATCH_SIZE: u32 = 500;

/// The flags of `publish`; what they do is in the `Publish` command's help (main.rs).
#[derive(Args, Debug)]
pub struct PublishArgs {
    #[command(flatten)]
    conn: Conn,
    /// Read NDJSON events from stdin instead of taking one from the flags.
    #[arg(long, conflicts_with_all = ["topic", "name", "args", "id", "expected_seq", "client_id", "session_id"])]
    stdin: bool,
    /// Events per request with --stdin [default: 500]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: Option<u32>,
    /// The event's topic, such as `orders.eu.created`.
    #[arg(long, value_parser = parse_topic, required_unless_present = "stdin")]
    topic: Option<Topic>,
    /// The event's name (its type), such as `v1.OrderCreated`.
    #[arg(long, required_unless_present = "stdin")]
    name: Option<String>,
    /// The event's arguments as JSON [default: {}]
    #[arg(long, value_name = "JSON", value_parser = parse_args)]
    args: Option<EventArgs>,
    /// Idempotency key: publishing the same id again stores nothing and answers the
    /// original position [default: a new UUIDv7]
    #[arg(long)]
    id: Option<String>,
    /// Store the event only if the topic's head seq is N (409 otherwise).
    #[arg(long, value_name = "N")]
    expected_seq: Option<u64>,
    /// Client id to record with the event.
    #[arg(long)]
    client_id: Option<String>,
    /// Session id to record with the event.
    #[arg(long)]
    session_id: Option<String>,
}

fn parse_args(s: &str) -> Result<EventArgs, String> {
    EventArgs::from_json(s).map_err(|e| e.to_string())
}

pub async fn run(args: PublishArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    if args.batch_size.is_some() && !args.stdin {
        // Not a clap `requires`: a bool flag always counts as present for that.
        bail!("--batch-size only applies with --stdin");
    }
    if args.stdin {
        return publish_stdin(
            &client,
            args.batch_size.unwrap_or(DEFAULT_BATCH_SIZE) as usize,
        )
        .await;
    }
    let (Some(topic), Some(name)) = (args.topic, args.name) else {
        bail!("--topic and --name are needed unless --stdin is given");
    };
    let event = NewEvent {
        topic,
        name,
        args: args.args.unwrap_or_default(),
        id: args.id,
        client_id: args.client_id,
        session_id: args.session_id,
        expected_seq: args.expected_seq,
    };
    event.validate()?;
    let appended = client.publish(event).await?;
    print_line(&serde_json::to_string(&appended)?)?;
    Ok(())
}

/// What a run with --stdin has published, printed as one JSON line.
#[derive(Serialize, Default, Debug)]
struct Summary {
    /// Events acknowledged, duplicates included.
    events: u64,
    /// Of which already stored before (same id).
    duplicates: u64,
    /// Lowest and highest position acknowledged.
    first_position: Option<u64>,
    last_position: Option<u64>,
    /// The input line of the last event published.
    #[serde(skip)]
    through_line: u64,
}

impl Summary {
    fn add(&mut self, answers: &[Appended], through_line: u64) {
        for a in answers {
            self.events += 1;
            self.duplicates += u64::from(a.duplicate);
            self.first_position = Some(
                self.first_position
                    .map_or(a.position, |p| p.min(a.position)),
            );
            self.last_position = Some(self.last_position.map_or(a.position, |p| p.max(a.position)));
        }
        self.through_line = through_line;
    }
}

/// Events read but not yet sent, with the line each came from.
#[derive(Default)]
struct Pending {
    events: Vec<NewEvent>,
    lines: Vec<u64>,
}

async fn publish_stdin(client: &Client, batch_size: usize) -> anyhow::Result<()> {
    let progress = progress_bar();
    let mut summary = Summary::default();
    let result = read_and_publish(client, batch_size, &progress, &mut summary).await;
    progress.finish_and_clear();
    // The summary is printed on failure too: what was published must not be hidden.
    print_line(&serde_json::to_string(&summary)?)?;
    result.with_context(|| match summary.events {
        0 => "stopped; nothing was published".to_owned(),
        n => format!(
            "stopped; {n} events up to line {} were published, none after",
            summary.through_line
        ),
    })
}

async fn read_and_publish(
    client: &Client,
    batch_size: usize,
    progress: &ProgressBar,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut pending = Pending::default();
    let mut line_no = 0u64;
    loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => {
                // Everything before the bad line is published; then the line is reported.
                flush(client, &mut pending, progress, summary).await?;
                return Err(anyhow!(e).context(format!("line {}: reading stdin", line_no + 1)));
            }
        };
        line_no += 1;
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(&line) {
            Ok(event) => {
                pending.events.push(event);
                pending.lines.push(line_no);
            }
            Err(e) => {
                flush(client, &mut pending, progress, summary).await?;
                return Err(e.context(format!("line {line_no}")));
            }
        }
        if pending.events.len() >= batch_size {
            flush(client, &mut pending, progress, summary).await?;
        }
    }
    flush(client, &mut pending, progress, summary).await
}

fn parse_line(line: &str) -> anyhow::Result<NewEvent> {
    let event: NewEvent = serde_json::from_str(line).context("not an event")?;
    event.validate().context("invalid event")?;
    Ok(event)
}

async fn flush(
    client: &Client,
    pending: &mut Pending,
    progress: &ProgressBar,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let Pending { events, lines } = std::mem::take(pending);
    let (Some(&first), Some(&last)) = (lines.first(), lines.last()) else {
        return Ok(());
    };
    // Kept to name the line of a seq conflict: the server only names the topic.
    let expectations: Vec<(u64, Topic, u64)> = events
        .iter()
        .zip(&lines)
        .filter_map(|(e, &line)| Some((line, e.topic.clone(), e.expected_seq?)))
        .collect();
    match client.publish_batch(events).await {
        Ok(answers) => {
            summary.add(&answers, last);
            progress.inc(answers.len() as u64);
            Ok(())
        }
        Err(e) => {
            let culprit = match &e {
                ClientError::SeqConflict {
                    topic,
                    expected_seq,
                    ..
                } => expectations
                    .iter()
                    .find(|(_, t, seq)| t.as_str() == topic && seq == expected_seq)
                    .map(|(line, ..)| format!(" because of line {line}")),
                _ => None,
            };
            Err(anyhow!(e).context(format!(
                "lines {first}-{last} were refused as one batch{}, so none of them was stored",
                culprit.unwrap_or_default()
            )))
        }
    }
}

/// A spinner counting published events on stderr; hidden when stderr is not a terminal.
fn progress_bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {human_pos} events published ({per_sec}, {elapsed})",
        )
        .expect("the progress template is valid"),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}
