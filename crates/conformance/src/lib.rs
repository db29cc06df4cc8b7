//! The conformance suites for [`Log`] and [`GroupStore`] backends: one set of cases
//! each, run against every backend so they cannot drift apart.
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
//!
//! [`group_store_conformance!`] does the same for group stores, with the cases in
//! [`groups`]; the guard is where a store that lives inside its log keeps the log:
//!
//! ```ignore
//! tributary_conformance::group_store_conformance!(async {
//!     (std::sync::Arc::new(MemoryGroupStore::new()) as std::sync::Arc<dyn GroupStore>, ())
//! });
//! ```
//!
//! [`Log`]: tributary_core::Log
//! [`GroupStore`]: tributary_core::GroupStore

pub mod cases;
pub mod groups;
pub mod retention;

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
            topic_settings_round_trip,
            prune_by_count_removes_the_oldest_first,
            prune_by_age_removes_what_is_older,
            removing_the_newest_events_never_reuses_positions,
            a_removed_event_id_may_be_used_again,
            max_event_bytes_refuses_the_whole_batch,
            a_stream_behind_retention_is_told,
            live_streams_go_on_past_removed_positions,
            commits_hand_over_what_readers_will_read,
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

/// Expands to one `#[tokio::test]` per case in [`groups`].
#[macro_export]
macro_rules! group_store_conformance {
    ($make:expr) => {
        $crate::group_store_conformance!(@cases $make;
            create_then_load_returns_everything,
            create_twice_is_refused_and_keeps_the_first,
            delete_removes_the_group_and_its_state,
            attempted_upserts_and_keeps_the_last_reason,
            acked_marks_progress,
            committed_drops_settled_progress_and_never_moves_back,
            forget_drops_one_progress_row,
            parked_moves_the_whole_event_to_the_dlq,
            replayed_returns_an_entry_to_delivery,
            discarded_drops_a_dlq_entry,
            changes_to_unknown_groups_are_ignored,
            progress_and_dlq_come_back_in_position_order,
            groups_are_kept_apart,
            a_large_batch_applies,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (store, _guard) = $make.await;
                $crate::groups::$case(store).await;
            }
        )*
    };
}
