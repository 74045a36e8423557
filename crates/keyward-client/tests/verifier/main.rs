//! keyward-client against a real keyward server (127.0.0.1:0, SQLite and
//! PostgreSQL), one test binary.

mod config;
mod helpers;
mod layer;
mod resync;
mod revocation;
mod scopes;
mod secrets;
mod stream;
mod usage;
