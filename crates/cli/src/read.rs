//! `tributary tail` and `history`: read through the client crate and print one JSON
//! value per line to stdout. Where retention removed events before they could be read,
//! `tail` warns on stderr and goes on; `history` stops with an error that gives the
//! cursor to read on with.

use std::time::Duration;

use anyhow::bail;
use clap::Args;
use futures::StreamExt;
use tributary_client::{ClientError, HistoryQuery, SubscribeOptions, SubscriptionEvent};
use tributary_core::Timestamp;

use crate::{Conn, FilterArgs, print_line};

/// Most events the server returns per history page; `--all` asks for full pages.
const FULL_PAGE: usize = 1000;

/// The flags of `tail`; what it does is in its command help (main.rs).
#[derive(Args, Debug)]
pub struct TailArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(flatten)]
    filter: FilterArgs,
    /// Start after this position.
    #[arg(long, value_name = "N", conflicts_with = "from_start")]
    since: Option<u64>,
    /// Start at the first event (the same as --since 0).
    #[arg(long)]
    from_start: bool,
    /// Stop once position N has been passed.
    #[arg(long, value_name = "N")]
    until: Option<u64>,
    /// Print the stored events up to the current head, then stop. Starts at the first
    /// event unless --since is given.
    #[arg(long)]
    snapshot: bool,
    /// Ask for a heartbeat every SECS seconds; a connection silent for three of them is
    /// replaced.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=300))]
    heartbeat: Option<u64>,
}

pub async fn tail(args: TailArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let since = match (args.since, args.from_start || args.snapshot) {
        (Some(n), _) => Some(n),
        (None, true) => Some(0),
        (None, false) => None,
    };
    let mut subscription = client.subscribe(SubscribeOptions {
        filter: args.filter.filter(),
        since,
        until: args.until,
        snapshot_only: args.snapshot,
        heartbeat: args.heartbeat.map(Duration::from_secs),
        ..SubscribeOptions::default()
    });
    while let Some(item) = subscription.next().await {
        let event = match item? {
            SubscriptionEvent::Event(event) => event,
            SubscriptionEvent::CaughtUp { position } => {
                tracing::debug!(position, "caught up; following live events");
                continue;
            }
            SubscriptionEvent::Truncated {
                after,
                pruned_through,
            } => {
                eprintln!(
                    "warning: events after position {after} up to {pruned_through} were \
                     removed by retention before they could be shown"
                );
                continue;
            }
            _ => continue,
        };
        if !print_line(&serde_json::to_string(&event)?)? {
            // stdout was closed (`| head`): done.
            return Ok(());
        }
    }
    Ok(())
}

/// The flags of `history`; what it does is in its command help (main.rs).
#[derive(Args, Debug)]
pub struct HistoryArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(flatten)]
    filter: FilterArgs,
    /// Start after this position [default: from the first event]
    #[arg(long, value_name = "N", conflicts_with_all = ["cursor", "since_time"])]
    since: Option<u64>,
    /// Continue from a previous page's cursor.
    #[arg(long, value_name = "CURSOR", conflicts_with = "since_time")]
    cursor: Option<String>,
    /// Start at the first event stored at or after this RFC 3339 time.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    since_time: Option<Timestamp>,
    /// Stop at this position (inclusive).
    #[arg(long, value_name = "N")]
    until: Option<u64>,
    /// Events per page, 1 to 1000 [default: the server's, 100; with --all, 1000]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1000))]
    limit: Option<u64>,
    /// Follow the next cursor until every matching event has been printed.
    #[arg(long)]
    all: bool,
}

fn parse_time(s: &str) -> Result<Timestamp, String> {
    Timestamp::parse_rfc3339(s).map_err(|e| e.to_string())
}

pub async fn history(args: HistoryArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let limit = args
        .limit
        .map(|n| n as usize)
        .or(args.all.then_some(FULL_PAGE));
    let mut query = HistoryQuery {
        filter: args.filter.filter(),
        since: args.since,
        cursor: args.cursor,
        until: args.until,
        since_time: args.since_time,
        limit,
    };
    loop {
        let page = match client.history(&query).await {
            Ok(page) => page,
            Err(ClientError::CursorExpired {
                cursor,
                pruned_through,
                earliest_position,
                resume_cursor,
            }) => {
                let left = earliest_position.map_or_else(
                    || "no matching event is left after it".to_owned(),
                    |p| format!("the oldest matching event left after it is at position {p}"),
                );
                bail!(
                    "events after position {cursor} up to {pruned_through} were removed by \
                     retention before they were read ({left}); to read on from what is left, \
                     run again with --cursor {resume_cursor} (in place of --since, \
                     --since-time or --cursor)"
                );
            }
            Err(e) => return Err(e.into()),
        };
        for event in &page.events {
            if !print_line(&serde_json::to_string(event)?)? {
                return Ok(());
            }
        }
        if !page.has_more {
            return Ok(());
        }
        if !args.all {
            eprintln!("more events follow: --cursor {}", page.next_cursor);
            return Ok(());
        }
        query = query.after(&page);
    }
}
