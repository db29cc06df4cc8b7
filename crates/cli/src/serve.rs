//! `tributary serve`: settings from flags, environment, config file and defaults (in that
//! order of precedence), then the SQLite log, the listener and the server until SIGINT
//! or SIGTERM.
//!
//! Every setting is a flag `--x-y`, an environment variable `TRIBUTARY_X_Y` and a config
//! file key `x_y`; `tributary.example.toml` at the repository root lists them all with
//! their defaults.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde::{Deserialize, Deserializer};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tributary_server::{CatchUpPriority, Config};
use tributary_sqlite::{SqliteLog, SqliteOptions, Synchronous};

const DEFAULT_ADDR: &str = "127.0.0.1:7070";
const DEFAULT_DATA: &str = "./tributary-data";
/// The database file inside the data directory.
const DB_FILE: &str = "tributary.db";

/// Settings given on the command line or in the environment; what neither gives comes
/// from the config file, then from the defaults.
#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port [default: 127.0.0.1:7070]
    #[arg(long, env = "TRIBUTARY_ADDR", value_name = "HOST:PORT")]
    addr: Option<String>,
    /// Data directory; the log is `tributary.db` inside it [default: ./tributary-data]
    #[arg(long, env = "TRIBUTARY_DATA", value_name = "DIR")]
    data: Option<PathBuf>,
    /// TOML config file with any of the settings below (see tributary.example.toml)
    #[arg(long, env = "TRIBUTARY_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// SQLite durability: `full` (fsync every commit) or `normal` (survives a process
    /// crash, maybe not a power cut) [default: full]
    #[arg(long, env = "TRIBUTARY_SYNCHRONOUS", value_name = "MODE")]
    synchronous: Option<Synchronous>,
    /// Largest single event accepted, in bytes [default: 1048576]
    #[arg(long, env = "TRIBUTARY_MAX_EVENT_BYTES", value_name = "BYTES")]
    max_event_bytes: Option<usize>,
    /// Largest request body accepted, in bytes [default: 8388608]
    #[arg(long, env = "TRIBUTARY_MAX_REQUEST_BYTES", value_name = "BYTES")]
    max_request_bytes: Option<usize>,
    /// Most events one publish request may carry [default: 10000]
    #[arg(long, env = "TRIBUTARY_MAX_BATCH_EVENTS", value_name = "N")]
    max_batch_events: Option<usize>,
    /// Seconds between heartbeats on an idle SSE stream [default: 15]
    #[arg(long, env = "TRIBUTARY_HEARTBEAT_SECS", value_name = "SECS")]
    heartbeat_secs: Option<u64>,
    /// Seconds a graceful shutdown waits for requests in flight [default: 10]
    #[arg(long, env = "TRIBUTARY_SHUTDOWN_TIMEOUT_SECS", value_name = "SECS")]
    shutdown_timeout_secs: Option<u64>,
    /// Most recent events kept in memory for live streams [default: 100000]
    #[arg(long, env = "TRIBUTARY_TAIL_MAX_EVENTS", value_name = "N")]
    tail_max_events: Option<usize>,
    /// Most bytes the in-memory tail may hold [default: 67108864]
    #[arg(long, env = "TRIBUTARY_TAIL_MAX_BYTES", value_name = "BYTES")]
    tail_max_bytes: Option<usize>,
    /// Most open SSE event streams (and registered ones); past it, 503 with Retry-After
    /// [default: 10000]
    #[arg(long, env = "TRIBUTARY_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<usize>,
    /// Seconds between passes of topic retention (max_age, max_events) [default: 10]
    #[arg(long, env = "TRIBUTARY_RETENTION_INTERVAL_SECS", value_name = "SECS")]
    retention_interval_secs: Option<u64>,
    /// Most events one retention write removes, so appends never wait long behind it
    /// [default: 1000]
    #[arg(long, env = "TRIBUTARY_RETENTION_BATCH", value_name = "N")]
    retention_batch: Option<usize>,
    /// Scheduling of the threads that send history to streams catching up: `idle`
    /// (Linux SCHED_IDLE: live deliveries and publishes take the core from them at
    /// once) or `normal` (an even share) [default: idle]
    #[arg(long, env = "TRIBUTARY_CATCH_UP_PRIORITY", value_name = "PRIORITY")]
    catch_up_priority: Option<CatchUpPriority>,
}

