//! The group store conformance suite against the in-memory store, which is also the
//! reference the suite's expectations come from.

use std::sync::Arc;

use tributary_core::{GroupStore, MemoryGroupStore};

tributary_conformance::group_store_conformance!(async {
    (Arc::new(MemoryGroupStore::new()) as Arc<dyn GroupStore>, ())
});
