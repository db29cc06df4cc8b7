//! The conformance suite for [`Log`] backends: one set of cases, run against every
//! backend so they cannot drift apart.
//!
//! A backend's test file calls [`log_conformance!`] with an async expression that makes
//! a fresh, empty log plus a guard to keep alive (a temp dir, say):
//!
//! ```ignore
//! tributary_conformance::log_conformance!(async {
//!     (std::sync::Arc::new(MemoryLog::new()) as std::sync::Arc<dyn Log>, ())
//! });
//! ```
//! Each case in [`cases`] becomes its own `#[tokio::test]`.

pub mod cases;

/// Expands to one `#[tokio::test]` per case in [`cases`].
#[macro_export]
macro_rules! log_conformance {
    ($make:expr) => {
        $crate::log_conformance!(@cases $make;
            append_assigns_dense_positions_and_seqs,
            batch_is_atomic_on_seq_conflict,
            expected_seq_at_head_is_accepted,
            duplicate_ids_answer_the_original,
            missing_ids_are_generated_and_unique,
            invalid_batches_are_refused_and_change_nothing,
            reads_are_keyset_pages_that_honour_filters,
            read_respects_up_to_and_limit,
            head_moves_after_append,
            position_before_finds_time,
            topics_list_heads_and_counts,
            args_and_fields_round_trip,
            concurrent_appends_stay_dense,
            closed_log_refuses_appends,
            stream_switches_from_history_to_live_without_gap,
            read_topic_pages_by_seq,
            log_id_is_stable,
        );
        // The one case that needs two fresh logs at once.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn fresh_logs_have_different_ids() {
            let (a, _guard_a) = $make.await;
            let (b, _guard_b) = $make.await;
            $crate::cases::fresh_logs_have_different_ids(a, b).await;
        }
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (log, _guard) = $make.await;
                $crate::cases::$case(log).await;
            }
        )*
    };
}