/// The config file: every key optional, unknown keys refused.
#[derive(Deserialize, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    addr: Option<String>,
    data: Option<PathBuf>,
    #[serde(default, deserialize_with = "from_str")]
    synchronous: Option<Synchronous>,
    max_event_bytes: Option<usize>,
    max_request_bytes: Option<usize>,
    max_batch_events: Option<usize>,
    heartbeat_secs: Option<u64>,
    shutdown_timeout_secs: Option<u64>,
    tail_max_events: Option<usize>,
    tail_max_bytes: Option<usize>,
    max_connections: Option<usize>,
    retention_interval_secs: Option<u64>,
    retention_batch: Option<usize>,
    #[serde(default, deserialize_with = "from_str")]
    catch_up_priority: Option<CatchUpPriority>,
}

/// A string key parsed with the type's `FromStr`, so the file refuses what the flag does.
fn from_str<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let Some(text) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    text.parse().map(Some).map_err(serde::de::Error::custom)
}

impl FileConfig {
    fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    fn parse(text: &str) -> anyhow::Result<FileConfig> {
        Ok(toml::from_str(text)?)
    }
}

/// Everything `serve` needs, resolved.
#[derive(Debug)]
struct Settings {
    addr: String,
    data: PathBuf,
    synchronous: Synchronous,
    server: Config,
}

impl Settings {
    /// Flag or environment (clap has merged those), else file, else default.
    fn resolve(args: &ServeArgs, file: &FileConfig) -> anyhow::Result<Settings> {
        let mut server = Config::default();
        let addr = args
            .addr
            .clone()
            .or_else(|| file.addr.clone())
            .unwrap_or_else(|| DEFAULT_ADDR.to_owned());
        let data = args
            .data
            .clone()
            .or_else(|| file.data.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA));
        let synchronous = args
            .synchronous
            .or(file.synchronous)
            .unwrap_or(SqliteOptions::default().synchronous);

        let positive = |name: &str, value: Option<usize>| -> anyhow::Result<Option<usize>> {
            if value == Some(0) {
                bail!("{name} must be at least 1");
            }
            Ok(value)
        };
        if let Some(v) = positive(
            "max_event_bytes",
            args.max_event_bytes.or(file.max_event_bytes),
        )? {
            server.max_event_bytes = v;
        }
        if let Some(v) = positive(
            "max_request_bytes",
            args.max_request_bytes.or(file.max_request_bytes),
        )? {
            server.max_request_bytes = v;
        }
        if let Some(v) = positive(
            "max_batch_events",
            args.max_batch_events.or(file.max_batch_events),
        )? {
            server.max_batch_events = v;
        }
        if let Some(secs) = args.heartbeat_secs.or(file.heartbeat_secs) {
            if secs == 0 {
                bail!("heartbeat_secs must be at least 1");
            }
            server.heartbeat = Duration::from_secs(secs);
        }
        if let Some(secs) = args.shutdown_timeout_secs.or(file.shutdown_timeout_secs) {
            server.shutdown_timeout = Duration::from_secs(secs);
        }
        if let Some(v) = positive(
            "tail_max_events",
            args.tail_max_events.or(file.tail_max_events),
        )? {
            server.tail.max_events = v;
        }
        if let Some(v) = positive(
            "tail_max_bytes",
            args.tail_max_bytes.or(file.tail_max_bytes),
        )? {
            server.tail.max_bytes = v;
        }
        if let Some(v) = positive(
            "max_connections",
            args.max_connections.or(file.max_connections),
        )? {
            server.max_connections = v;
        }
        if let Some(secs) = args
            .retention_interval_secs
            .or(file.retention_interval_secs)
        {
            if secs == 0 {
                bail!("retention_interval_secs must be at least 1");
            }
            server.retention.interval = Duration::from_secs(secs);
        }
        if let Some(v) = positive(
            "retention_batch",
            args.retention_batch.or(file.retention_batch),
        )? {
            server.retention.batch = v;
        }
        if let Some(p) = args.catch_up_priority.or(file.catch_up_priority) {
            server.catch_up_priority = p;
        }
        Ok(Settings {
            addr,
            data,
            synchronous,
            server,
        })
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let settings = Settings::resolve(&args, &file)?;
    let Settings {
        addr,
        data,
        synchronous,
        server,
    } = settings;

