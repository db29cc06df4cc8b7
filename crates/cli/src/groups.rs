//! `tributary groups …`: create, list, show and delete consumer groups, and read and
//! empty their dead-letter queues. Every answer is printed as JSON lines on stdout.

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use tributary_client::GroupSpec;
use tributary_core::{Ordering, Position, Start};

use crate::{Conn, FilterArgs, print_line};

/// Entries per request when `groups dlq` walks the queue.
const DLQ_PAGE: usize = 1000;

/// The flags of `groups`; each subcommand documents itself.
#[derive(Args, Debug)]
pub struct GroupsArgs {
    #[command(subcommand)]
    command: GroupsCommand,
}

#[derive(Subcommand, Debug)]
enum GroupsCommand {
    /// Create a group and print it as one JSON line
    ///
    /// Every setting but the name is optional and defaults on the server: every event
    /// (no filter), start `latest` (events published from now on), --ack-wait 30s,
    /// --max-deliveries 5, --backoff 1s,5s,30s, --max-in-flight 100, --ordering per_key.
    #[command(verbatim_doc_comment)]
    Create(CreateArgs),
    /// Print every group as one JSON line each.
    List(ListArgs),
    /// Print one group (settings, counters, members) as one JSON line.
    Show(NameArgs),
    /// Delete a group with all its state, dead-letter queue included.
    Delete(NameArgs),
    /// Print the dead-letter queue's entries as JSON lines, oldest position first.
    Dlq(DlqArgs),
    /// Put dead-letter entries (all of them, or the given ids) back into delivery.
    Replay(ReplayArgs),
    /// Drop one dead-letter entry for good.
    Discard(DiscardArgs),
}

#[derive(Args, Debug)]
struct CreateArgs {
    #[command(flatten)]
    conn: Conn,
    /// The group's name: 1 to 128 of `A-Z a-z 0-9 _ - .`.
    name: String,
    #[command(flatten)]
    filter: FilterArgs,
    /// Where to start: `earliest`, `latest`, or a position (the events after it)
    /// [default: latest]
    #[arg(long, value_name = "earliest|latest|POS", value_parser = parse_start)]
    start: Option<Start>,
    /// How long a member may hold a delivery before it comes back (`250ms`, `30s`, `5m`,
    /// `1h`) [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    ack_wait: Option<Duration>,
    /// Deliveries of one event before it is parked in the dead-letter queue
    /// [default: 5]
    #[arg(long, value_name = "N")]
    max_deliveries: Option<u32>,
    /// Delays before the 1st, 2nd, … redelivery, comma-separated; the last repeats. An
    /// empty list ('') redelivers at once [default: 1s,5s,30s]
    #[arg(long, value_name = "DURATIONS", value_parser = parse_backoff)]
    backoff: Option<Backoff>,
    /// Unacked deliveries one member may hold [default: 100]
    #[arg(long, value_name = "N")]
    max_in_flight: Option<u32>,
    /// `per_key`: one topic's events one at a time, in order; `none`: any order
    /// [default: per_key]
    #[arg(long, value_enum)]
    ordering: Option<OrderingArg>,
}

#[derive(Args, Debug)]
struct ListArgs {
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args, Debug)]
struct NameArgs {
    #[command(flatten)]
    conn: Conn,
    /// The group's name.
    name: String,
}

#[derive(Args, Debug)]
struct DlqArgs {
    #[command(flatten)]
    conn: Conn,
    /// The group's name.
    name: String,
    /// Print at most N entries [default: all]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
}

#[derive(Args, Debug)]
struct ReplayArgs {
    #[command(flatten)]
    conn: Conn,
    /// The group's name.
    name: String,
    /// Entry ids (event positions) to replay [default: every entry]
    ids: Vec<Position>,
}

#[derive(Args, Debug)]
struct DiscardArgs {
    #[command(flatten)]
    conn: Conn,
    /// The group's name.
    name: String,
    /// The entry's id (its event's position).
    id: Position,
}

/// `--ordering` as the server spells it.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum OrderingArg {
    #[value(name = "per_key", alias = "per-key")]
    PerKey,
    #[value(name = "none")]
    None,
}

impl From<OrderingArg> for Ordering {
    fn from(o: OrderingArg) -> Ordering {
        match o {
            OrderingArg::PerKey => Ordering::PerKey,
            OrderingArg::None => Ordering::None,
        }
    }
}

/// `--backoff`'s list; a type of its own so that clap takes it as one value.
#[derive(Clone, Debug)]
struct Backoff(Vec<Duration>);

/// A duration flag: `250ms`, `30s`, `5m`, `1h`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    tributary_client::parse_duration(s).map_err(|e| e.to_string())
}

