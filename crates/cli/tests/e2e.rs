//! End-to-end tests: each one starts the real `tributary` binary on 127.0.0.1 and talks to
//! it over real sockets, as users and their programs would.

mod e2e {
    pub mod harness;

    mod bad_input;
    mod catch_up;
    mod cli;
    mod durability;
    mod groups;
    mod groups_cli;
    mod livestore;
    mod publish;
    mod resume;
    mod retention;
    mod shutdown;
    mod slow_reader;
    mod topics_cli;
}
