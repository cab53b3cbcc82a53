//! The first step of every command that acts on hosts: read each host's state, changing
//! nothing.

use futures::future::join_all;

use crate::error::{Error, Result};
use crate::fleet::Fleet;
use crate::release::HostState;
use crate::script;

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
                    message: message.to_string(),
                });
            }
        }
    }
    Ok(states)
}