fn parse_backoff(s: &str) -> Result<Backoff, String> {
    if s.trim().is_empty() {
        return Ok(Backoff(Vec::new()));
    }
    s.split(',')
        .map(parse_duration)
        .collect::<Result<_, _>>()
        .map(Backoff)
}

fn parse_start(s: &str) -> Result<Start, String> {
    match s {
        "earliest" => Ok(Start::Earliest),
        "latest" => Ok(Start::Latest),
        _ => s.parse().map(Start::After).map_err(|_| {
            format!("{s:?} is not a start: use earliest, latest or a position (a whole number)")
        }),
    }
}

pub async fn run(args: GroupsArgs) -> anyhow::Result<()> {
    match args.command {
        GroupsCommand::Create(args) => create(args).await,
        GroupsCommand::List(args) => {
            let groups = args
                .conn
                .client()?
                .groups()
                .await
                .context("listing groups")?;
            for group in groups {
                if !print_line(&serde_json::to_string(&group)?)? {
                    break;
                }
            }
            Ok(())
        }
        GroupsCommand::Show(args) => {
            let client = args.conn.client()?;
            let group = client
                .group(&args.name)
                .await
                .with_context(|| format!("showing group {}", args.name))?;
            print_line(&serde_json::to_string(&group)?)?;
            Ok(())
        }
        GroupsCommand::Delete(args) => {
            let client = args.conn.client()?;
            client
                .delete_group(&args.name)
                .await
                .with_context(|| format!("deleting group {}", args.name))?;
            print_line(&json!({ "deleted": args.name }).to_string())?;
            Ok(())
        }
        GroupsCommand::Dlq(args) => dlq(args).await,
        GroupsCommand::Replay(args) => {
            let client = args.conn.client()?;
            let ids = (!args.ids.is_empty()).then_some(args.ids.as_slice());
            let n = client
                .replay(&args.name, ids)
                .await
                .with_context(|| format!("replaying the dead letters of group {}", args.name))?;
            print_line(&json!({ "replayed": n }).to_string())?;
            Ok(())
        }
        GroupsCommand::Discard(args) => {
            let client = args.conn.client()?;
            client.discard(&args.name, args.id).await.with_context(|| {
                format!("discarding dead letter {} of group {}", args.id, args.name)
            })?;
            print_line(&json!({ "discarded": args.id }).to_string())?;
            Ok(())
        }
    }
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let spec = GroupSpec {
        name: args.name.clone(),
        filter: args.filter.filter(),
        start: args.start,
        ack_wait: args.ack_wait,
        max_deliveries: args.max_deliveries,
        backoff: args.backoff.map(|b| b.0),
        max_in_flight: args.max_in_flight,
        ordering: args.ordering.map(Ordering::from),
    };
    let group = client
        .create_group(&spec)
        .await
        .with_context(|| format!("creating group {}", args.name))?;
    print_line(&serde_json::to_string(&group)?)?;
    Ok(())
}

async fn dlq(args: DlqArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let mut left = args.limit.unwrap_or(u64::MAX);
    let mut cursor = None;
    while left > 0 {
        let limit = usize::try_from(left).unwrap_or(usize::MAX).min(DLQ_PAGE);
        let page = client
            .dlq(&args.name, Some(limit), cursor)
            .await
            .with_context(|| format!("reading the dead letters of group {}", args.name))?;
        for entry in &page.entries {
            if !print_line(&serde_json::to_string(entry)?)? {
                return Ok(());
            }
        }
        left = left.saturating_sub(page.entries.len() as u64);
        match page.next_cursor {
            // A cursor that does not move would loop forever; the server is wrong then.
            Some(next) if Some(next) != cursor && !page.entries.is_empty() => cursor = Some(next),
            _ => return Ok(()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_flags_take_units_and_explain_mistakes() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        let e = parse_duration("30").unwrap_err();
        assert!(e.contains("\"30\"") && e.contains("unit"), "{e}");
        assert!(parse_duration("2 days").is_err());
        let b = parse_backoff("1s,5s,30s").unwrap().0;
        assert_eq!(b, [1, 5, 30].map(Duration::from_secs));
        assert!(parse_backoff("").unwrap().0.is_empty());
        assert!(parse_backoff("1s,,2s").is_err());
    }

    #[test]
    fn start_is_a_word_or_a_position() {
        assert_eq!(parse_start("earliest"), Ok(Start::Earliest));
        assert_eq!(parse_start("latest"), Ok(Start::Latest));
        assert_eq!(parse_start("41"), Ok(Start::After(41)));
        assert!(parse_start("-1").unwrap_err().contains("earliest, latest"));
    }
}
