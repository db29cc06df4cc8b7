//! The command line as a user runs it: `tributary serve` on a fresh data directory, then
//! `tributary publish`, `tributary tail`, `tributary history` and `tributary topics`.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use super::harness::{Server, command, finish, spawn_cli};

fn run(args: &[&str], stdin: Option<&str>) -> (bool, Vec<Value>, String) {
    let out = finish(spawn_cli(args, stdin), Duration::from_secs(30));
    (out.ok, out.lines, out.stderr)
}

#[test]
fn serve_publish_tail_history_topics() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fresh");
    let server = Server::start(&data);
    assert!(data.join("tributary.db").exists(), "the data dir was made");
    let url = server.url.as_str();

    let (ok, out, err) = run(
        &[
            "publish",
            "--url",
            url,
            "--topic",
            "cli.demo",
            "--name",
            "v1.Hello",
            "--args",
            r#"{"who":"cli"}"#,
            "--id",
            "hello-1",
        ],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(
        out,
        [serde_json::json!({"position": 1, "seq": 1, "duplicate": false})]
    );

    let ndjson: String = (0..25)
        .map(|i| format!("{{\"topic\":\"cli.bulk\",\"name\":\"v1.Row\",\"args\":{{\"i\":{i}}}}}\n"))
        .collect();
    let (ok, out, err) = run(
        &["publish", "--url", url, "--stdin", "--batch-size", "10"],
        Some(&format!("{ndjson}\n")),
    );
    assert!(ok, "{err}");
    assert_eq!(out.len(), 1, "one summary line");
    assert_eq!(out[0]["events"], 25);
    assert_eq!(out[0]["first_position"], 2);
    assert_eq!(out[0]["last_position"], 26);

    // A bad line stops the run and names the line; what came before it is published.
    let (ok, _, err) = run(
        &["publish", "--url", url, "--stdin"],
        Some("{\"topic\":\"cli.bulk\",\"name\":\"ok\"}\nnot json\n"),
    );
    assert!(!ok);
    assert!(err.contains("line 2"), "{err}");

    let (ok, out, err) = run(
        &[
            "tail",
            "--url",
            url,
            "--topic",
            "cli.>",
            "--from-start",
            "--until",
            "27",
        ],
        None,
    );
    assert!(ok, "{err}");
    let positions: Vec<u64> = out
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, (1..=27).collect::<Vec<_>>());
    assert_eq!(out[0]["name"], "v1.Hello");
    assert_eq!(out[0]["args"]["who"], "cli");

    let (ok, out, err) = run(
        &[
            "history", "--url", url, "--topic", "cli.bulk", "--limit", "7", "--all",
        ],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(out.len(), 26);
    assert!(out.iter().all(|e| e["topic"] == "cli.bulk"));

    let (ok, out, err) = run(&["topics", "--url", url], None);
    assert!(ok, "{err}");
    let summary: Vec<(String, u64)> = out
        .iter()
        .map(|t| {
            (
                t["topic"].as_str().unwrap().to_owned(),
                t["head_seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [("cli.bulk".to_owned(), 26), ("cli.demo".to_owned(), 1)]
    );
}

#[test]
fn unknown_config_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("t.toml");
    std::fs::write(&config, "heartbeat = 5\n").unwrap();
    let out = command()
        .args(["serve", "--addr", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "no listening line");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown field `heartbeat`"), "{err}");
}

#[test]
fn tail_survives_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let url = server.url.clone();
    let publish = |n: u32| {
        let args = format!("{{\"n\":{n}}}");
        let (ok, _, err) = run(
            &[
                "publish", "--url", &url, "--topic", "t", "--name", "e", "--args", &args,
            ],
            None,
        );
        assert!(ok, "{err}");
    };
    publish(1);

    let mut tail = command()
        .args(["tail", "--from-start", "--until", "4", "--url", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let out = tail.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let _ = lines_tx.send(line.unwrap());
        }
    });
    let next = || {
        lines
            .recv_timeout(Duration::from_secs(20))
            .expect("a tail line")
    };
    let mut got = vec![next()];
    // Published while the tail is live.
    publish(2);
    got.push(next());

    let addr = server.addr.clone();
    let (status, _) = server.terminate(Duration::from_secs(10));
    assert!(status.success());
    // Same address, same data: the tail reconnects and resumes after position 2.
    let server = Server::start_with(dir.path(), &addr, &[]);
    publish(3);
    publish(4);
    got.extend([next(), next()]);
    let status = tail.wait().unwrap();
    assert!(status.success(), "tail ends with --until");
    let positions: Vec<u64> = got
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["position"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(positions, [1, 2, 3, 4]);
    assert!(
        lines.recv_timeout(Duration::from_millis(200)).is_err(),
        "nothing doubled"
    );
    drop(server);
}