    let db = data.join(DB_FILE);
    let options = SqliteOptions {
        synchronous,
        ..SqliteOptions::default()
    };
    let log = SqliteLog::open(&db, options)
        .with_context(|| format!("opening the log at {}", db.display()))?;
    let listener = TcpListener::bind(&addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let bound = listener.local_addr().context("reading the bound address")?;
    // Installed before the line below, so a signal sent as soon as it is read is caught.
    let shutdown = shutdown_signal()?;

    tracing::info!(
        db = %db.display(),
        %synchronous,
        max_event_bytes = server.max_event_bytes,
        max_request_bytes = server.max_request_bytes,
        max_batch_events = server.max_batch_events,
        heartbeat = ?server.heartbeat,
        shutdown_timeout = ?server.shutdown_timeout,
        tail_max_events = server.tail.max_events,
        tail_max_bytes = server.tail.max_bytes,
        max_connections = server.max_connections,
        retention_interval = ?server.retention.interval,
        retention_batch = server.retention.batch,
        catch_up_priority = %server.catch_up_priority,
        "starting"
    );
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "tributary listening on http://{bound}")
            .and_then(|()| out.flush())
            .context("writing to stdout")?;
    }

    // Consumer groups keep their state in the same database file as the log.
    let group_store = Arc::new(log.group_store());
    tributary_server::serve(listener, Arc::new(log), group_store, server, shutdown)
        .await
        .context("serving")?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on the first SIGINT or SIGTERM. A second one while shutting down exits at
