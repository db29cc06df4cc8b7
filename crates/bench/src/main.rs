//! `tributary-bench`: runs the benchmark scenarios and writes a JSON result per
//! scenario (plus a table on stdout). `naive-server` is the ceiling server the
//! harness starts as its own process. Exits 1 when any event was lost or doubled.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tributary_bench::load::Clock;
use tributary_bench::procs::{find_nats_server, find_on_path, find_postgres_bin_dir};
use tributary_bench::report::{ScenarioReport, machine};
use tributary_bench::{Config, scenarios};

#[derive(Parser, Debug)]
#[command(
    name = "tributary-bench",
    about = "Tributary side by side with its peers, on 127.0.0.1"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Tiny sizes (seconds in all), as the test suite runs it
    #[arg(long)]
    quick: bool,
    /// Scenarios to run, comma-separated
    #[arg(long, value_delimiter = ',', default_value = "s2,s1,s3,s4,s5,s6,s7,s8")]
    scenarios: Vec<String>,
    /// Interleaved rounds per comparison [default: 2 quick, 5 full]
    #[arg(long)]
    rounds: Option<usize>,
    /// Directory for the JSON result files [default: bench/results; with --quick, a
    /// directory under the system temp dir, so a smoke run never replaces real results]
    #[arg(long)]
    out: Option<PathBuf>,
    /// The tributary binary [default: target/release/tributary, else target/debug/tributary]
    #[arg(long, env = "TRIBUTARY_BIN")]
    tributary_bin: Option<PathBuf>,
    /// redis-server [default: from PATH]
    #[arg(long)]
    redis_bin: Option<PathBuf>,
    /// Leave Redis out even when installed
    #[arg(long)]
    no_redis: bool,
    /// nats-server [default: from PATH, else ~/.cache/tributary-bench/bin, where
    /// scripts/bench-peers.sh links it]
    #[arg(long)]
    nats_bin: Option<PathBuf>,
    /// Leave NATS out even when installed
    #[arg(long)]
    no_nats: bool,
    /// The directory with PostgreSQL's initdb and postgres [default: the newest
    /// /usr/lib/postgresql/*/bin, else initdb's directory on PATH]
    #[arg(long)]
    postgres_bin_dir: Option<PathBuf>,
    /// Leave PostgreSQL out even when installed
    #[arg(long)]
    no_postgres: bool,
    /// Do not pin the servers and the load generator to cores
    #[arg(long)]
    no_pin: bool,
    /// Milliseconds of each measured phase (S1, S2)
    #[arg(long)]
    phase_ms: Option<u64>,
    /// S1 concurrent publishers, comma-separated
    #[arg(long, value_delimiter = ',')]
    s1_clients: Option<Vec<usize>>,
    /// S1 total open-loop rate for the latency phase [default: half the slower system's throughput]
    #[arg(long)]
    s1_rate: Option<f64>,
    /// S1 durable tier only (no synchronous=normal vs appendfsync everysec)
    #[arg(long)]
    s1_durable_only: bool,
    /// S2 concurrent batch publishers, comma-separated
    #[arg(long, value_delimiter = ',')]
    s2_clients: Option<Vec<usize>>,
    /// S3 settings as SUBSCRIBERS@RATE, comma-separated (1000@20,10000@10)
    #[arg(long, value_delimiter = ',')]
    s3: Option<Vec<String>>,
    /// S3 seconds of publishing per setting
    #[arg(long)]
    s3_secs: Option<u64>,
    /// S6 events preloaded for the consumers
    #[arg(long)]
    s6_events: Option<u64>,
    /// S8 subscribers
    #[arg(long)]
    s8_subscribers: Option<usize>,
    /// S8 events per second, all subscribers following the one publisher
    #[arg(long)]
    s8_rate: Option<f64>,
    /// S8 seconds of publishing (the kill comes halfway)
    #[arg(long)]
    s8_secs: Option<u64>,
    /// S4 subscribers
    #[arg(long)]
    s4_subscribers: Option<usize>,
    /// S4 concurrent publishers
    #[arg(long)]
    s4_publishers: Option<usize>,
    /// S4 first rate tried, events/s
    #[arg(long)]
    s4_start_rate: Option<f64>,
    /// S4 rising steps at most
    #[arg(long)]
    s4_max_steps: Option<usize>,
    /// S4 seconds of publishing per step
    #[arg(long)]
    s4_step_secs: Option<f64>,
    /// S7 idle connection counts, comma-separated
    #[arg(long, value_delimiter = ',')]
    s7_connections: Option<Vec<usize>>,
    /// S7 events in the burst after the idle reading
    #[arg(long)]
    s7_burst: Option<usize>,
    /// Break the naive server on purpose (skip every n-th publish), to check that a gap
    /// fails the run
    #[arg(long, hide = true)]
    naive_drop_every: Option<u64>,
    /// S5 events preloaded for the catch-up readers
    #[arg(long)]
    s5_events: Option<u64>,
    /// S5 live SSE subscribers
    #[arg(long)]
    s5_live_subscribers: Option<usize>,
    /// S5 SSE readers catching up from random positions beside the live subscribers
    #[arg(long)]
    s5_catchup_readers: Option<usize>,
    /// S5 events per second of the live publisher
    #[arg(long)]
    s5_rate: Option<f64>,
    /// S5 seconds of live publishing per phase
    #[arg(long)]
    s5_secs: Option<u64>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The naive in-memory SSE server (started by the harness itself)
    NaiveServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: String,
        /// Skip every n-th publish (a broken server, for the harness's own test)
        #[arg(long, hide = true)]
        drop_every: Option<u64>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::NaiveServer { addr, drop_every }) = &cli.command {
        return naive_server(addr, *drop_every);
    }
    let cfg = config(&cli)?;
    if cfg.pin {
        // Before the runtime exists, so every thread it starts inherits core 1.
        let pinned = core_affinity::set_for_current(core_affinity::CoreId { id: 1 });
        if !pinned {
            eprintln!("could not pin the load generator to core 1; running unpinned");
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let failed = runtime.block_on(run(&cli, cfg))?;
    if failed {
        bail!("events were lost or doubled; the figures above are void");
    }
    Ok(())
}

fn naive_server(addr: &str, drop_every: Option<u64>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        let bound = listener.local_addr()?;
        println!("naive listening on http://{bound}");
        tributary_bench::naive::serve(listener, drop_every).await?;
        Ok(())
    })
}

