//! `slipway status STAGE`: where every host stands, even when some cannot be reached.

use serde_json::json;

use super::unlock::describe_lock;
use crate::config::Stage;
use crate::error::{Error, Result};
use crate::fleet::Fleet;
use crate::probe::probe;
use crate::run::{Context, Outcome};

/// `slipway status STAGE`: one line per host.
pub async fn status(stage: &Stage, ctx: &Context) -> Result<Outcome> {
    // Where every host stands, even when some are down (after a fault, that is the point).
    let (fleet, unreachable) = Fleet::connect_reachable(stage, ctx.reporter.clone()).await;
    let states = if fleet.is_empty() {
        Ok(Vec::new())
    } else {
        probe(&fleet).await
    };
    let rollout = if fleet.is_empty() {
        Ok(None)
    } else {
        crate::rollout::state::read(&fleet).await
    };
    // [traffic]: the split each host's proxy has in force.
    let traffic = match crate::traffic::Driver::new(&fleet, ctx.actor.clone(), String::new()) {
        Some(d) if !fleet.is_empty() => Some(d.read().await),
        _ => None,
    };
    fleet.close().await;
    let states = states?;
    let rollout = rollout?;
    // A split that cannot be read is a warning: status still says where hosts stand.
    let traffic = traffic.and_then(|r| {
        r.map_err(|e| {
            ctx.reporter
                .warning(None, &format!("cannot read the traffic split: {e}"))
        })
        .ok()
    });
    let mut human = String::new();
    let mut data = Vec::new();
    let currents: std::collections::BTreeSet<_> = states.iter().map(|s| s.current()).collect();
    for (host, error) in &unreachable {
        human.push_str(&format!("{host:<24} UNREACHABLE: {error}\n"));
        data.push(json!({ "host": host, "reachable": false, "error": error }));
    }
    for s in &states {
        let current = s
            .current()
            .map(|c| c.to_string())
            .unwrap_or_else(|| "(nothing deployed)".into());
        // The newest good release before the current one: where a rollback would go.
        let previous = s.current().and_then(|c| {
            s.releases
                .iter()
                .rev()
                .find(|r| r.id < c && r.is_good())
                .map(|r| r.id.to_string())
        });
        let lock = s
            .lock
            .as_ref()
            .map(|l| format!("  locked by {}", describe_lock(l.as_ref())))
            .unwrap_or_default();
        let (step, gate) = match &rollout {
            Some(r) => crate::rollout::state::host_summary(r, &s.host),
            None => (None, None),
        };
        let split = traffic
            .as_ref()
            .and_then(|t| {
                states
                    .iter()
                    .position(|x| x.host == s.host)
                    .and_then(|i| t.get(i))
            })
            .map(|h| h.split.clone());
        human.push_str(&format!(
            "{:<24} {current}  previous: {}{}{}{}{lock}\n",
            s.host,
            previous.as_deref().unwrap_or("-"),
            step.as_ref()
                .map(|x| format!("  rollout: {x}"))
                .unwrap_or_default(),
            gate.as_ref()
                .map(|g| format!("  gate: {g}"))
                .unwrap_or_default(),
            match &split {
                Some(Some(x)) => format!("  traffic: {}", x.describe()),
                Some(None) => "  traffic: no include in place".to_string(),
                None => String::new(),
            },
        ));
        data.push(json!({ "host": s.host, "current": s.current().map(|c| c.to_string()), "previous": previous, "rollout_step": step, "gate": gate, "locked": s.lock.is_some(), "traffic": split.flatten() }));
    }
    if let Some(r) = rollout.as_ref().filter(|r| r.in_progress()) {
        // Hosts on two releases are what a rollout in progress looks like.
        human.push_str(&format!(
            "rollout in progress: {} (`slipway rollout status {}`)\n",
            r.describe(),
            stage.name
        ));
        return Ok(Outcome {
            human,
            data: json!({ "hosts": data, "rollout": r }),
        });
    }
    if currents.len() > 1 {
        human.push_str(&format!(
            "hosts are on different releases: bring them together with `slipway rollback {} --to ID` or a new deploy\n",
            stage.name
        ));
        return Err(Error::Diverged(human));
    }
    if !unreachable.is_empty() {
        let names: Vec<&str> = unreachable.iter().map(|(h, _)| h.as_str()).collect();
        human.push_str(&format!(
            "{} host(s) unreachable: {} (where they stand is unknown; bring them back, then `slipway status {}` again)\n",
            names.len(),
            names.join(", "),
            stage.name
        ));
        return Err(Error::Diverged(human));
    }
    Ok(Outcome {
        human,
        data: json!({ "hosts": data }),
    })
}