/// once, for when draining takes longer than the operator wants to wait.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
        }
        tokio::spawn(async move {
            tokio::select! {
                _ = interrupt.recv() => {},
                _ = terminate.recv() => {},
            }
            tracing::warn!("second signal: exiting without finishing the shutdown");
            std::process::exit(130);
        });
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use tributary_core::TailConfig;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn args(flags: &[&str]) -> ServeArgs {
        let mut argv = vec!["serve"];
        argv.extend_from_slice(flags);
        Cli::try_parse_from(argv).unwrap().args
    }

    /// The example config with each `# key = value` line uncommented.
    fn example_uncommented() -> String {
        let text = include_str!("../../../tributary.example.toml");
        text.lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest)
                    if rest.split_once(" = ").is_some_and(|(key, _)| {
                        !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    }) =>
                {
                    rest
                }
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn example_config_is_all_comments_and_shows_the_true_defaults() {
        let text = include_str!("../../../tributary.example.toml");
        assert_eq!(FileConfig::parse(text).unwrap(), FileConfig::default());

        let file = FileConfig::parse(&example_uncommented()).unwrap();
        let every_key = [
            file.addr.is_some(),
            file.data.is_some(),
            file.synchronous.is_some(),
            file.max_event_bytes.is_some(),
            file.max_request_bytes.is_some(),
            file.max_batch_events.is_some(),
            file.heartbeat_secs.is_some(),
            file.shutdown_timeout_secs.is_some(),
            file.tail_max_events.is_some(),
            file.tail_max_bytes.is_some(),
            file.max_connections.is_some(),
            file.retention_interval_secs.is_some(),
            file.retention_batch.is_some(),
            file.catch_up_priority.is_some(),
        ];
        assert!(every_key.iter().all(|&k| k), "{file:?}");

        let from_example = Settings::resolve(&ServeArgs::default(), &file).unwrap();
        let defaults = Settings::resolve(&ServeArgs::default(), &FileConfig::default()).unwrap();
        assert_eq!(from_example.addr, defaults.addr);
        assert_eq!(from_example.data, defaults.data);
        assert_eq!(from_example.synchronous, defaults.synchronous);
        let (a, b) = (&from_example.server, &defaults.server);
        assert_eq!(a.max_event_bytes, b.max_event_bytes);
        assert_eq!(a.max_request_bytes, b.max_request_bytes);
        assert_eq!(a.max_batch_events, b.max_batch_events);
        assert_eq!(a.heartbeat, b.heartbeat);
        assert_eq!(a.shutdown_timeout, b.shutdown_timeout);
        assert_eq!(a.max_connections, b.max_connections);
        assert_eq!(a.tail.max_events, b.tail.max_events);
        assert_eq!(a.tail.max_bytes, b.tail.max_bytes);
        assert_eq!(a.retention.interval, b.retention.interval);
        assert_eq!(a.retention.batch, b.retention.batch);
        assert_eq!(a.catch_up_priority, b.catch_up_priority);
        assert_eq!(b.catch_up_priority, Config::default().catch_up_priority);
        assert_eq!(
            b.retention.interval,
            tributary_core::RetentionOptions::default().interval
        );
        // And the defaults are the libraries' own, not copies that could drift.
        assert_eq!(b.tail.max_events, TailConfig::default().max_events);
        assert_eq!(defaults.synchronous, SqliteOptions::default().synchronous);
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let file = FileConfig::parse(
            "addr = \"0.0.0.0:9000\"\nsynchronous = \"normal\"\nheartbeat_secs = 3\ntail_max_bytes = 1000\n",
        )
        .unwrap();
        let s = Settings::resolve(
            &args(&["--addr", "127.0.0.1:0", "--tail-max-bytes", "2000"]),
            &file,
        )
        .unwrap();
        assert_eq!(s.addr, "127.0.0.1:0");
        assert_eq!(s.server.tail.max_bytes, 2000);
        assert_eq!(s.synchronous, Synchronous::Normal);
        assert_eq!(s.server.heartbeat, Duration::from_secs(3));
        assert_eq!(s.data, PathBuf::from(DEFAULT_DATA));
        assert_eq!(
            s.server.max_batch_events,
            Config::default().max_batch_events
        );
    }

    #[test]
    fn bad_files_and_values_are_refused_clearly() {
        let e = FileConfig::parse("adr = \"x\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("unknown field `adr`"), "{e:#}");
        let e = FileConfig::parse("synchronous = \"off\"\n").unwrap_err();
        assert!(
            format!("{e:#}").contains("unknown synchronous mode"),
            "{e:#}"
        );
        let e = FileConfig::parse("heartbeat_secs = \"ten\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("heartbeat_secs"), "{e:#}");
        let e = Settings::resolve(&args(&["--heartbeat-secs", "0"]), &FileConfig::default())
            .unwrap_err();
        assert!(e.to_string().contains("heartbeat_secs must be at least 1"));
        assert!(Cli::try_parse_from(["serve", "--synchronous", "off"]).is_err());
        let e = FileConfig::parse("catch_up_priority = \"low\"\n").unwrap_err();
        assert!(
            format!("{e:#}").contains("unknown catch-up priority"),
            "{e:#}"
        );
        assert!(Cli::try_parse_from(["serve", "--catch-up-priority", "low"]).is_err());
        let s = Settings::resolve(
            &args(&["--catch-up-priority", "normal"]),
            &FileConfig::default(),
        )
        .unwrap();
        assert_eq!(s.server.catch_up_priority, CatchUpPriority::Normal);
        let e = FileConfig::load(Path::new("/nonexistent/tributary.toml")).unwrap_err();
        assert!(format!("{e:#}").contains("reading config file"), "{e:#}");
    }
}