fn default_tributary_bin() -> Option<PathBuf> {
    // This binary sits in <target>/<profile>/; the server is built into the same target.
    let exe = std::env::current_exe().ok()?;
    let target = exe.parent()?.parent()?;
    ["release", "debug"]
        .iter()
        .map(|p| target.join(p).join("tributary"))
        .find(|p| p.is_file())
}

fn config(cli: &Cli) -> anyhow::Result<Config> {
    let tributary_bin = match &cli.tributary_bin {
        Some(p) => p.clone(),
        None => default_tributary_bin()
            .context("no tributary binary found: build it (cargo build --release -p tributary) or pass --tributary-bin")?,
    };
    if !tributary_bin.is_file() {
        bail!("{} is not a file", tributary_bin.display());
    }
    let self_bin = std::env::current_exe().context("finding this binary")?;
    let mut cfg = if cli.quick {
        let out = cli
            .out
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("tributary-bench-quick"));
        Config::quick(tributary_bin, self_bin, out)
    } else {
        let out = cli.out.clone().unwrap_or_else(|| "bench/results".into());
        Config::full(tributary_bin, self_bin, out)
    };
    cfg.redis_bin = if cli.no_redis {
        None
    } else {
        cli.redis_bin
            .clone()
            .or_else(|| find_on_path("redis-server"))
    };
    cfg.nats_bin = if cli.no_nats {
        None
    } else {
        cli.nats_bin.clone().or_else(find_nats_server)
    };
    cfg.postgres_bin_dir = if cli.no_postgres {
        None
    } else {
        cli.postgres_bin_dir.clone().or_else(find_postgres_bin_dir)
    };
    if let Some(n) = cli.s6_events {
        cfg.s6_events = n.max(1);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cfg.pin = !cli.no_pin && cores >= 2 && find_on_path("taskset").is_some();
    if let Some(r) = cli.rounds {
        cfg.rounds = r.max(1);
    }
    if let Some(ms) = cli.phase_ms {
        cfg.phase = Duration::from_millis(ms);
    }
    if let Some(c) = &cli.s1_clients {
        cfg.s1_clients = c.clone();
    }
    cfg.s1_rate = cli.s1_rate;
    if cli.s1_durable_only {
        cfg.s1_relaxed = false;
    }
    cfg.naive_drop_every = cli.naive_drop_every;
    if let Some(c) = &cli.s2_clients {
        cfg.s2_clients = c.clone();
    }
    if let Some(settings) = &cli.s3 {
        cfg.s3_settings = settings
            .iter()
            .map(|s| {
                let (n, r) = s
                    .split_once('@')
                    .context("an S3 setting is SUBSCRIBERS@RATE")?;
                Ok((n.parse()?, r.parse()?))
            })
            .collect::<anyhow::Result<_>>()?;
    }
    if let Some(s) = cli.s3_secs {
        cfg.s3_phase = Duration::from_secs(s);
    }
    if let Some(n) = cli.s8_subscribers {
        cfg.s8_subscribers = n;
    }
    if let Some(r) = cli.s8_rate {
        cfg.s8_rate = positive_rate("--s8-rate", r)?;
    }
    if let Some(s) = cli.s8_secs {
        cfg.s8_phase = Duration::from_secs(s);
    }
    if let Some(n) = cli.s4_subscribers {
        cfg.s4_subscribers = n.max(1);
    }
    if let Some(n) = cli.s4_publishers {
        cfg.s4_publishers = n.max(1);
    }
    if let Some(r) = cli.s4_start_rate {
        cfg.s4_start_rate = r.max(1.0);
    }
    if let Some(n) = cli.s4_max_steps {
        cfg.s4_max_steps = n.max(1);
    }
    if let Some(s) = cli.s4_step_secs {
        cfg.s4_step = Duration::from_secs_f64(s.max(0.1));
    }
    if let Some(c) = &cli.s7_connections {
        cfg.s7_connections = c.clone();
    }
    if let Some(b) = cli.s7_burst {
        cfg.s7_burst = b.max(1);
    }
    if let Some(n) = cli.s5_events {
        cfg.s5_events = n.max(1);
    }
    if let Some(n) = cli.s5_live_subscribers {
        cfg.s5_live_subscribers = n;
    }
    if let Some(n) = cli.s5_catchup_readers {
        cfg.s5_catchup_readers = n;
    }
    if let Some(r) = cli.s5_rate {
        cfg.s5_rate = positive_rate("--s5-rate", r)?;
    }
    if let Some(s) = cli.s5_secs {
        cfg.s5_phase = Duration::from_secs(s);
    }
    Ok(cfg)
}

