//! Starting and stopping the servers under test. Each [`Server`] owns its process and
//! kills it by PID when dropped, so an error anywhere in a scenario still stops
//! everything it started.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::{BenchError, Config};

/// How long a server may take to say it is listening.
const STARTUP: Duration = Duration::from_secs(15);

/// A running server process.
pub struct Server {
    child: Child,
    /// What it is (`tributary`, `redis`, `naive`).
    pub name: &'static str,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its stderr goes to this file (and its data dir, when it owns one, lives here).
    scratch: TempDir,
    /// A signal to send by PID before SIGKILL, for servers whose children must be told
    /// (PostgreSQL's backends outlive a SIGKILLed postmaster for a while).
    graceful: Option<&'static str>,
}

impl Server {
    /// `http://127.0.0.1:port`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its PID.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// A private directory that lives as long as the server.
    pub fn scratch(&self) -> &Path {
        self.scratch.path()
    }

    /// What its process holds and has used so far, from `/proc/PID`; `None` once it is
    /// gone (or where there is no `/proc`).
    pub fn usage(&self) -> Option<ProcUsage> {
        proc_usage(self.pid()?)
    }

    /// `kill -9` and wait for the process to be gone.
    pub async fn kill9(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let (Some(signal), Some(pid)) = (self.graceful, self.child.id()) {
            let _ = std::process::Command::new("kill")
                .args(["-s", signal, &pid.to_string()])
                .status();
            // Give it a moment to stop its children itself.
            let until = Instant::now() + Duration::from_secs(3);
            while Instant::now() < until && !matches!(self.child.try_wait(), Ok(Some(_))) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // SIGKILL by PID; tokio reaps the process in the background.
        let _ = self.child.start_kill();
    }
}

/// A process's memory and CPU at one moment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcUsage {
    /// Resident set size (`VmRSS`), in bytes.
    pub rss_bytes: u64,
    /// CPU time, user plus system, in seconds since it started.
    pub cpu_s: f64,
}

/// Reads [`ProcUsage`] of process `pid`.
pub fn proc_usage(pid: u32) -> Option<ProcUsage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its closing
    // parenthesis start at field 3, so utime and stime (14, 15) are the 12th and 13th.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ProcUsage {
        rss_bytes: rss_kib * 1024,
        cpu_s: ticks as f64 / clock_ticks_per_second(),
    })
}

