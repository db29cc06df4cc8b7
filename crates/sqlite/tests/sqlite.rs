//! Integration tests of the SQLite backend: the shared conformance suite, plus what only
//! a durable, group-committing backend has to show, and the consumer groups' store that
//! lives in the same file.

mod sqlite {
    pub mod common;
    mod conformance;
    mod filters;
    mod group_commit;
    mod groups;
    mod plans;
    mod random_filters;
    mod reopen;
}
