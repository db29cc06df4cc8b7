use std::path::Path;

use tributary_core::{Args, Event, Filter, Log, NewEvent, ReadQuery, Topic};
use tributary_sqlite::{SqliteLog, SqliteOptions};

pub fn open(path: &Path) -> SqliteLog {
    SqliteLog::open(path, SqliteOptions::default()).expect("open the log")
}

pub fn ev(topic: &str, name: &str) -> NewEvent {
    NewEvent::new(
        Topic::new(topic).unwrap(),
        name,
        Args::from_json(r#"{"k":1}"#).unwrap(),
    )
}

pub async fn all_events(log: &dyn Log) -> Vec<Event> {
    log.read(ReadQuery {
        after: 0,
        up_to: u64::MAX,
        filter: &Filter::all(),
        limit: usize::MAX,
    })
    .await
    .unwrap()
}