/// `getconf CLK_TCK`, the unit of `/proc/PID/stat`'s CPU times: 100 on every Linux this
/// runs on, asked once anyway.
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// A command that runs `program`, under `taskset -c 0` when pinning.
fn command(program: &Path, pin: bool) -> Command {
    let mut cmd = if pin {
        // taskset execs the program, so the PID we hold is the server's own.
        let mut c = Command::new("taskset");
        c.arg("-c").arg("0").arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    cmd
}

fn scratch_dir() -> Result<TempDir, BenchError> {
    tempfile::Builder::new()
        .prefix("tributary-bench-")
        .tempdir()
        .map_err(|source| BenchError::Io {
            context: "creating a temp dir",
            path: std::env::temp_dir(),
            source,
        })
}

fn stderr_file(dir: &Path) -> Result<std::fs::File, BenchError> {
    let path = dir.join("stderr.log");
    std::fs::File::create(&path).map_err(|source| BenchError::Io {
        context: "creating a server log",
        path,
        source,
    })
}

fn log_tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// Starts `cmd` and waits for a stdout line `<prefix>http://ADDR`.
async fn spawn_listening(
    name: &'static str,
    mut cmd: Command,
    prefix: &str,
    scratch: TempDir,
) -> Result<Server, BenchError> {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::from(stderr_file(scratch.path())?));
    let mut child = cmd.spawn().map_err(|source| BenchError::Spawn {
        what: name.into(),
        source,
    })?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let not_ready = |reason: String, dir: &Path| BenchError::NotReady {
        what: name.into(),
        reason: format!("{reason}; stderr: {}", log_tail(dir)),
    };
    let addr = loop {
        match tokio::time::timeout(STARTUP, lines.next_line()).await {
            Err(_) => {
                return Err(not_ready(
                    "no listening line in time".into(),
                    scratch.path(),
                ));
            }
            Ok(Err(e)) => return Err(not_ready(format!("reading stdout: {e}"), scratch.path())),
            Ok(Ok(None)) => return Err(not_ready("exited".into(), scratch.path())),
            Ok(Ok(Some(line))) => {
                if let Some(rest) = line.strip_prefix(prefix) {
                    let addr = rest.trim().trim_start_matches("http://");
                    match addr.parse::<SocketAddr>() {
                        Ok(a) => break a,
                        Err(e) => {
                            return Err(not_ready(
                                format!("bad address {addr:?}: {e}"),
                                scratch.path(),
                            ));
                        }
                    }
                }
            }
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Server {
        child,
        name,
        addr,
        scratch,
        graceful: None,
    })
}

/// Starts `tributary serve` on `addr` (`127.0.0.1:0` for any free port) with its log in
/// `data` (synchronous = full, the default: a 2xx means on disk).
pub async fn start_tributary(cfg: &Config, data: &Path, addr: &str) -> Result<Server, BenchError> {
    start_tributary_with(cfg, data, addr, None).await
}

/// [`start_tributary`] with `--synchronous` set (`normal`, `full`).
pub async fn start_tributary_with(
    cfg: &Config,
    data: &Path,
    addr: &str,
    synchronous: Option<&str>,
) -> Result<Server, BenchError> {
    let mut cmd = command(&cfg.tributary_bin, cfg.pin);
    if let Some(mode) = synchronous {
        cmd.env("TRIBUTARY_SYNCHRONOUS", mode);
    }
    cmd.arg("serve")
        .arg("--addr")
        .arg(addr)
        .arg("--data")
        .arg(data)
        .env("RUST_LOG", "warn");
    spawn_listening("tributary", cmd, "tributary listening on ", scratch_dir()?).await
}

/// Starts the naive SSE server (this binary, `naive-server`).
pub async fn start_naive(cfg: &Config) -> Result<Server, BenchError> {
    let mut cmd = command(&cfg.self_bin, cfg.pin);
    cmd.arg("naive-server").arg("--addr").arg("127.0.0.1:0");
    if let Some(n) = cfg.naive_drop_every {
        cmd.arg("--drop-every").arg(n.to_string());
    }
    spawn_listening("naive", cmd, "naive listening on ", scratch_dir()?).await
}

/// A port that was free a moment ago (Redis cannot be told to pick one and say which).
fn free_port() -> Result<u16, BenchError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|source| BenchError::Io {
        context: "finding a free port",
        path: PathBuf::from("127.0.0.1:0"),
        source,
    })?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|source| BenchError::Io {
            context: "finding a free port",
            path: PathBuf::from("127.0.0.1:0"),
            source,
        })
}

