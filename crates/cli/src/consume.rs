//! `tributary consume`: one member of a consumer group. It long-polls for deliveries
//! and handles them one after another, in the order of each pull, so a group's per-key
//! order holds: with `--exec`, by running a shell command per delivery (exit 0 acks,
//! anything else nacks); without, by printing each event as a JSON line and acking it.

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tributary_client::{Client, ClientError, Delivery};

use crate::{Conn, print_line};

/// How long one pull waits on the server for a first delivery.
const POLL_WAIT: Duration = Duration::from_secs(5);
/// The most of a command's last stderr line that goes into a nack reason.
const REASON_TAIL_CHARS: usize = 200;
/// How long a command's stderr may stay open after it exited (held by something it
/// left running in the background) before we stop reading it.
const STDERR_GRACE: Duration = Duration::from_secs(1);
/// Retries of a pull, ack or nack whose request failed on the way (server restarting).
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);
const SETTLE_ATTEMPTS: u32 = 5;

/// The flags of `consume`; what it does is in its command help (main.rs).
#[derive(Args, Debug)]
pub struct ConsumeArgs {
    #[command(flatten)]
    conn: Conn,
    /// The group to consume.
    group: String,
    /// Run CMD with `sh -c` for each delivery, the event's JSON on its stdin; exit 0
    /// acks, anything else nacks.
    #[arg(long, value_name = "CMD")]
    exec: Option<String>,
    /// The member name [default: <hostname>-<pid>]
    #[arg(long, value_name = "NAME")]
    member: Option<String>,
    /// Deliveries to take per pull, 1 to 1000.
    #[arg(long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    max: u16,
    /// Stop after N acks.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
}

/// What happened to the deliveries, for the summary.
#[derive(Default, Debug)]
struct Tally {
    acked: u64,
    nacked: u64,
    /// Expired (or settled by an answer we lost) before we settled them: they come back.
    stale: u64,
    /// Handed back unprocessed because we were stopping.
    released: u64,
}

pub async fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let member = args.member.clone().unwrap_or_else(default_member);
    let stop = stop_signal().context("installing the SIGINT/SIGTERM handlers")?;
    eprintln!("consuming group {} as member {member}", args.group);
    let mut tally = Tally::default();
    let consumer = Consumer {
        client: &client,
        args: &args,
        member: &member,
        stop,
    };
    let result = consumer.run(&mut tally).await;
    // The summary is printed on failure too: what was settled must not be hidden.
    let mut summary = format!("acked {}, nacked {}", tally.acked, tally.nacked);
    if tally.stale > 0 {
        summary.push_str(&format!(
            ", stale {} (not settled in time; they come back)",
            tally.stale
        ));
    }
    if tally.released > 0 {
        summary.push_str(&format!(", released {} unprocessed", tally.released));
    }
    eprintln!("{summary}");
    result
}

/// `<hostname>-<pid>`: unique enough among the members of a group, and says where each
/// one runs.
fn default_member() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().chars().take(100).collect::<String>())
        .filter(|h| !h.is_empty() && !h.chars().any(char::is_control))
        .unwrap_or_else(|| "tributary".to_owned());
    format!("{host}-{}", std::process::id())
}

/// Becomes true at the first SIGINT or SIGTERM. A second one exits at once, for a
/// command that does not finish.
fn stop_signal() -> std::io::Result<watch::Receiver<bool>> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        eprintln!("stopping: finishing the current delivery");
        let _ = tx.send(true);
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        eprintln!("stopped at once; unsettled deliveries come back after the group's ack_wait");
        std::process::exit(130);
    });
    Ok(rx)
}

struct Consumer<'a> {
    client: &'a Client,
    args: &'a ConsumeArgs,
    member: &'a str,
    stop: watch::Receiver<bool>,
}

/// How one delivery went.
enum Outcome {
    Ack,
    Nack(String),
    /// Not processed (stdout was closed): hand it back and stop.
    Release,
}

