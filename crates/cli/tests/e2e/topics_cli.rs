//! `tributary topics` subcommands against the real binary.
//!
//! A user caps a topic, publishes past the cap, watches retention cut it, changes and
//! deletes its settings, and reads with cursors that retention overtook: `tail` warns on
//! stderr and goes on, `history` fails with the cursor to read on with.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::harness::{Run, Server, finish, spawn_cli};

const TOPIC: &str = "e2e.capped";

fn run(args: &[&str], stdin: Option<&str>) -> Run {
    finish(spawn_cli(args, stdin), Duration::from_secs(30))
}

/// A run that must succeed and print exactly one JSON line.
fn one(args: &[&str]) -> Value {
    let r = run(args, None);
    assert!(r.ok, "tributary {args:?} failed: {}", r.stderr);
    assert_eq!(r.lines.len(), 1, "one line from {args:?}: {:?}", r.lines);
    r.lines.into_iter().next().unwrap()
}

/// A run that must fail; returns its stderr.
fn fails(args: &[&str]) -> String {
    let r = run(args, None);
    assert!(
        !r.ok,
        "tributary {args:?} should fail, printed {:?}",
        r.lines
    );
    assert!(r.lines.is_empty(), "nothing on stdout: {:?}", r.lines);
    assert!(r.stderr.starts_with("error: "), "{}", r.stderr);
    r.stderr
}

#[test]
fn topics_create_show_set_delete_and_reads_behind_retention() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        &dir.path().join("data"),
        "127.0.0.1:0",
        &[("TRIBUTARY_RETENTION_INTERVAL_SECS", "1")],
    );
    let url = server.url.as_str();

    let created = one(&["topics", "create", TOPIC, "--url", url, "--max-events", "3"]);
    assert_eq!(created["topic"], TOPIC);
    assert_eq!(created["event_count"], 0);
    assert_eq!(created["config"], json!({"max_events": 3}));

    let ndjson: String = (1..=10)
        .map(|i| format!("{{\"topic\":\"{TOPIC}\",\"name\":\"v1.Tick\",\"args\":{{\"i\":{i}}}}}\n"))
        .collect();
    let published = run(&["publish", "--url", url, "--stdin"], Some(&ndjson));
    assert!(published.ok, "{}", published.stderr);
    assert_eq!(published.lines[0]["events"], 10);
    assert_eq!(published.lines[0]["last_position"], 10);

    // The retention pass (every second here) cuts the topic to its newest 3.
    let deadline = Instant::now() + Duration::from_secs(20);
    let shown = loop {
        let shown = one(&["topics", "show", TOPIC, "--url", url]);
        if shown["event_count"] == 3 {
            break shown;
        }
        assert!(
            Instant::now() < deadline,
            "retention did not cut {TOPIC} to 3 events: {shown}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(shown["head_seq"], 10);
    assert_eq!(shown["pruned_seq"], 7);
    assert_eq!(shown["pruned_position"], 7);
    assert_eq!(shown["config"], json!({"max_events": 3}));

    // `tail` from a position retention overtook: a warning, then what is left.
    let tail = run(
        &[
            "tail",
            "--url",
            url,
            "--topic",
            TOPIC,
            "--since",
            "1",
            "--snapshot",
        ],
        None,
    );
    assert!(tail.ok, "{}", tail.stderr);
    let positions: Vec<&Value> = tail.lines.iter().map(|e| &e["position"]).collect();
    assert_eq!(positions, [8, 9, 10]);
    assert!(
        tail.stderr.contains(
            "warning: events after position 1 up to 7 were removed by retention before they could be shown"
        ),
        "{}",
        tail.stderr
    );
    // From the start nothing promised is missing, so there is no warning.
    let from_start = run(
        &["tail", "--url", url, "--topic", TOPIC, "--snapshot"],
        None,
    );
    assert!(from_start.ok, "{}", from_start.stderr);
    assert_eq!(from_start.lines.len(), 3);
    assert!(
        !from_start.stderr.contains("warning"),
        "{}",
        from_start.stderr
    );

    // `history` from a cursor retention overtook fails, naming the cursor to read on with.
    let err = fails(&["history", "--url", url, "--topic", TOPIC, "--cursor", "1"]);
    assert!(
        err.contains("events after position 1 up to 7 were removed by retention")
            && err.contains("position 8")
            && err.contains("--cursor 1~7"),
        "{err}"
    );
    let resumed = run(
        &["history", "--url", url, "--topic", TOPIC, "--cursor", "1~7"],
        None,
    );
    assert!(resumed.ok, "{}", resumed.stderr);
    let positions: Vec<&Value> = resumed.lines.iter().map(|e| &e["position"]).collect();
    assert_eq!(positions, [8, 9, 10]);

    // `set` replaces the settings; the events left stay.
    let set = one(&["topics", "set", TOPIC, "--url", url, "--max-events", "5"]);
    assert_eq!(set["config"], json!({"max_events": 5}));
    assert_eq!(set["event_count"], 3);

    let err = fails(&["topics", "create", TOPIC, "--url", url, "--max-events", "3"]);
    assert!(
        err.contains(&format!("creating topic {TOPIC}: it has settings already"))
            && err.contains(&format!("tributary topics set {TOPIC}")),
        "{err}"
    );
    let err = fails(&["topics", "set", TOPIC, "--url", url, "--max-events", "0"]);
    assert!(
        err.contains(&format!("setting topic {TOPIC}"))
            && err.contains("max_events")
            && err.contains("invalid_parameter"),
        "{err}"
    );
    let err = fails(&["topics", "create", TOPIC, "--url", url, "--max-age", "soon"]);
    assert!(err.contains("invalid duration \"soon\""), "{err}");

    // Bare `topics` still lists, as `topics list` does.
    let listed = run(&["topics", "--url", url], None);
    assert!(listed.ok, "{}", listed.stderr);
    assert_eq!(listed.lines.len(), 1);
    assert_eq!(listed.lines[0]["topic"], TOPIC);
    assert_eq!(listed.lines[0]["config"], json!({"max_events": 5}));
    let list = run(&["topics", "list", "--url", url], None);
    assert_eq!(list.lines, listed.lines);

    let deleted = one(&["topics", "delete", TOPIC, "--url", url]);
    assert_eq!(deleted, json!({"topic": TOPIC, "deleted_events": 3}));
    let err = fails(&["topics", "show", TOPIC, "--url", url]);
    assert!(err.contains(&format!("no topic named {TOPIC}")), "{err}");
    let err = fails(&["topics", "delete", TOPIC, "--url", url]);
    assert!(
        err.contains(&format!("deleting topic {TOPIC}")) && err.contains("not_found"),
        "{err}"
    );
    let listed = run(&["topics", "--url", url], None);
    assert!(listed.ok && listed.lines.is_empty(), "{:?}", listed.lines);
}
