//! The one error type of slipway, and the exit code of each failure class.
//!
//! Exit codes (documented in the README):
//! - 0: done
//! - 1: the deploy or rollback failed and every host is back where it was
//! - 2: usage or configuration error, or a schema change refused as unprovable (an
//!   irreversible migration, missing code); nothing was touched
//! - 3: the deploy lock is held by someone else
//! - 4: hosts were left in different states and need attention (the message says which
//!   and what to run)

use crate::config::ConfigError;

/// The exit class of a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitClass {
    Failed = 1,
    Usage = 2,
    Locked = 3,
    Diverged = 4,
}

impl ExitClass {
    pub fn code(self) -> i32 {
        self as i32
    }
    pub fn name(self) -> &'static str {
        match self {
            ExitClass::Failed => "failed",
            ExitClass::Usage => "usage",
            ExitClass::Locked => "locked",
            ExitClass::Diverged => "diverged",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(#[from] ConfigError),

    #[error("{0}")]
    Usage(String),

    #[error("{0}")]
    Archive(#[from] crate::archive::ArchiveError),

    /// A step failed on a host before anything was switched; hosts are as they were.
    #[error("{host}: {step} failed: {message}")]
    Step {
        host: String,
        step: String,
        message: String,
    },

    /// The deploy lock is held.
    #[error(
        "{host}: the deploy lock is held by {holder} (wait with --lock-wait 5m, or if that run is gone: slipway unlock {stage})"
    )]
    Locked {
        host: String,
        holder: String,
        stage: String,
    },

    /// The command refused to act (e.g. no release to roll back to); nothing was changed.
    #[error("{0}")]
    Refused(String),

    /// A schema change slipway cannot prove safe (an irreversible migration, code that
    /// is missing, records that disagree with the database): refused before any host
    /// moved. `--force-schema` / `--skip-schema` say how to go on.
    #[error("{0}")]
    SchemaRefused(String),

    /// A deploy or rollback failed and was undone: every host is back where it was.
    #[error("{0}")]
    Reverted(String),

    /// Hosts are in different states; the message says which and what to run.
    #[error("{0}")]
    Diverged(String),

    /// What slipway checked is not what was recorded: a host's audit log is not the
    /// chain it was written as (`log --verify`), the database is not at what the live
    /// release records (`db status`). `report` is the whole finding, for `--json`.
    #[error("{message}")]
    Disagrees {
        message: String,
        report: serde_json::Value,
    },

    /// The run was interrupted (Ctrl-C, SIGTERM) and cleaned up.
    #[error("interrupted: {0}")]
    Interrupted(String),

    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    pub fn class(&self) -> ExitClass {
        match self {
            Error::Config(_) | Error::Usage(_) | Error::Archive(_) | Error::SchemaRefused(_) => {
                ExitClass::Usage
            }
            Error::Locked { .. } => ExitClass::Locked,
            Error::Diverged(_) | Error::Disagrees { .. } => ExitClass::Diverged,
            Error::Step { .. }
            | Error::Refused(_)
            | Error::Reverted(_)
            | Error::Interrupted(_)
            | Error::Io(_) => ExitClass::Failed,
        }
    }
}

impl Error {
    /// Structured detail for `--json`, when the failure has more than its message.
    pub fn report(&self) -> Option<&serde_json::Value> {
        match self {
            Error::Disagrees { report, .. } => Some(report),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
