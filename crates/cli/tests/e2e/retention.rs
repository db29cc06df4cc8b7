//! Topic retention against the real binary.
