//! Database migrations end to end: the real `slipway` binary, real PostgreSQL, MariaDB
//! and SQLite (throwaway servers, see tests/support/db.rs). These run through the
//! `local` transport and through real sshd hosts (tests/support/hosts.rs); the tunnel
//! tests are in `ssh.rs`.
//!
//! Each acceptance scenario runs once per database.

#[path = "../support/db.rs"]
mod db_support;
mod fixtures;
#[path = "../support/hosts.rs"]
mod hosts;
mod scenario;
mod ssh;

mod acceptance;
mod drill;
mod more;
mod rollout;
mod sqlite_bookkeeping;
