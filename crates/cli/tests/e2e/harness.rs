//! Starting and stopping real server processes, and reading SSE off the wire.
//!
//! Every server binds 127.0.0.1, is ended by its own PID, and is killed when its handle
//! drops, so a failing test leaves nothing running.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_tributary");

/// The binary, with none of the caller's TRIBUTARY_* settings leaking in.
pub fn command() -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TRIBUTARY_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("RUST_LOG", "warn");
    cmd
}

/// What one `tributary …` run printed: its exit, stdout as JSON lines, stderr.
pub struct Run {
    pub ok: bool,
    pub lines: Vec<Value>,
    pub stderr: String,
}

/// Starts `tributary ARGS`, writing `stdin` to it if given (and closing it).
pub fn spawn_cli(args: &[&str], stdin: Option<&str>) -> Child {
    let mut child = command()
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).unwrap();
    }
    child
}

/// Waits for a CLI run; kills it (by its PID) and fails if it takes longer than `limit`.
pub fn finish(child: Child, limit: Duration) -> Run {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out: Output = match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("tributary {pid} did not finish within {limit:?}");
        }
    };
    let lines = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("a JSON line: {l:?}")))
        .collect();
    Run {
        ok: out.status.success(),
        lines,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub struct Server {
    child: Child,
    pub addr: String,
    pub url: String,
}

impl Server {
    /// A server on a free port over `data`.
    pub fn start(data: &Path) -> Server {
        Server::start_with(data, "127.0.0.1:0", &[])
    }

    /// A server on `addr` (to come back on the same port after a restart), with extra
    /// environment variables.
    pub fn start_with(data: &Path, addr: &str, env: &[(&str, &str)]) -> Server {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match Server::try_start(data, addr, env) {
                Ok(server) => return server,
                // The old process's port may take a moment to be free again.
                Err(e) if Instant::now() < deadline => {
                    eprintln!("server did not start ({e}); retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("server did not start: {e}"),
            }
        }
    }

    fn try_start(data: &Path, addr: &str, env: &[(&str, &str)]) -> Result<Server, String> {
        let mut cmd = command();
        cmd.args(["serve", "--addr", addr, "--data"])
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().map_err(|e| e.to_string())?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => {
                let url = line
                    .strip_prefix("tributary listening on ")
                    .ok_or_else(|| format!("unexpected first line {line:?}"))?
                    .trim()
                    .to_owned();
                let addr = url.trim_start_matches("http://").to_owned();
                Ok(Server { child, addr, url })
            }
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().map_err(|e| e.to_string())?;
                Err(format!("no listening line; exited with {status}"))
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`: no chance to flush or clean up.
    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// SIGTERM, then waits up to `limit` for the exit.
    pub fn terminate(mut self, limit: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "SIGTERM delivered");
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return (status, started.elapsed());
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                panic!("server did not exit within {limit:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident memory of the server process, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        kb * 1024
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The value of one unlabelled metric in `GET /metrics`.
pub async fn metric(url: &str, name: &str) -> u64 {
    let text = http()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// POST /api/v1/events; returns status and JSON body.
pub async fn publish(url: &str, body: &Value) -> (u16, Value) {
    let resp = http()
        .post(format!("{url}/api/v1/events"))
        .json(body)
        .send()
        .await
        .expect("publish request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON answer"))
}

pub async fn get_json(url: &str) -> (u16, Value) {
    let resp = http().get(url).send().await.expect("GET");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON answer"))
}

/// Every event in the log, through history pages.
pub async fn all_events(url: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = "0".to_owned();
    loop {
        let (status, page) = get_json(&format!(
            "{url}/api/v1/events/history?limit=1000&cursor={cursor}"
        ))
        .await;
        assert_eq!(status, 200, "{page}");
        out.extend(page["events"].as_array().unwrap().iter().cloned());
        cursor = page["next_cursor"].as_str().unwrap().to_owned();
        if !page["has_more"].as_bool().unwrap() {
            return out;
        }
    }
}

/// One SSE frame as it came off the wire.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    pub id: Option<u64>,
    pub event: Option<String>,
    pub data: String,
    pub comment: bool,
    pub retry: Option<u64>,
}

impl Frame {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("data is JSON")
    }
}

/// Reads SSE frames from a response, one at a time.
pub struct SseReader {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: Vec<u8>,
}

impl SseReader {
    /// Opens `GET {url}` with an optional Last-Event-ID; panics unless it is a 200 stream.
    pub async fn open(url: &str, last_event_id: Option<u64>) -> SseReader {
        let client = reqwest::Client::new();
        let mut req = client.get(url);
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let resp = req.send().await.expect("stream request");
        assert_eq!(resp.status().as_u16(), 200, "stream status");
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        SseReader {
            body: resp.bytes_stream().boxed(),
            buf: Vec::new(),
        }
    }

    /// The next frame, or None when the server closed the stream.
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let raw: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8(raw).expect("UTF-8 frames");
                let mut frame = Frame::default();
                let mut data = Vec::new();
                for line in text.trim_end_matches('\n').split('\n') {
                    if line.starts_with(':') {
                        frame.comment = true;
                        continue;
                    }
                    let (field, value) = line.split_once(": ").unwrap_or((line, ""));
                    match field {
                        "id" => frame.id = Some(value.parse().expect("numeric id")),
                        "event" => frame.event = Some(value.to_owned()),
                        "data" => data.push(value.to_owned()),
                        "retry" => frame.retry = Some(value.parse().expect("numeric retry")),
                        other => panic!("unexpected SSE field {other:?}"),
                    }
                }
                frame.data = data.join("\n");
                return Some(frame);
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// The next frame that is an event (skipping retry, heartbeats and markers).
    pub async fn next_event(&mut self, within: Duration) -> Option<Frame> {
        tokio::time::timeout(within, async {
            loop {
                let frame = self.next().await?;
                if frame.id.is_some() {
                    return Some(frame);
                }
            }
        })
        .await
        .expect("an event arrives in time")
    }
}

pub fn event_body(topic: &str, name: &str, args: Value) -> Value {
    serde_json::json!({ "topic": topic, "name": name, "args": args })
}
