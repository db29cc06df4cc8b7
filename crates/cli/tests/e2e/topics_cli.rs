//! `tributary topics` subcommands against the real binary.
