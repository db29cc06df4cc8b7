//! Consumer groups from the command line, as a script would use them: `groups create`,
//! `show`, `list`, `dlq`, `replay`, `discard` and `delete`, and `consume` with and
//! without `--exec`, against the real binary.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::harness::{Run, Server, finish, spawn_cli as spawn};

fn run(args: &[&str]) -> Run {
    finish(spawn(args, None), Duration::from_secs(60))
}

/// Runs a command that must succeed and print exactly one JSON line.
fn run_one(args: &[&str]) -> Value {
    let r = run(args);
    assert!(r.ok, "{args:?} failed: {}", r.stderr);
    assert_eq!(r.lines.len(), 1, "{args:?} printed {:?}", r.lines);
    r.lines[0].clone()
}

fn show(url: &str, group: &str) -> Value {
    run_one(&["groups", "show", group, "--url", url])
}

/// Publishes `jobs.0` … `jobs.{n-1}`, one event each (so each its own key), through
/// `publish --stdin`. On a fresh log, `jobs.i` is at position i + 1.
fn publish_jobs(url: &str, n: u64) {
    let ndjson: String = (0..n)
        .map(|i| format!("{{\"topic\":\"jobs.{i}\",\"name\":\"v1.Job\",\"args\":{{\"i\":{i}}}}}\n"))
        .collect();
    let r = finish(
        spawn(&["publish", "--stdin", "--url", url], Some(&ndjson)),
        Duration::from_secs(60),
    );
    assert!(r.ok, "publish failed: {}", r.stderr);
    assert_eq!(r.lines[0]["events"], n, "{:?}", r.lines);
}

/// A script for `--exec`: fails (exit 1, with two stderr lines) on `jobs.7` while the
/// file `fail` exists; otherwise appends its environment to `env.log` and the event it
/// read on stdin to `events.log`.
fn script(dir: &Path) -> String {
    let dir = dir.display();
    format!(
        r#"input=$(cat)
if [ "$TRIBUTARY_TOPIC" = jobs.7 ] && [ -e '{dir}/fail' ]; then
  echo "processing $TRIBUTARY_POSITION" >&2
  echo "cannot handle position $TRIBUTARY_POSITION" >&2
  exit 1
fi
printf '%s %s %s %s\n' "$TRIBUTARY_DELIVERY_ID" "$TRIBUTARY_ATTEMPT" "$TRIBUTARY_POSITION" "$TRIBUTARY_TOPIC" >> '{dir}/env.log'
printf '%s\n' "$input" >> '{dir}/events.log'"#
    )
}

