//! Canary by users: two releases live on each host behind a proxy (`[traffic]`).
//!
//! Each host has two slots, `<deploy_to>/slots/a` and `slots/b`, links to releases moved
//! by the switch engine's rename; `current` stays the stable release until promotion.
//! The user's `start` command runs each slot's instance on its own port (or nginx
//! serves a static slot's files). The proxy's include sends each request to a slot by a
//! sticky hash of a key (see [`nginx`], [`murmur`]); rollout steps are percentages of
//! users on every host.
//!
//! - [`split`]: the split in force, as data (and the include's first line)
//! - [`murmur`]: nginx's MurmurHash2 and `split_clients` bucketing, pure
//! - [`nginx`]: the include, rendered by a pure function
//! - [`proxy`]: the proxy trait (nginx only so far)
//! - [`state`]: the traffic part of `.slipway/rollout.json`, and choosing the slot
//! - [`driver`]: the same operations on every host of a fleet
//! - [`access_log`]: the include's access log, parsed and counted per slot, pure
//! - [`mann_whitney`]: the one-sided Mann-Whitney U test, pure
//! - [`log_verdict`]: the `[gate]` verdict over both slots' numbers (from either source), pure
//! - [`prometheus`]: the same numbers asked of Prometheus's HTTP API, and its answers read
//! - [`log_gate`]: a step's gate: every host's log read incrementally over its window (or
//!   Prometheus asked), judged every interval
//! - [`chart`]: the step's readings as an SVG picture on the deployer, pure
//! - [`ab`]: the A/B test (`strategy = "ab"`): both cohorts compared, the winner, pure
//!   decision and its watch
//!
//! The flow of a deploy (driven by `rollout::executor`): [`prepare`] the new slot (link,
//! start, ready) before any traffic; each step applies its percentage, then the gate
//! checks the new slot; [`promote`] moves everyone and renames `current`, [`retire`]
//! drains and stops the old slot; [`back`] (failed gate, abort) moves everyone back at
//! once and stops the new slot; [`rollback_to`] is `slipway rollback`'s part.

pub mod ab;
pub mod access_log;
pub mod chart;
pub mod driver;
pub mod log_gate;
pub mod log_verdict;
pub mod mann_whitney;
pub mod murmur;
pub mod nginx;
pub mod prometheus;
pub mod proxy;
pub mod split;
pub mod state;

pub use driver::{Driver, HostTraffic};
pub use split::{Slot, Split};
pub use state::TrafficState;

use crate::fleet::Fleet;
use crate::layout::ReleaseId;
use crate::rollout::plan::{RolloutPlan, Step};

/// The user steps of a rollout with `[traffic]`: every host at each percentage (the first
/// step names them all; later steps add no host). A first deploy has nothing to split
/// from: one step, everyone on the new slot.
pub fn plan(percents: &[f64], hosts: &[String], first: bool) -> RolloutPlan {
    let percents: Vec<f64> = if first || percents.is_empty() {
        vec![100.0]
    } else {
        percents.to_vec()
    };
    RolloutPlan {
        strategy: "canary".into(),
        steps: percents
            .iter()
            .enumerate()
            .map(|(k, &p)| Step {
                number: k + 1,
                percent: Some(p),
                hosts: if k == 0 { hosts.to_vec() } else { vec![] },
                total: hosts.len(),
            })
            .collect(),
    }
}

/// The slot serving users on every host (and its release), and the free one, from the
/// includes the hosts' proxies have now (see [`state::choose`]).
async fn serving(driver: &Driver<'_>) -> crate::error::Result<(Option<state::Serving>, Slot)> {
    let found = driver.read().await?;
    let named: Vec<(String, Option<Split>)> = found
        .iter()
        .enumerate()
        .map(|(i, h)| (driver.fleet.name(i).to_string(), h.split.clone()))
        .collect();
    state::choose(&named).map_err(crate::error::Error::Refused)
}

/// The traffic state a new rollout starts from: the slot that is not serving gets the
/// release, the serving one is stable (from the includes every host's proxy has now;
/// refused when they disagree or a split is half-way), with a fresh salt (or the fixed
/// `[traffic] salt`).
pub async fn start_state(driver: &Driver<'_>) -> crate::error::Result<TrafficState> {
    let (stable, canary) = serving(driver).await?;
    Ok(TrafficState {
        canary,
        stable: stable.as_ref().map(|s| s.0),
        stable_release: stable.and_then(|s| s.1),
        percent: 0.0,
        salt: driver.traffic.salt.clone().unwrap_or_else(split::new_salt),
        promoted: false,
    })
}

/// Before any user is sent there: the new slot's link points at the release, its
/// instance is started and answers its health check on every host.
pub async fn prepare(
    driver: &Driver<'_>,
    state: &TrafficState,
    release: &ReleaseId,
) -> Result<(), String> {
    let slot = state.canary;
    driver.fleet.reporter.info(&format!(
        "slot {slot}: {release}{}",
        match state.stable {
            Some(s) => format!(" (slot {s} keeps serving until the first step)"),
            None => " (the first release with [traffic])".into(),
        }
    ));
    driver.link(slot, release).await?;
    driver.run(false, slot, release).await?;
    driver.ready(slot, release).await
}