/// Asks `answers` every 50 ms until it says the server is up, for at most [`STARTUP`];
/// after that, `server` (`what`) did not become ready, and `missing` says what it never
/// gave.
async fn until_ready(
    server: Server,
    what: &str,
    missing: &str,
    mut answers: impl AsyncFnMut(&Server) -> bool,
) -> Result<Server, BenchError> {
    let started = Instant::now();
    loop {
        if answers(&server).await {
            return Ok(server);
        }
        if started.elapsed() > STARTUP {
            return Err(BenchError::NotReady {
                what: what.into(),
                reason: format!("{missing}; stderr: {}", log_tail(server.scratch())),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Redis durability tiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedisFsync {
    /// `appendfsync always`: fsync before each reply, like Tributary's 2xx.
    Always,
    /// `appendfsync everysec`.
    EverySec,
}

/// Starts `redis-server` on 127.0.0.1 with an append-only file in its own temp dir, no
/// RDB snapshots, and waits until it answers PING.
pub async fn start_redis(
    cfg: &Config,
    redis_bin: &Path,
    fsync: RedisFsync,
) -> Result<Server, BenchError> {
    let scratch = scratch_dir()?;
    let port = free_port()?;
    let mut cmd = command(redis_bin, cfg.pin);
    cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .arg("--dir")
        .arg(scratch.path())
        .args(["--appendonly", "yes", "--save", "", "--daemonize", "no"])
        .args(["--protected-mode", "yes", "--logfile", ""])
        // Room for S7's 10k subscribers and the publisher (the default is 10000); Redis
        // lowers it by itself where the file limit is lower.
        .args(["--maxclients", "16384"])
        .arg("--appendfsync")
        .arg(match fsync {
            RedisFsync::Always => "always",
            RedisFsync::EverySec => "everysec",
        })
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr_file(scratch.path())?));
    let child = cmd.spawn().map_err(|source| BenchError::Spawn {
        what: "redis-server".into(),
        source,
    })?;
    let server = Server {
        child,
        name: "redis",
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        scratch,
        graceful: None,
    };
    until_ready(
        server,
        "redis-server",
        "no PONG",
        async |server: &Server| {
            let Ok(mut conn) = redis_connection(server).await else {
                return false;
            };
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .is_ok()
        },
    )
    .await
}

/// A new connection to a Redis [`Server`].
pub async fn redis_connection(
    server: &Server,
) -> Result<redis::aio::MultiplexedConnection, BenchError> {
    let redis_err = |source| BenchError::Redis {
        context: "connecting",
        source,
    };
    let client = redis::Client::open(format!("redis://{}/", server.addr)).map_err(redis_err)?;
    client
        .get_multiplexed_async_connection()
        .await
        .map_err(redis_err)
}

/// `program` from PATH, if installed there.
pub fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// `nats-server`: from PATH, else where `scripts/bench-peers.sh` links it
/// (`~/.cache/tributary-bench/bin`, or `$TRIBUTARY_BENCH_CACHE/bin`).
pub fn find_nats_server() -> Option<PathBuf> {
    find_on_path("nats-server").or_else(|| {
        let cache = std::env::var_os("TRIBUTARY_BENCH_CACHE")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/tributary-bench"))
            })?;
        let bin = cache.join("bin/nats-server");
        bin.is_file().then_some(bin)
    })
}

/// PostgreSQL's server binaries (`initdb`, `postgres`): the newest
/// `/usr/lib/postgresql/*/bin` (Debian keeps them off PATH), else `initdb` on PATH.
pub fn find_postgres_bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|d| d.join("initdb").is_file() && d.join("postgres").is_file())
        .collect();
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
        .or_else(|| find_on_path("initdb").and_then(|p| p.parent().map(Path::to_owned)))
}

/// Starts `nats-server` with JetStream on 127.0.0.1, its store in its own temp dir and
/// `sync_interval: always` (every stored message and ack is fsynced before it is
/// confirmed: the like of Tributary's synchronous = full), and waits until it takes a
/// connection.
pub async fn start_nats(cfg: &Config, nats_bin: &Path) -> Result<Server, BenchError> {
    let scratch = scratch_dir()?;
    let port = free_port()?;
    let store = scratch.path().join("jetstream");
    let conf = scratch.path().join("nats.conf");
    let text = format!(
        "listen: \"127.0.0.1:{port}\"\njetstream {{\n  store_dir: {store:?}\n  sync_interval: always\n}}\n"
    );
    std::fs::write(&conf, text).map_err(|source| BenchError::Io {
        context: "writing the nats config",
        path: conf.clone(),
        source,
    })?;
    let mut cmd = command(nats_bin, cfg.pin);
    cmd.arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr_file(scratch.path())?));
    let child = cmd.spawn().map_err(|source| BenchError::Spawn {
        what: "nats-server".into(),
        source,
    })?;
    let server = Server {
        child,
        name: "nats",
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        scratch,
        // SIGTERM lets it close its store cleanly; it has no children either way.
        graceful: Some("TERM"),
    };
    until_ready(
        server,
        "nats-server",
        "no JetStream",
        async |server: &Server| {
            let Ok(client) = async_nats::connect(server.addr.to_string()).await else {
                return false;
            };
            // JetStream answers once the server is fully up.
            async_nats::jetstream::new(client)
                .query_account()
                .await
                .is_ok()
        },
    )
    .await
}