/// `env.log` as (delivery id, attempt, position, topic).
fn env_log(dir: &Path) -> Vec<(String, u32, u64, String)> {
    std::fs::read_to_string(dir.join("env.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!(f.len(), 4, "{l:?}");
            (
                f[0].to_owned(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                f[3].to_owned(),
            )
        })
        .collect()
}

#[test]
fn consume_exec_acks_nacks_parks_and_replays() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let server = Server::start(&dir.path().join("data"));
    let url = server.url.as_str();
    let script = script(&work);
    std::fs::write(work.join("fail"), "").unwrap();

    // A 5 s backoff: long enough that the failing event does not come back while the
    // first consumer is still busy with the others.
    let created = run_one(&[
        "groups",
        "create",
        "work",
        "--url",
        url,
        "--topic",
        "jobs.>",
        "--start",
        "earliest",
        "--ack-wait",
        "30s",
        "--max-deliveries",
        "2",
        "--backoff",
        "5s",
        "--max-in-flight",
        "50",
        "--ordering",
        "per_key",
    ]);
    assert_eq!(created["name"], "work");
    assert_eq!(created["filter"]["topics"][0], "jobs.>");
    assert_eq!(created["ack_wait"], "30s");
    assert_eq!(created["backoff"], serde_json::json!(["5s"]));
    assert_eq!(
        (
            created["max_deliveries"].as_u64(),
            created["max_in_flight"].as_u64()
        ),
        (Some(2), Some(50))
    );
    publish_jobs(url, 20);

    // Round 1: 19 events succeed; jobs.7 (position 8) fails once and is nacked.
    let r = run(&[
        "consume", "work", "--url", url, "--exec", &script, "--member", "first", "--max", "4",
        "--count", "19",
    ]);
    assert!(r.ok, "consume failed: {}", r.stderr);
    assert!(r.lines.is_empty(), "--exec leaves stdout to the command");
    assert!(r.stderr.contains("acked 19, nacked 1"), "{}", r.stderr);
    assert!(
        r.stderr.contains("exit status 1: cannot handle position 8"),
        "the nack names the status and the last stderr line: {}",
        r.stderr
    );
    let env = env_log(&work);
    assert_eq!(env.len(), 19);
    let mut positions: Vec<u64> = env.iter().map(|e| e.2).collect();
    positions.sort_unstable();
    assert_eq!(positions, (1..=20).filter(|p| *p != 8).collect::<Vec<_>>());
    let events: Vec<Value> = std::fs::read_to_string(work.join("events.log"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 19);
    for ((id, attempt, position, topic), event) in env.iter().zip(&events) {
        assert!(!id.is_empty());
        assert_eq!(*attempt, 1);
        assert_eq!(topic, &format!("jobs.{}", position - 1));
        // The event on stdin is the one the environment describes.
        assert_eq!(event["position"], *position);
        assert_eq!(event["topic"], topic.as_str());
        assert_eq!(event["args"]["i"], position - 1);
    }
    let g = show(url, "work");
    assert_eq!(g["head"], 20, "{g}");
    assert_eq!(g["lag"], 1, "19 of 20 acked: {g}");
    assert_eq!(g["committed"], 7, "{g}");
    assert_eq!(
        (g["in_flight"].as_u64(), g["dlq_size"].as_u64()),
        (Some(0), Some(0)),
        "{g}"
    );
    assert!(g["waiting"].as_u64().unwrap() <= 1, "{g}");
    assert!(
        g["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["member"] == "first"),
        "{g}"
    );

    // Round 2: jobs.7 comes back after its backoff, fails its second and last delivery,
    // and is parked. This consumer runs until SIGTERM, which it answers with exit 0.
    let child = spawn(
        &[
            "consume", "work", "--url", url, "--exec", &script, "--member", "second",
        ],
        None,
    );
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    let parked = loop {
        let g = show(url, "work");
        if g["dlq_size"] == 1 {
            break g;
        }
        assert!(Instant::now() < deadline, "jobs.7 was not parked: {g}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let ok = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "SIGTERM delivered");
    let r = finish(child, Duration::from_secs(20));
    assert!(r.ok, "SIGTERM ends consume with exit 0: {}", r.stderr);
    assert!(r.stderr.contains("acked 0, nacked 1"), "{}", r.stderr);
    assert_eq!(parked["parked"], 1, "{parked}");
    assert_eq!(parked["redelivered"], 1, "{parked}");
    assert_eq!(parked["lag"], 0, "parked counts as done: {parked}");
    assert_eq!(parked["committed"], 20, "{parked}");

    let r = run(&["groups", "dlq", "work", "--url", url]);
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.lines.len(), 1, "{:?}", r.lines);
    let entry = &r.lines[0];
    assert_eq!(entry["id"], 8, "{entry}");
    assert_eq!(entry["attempts"], 2, "{entry}");
    assert_eq!(entry["event"]["topic"], "jobs.7", "{entry}");
    let reason = entry["reason"].as_str().unwrap();
    assert!(reason.contains("exit status 1"), "{reason}");
    assert!(reason.contains("cannot handle position 8"), "{reason}");
    assert!(entry["parked_at"].is_string(), "{entry}");
    let r = run(&["groups", "dlq", "work", "--url", url, "--limit", "1"]);
    assert_eq!(r.lines.len(), 1, "{:?}", r.lines);

    // Replay puts it back; with the failure gone, it is acked, on a fresh attempt.
    let replayed = run_one(&["groups", "replay", "work", "8", "--url", url]);
    assert_eq!(replayed["replayed"], 1);
    let g = show(url, "work");
    assert_eq!(
        (g["dlq_size"].as_u64(), g["lag"].as_u64()),
        (Some(0), Some(1)),
        "{g}"
    );
    std::fs::remove_file(work.join("fail")).unwrap();
    let r = run(&[
        "consume", "work", "--url", url, "--exec", &script, "--member", "third", "--count", "1",
    ]);
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stderr.contains("acked 1, nacked 0"), "{}", r.stderr);
    let (_, attempt, position, topic) = env_log(&work).pop().unwrap();
    assert_eq!((position, topic.as_str()), (8, "jobs.7"));
    assert_eq!(attempt, 1, "a replayed entry starts over");
    let g = show(url, "work");
    assert_eq!(
        (
            g["lag"].as_u64(),
            g["dlq_size"].as_u64(),
            g["in_flight"].as_u64()
        ),
        (Some(0), Some(0), Some(0)),
        "{g}"
    );
    assert_eq!(g["committed"], 20, "{g}");

    // Nothing left to replay or discard.
    assert_eq!(
        run_one(&["groups", "replay", "work", "--url", url])["replayed"],
        0
    );
    let r = run(&["groups", "discard", "work", "8", "--url", url]);
    assert!(!r.ok);
    assert!(r.stderr.contains("not_found"), "{}", r.stderr);
}

#[test]
fn consume_prints_events_and_groups_are_managed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let url = server.url.as_str();

    run_one(&[
        "groups", "create", "print", "--url", url, "--start", "earliest",
    ]);
    run_one(&[
        "groups",
        "create",
        "odd",
        "--url",
        url,
        "--topic",
        "jobs.1",
        "--topic",
        "jobs.3",
        "--name",
        "v1.Job",
        "--start",
        "0",
        "--ordering",
        "none",
        "--backoff",
        "",
    ]);
    publish_jobs(url, 10);

    // Without --exec: each event is one JSON line on stdout, and acked.
    let r = run(&[
        "consume", "print", "--url", url, "--count", "6", "--max", "4",
    ]);
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stderr.contains("acked 6, nacked 0"), "{}", r.stderr);
    let mut positions: Vec<u64> = r
        .lines
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    positions.sort_unstable();
    assert_eq!(positions, (1..=6).collect::<Vec<_>>(), "{:?}", r.lines);
    assert_eq!(r.lines[0]["name"], "v1.Job");
    let g = show(url, "print");
    assert_eq!(
        (g["lag"].as_u64(), g["in_flight"].as_u64()),
        (Some(4), Some(0)),
        "{g}"
    );

    // A command that ignores its stdin is fine; the filter is the group's.
    let r = run(&[
        "consume", "odd", "--url", url, "--exec", "exit 0", "--count", "2",
    ]);
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stderr.contains("acked 2, nacked 0"), "{}", r.stderr);
    let g = show(url, "odd");
    assert_eq!(g["lag"], 0, "{g}");
    assert_eq!(g["ordering"], "none", "{g}");
    assert_eq!(g["backoff"], serde_json::json!([]), "{g}");

    let r = run(&["groups", "list", "--url", url]);
    assert!(r.ok, "{}", r.stderr);
    let mut names: Vec<&str> = r
        .lines
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["odd", "print"]);

    // Mistakes are explained, and change nothing.
    let r = run(&["groups", "create", "print", "--url", url]);
    assert!(!r.ok);
    assert!(r.stderr.contains("group_exists"), "{}", r.stderr);
    let r = run(&[
        "groups",
        "create",
        "other",
        "--url",
        url,
        "--ack-wait",
        "30",
    ]);
    assert!(!r.ok);
    assert!(
        r.stderr.contains("invalid duration \"30\"") && r.stderr.contains("unit"),
        "{}",
        r.stderr
    );
    let r = run(&["groups", "create", "other", "--url", url, "--start", "soon"]);
    assert!(!r.ok);
    assert!(r.stderr.contains("earliest, latest"), "{}", r.stderr);

    assert_eq!(
        run_one(&["groups", "delete", "print", "--url", url])["deleted"],
        "print"
    );
    let r = run(&["groups", "show", "print", "--url", url]);
    assert!(!r.ok);
    assert!(r.stderr.contains("not_found"), "{}", r.stderr);
    let r = run(&["consume", "print", "--url", url, "--count", "1"]);
    assert!(!r.ok, "consuming a group that is gone is an error");
    assert!(r.stderr.contains("not_found"), "{}", r.stderr);
}