/// A rate flag's value, refused unless it is a positive number of events per second
/// (a schedule's interval is its inverse).
fn positive_rate(flag: &str, r: f64) -> anyhow::Result<f64> {
    if !(r > 0.0 && r.is_finite()) {
        bail!("{flag} must be a positive number of events per second, not {r}");
    }
    Ok(r)
}

async fn run(cli: &Cli, cfg: Config) -> anyhow::Result<bool> {
    let clock = Clock::start();
    let machine = machine(cfg.pin);
    println!("machine: {machine}");
    println!(
        "tributary: {}; redis: {}",
        cfg.tributary_bin.display(),
        cfg.redis_bin.as_ref().map_or(
            "not installed, skipped (scripts/bench-peers.sh installs it)".to_owned(),
            |p| p.display().to_string()
        )
    );
    println!(
        "nats-server: {}; postgres: {}",
        cfg.nats_bin.as_ref().map_or(
            "not installed, skipped (scripts/bench-peers.sh installs it)".to_owned(),
            |p| p.display().to_string()
        ),
        cfg.postgres_bin_dir.as_ref().map_or(
            "not installed, skipped (scripts/bench-peers.sh installs it)".to_owned(),
            |p| p.display().to_string()
        )
    );
    let command_line: Vec<String> = std::env::args().collect();
    let mut failed = false;
    for name in &cli.scenarios {
        let started = std::time::Instant::now();
        let report: ScenarioReport = match name.as_str() {
            "s1" => scenarios::s1::run(&cfg, clock).await,
            "s2" => scenarios::s2::run(&cfg, clock).await,
            "s3" => scenarios::s3::run(&cfg, clock).await,
            "s4" => scenarios::s4::run(&cfg, clock).await,
            "s5" => scenarios::s5::run(&cfg, clock).await,
            "s6" => scenarios::s6::run(&cfg, clock).await,
            "s7" => scenarios::s7::run(&cfg, clock).await,
            "s8" => scenarios::s8::run(&cfg, clock).await,
            other => bail!("unknown scenario {other:?} (s1 to s8)"),
        }
        .with_context(|| format!("scenario {name}"))?;
        let mut report = report;
        if let Some(obj) = report.json.as_object_mut() {
            obj.insert("machine".into(), machine.clone());
            obj.insert("quick".into(), cfg.quick.into());
            obj.insert("rounds".into(), cfg.rounds.into());
            obj.insert("command".into(), command_line.join(" ").into());
            obj.insert("wall_s".into(), started.elapsed().as_secs_f64().into());
        }
        report.write(&cfg.out)?;
        println!("\n{}", report.table.render());
        for f in &report.failures {
            eprintln!("FAILED: {f}");
        }
        failed |= !report.failures.is_empty();
    }
    println!("results in {}", cfg.out.display());
    Ok(failed)
}
