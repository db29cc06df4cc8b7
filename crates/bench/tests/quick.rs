//! The `--quick` smoke run, so the harness never rots: every scenario runs at tiny sizes
//! against the real `tributary` binary, must lose and double nothing, and must write a
//! result file with positive figures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The server binary: `TRIBUTARY_BIN`, else `tributary` beside this package's binary
/// (cargo builds every workspace binary into the same target dir).
fn tributary_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("TRIBUTARY_BIN") {
        return PathBuf::from(path);
    }
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_tributary-bench"));
    bench.with_file_name("tributary")
}

/// `tributary-bench --quick ARGS` against `tributary`, its results into `out`.
fn quick_run(tributary: &Path, out: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tributary-bench"))
        .arg("--quick")
        .args(args)
        .arg("--out")
        .arg(out)
        .arg("--tributary-bin")
        .arg(tributary)
        .output()
        .expect("the bench binary runs")
}

fn read(dir: &Path, name: &str) -> Value {
    let path = dir.join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} was not written: {e}", path.display()));
    serde_json::from_str(&text).expect("a result file is JSON")
}

fn positive(v: &Value, what: &str) {
    let x = v
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"));
    assert!(x > 0.0, "{what} is {x}");
}

#[test]
fn quick_run_loses_nothing_and_writes_every_result() {
    let tributary = tributary_bin();
    assert!(
        tributary.is_file(),
        "{} is missing: build the workspace first (cargo build --workspace, as scripts/test.sh does)",
        tributary.display()
    );
    let redis = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("redis-server").is_file()))
        .unwrap_or(false);
    if !redis {
        println!(
            "redis-server is not installed: the quick run skips the Redis peer (scripts/bench-peers.sh installs it)"
        );
    }
    // NATS and PostgreSQL are found (or found missing, and skipped with a message) by the
    // bench binary itself; its output, printed below, says which.
    let out = tempfile::tempdir().expect("a temp dir");
    let started = std::time::Instant::now();
    let output = quick_run(&tributary, out.path(), &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "the quick run failed: {}",
        output.status
    );
    // About 35 s alone without peers, about a minute with Redis, NATS and PostgreSQL
    // installed (initdb per PostgreSQL start, S6's 2 s ack wait, S5's NATS preload); the
    // bound leaves room for a busy machine running other tests.
    assert!(
        started.elapsed().as_secs() < 150,
        "the quick run took {:?}",
        started.elapsed()
    );

    for name in ["s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8"] {
        let json = read(out.path(), name);
        assert_eq!(json["failures"], Value::Array(vec![]), "{name}: {json}");
        assert_eq!(json["quick"], true, "{name}");
    }

    let s1 = read(out.path(), "s1");
    for setting in s1["results"].as_array().expect("s1 results") {
        for system in setting["systems"].as_array().expect("s1 systems") {
            positive(&system["median_events_per_s"], "s1 events/s");
            positive(&system["median_ack_p50_ms"], "s1 ack p50");
        }
        // One ratio per peer that is installed (none when no peer is).
        for ratio in setting["ratios_events_per_s"]
            .as_array()
            .expect("s1 ratios")
        {
            positive(&ratio["median"], "s1 ratio");
        }
    }

    let s6 = read(out.path(), "s6");
    for setting in s6["results"].as_array().expect("s6 results") {
        for system in setting["systems"].as_array().expect("s6 systems") {
            positive(&system["median_events_per_s"], "s6 events/s");
            assert_eq!(system["loss"], 0, "s6 loses nothing: {setting}");
        }
        if setting["kill_one_member"] == true {
            for system in setting["systems"].as_array().expect("s6 systems") {
                for round in system["rounds"].as_array().expect("s6 rounds") {
                    positive(
                        &round["dropped_by_killed_member"],
                        "s6 deliveries the killed member dropped",
                    );
                    positive(&round["redeliveries"], "s6 redeliveries after the kill");
                }
            }
        }
    }

    let s2 = read(out.path(), "s2");
    let s2_results = s2["results"].as_array().expect("s2 results");
    assert!(s2_results.len() >= 2, "rusqlite and tributary: {s2}");
    for r in s2_results {
        positive(&r["median_events_per_s"], "s2 events/s");
    }
    for r in s2["ratios"].as_array().expect("s2 ratios") {
        positive(&r["ratio"]["median"], "s2 ratio");
    }

    let s3 = read(out.path(), "s3");
    for setting in s3["results"].as_array().expect("s3 results") {
        for system in setting["systems"].as_array().expect("s3 systems") {
            for round in system["rounds"].as_array().expect("s3 rounds") {
                positive(&round["deliveries"], "s3 deliveries");
                let subscribers = setting["subscribers"].as_u64().expect("subscribers");
                let published = round["published"].as_u64().expect("published");
                assert_eq!(
                    round["deliveries"].as_u64(),
                    Some(subscribers * published),
                    "every subscriber gets every event once: {round}"
                );
            }
            positive(&system["median_p95_ms"], "s3 p95");
        }
        positive(&setting["ratio_p95"]["median"], "s3 ratio");
    }

    let s4 = read(out.path(), "s4");
    for system in s4["systems"].as_array().expect("s4 systems") {
        // The first, slowest step of a quick run holds on any machine.
        positive(
            &system["median_capacity_deliveries_per_s"],
            "s4 capacity deliveries/s",
        );
        positive(
            &system["median_server_cpu_s_per_million_deliveries"],
            "s4 server CPU per delivery",
        );
    }

    let s7 = read(out.path(), "s7");
    for setting in s7["results"].as_array().expect("s7 results") {
        for system in setting["systems"].as_array().expect("s7 systems") {
            // The connections cost something, and nothing absurd (a reading of the wrong
            // process, or of a unit off by 1000, would be one or the other).
            let kb = system["median_idle_kb_per_connection"]
                .as_f64()
                .expect("s7 idle KB");
            assert!(
                (0.5..500.0).contains(&kb),
                "s7 idle KB per connection: {system}"
            );
        }
    }
    let s5 = read(out.path(), "s5");
    let s5_events = s5["events"].as_u64().expect("s5 events");
    let from_start = &s5["results"][0];
    // Tributary's reader, and NATS's when it is installed.
    for system in from_start["systems"].as_array().expect("s5 systems") {
        positive(&system["median_events_per_s"], "s5 one reader events/s");
        for round in system["rounds"].as_array().expect("s5 rounds") {
            assert_eq!(round["events"].as_u64(), Some(s5_events), "{round}");
        }
    }
    let live = &s5["results"][1];
    let subscribers = s5["live_subscribers"]
        .as_u64()
        .expect("s5 live subscribers");
    for phase in live["phases"].as_array().expect("s5 phases") {
        positive(&phase["median_p99_ms"], "s5 live p99");
        for round in phase["rounds"].as_array().expect("s5 rounds") {
            let published = round["published"].as_u64().expect("published");
            assert_eq!(
                round["deliveries"].as_u64(),
                Some(subscribers * published),
                "every live subscriber gets every event once: {round}"
            );
            if phase["catchup_readers"].as_u64() > Some(0) {
                positive(&round["catchup_events"], "s5 catch-up events");
            }
        }
    }
    positive(&live["ratio_p99"]["median"], "s5 live p99 ratio");

    let s8 = read(out.path(), "s8");
    positive(&s8["events"], "s8 events");
    assert_eq!(s8["gaps"], 0, "{s8}");
    assert_eq!(s8["duplicates_delivered"], 0, "{s8}");
    assert_eq!(s8["missing"], 0, "{s8}");
    assert_eq!(s8["met"], true, "{s8}");
}

/// The harness must be able to fail: a server that loses events makes the run exit
/// non-zero and name the gap.
#[test]
fn a_gap_fails_the_run() {
    let tributary = tributary_bin();
    assert!(tributary.is_file(), "{} is missing", tributary.display());
    let out = tempfile::tempdir().expect("a temp dir");
    let output = quick_run(
        &tributary,
        out.path(),
        &[
            "--scenarios",
            "s3",
            "--rounds",
            "1",
            "--naive-drop-every",
            "5",
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a lossy server passed: {stderr}");
    assert!(stderr.contains("gaps"), "{stderr}");
    let s3 = read(out.path(), "s3");
    assert_ne!(s3["failures"], Value::Array(vec![]), "{s3}");
}