/// Everyone on the old slot again, at once (one reload), then its drain and the stop
/// of the new slot's instance. With no stable slot (a first deploy), the new instance
/// is stopped and the include left as it is (it only ever pointed at the new slot).
pub async fn back(
    driver: &Driver<'_>,
    state: &mut TrafficState,
    release: &ReleaseId,
) -> Result<(), String> {
    if let Some(split) = state.back() {
        if let Err(m) = driver.apply(&split).await {
            // The proxy refused the include (its own config broken, say): the new slot
            // may be stopped only if no host sends anyone there.
            let found = driver.read().await.map_err(|e| format!("{m}; {e}"))?;
            let nobody = found.iter().all(|h| {
                h.split.as_ref().is_some_and(|s| {
                    s.serving() != state.canary
                        && (s.canary != Some(state.canary) || s.percent <= 0.0)
                })
            });
            if !nobody {
                return Err(m);
            }
        }
        state.percent = 0.0;
        driver.drain(state.canary).await;
    }
    driver.run(true, state.canary, release).await
}

/// After the last step: the new slot becomes the stable one in the include (everyone on
/// it) and `switch` renames `current` on every host. The old slot is left to [`retire`].
pub async fn promote(
    driver: &Driver<'_>,
    state: &mut TrafficState,
    release: &ReleaseId,
    switch: &(dyn Fn(usize) -> String + Send + Sync),
    fleet: &Fleet,
) -> Result<(), String> {
    let all = Split::only(state.canary, Some(release.to_string()), &state.salt);
    driver.apply(&all).await?;
    state.promoted = true;
    state.percent = 100.0;
    let results = fleet
        .step_on(
            &fleet.all(),
            "switch",
            switch,
            None,
            fleet.stage.timeouts.command,
        )
        .await;
    if let Some((i, Err(e))) = results.iter().find(|(_, r)| r.is_err()) {
        return Err(format!("{}: renaming current failed: {e}", fleet.name(*i)));
    }
    Ok(())
}

/// After promotion: the old slot drains (its in-flight requests finish, at most
/// `[traffic] drain`) and its instance is stopped. Returns warnings (a slot that did not
/// drain in time, a stop that failed): the release is live either way.
pub async fn retire(driver: &Driver<'_>, state: &TrafficState) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Some(old) = state.stable {
        warnings.extend(driver.drain(old).await);
        // `stop` runs in the old slot with its release's hook environment.
        match state.stable_release.as_deref().map(ReleaseId::parse) {
            Some(Ok(old_release)) => {
                if let Err(e) = driver.run(true, old, &old_release).await {
                    warnings.push(e);
                }
            }
            _ => warnings.push(format!(
                "slot {old}: its release is not recorded, so its instance was not stopped (stop it by hand)"
            )),
        }
    }
    warnings
}

/// `slipway rollback` with `[traffic]`: `target` is linked into the slot that is not
/// serving, started and checked, then every user goes to it (one reload). Returns the
/// slot left and its release, for the caller to drain and stop once `current` moved. A
/// failure before the traffic moved stops the target's instance again: nothing changed
/// for users.
pub async fn rollback_to(
    driver: &Driver<'_>,
    target: &ReleaseId,
) -> crate::error::Result<Option<(Slot, ReleaseId)>> {
    use crate::error::Error;
    let (serving, free) = serving(driver).await?;
    let left = serving.and_then(|(slot, release)| {
        release
            .and_then(|r| ReleaseId::parse(&r).ok())
            .map(|r| (slot, r))
    });
    let salt = driver.traffic.salt.clone().unwrap_or_else(split::new_salt);
    let moved = async {
        driver.link(free, target).await?;
        driver.run(false, free, target).await?;
        driver.ready(free, target).await?;
        driver
            .apply(&Split::only(free, Some(target.to_string()), &salt))
            .await
    }
    .await;
    if let Err(m) = moved {
        let _ = driver.run(true, free, target).await;
        return Err(Error::Refused(format!(
            "rollback to {target} stopped before any user moved: {m}"
        )));
    }
    Ok(left)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_steps_name_every_host_once() {
        let hosts = vec!["h1".to_string(), "h2".to_string()];
        let p = plan(&[10.0, 50.0, 100.0], &hosts, false);
        assert_eq!(p.steps.len(), 3);
        assert_eq!(p.steps[0].hosts, hosts);
        assert!(p.steps[1].hosts.is_empty());
        assert_eq!(p.steps[2].percent, Some(100.0));
        assert_eq!(p.host_count(), 2);
        let first = plan(&[10.0, 50.0, 100.0], &hosts, true);
        assert_eq!(first.steps.len(), 1);
        assert_eq!(first.steps[0].percent, Some(100.0));
    }
}
