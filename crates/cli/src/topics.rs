//! `tributary topics …`: list topics, and create, show, change and delete a topic's
//! settings (retention by age and count, largest event). Every answer is printed as JSON
//! lines on stdout.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use serde::Serialize;
use tributary_core::{Topic, TopicConfig};

use crate::{Conn, parse_topic, print_line};

/// The flags of `topics`: with no subcommand it lists, as `topics list` does.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct TopicsArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    command: Option<TopicsCommand>,
}

#[derive(Subcommand, Debug)]
enum TopicsCommand {
    /// Print every topic as one JSON line each (what `tributary topics` alone does).
    List(ListArgs),
    /// Give a topic settings and print it as one JSON line
    ///
    /// The topic need not have events yet. Fails if it has settings already: change
    /// them with `topics set`. A retention limit (--max-age, --max-events) is applied at
    /// once, then kept by the server's retention pass. LiveStore topics (livestore.*)
    /// take no retention limit.
    #[command(verbatim_doc_comment)]
    Create(SettingsArgs),
    /// Set a topic's settings, replacing the ones it had, and print it as one JSON line
    ///
    /// A setting not given is removed: `topics set NAME` alone leaves the topic with no
    /// limits of its own. A retention limit is applied at once, so the answer already
    /// shows the topic shrunk.
    #[command(verbatim_doc_comment)]
    Set(SettingsArgs),
    /// Print one topic (head, counts, what retention removed, settings) as one JSON line.
    Show(NameArgs),
    /// Delete a topic: its settings and every one of its events
    ///
    /// Prints {"topic":…,"deleted_events":…} as one JSON line.
    #[command(verbatim_doc_comment)]
    Delete(NameArgs),
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
    /// The topic's name: tokens of `A-Z a-z 0-9 _ -` joined by dots (`orders.eu`).
    #[arg(value_parser = parse_topic)]
    name: Topic,
}

#[derive(Args, Debug)]
struct SettingsArgs {
    #[command(flatten)]
    conn: Conn,
    /// The topic's name: tokens of `A-Z a-z 0-9 _ -` joined by dots (`orders.eu`).
    #[arg(value_parser = parse_topic)]
    name: Topic,
    /// Remove events older than this (`30s`, `12h`, `7d`; at least 1s) [default: keep
    /// them]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    max_age: Option<Duration>,
    /// Keep only the newest N events [default: all]
    #[arg(long, value_name = "N")]
    max_events: Option<u64>,
    /// Refuse events larger than N bytes [default: the server's limit]
    #[arg(long, value_name = "N")]
    max_event_bytes: Option<u64>,
}

impl SettingsArgs {
    fn config(&self) -> TopicConfig {
        TopicConfig {
            max_age: self.max_age,
            max_events: self.max_events,
            max_event_bytes: self.max_event_bytes,
        }
    }
}

/// A duration flag: `30s`, `12h`, `7d`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    tributary_core::duration::parse_duration(s).map_err(|e| e.to_string())
}

pub async fn run(args: TopicsArgs) -> anyhow::Result<()> {
    match args.command {
        None => list(&args.conn).await,
        Some(TopicsCommand::List(args)) => list(&args.conn).await,
        Some(TopicsCommand::Create(args)) => create(args).await,
        Some(TopicsCommand::Set(args)) => {
            let client = args.conn.client()?;
            let info = client
                .set_topic(&args.name, &args.config())
                .await
                .with_context(|| format!("setting topic {}", args.name))?;
            print_line(&serde_json::to_string(&info)?)?;
            Ok(())
        }
        Some(TopicsCommand::Show(args)) => {
            let client = args.conn.client()?;
            let Some(info) = client
                .topic(&args.name)
                .await
                .with_context(|| format!("showing topic {}", args.name))?
            else {
                bail!(
                    "no topic named {} (it has no events and no settings)",
                    args.name
                );
            };
            print_line(&serde_json::to_string(&info)?)?;
            Ok(())
        }
        Some(TopicsCommand::Delete(args)) => {
            let client = args.conn.client()?;
            let deleted = client
                .delete_topic(&args.name)
                .await
                .with_context(|| format!("deleting topic {}", args.name))?;
            #[derive(Serialize)]
            struct Deleted<'a> {
                topic: &'a Topic,
                deleted_events: u64,
            }
            let answer = Deleted {
                topic: &args.name,
                deleted_events: deleted,
            };
            print_line(&serde_json::to_string(&answer)?)?;
            Ok(())
        }
    }
}

async fn list(conn: &Conn) -> anyhow::Result<()> {
    let topics = conn.client()?.topics().await.context("listing topics")?;
    for topic in topics {
        if !print_line(&serde_json::to_string(&topic)?)? {
            break;
        }
    }
    Ok(())
}

async fn create(args: SettingsArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let name = &args.name;
    let info = client
        .create_topic(name, &args.config())
        .await
        .map_err(|e| match e.code() {
            // The server's hint names its HTTP route; this one names the command.
            Some("topic_exists") => anyhow!(
                "creating topic {name}: it has settings already; change them with \
                 `tributary topics set {name} ...`"
            ),
            _ => anyhow::Error::new(e).context(format!("creating topic {name}")),
        })?;
    print_line(&serde_json::to_string(&info)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        topics: TopicsArgs,
    }

    fn parse(args: &[&str]) -> Result<TopicsArgs, String> {
        let argv = std::iter::once("topics").chain(args.iter().copied());
        Cli::try_parse_from(argv)
            .map(|c| c.topics)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn bare_topics_lists_and_flags_become_settings() {
        let bare = parse(&["--url", "http://h:1"]).unwrap();
        assert!(bare.command.is_none());
        assert_eq!(bare.conn.url, "http://h:1");

        let create = parse(&[
            "create",
            "orders.eu",
            "--max-age",
            "7d",
            "--max-events",
            "1000",
            "--max-event-bytes",
            "65536",
        ])
        .unwrap();
        let Some(TopicsCommand::Create(settings)) = create.command else {
            panic!("expected create, got {create:?}");
        };
        assert_eq!(settings.name.as_str(), "orders.eu");
        assert_eq!(
            settings.config(),
            TopicConfig {
                max_age: Some(Duration::from_secs(7 * 86_400)),
                max_events: Some(1000),
                max_event_bytes: Some(65_536),
            }
        );
    }

    #[test]
    fn mistakes_are_explained_before_anything_is_sent() {
        let e = parse(&["create", "orders.eu", "--max-age", "7"]).unwrap_err();
        assert!(e.contains("unit"), "{e}");
        let e = parse(&["show", "orders..eu"]).unwrap_err();
        assert!(e.contains("orders..eu"), "{e}");
        // The URL given before the subcommand would be ignored by it, so it is refused.
        assert!(parse(&["--url", "http://h:1", "show", "a"]).is_err());
    }
}
