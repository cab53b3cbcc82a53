//! slipway: a release deployer. Immutable, timestamped release directories on every
//! host, `current` switched by one atomic rename, hooks, and rollbacks that read the
//! recorded state of each release.
//!
//! The flow of every command: load and validate the config ([`config`]), connect
//! ([`fleet`], [`transport`]), read the hosts ([`probe`]), decide ([`plan`]), then
//! apply one remote script per step per host ([`script`]).

pub mod archive;
pub mod audit;
pub mod audit_chain;
pub mod cli;
pub mod commands;
pub mod config;
pub mod db;
pub mod deploy;
pub mod docs;
pub mod drill;
pub mod encoding;
pub mod error;
pub mod fault;
pub mod fleet;
pub mod init;
pub mod interrupt;
pub mod layout;
pub mod lock;
pub mod operation;
pub mod plan;
pub mod probe;
pub mod recipe;
pub mod redact;
pub mod release;
pub mod report;
pub mod rollback;
pub mod rollout;
pub mod run;
pub mod script;
pub mod switch;
pub mod traffic;
pub mod transport;

pub use error::{Error, ExitClass, Result};
