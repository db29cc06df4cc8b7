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

    /// `kill -9` and wait for the process to be gone.
    pub async fn kill9(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGKILL by PID; tokio reaps the process in the background.
        let _ = self.child.start_kill();
    }
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
    };
    let started = Instant::now();
    loop {
        if let Ok(mut conn) = redis_connection(&server).await
            && redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .is_ok()
        {
            return Ok(server);
        }
        if started.elapsed() > STARTUP {
            return Err(BenchError::NotReady {
                what: "redis-server".into(),
                reason: format!("no PONG; stderr: {}", log_tail(server.scratch())),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
