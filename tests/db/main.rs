//! Database migrations end to end: the real `slipway` binary, real PostgreSQL, MariaDB
//! and SQLite (throwaway servers, see tests/support/db.rs). These run through the
//! `local` transport, which runs the very scripts the ssh transport runs; the tests
//! that need an ssh hop (the tunnel) are in `tunnel.rs`.
//!
//! Each acceptance scenario runs once per database.

#[path = "../support/db.rs"]
mod db_support;
mod fixtures;
mod scenario;

mod acceptance;
mod more;
mod sqlite_bookkeeping;