impl Consumer<'_> {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    fn group(&self) -> &str {
        &self.args.group
    }

    async fn run(mut self, tally: &mut Tally) -> anyhow::Result<()> {
        // Copies of the references, so that pulling does not borrow `self` while a
        // stop signal is awaited on `self.stop`.
        let (client, group) = (self.client, self.args.group.as_str());
        let mut retry = RETRY_FIRST;
        loop {
            let remaining = self.args.count.map(|n| n.saturating_sub(tally.acked));
            if self.stopping() || remaining == Some(0) {
                return Ok(());
            }
            // Never take more than --count still needs: the rest would sit unprocessed.
            let max = remaining.map_or(usize::from(self.args.max), |r| {
                usize::from(self.args.max).min(usize::try_from(r).unwrap_or(usize::MAX))
            });
            let pull = client.pull(group, self.member, max, POLL_WAIT);
            let pulled = tokio::select! {
                pulled = pull => pulled,
                // Whatever the server hands out as the pull is dropped comes back after
                // the group's ack_wait, as at-least-once allows.
                _ = self.stop.changed() => return Ok(()),
            };
            let deliveries = match pulled {
                Ok(deliveries) => {
                    retry = RETRY_FIRST;
                    deliveries
                }
                Err(e) if is_transient(&e) => {
                    tracing::warn!("pulling from group {group} failed: {e}; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(retry) => {}
                        _ = self.stop.changed() => return Ok(()),
                    }
                    retry = (retry * 2).min(RETRY_MAX);
                    continue;
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("pulling from group {group}"));
                }
            };
            let mut pending = deliveries.into_iter();
            while let Some(delivery) = pending.next() {
                let outcome = self.handle(&delivery).await?;
                let finished = match outcome {
                    Outcome::Ack => {
                        self.settle(&delivery, None, tally).await?;
                        false
                    }
                    Outcome::Nack(reason) => {
                        self.settle(&delivery, Some(reason), tally).await?;
                        false
                    }
                    Outcome::Release => {
                        self.release(std::iter::once(delivery), tally).await;
                        true
                    }
                };
                let counted = self.args.count.is_some_and(|n| tally.acked >= n);
                if finished || counted || self.stopping() {
                    self.release(pending, tally).await;
                    return Ok(());
                }
            }
        }
    }

    /// Runs the command on a delivery, or prints it.
    async fn handle(&self, delivery: &Delivery) -> anyhow::Result<Outcome> {
        let json = serde_json::to_string(&delivery.event)?;
        match &self.args.exec {
            Some(command) => run_command(command, delivery, &json).await,
            None if print_line(&json)? => Ok(Outcome::Ack),
            // stdout was closed (`| head`): nobody saw it.
            None => Ok(Outcome::Release),
        }
    }

    /// Acks (`nack_reason` None) or nacks one delivery, retrying through a server
    /// restart. A delivery that is no longer current is counted, not fatal: it has
    /// already come back, or will.
    async fn settle(
        &self,
        delivery: &Delivery,
        nack_reason: Option<String>,
        tally: &mut Tally,
    ) -> anyhow::Result<()> {
        let ids = [delivery.delivery_id.as_str()];
        let mut retry = RETRY_FIRST;
        for attempt in 1..=SETTLE_ATTEMPTS {
            let result = match &nack_reason {
                None => self.client.ack(self.group(), &ids).await,
                Some(reason) => {
                    self.client
                        .nack(self.group(), &ids, None, Some(reason))
                        .await
                }
            };
            match result {
                Ok(_) if nack_reason.is_none() => {
                    tally.acked += 1;
                    return Ok(());
                }
                Ok(_) => {
                    tally.nacked += 1;
                    eprintln!(
                        "nacked position {} (delivery {}, attempt {}): {}",
                        delivery.event.position,
                        delivery.delivery_id,
                        delivery.attempt,
                        nack_reason.as_deref().unwrap_or_default()
                    );
                    return Ok(());
                }
                Err(e) if e.code() == Some("stale_delivery") => {
                    tally.stale += 1;
                    eprintln!(
                        "delivery {} (position {}) expired before it was settled; it comes back",
                        delivery.delivery_id, delivery.event.position
                    );
                    return Ok(());
                }
                Err(e) if is_transient(&e) && attempt < SETTLE_ATTEMPTS => {
                    tracing::warn!(
                        "settling delivery {} failed: {e}; retrying",
                        delivery.delivery_id
                    );
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(RETRY_MAX);
                }
                Err(e) => {
                    let what = if nack_reason.is_some() {
                        "nacking"
                    } else {
                        "acking"
                    };
                    return Err(e).with_context(|| {
                        format!(
                            "{what} delivery {} of group {}",
                            delivery.delivery_id,
                            self.group()
                        )
                    });
                }
            }
        }
        unreachable!("the last attempt returns")
    }

    /// Hands deliveries we will not process back at once (a nack without delay), so
    /// they and the keys they hold up do not wait out the group's ack_wait. Best effort:
    /// if it fails, they come back after ack_wait all the same.
    async fn release(&self, deliveries: impl Iterator<Item = Delivery>, tally: &mut Tally) {
        let ids: Vec<String> = deliveries.map(|d| d.delivery_id).collect();
        if ids.is_empty() {
            return;
        }
        let reason = "released unprocessed: the consumer stopped";
        match self
            .client
            .nack(self.group(), &ids, Some(Duration::ZERO), Some(reason))
            .await
        {
            Ok(n) => tally.released += n,
            Err(e) => tracing::warn!("handing back {} deliveries failed: {e}", ids.len()),
        }
    }
}

