//! What every command shares: who runs it, how, and what it reports back. The common
//! first step, reading the hosts, is [`crate::probe`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::audit::Actor;
use crate::interrupt::Interrupt;
use crate::report::Reporter;

/// The context of one invocation.
#[derive(Clone)]
pub struct Context {
    pub actor: Actor,
    /// The command line, for the lock record and the audit log.
    pub command: String,
    pub dry_run: bool,
    pub lock_wait: Duration,
    pub interrupt: Interrupt,
    pub reporter: Arc<Reporter>,
}

/// What a command achieved: a line for people, data for `--json`.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub human: String,
    pub data: Value,
}

/// Runs `future` unless a signal arrives first; then it is dropped (its remote commands
/// are cut off) and the signal's name returned.
pub async fn unless_interrupted<T>(
    interrupt: &Interrupt,
    future: impl Future<Output = T>,
) -> std::result::Result<T, &'static str> {
    tokio::select! {
        result = future => Ok(result),
        signal = interrupt.wait() => Err(signal),
    }
}