/// The uid and gid of `postgres` (from `id`), which the server runs as when we are root:
/// PostgreSQL refuses to run as root.
fn postgres_user() -> Option<(String, String)> {
    let id = |flag: &str| {
        std::process::Command::new("id")
            .args([flag, "postgres"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    Some((id("-u")?, id("-g")?))
}

fn am_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Starts a fresh PostgreSQL cluster: `initdb` into its own temp dir (trust auth for
/// 127.0.0.1, superuser `postgres`), then `postgres` on 127.0.0.1 with `fsync = on` and
/// `synchronous_commit = on` (the defaults, set explicitly: a COMMIT reply means the WAL
/// is fsynced, like Tributary's 2xx). As root it runs as the `postgres` user through
/// `setpriv`, which execs, so the PID held is the postmaster's. Waits until it answers.
pub async fn start_postgres(cfg: &Config, bin_dir: &Path) -> Result<Server, BenchError> {
    let scratch = scratch_dir()?;
    let port = free_port()?;
    let data = scratch.path().join("pgdata");
    let as_user: Option<(String, String)> = if am_root() {
        let user = postgres_user().ok_or_else(|| BenchError::NotReady {
            what: "postgres".into(),
            reason: "running as root and there is no postgres user to run it as".into(),
        })?;
        // The cluster's directory must belong to the user that runs it.
        let status = std::process::Command::new("chown")
            .arg(format!("{}:{}", user.0, user.1))
            .arg(scratch.path())
            .status()
            .map_err(|source| BenchError::Spawn {
                what: "chown".into(),
                source,
            })?;
        if !status.success() {
            return Err(BenchError::NotReady {
                what: "postgres".into(),
                reason: format!("chown of {} failed", scratch.path().display()),
            });
        }
        Some(user)
    } else {
        None
    };
    let wrap = |program: &Path, pin: bool| -> Command {
        match &as_user {
            None => command(program, pin),
            Some((uid, gid)) => {
                let setpriv = find_on_path("setpriv").unwrap_or_else(|| "setpriv".into());
                let mut c = command(&setpriv, pin);
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg(program);
                c
            }
        }
    };
    let mut initdb = wrap(&bin_dir.join("initdb"), false);
    initdb
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-instructions",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr_file(scratch.path())?));
    let status = initdb.status().await.map_err(|source| BenchError::Spawn {
        what: "initdb".into(),
        source,
    })?;
    if !status.success() {
        return Err(BenchError::NotReady {
            what: "initdb".into(),
            reason: format!("{status}; stderr: {}", log_tail(scratch.path())),
        });
    }
    let mut cmd = wrap(&bin_dir.join("postgres"), cfg.pin);
    cmd.arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string()])
        .args(["-c", "listen_addresses=127.0.0.1"])
        .arg("-c")
        .arg(format!(
            "unix_socket_directories={}",
            scratch.path().display()
        ))
        .args(["-c", "fsync=on", "-c", "synchronous_commit=on"])
        .args(["-c", "max_connections=200"])
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr_file(scratch.path())?));
    let child = cmd.spawn().map_err(|source| BenchError::Spawn {
        what: "postgres".into(),
        source,
    })?;
    let server = Server {
        child,
        name: "postgres",
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        scratch,
        // Immediate shutdown: the postmaster stops its backends, then exits.
        graceful: Some("QUIT"),
    };
    until_ready(server, "postgres", "no answer", async |server: &Server| {
        let Ok(client) = postgres_connection(server).await else {
            return false;
        };
        client.simple_query("SELECT 1").await.is_ok()
    })
    .await
}

/// A new connection to a PostgreSQL [`Server`]; its connection task runs until the
/// client is dropped.
pub async fn postgres_connection(server: &Server) -> Result<tokio_postgres::Client, BenchError> {
    let (client, connection) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            server.addr.port()
        ),
        tokio_postgres::NoTls,
    )
    .await
    .map_err(|source| BenchError::Postgres {
        context: "connecting",
        source,
    })?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_of_this_process_grows_with_what_it_does() {
        let before = proc_usage(std::process::id()).expect("/proc is readable");
        // Touch 64 MiB and burn some CPU, so both figures must move.
        let block = vec![1u8; 64 << 20];
        let mut x = 0u64;
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            x = x.wrapping_add(block[x as usize % block.len()] as u64);
        }
        let after = proc_usage(std::process::id()).expect("/proc is readable");
        assert!(x > 0);
        assert!(
            after.rss_bytes >= before.rss_bytes + (48 << 20),
            "{before:?} -> {after:?}"
        );
        assert!(after.cpu_s >= before.cpu_s + 0.1, "{before:?} -> {after:?}");
        drop(block);
        assert!(proc_usage(u32::MAX).is_none());
    }
}
