//! The suite every backend passes, on a fresh database file per case.

use tributary_sqlite::{SqliteLog, SqliteOptions};

tributary_conformance::log_conformance!(async {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteLog::open(&dir.path().join("t.db"), SqliteOptions::default()).unwrap();
    (
        std::sync::Arc::new(log) as std::sync::Arc<dyn tributary_core::Log>,
        dir,
    )
});
