//! The server against a real socket: each test starts `serve` on `127.0.0.1:0` over a
//! `MemoryLog` and talks to it with a real HTTP client. One test binary, a module per
//! resource.

mod http {
    pub mod common;

    mod connections;
    mod events;
    mod groups;
    mod topics;
    mod wire;
}
