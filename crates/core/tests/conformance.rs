//! The conformance suite against the in-memory log.

use std::sync::Arc;

use tributary_core::{Log, MemoryLog};

tributary_conformance::log_conformance!(async { (Arc::new(MemoryLog::new()) as Arc<dyn Log>, ()) });