/// Errors worth retrying: the request did not get through, or the server is
/// restarting or overloaded. A 4xx will not change by itself.
fn is_transient(e: &ClientError) -> bool {
    match e {
        ClientError::Http(_) => true,
        ClientError::Api { status, .. } => status.is_server_error(),
        _ => false,
    }
}

/// Runs `command` through `sh -c` for one delivery: the event's JSON (and a newline) on
/// stdin, its stdout ours, its stderr passed through to ours while we keep the last
/// line for the nack reason.
async fn run_command(command: &str, delivery: &Delivery, json: &str) -> anyhow::Result<Outcome> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("TRIBUTARY_DELIVERY_ID", &delivery.delivery_id)
        .env("TRIBUTARY_ATTEMPT", delivery.attempt.to_string())
        .env("TRIBUTARY_POSITION", delivery.event.position.to_string())
        .env("TRIBUTARY_TOPIC", delivery.event.topic.as_str())
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting sh -c for --exec")?;
    let Some(mut stdin) = child.stdin.take() else {
        bail!("the command's stdin was not piped");
    };
    let Some(stderr) = child.stderr.take() else {
        bail!("the command's stderr was not piped");
    };
    let mut input = json.as_bytes().to_vec();
    input.push(b'\n');
    // Written while the command runs: an event larger than the pipe buffer would
    // otherwise block us on a command that is blocked on its full stderr.
    let feed = async move {
        match stdin.write_all(&input).await {
            // A command that does not read its input closes the pipe: that is its right.
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                tracing::warn!("writing the event to the command's stdin: {e}");
            }
            _ => {}
        }
        drop(stdin);
    };
    let last_line = Arc::new(Mutex::new(String::new()));
    let reader = tokio::spawn(pass_stderr_through(stderr, Arc::clone(&last_line)));
    let ((), status) = tokio::join!(feed, child.wait());
    let status = status.context("waiting for the command")?;
    // Something the command left in the background may hold its stderr open.
    if tokio::time::timeout(STDERR_GRACE, reader).await.is_err() {
        tracing::debug!("the command's stderr is still open; no longer reading it");
    }
    if status.success() {
        return Ok(Outcome::Ack);
    }
    let last = last_line.lock().map(|l| l.clone()).unwrap_or_default();
    Ok(Outcome::Nack(nack_reason(status, &last)))
}

/// Copies a command's stderr to ours line by line, keeping its last non-blank line.
async fn pass_stderr_through(stderr: tokio::process::ChildStderr, last_line: Arc<Mutex<String>>) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let mut out = tokio::io::stderr();
                let _ = out.write_all(&line).await;
                let _ = out.flush().await;
                let text = String::from_utf8_lossy(&line);
                let text = text.trim();
                if !text.is_empty()
                    && let Ok(mut last) = last_line.lock()
                {
                    *last = text.to_owned();
                }
            }
        }
    }
}

/// `exit status N` (or `killed by signal N`), then the command's last stderr line,
/// shortened.
fn nack_reason(status: ExitStatus, last_stderr_line: &str) -> String {
    use std::os::unix::process::ExitStatusExt;
    let mut reason = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    };
    if !last_stderr_line.is_empty() {
        reason.push_str(": ");
        let mut chars = last_stderr_line.chars();
        reason.extend(chars.by_ref().take(REASON_TAIL_CHARS));
        if chars.next().is_some() {
            reason.push('…');
        }
    }
    reason
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn nack_reasons_name_the_status_and_the_last_stderr_line() {
        // A raw wait status: exit code in the high byte, signal in the low bits.
        let exited = |code: i32| ExitStatus::from_raw(code << 8);
        assert_eq!(nack_reason(exited(1), ""), "exit status 1");
        assert_eq!(
            nack_reason(exited(3), "no such order"),
            "exit status 3: no such order"
        );
        assert_eq!(
            nack_reason(ExitStatus::from_raw(9), ""),
            "killed by signal 9"
        );
        let long = "é".repeat(500);
        let reason = nack_reason(exited(1), &long);
        assert_eq!(
            reason.chars().count(),
            "exit status 1: ".len() + REASON_TAIL_CHARS + 1
        );
        assert!(reason.ends_with('…'));
    }

    #[test]
    fn default_member_names_the_host_and_process() {
        let member = default_member();
        assert!(
            member.ends_with(&format!("-{}", std::process::id())),
            "{member}"
        );
        assert!(member.len() <= 128);
    }
}
