//! S2: durable batched publishes, 100 events per request. Tributary (concurrent batch
//! publishers, closed loop) against raw rusqlite in this process inserting batches of
//! 100 into the same schema with the same pragmas (WAL, synchronous = FULL), one
//! transaction per batch: what the storage engine alone can do, with no HTTP, no JSON,
//! no group commit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};
use serde_json::{Value, json};

use super::{check_tributary_log, data_dir, publish_phase, tributary_sinks};
use crate::load::{Clock, args_json, padding};
use crate::procs::start_tributary;
use crate::report::{Goal, ScenarioReport, Table, fmt_num, ratio_cell, ratio_json};
use crate::stats::{Ratio, median};
use crate::{BenchError, Config};

const TOPIC: &str = "bench.s2";
/// The goal: at least 0.7× raw rusqlite.
const GOAL: Goal = Goal::AtLeast(0.7);

/// Raw rusqlite: batches of `batch` for `phase`, one IMMEDIATE transaction each (read the
/// last position and the topic head, insert the events with fresh UUIDv7 ids, upsert the
/// topic), as Tributary's writer does for one request. Returns events/s, events inserted, and the rows counted after.
fn rusqlite_baseline(
    batch: usize,
    phase: Duration,
    pad: &str,
) -> Result<(f64, u64, u64), BenchError> {
    let dir = data_dir()?;
    let sq = |context| move |source| BenchError::Sqlite { context, source };
    let mut conn = Connection::open(dir.path().join("raw.db")).map_err(sq("opening"))?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(sq("journal_mode"))?;
    assert!(mode.eq_ignore_ascii_case("wal"), "the temp dir refuses WAL");
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sq("synchronous"))?;
    // Tributary's own schema, so the baseline writes to the same tables and indexes.
    tributary_sqlite::create_schema(&mut conn).map_err(BenchError::Schema)?;
    let start = Instant::now();
    let end = start + phase;
    let mut seq = 0u64;
    while Instant::now() < end {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sq("begin"))?;
        {
            let last: u64 = tx
                .prepare_cached("SELECT coalesce(max(position), 0) FROM events")
                .and_then(|mut s| s.query_row([], |r| r.get(0)))
                .map_err(sq("reading the last position"))?;
            let head: u64 = tx
                .prepare_cached("SELECT coalesce((SELECT head_seq FROM topics WHERE name = ?1), 0)")
                .and_then(|mut s| s.query_row([TOPIC], |r| r.get(0)))
                .map_err(sq("reading the topic head"))?;
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO events (position, topic, seq, name, args, id, client_id, session_id, timestamp)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, NULL, ?7)",
                )
                .map_err(sq("preparing the insert"))?;
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            for i in 0..batch as u64 {
                let args = args_json(0, seq + i, 0, pad);
                insert
                    .execute(params![
                        last + 1 + i,
                        TOPIC,
                        head + 1 + i,
                        "bench.Event",
                        args,
                        uuid::Uuid::now_v7().to_string(),
                        now_ms
                    ])
                    .map_err(sq("inserting"))?;
            }
            tx.prepare_cached(
                "INSERT INTO topics (name, head_seq, event_count, last_position) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO UPDATE SET head_seq = excluded.head_seq,
                     event_count = event_count + excluded.event_count, last_position = excluded.last_position",
            )
            .and_then(|mut s| s.execute(params![TOPIC, head + batch as u64, batch as u64, last + batch as u64]))
            .map_err(sq("upserting the topic"))?;
        }
        tx.commit().map_err(sq("commit"))?;
        seq += batch as u64;
    }
    let stored: u64 = conn
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .map_err(sq("counting"))?;
    Ok((seq as f64 / start.elapsed().as_secs_f64(), seq, stored))
}

/// Runs S2.
pub async fn run(cfg: &Config, clock: Clock) -> Result<ScenarioReport, BenchError> {
    let pad: Arc<str> = padding(cfg.payload_bytes).into();
    let mut failures = Vec::new();
    let mut raw_rates = Vec::new();
    // Per client count, per round: Tributary's events/s.
    let mut tributary: Vec<Vec<f64>> = vec![Vec::new(); cfg.s2_clients.len()];
    for round in 0..cfg.rounds {
        let (batch, phase, p) = (cfg.s2_batch, cfg.phase, pad.clone());
        let (rate, inserted, stored) =
            tokio::task::spawn_blocking(move || rusqlite_baseline(batch, phase, &p))
                .await
                .expect("the baseline thread panicked")?;
        if stored != inserted {
            failures.push(format!(
                "s2 rusqlite round={round}: inserted {inserted}, {stored} stored"
            ));
        }
        raw_rates.push(rate);
        for (i, &clients) in cfg.s2_clients.iter().enumerate() {
            let dir = data_dir()?;
            let server = start_tributary(cfg, dir.path(), "127.0.0.1:0").await?;
            let sinks = tributary_sinks(&server.base_url(), TOPIC, clients)?;
            let run =
                publish_phase(sinks, 0, cfg.s2_batch, None, cfg.phase, clock, pad.clone()).await?;
            let client = super::tributary_client(&server.base_url())?;
            if let Some(p) = check_tributary_log(&client, TOPIC, &run.sent).await? {
                failures.push(format!("s2 tributary clients={clients} round={round}: {p}"));
            }
            tributary[i].push(run.rate());
        }
    }
    let mut table = Table::new(
        format!(
            "S2 durable batched publishes, {} events/request (events/s)",
            cfg.s2_batch
        ),
        &[
            "system",
            "events/s (median)",
            "ratio vs raw rusqlite (median, min–max)",
        ],
    );
    table.row(vec![
        "raw rusqlite, synchronous=FULL, 1 writer".into(),
        fmt_num(median(&raw_rates)),
        String::new(),
    ]);
    let mut results: Vec<Value> = vec![json!({
        "system": "rusqlite-synchronous-full",
        "median_events_per_s": median(&raw_rates),
        "rounds_events_per_s": raw_rates,
    })];
    let mut ratios_json = Vec::new();
    for (i, &clients) in cfg.s2_clients.iter().enumerate() {
        let ratios: Vec<f64> = tributary[i]
            .iter()
            .zip(&raw_rates)
            .map(|(t, r)| t / r)
            .collect();
        let ratio = Ratio::of(&ratios);
        table.row(vec![
            format!("tributary, {clients} concurrent client(s)"),
            fmt_num(median(&tributary[i])),
            ratio_cell(ratio, Some(GOAL)),
        ]);
        results.push(json!({
            "system": "tributary",
            "clients": clients,
            "median_events_per_s": median(&tributary[i]),
            "rounds_events_per_s": tributary[i],
        }));
        ratios_json.push(json!({
            "clients": clients,
            "ratio": ratio_json("tributary / rusqlite events/s", ratio, Some(GOAL)),
        }));
    }
    Ok(ScenarioReport {
        name: "s2",
        json: json!({
            "scenario": "s2",
            "description": "durable batched publishes (closed loop), Tributary vs raw rusqlite inserts of the same batches into the same schema, WAL + synchronous=FULL",
            "batch": cfg.s2_batch,
            "phase_s": cfg.phase.as_secs_f64(),
            "payload_bytes": cfg.payload_bytes,
            "results": results,
            "ratios": ratios_json,
            "failures": failures,
        }),
        table,
        failures,
    })
}
