//! `tributary`: the one binary. A thin layer of argument parsing over the server crate
//! (`serve`) and the client crate (`publish`, `tail`, `history`, `topics`, `consume`,
//! `groups`).
//!
//! # Layout
//! - `main.rs`: the command line, logging set-up and error reporting.
//! - `serve`: the `serve` command and its settings (flags, environment, config file).
//! - `publish`: one event from flags, or NDJSON from stdin in batches.
//! - `read`: `tail` and `history`, which print JSON lines.
//! - `topics`: `topics [list]|create|set|show|delete`: topics and their settings
//!   (retention, largest event).
//! - `consume`: one member of a consumer group, running a command per delivery (or
//!   printing it) and acking or nacking it.
//! - `groups`: `groups create|list|show|delete|dlq|replay|discard`.
//!
//! Output contract (tests and scripts rely on it): `serve` prints exactly one line,
//! `tributary listening on http://<addr>`, to stdout; every other command prints JSON,
//! one value per line, to stdout (`consume --exec` leaves stdout to the command it
//! runs); logs, progress and hints go to stderr.

mod consume;
mod groups;
mod publish;
mod read;
mod serve;
mod topics;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tributary_core::{Filter, Topic, TopicPattern};

#[derive(Parser, Debug)]
#[command(
    name = "tributary",
    version,
    about = "An event log and event streaming server, and its command-line client"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server on a SQLite log in the data directory.
    Serve(serve::ServeArgs),
    /// Publish one event, or NDJSON events from stdin with --stdin
    ///
    /// Without --stdin, publishes the one event that --topic, --name and the other flags
    /// describe, and prints the server's answer as one JSON line:
    ///   {"position":…,"seq":…,"duplicate":…}
    ///
    /// With --stdin (and only then), reads events from stdin, one JSON object per line
    /// (the fields are topic, name, and optionally args, id, client_id, session_id,
    /// expected_seq; blank lines are skipped), publishes them in batches of --batch-size,
    /// each batch stored atomically, and prints a summary as one JSON line:
    ///   {"events":…,"duplicates":…,"first_position":…,"last_position":…}
    /// It stops at the first line that cannot be read or is refused: every event before
    /// that line is published, none from it on; the summary is printed all the same and
    /// the error names the line. A progress spinner shows on stderr when it is a terminal.
    #[command(verbatim_doc_comment)]
    Publish(publish::PublishArgs),
    /// Follow events as they are published, one JSON line each; survives server restarts
    ///
    /// Prints each matching event as one JSON line on stdout as soon as it is stored.
    /// Starts at the head (new events only) unless --since or --from-start says otherwise.
    /// Reconnects by itself after network errors and server restarts, and resumes where
    /// it stopped, so no event is missed or printed twice. Runs until interrupted, or
    /// until --until or --snapshot ends it. Where retention removed events before they
    /// could be printed, a warning says so on stderr and the tail goes on.
    #[command(verbatim_doc_comment)]
    Tail(read::TailArgs),
    /// Print stored events as JSON lines, one page or (--all) every page
    ///
    /// Prints stored events as JSON lines on stdout, oldest first. Without --all, prints
    /// one page and, when more follow, the --cursor of the next page on stderr. If
    /// retention removed events after the start before they were read, it fails and
    /// names the --cursor that reads on from what is left.
    #[command(verbatim_doc_comment)]
    History(read::HistoryArgs),
    /// List topics, or manage one topic's settings (retention, largest event)
    ///
    /// Alone (or as `topics list`), prints every topic as one JSON line: its head seq,
    /// event count, last position, how far retention removed its events (pruned_seq,
    /// pruned_position) and its settings (config), if it has any.
    ///
    /// `topics create|set|show|delete NAME` give a topic settings, replace them, print the
    /// topic, or delete it with all its events.
    #[command(verbatim_doc_comment)]
    Topics(topics::TopicsArgs),
    /// Consume a group as one member: run a command per delivery, or print each event
    ///
    /// Pulls deliveries from GROUP (long polls) as member --member and handles them one
    /// after another, in the order they came, so the group's per-key order holds.
    ///
    /// With --exec, runs CMD with `sh -c` for each delivery, the event as one JSON line
    /// on its stdin and these in its environment:
    ///   TRIBUTARY_DELIVERY_ID  TRIBUTARY_ATTEMPT  TRIBUTARY_POSITION  TRIBUTARY_TOPIC
    /// Exit status 0 acks the delivery; anything else nacks it with the reason
    /// "exit status N: <the last line of its stderr>", and the group redelivers it after
    /// its backoff (or parks it in the dead-letter queue after max_deliveries). The
    /// command's stdout and stderr are passed through.
    ///
    /// Without --exec, prints each event as one JSON line on stdout and acks it.
    ///
    /// Runs until --count acks are done, or until SIGINT/SIGTERM: then it finishes the
    /// current delivery, settles it, hands back the rest of the pull and exits 0 (a
    /// second signal exits at once). Nacks and a summary ("acked N, nacked M") go to
    /// stderr.
    #[command(verbatim_doc_comment)]
    Consume(consume::ConsumeArgs),
    /// Manage consumer groups and their dead-letter queues
    Groups(groups::GroupsArgs),
}

