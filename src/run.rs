//! What every command shares: who runs it, how, and the common steps (probe, cleanup).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use serde_json::Value;

use crate::audit::Actor;
use crate::error::{Error, Result};
use crate::fleet::Fleet;
use crate::interrupt::Interrupt;
use crate::release::HostState;
use crate::report::Reporter;
use crate::script;

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

/// Reads every host's state in parallel.
pub async fn probe(fleet: &Fleet) -> Result<Vec<HostState>> {
    let script = script::probe(&fleet.layout);
    let timeout = fleet.stage.timeouts.command;
    let results = join_all(fleet.all().into_iter().map(|i| {
        let script = &script;
        async move { (i, fleet.step(i, "probe", script, None, timeout).await) }
    }))
    .await;
    let mut states = Vec::new();
    for (i, result) in results {
        match result {
            Ok(out) => states.push(HostState::parse(fleet.name(i), &out.stdout)),
            Err(message) => {
                return Err(Error::Step {
                    host: fleet.name(i).into(),
                    step: "probe".into(),
                    message,
                });
            }
        }
    }
    Ok(states)
}