/// Where the server is, for the client commands.
#[derive(Args, Debug, Clone)]
struct Conn {
    /// The server's base URL.
    #[arg(
        long,
        env = "TRIBUTARY_URL",
        default_value = "http://127.0.0.1:7070",
        value_name = "URL"
    )]
    url: String,
}

impl Conn {
    fn client(&self) -> anyhow::Result<tributary_client::Client> {
        Ok(tributary_client::Client::new(&self.url)?)
    }
}

/// The filter flags shared by `tail`, `history` and `groups create`. Values of one flag are ORed, different
/// flags are ANDed.
#[derive(Args, Debug, Clone, Default)]
struct FilterArgs {
    /// Topic pattern, repeatable: `orders.eu.created`, `orders.*.created`, `orders.>`.
    #[arg(long = "topic", value_name = "PATTERN", value_parser = parse_pattern)]
    topics: Vec<TopicPattern>,
    /// Event name, repeatable.
    #[arg(long = "name", value_name = "NAME")]
    names: Vec<String>,
    /// Client id, repeatable.
    #[arg(long = "client-id", value_name = "ID")]
    client_ids: Vec<String>,
    /// Session id, repeatable.
    #[arg(long = "session-id", value_name = "ID")]
    session_ids: Vec<String>,
}

impl FilterArgs {
    fn filter(&self) -> Filter {
        Filter {
            topics: self.topics.clone(),
            names: self.names.clone(),
            client_ids: self.client_ids.clone(),
            session_ids: self.session_ids.clone(),
        }
    }
}

fn parse_pattern(s: &str) -> Result<TopicPattern, String> {
    TopicPattern::new(s).map_err(|e| e.to_string())
}

fn parse_topic(s: &str) -> Result<Topic, String> {
    Topic::new(s).map_err(|e| e.to_string())
}

/// Logs go to stderr, filtered by `RUST_LOG` or else at `default` level.
fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Writes one line to stdout and flushes it, so a reader sees each line at once.
/// `Ok(false)` when stdout is closed (`tributary tail | head`): the caller stops quietly.
fn print_line(line: &str) -> anyhow::Result<bool> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(anyhow::Error::new(e).context("writing to stdout")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(match cli.command {
        Command::Serve(_) => "info",
        // Client commands stay quiet unless something goes wrong (a reconnect, say).
        _ => "warn",
    });
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Publish(args) => publish::run(args).await,
            Command::Tail(args) => read::tail(args).await,
            Command::History(args) => read::history(args).await,
            Command::Topics(args) => topics::run(args).await,
            Command::Consume(args) => consume::run(args).await,
            Command::Groups(args) => groups::run(args).await,
        }
    });
    // Nothing useful is left running; a blocking read of stdin must not hold the exit.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
