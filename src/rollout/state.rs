//! The persisted state of a staged rollout: `.slipway/rollout.json`, the same on every
//! host of the stage, written at every transition. It holds the desired release and,
//! per host, the stable release it came from, the frozen plan, how many steps are done
//! and whether the rollout runs, is paused, done, failed or aborted. Any invocation on
//! any machine reads it back: a CI job that stopped at a manual pause, a later job that
//! promotes or aborts, or an operator after the deployer was killed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::plan::RolloutPlan;
use crate::error::{Error, Result};
use crate::fleet::Fleet;
use crate::script;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// A deployer is switching and gating (or was, and died: see the lock).
    Running,
    /// Stopped between steps: a manual pause, `rollout pause`, an inconclusive gate or a
    /// refused `confirm_promotion`. `rollout promote|resume` goes on, `abort` goes back.
    Paused,
    /// Every host is on the desired release.
    Done,
    /// A gate or a switch failed and the switched hosts were rolled back.
    Failed,
    /// `rollout abort`: every host was returned to its stable release.
    Aborted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Done => "done",
            Status::Failed => "failed",
            Status::Aborted => "aborted",
        }
    }
}

/// The last gate's outcome, as shown by `rollout status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateRecord {
    pub step: usize,
    pub verdict: String,
    pub details: Vec<String>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutState {
    pub app: String,
    pub stage: String,
    /// The release being rolled out.
    pub desired: String,
    /// Per host (by name): the release it was on before the rollout (`None`: nothing).
    pub stable: BTreeMap<String, Option<String>>,
    /// Frozen when the rollout starts: a host added to the config later is not in it.
    pub plan: RolloutPlan,
    /// Steps completed (switched, restarted, gated).
    pub completed: usize,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether the deploy migrated the database (an abort then reverts the schema too).
    #[serde(default)]
    pub migrated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_gate: Option<GateRecord>,
    /// Blue-green: the pool this rollout switches and then moves traffic to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Blue-green: the pool that has traffic now (carried over from rollout to rollout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_pool: Option<String>,
    /// Blue-green: the pool that had traffic before this rollout moved it: still on its
    /// release, ready for `slipway rollback` to move traffic back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_pool: Option<String>,
    /// `[traffic]`: the slots, the share of users in force and the salt (see
    /// `traffic::state`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<crate::traffic::TrafficState>,
    /// `strategy = "ab"`: the test's result once it ran (see `traffic::ab`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ab: Option<crate::traffic::ab::AbResult>,
    pub started_by: String,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl RolloutState {
    pub fn in_progress(&self) -> bool {
        matches!(self.status, Status::Running | Status::Paused)
    }

    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// "canary of 20261124T050000Z (step 1 of 3 done, paused: manual pause)".
    pub fn describe(&self) -> String {
        format!(
            "{} rollout of {} on {} ({} of {} step(s) done, {}{})",
            self.plan.strategy,
            self.desired,
            self.stage,
            self.completed,
            self.plan.steps.len(),
            self.status.as_str(),
            self.reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        )
    }

    /// Names of the hosts the completed steps (and the one under way) switched.
    /// Why a state read from a host cannot be this stage's: another app's or stage's,
    /// or naming releases that are no release ids (`../../`, a path). Such a state is
    /// ignored with a warning: a host's file never chooses what another host runs.
    pub fn problem(&self, app: Option<&str>, stage: Option<&str>) -> Option<String> {
        if let Some(app) = app.filter(|a| *a != self.app) {
            return Some(format!("it is app {:?}'s, not {app:?}'s", self.app));
        }
        if let Some(stage) = stage.filter(|s| *s != self.stage) {
            return Some(format!("it is stage {:?}'s, not {stage:?}'s", self.stage));
        }
        if self.plan.steps.is_empty() {
            return Some("its plan has no steps".into());
        }
        // Written with the deployer's clock: a day ahead is no clock skew, it is a state
        // made to win over every other host's (the newest is the one read).
        if self.updated_at > Utc::now() + chrono::Duration::days(1) {
            return Some(format!("it is dated in the future ({})", self.updated_at));
        }
        let ids = std::iter::once(&self.desired).chain(self.stable.values().flatten());
        for id in ids {
            if let Err(e) = crate::layout::ReleaseId::parse(id) {
                return Some(e);
            }
        }
        None
    }

    pub fn hosts_through(&self, steps: usize) -> Vec<String> {
        self.plan
            .steps
            .iter()
            .take(steps)
            .flat_map(|s| s.hosts.clone())
            .collect()
    }
}

/// The newest rollout state among what the probe read on each host (the probe carries
/// `.slipway/rollout.json`, so a deploy or rollback needs no extra round trip for it).
pub fn from_states(states: &[crate::release::HostState]) -> Option<RolloutState> {
    states
        .iter()
        .filter_map(|s| s.rollout_json.as_deref())
        .filter_map(|j| serde_json::from_str::<RolloutState>(j.trim()).ok())
        .filter(|s| s.problem(None, None).is_none())
        .max_by(|a, b| a.updated_at.cmp(&b.updated_at))
}

/// The newest rollout state found on any host (hosts that missed a write, e.g. one that
/// was down, have an older one). `None` when no host has one.
pub async fn read(fleet: &Fleet) -> Result<Option<RolloutState>> {
    let text = script::read_rollout(&fleet.layout);
    let results = fleet
        .step_on(
            &fleet.all(),
            "read-rollout",
            |_| text.clone(),
            None,
            fleet.stage.timeouts.command,
        )
        .await;
    let mut newest: Option<RolloutState> = None;
    for (i, r) in results {
        let out = r.map_err(|message| Error::Step {
            host: fleet.name(i).into(),
            step: "read-rollout".into(),
            message: message.to_string(),
        })?;
        let line = out.stdout.trim();
        if line.is_empty() {
            continue;
        }
        match serde_json::from_str::<RolloutState>(line) {
            Ok(s) if let Some(why) = s.problem(Some(&fleet.stage.app), Some(&fleet.stage.name)) => {
                fleet.reporter.warning(
                    Some(fleet.name(i)),
                    &format!("ignoring .slipway/rollout.json: {why}"),
                );
            }
            Ok(s) => {
                if newest.as_ref().is_none_or(|n| s.updated_at > n.updated_at) {
                    newest = Some(s);
                }
            }
            Err(e) => fleet.reporter.warning(
                Some(fleet.name(i)),
                &format!("ignoring an unreadable .slipway/rollout.json: {e}"),
            ),
        }
    }
    Ok(newest)
}

/// Writes `state` on every host. A host that cannot be written is reported, not fatal:
/// the others hold the state, and readers take the newest.
pub async fn write(fleet: &Fleet, state: &mut RolloutState) {
    state.updated_at = Utc::now();
    let text = script::write_rollout(&fleet.layout, &state.to_line());
    fleet
        .on_all_best_effort("write-rollout", &text, "record the rollout state")
        .await;
}

/// Refuses to start a deploy while a rollout is in progress, naming it.
pub fn refuse_if_in_progress(prior: Option<&RolloutState>) -> Result<()> {
    if let Some(s) = prior
        && s.in_progress()
    {
        return Err(Error::Refused(format!(
            "a rollout is in progress: {} started by {} at {}. Finish it with `slipway rollout promote {stage}` or return to the stable release with `slipway rollout abort {stage}` (see `slipway rollout status {stage}`)",
            s.describe(),
            s.started_by,
            s.started_at.format("%Y-%m-%dT%H:%M:%SZ"),
            stage = s.stage
        )));
    }
    Ok(())
}

/// Blue-green: the pool without traffic, which the next rollout switches (blue first).
pub fn idle_pool(prior: Option<&RolloutState>) -> &'static str {
    match prior.and_then(|p| p.live_pool.as_deref()) {
        Some("blue") => "green",
        _ => "blue",
    }
}

/// One host's place in a rollout, for `slipway status`: its step ("2/3, desired") and its
/// verdict at the last gate, if it was gated.
pub fn host_summary(st: &RolloutState, host: &str) -> (Option<String>, Option<String>) {
    let step = st
        .plan
        .steps
        .iter()
        .find(|s| s.hosts.iter().any(|h| h == host))
        .map(|s| {
            format!(
                "step {}/{} {}",
                s.number,
                st.plan.steps.len(),
                if s.number <= st.completed {
                    "done"
                } else {
                    "pending"
                }
            )
        });
    let gate = st.last_gate.as_ref().and_then(|g| {
        g.details
            .iter()
            .find(|d| d.starts_with(&format!("{host}: ")))
            .map(|d| format!("{} at step {}", &d[host.len() + 2..], g.step))
    });
    (step, gate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Layout;

    #[test]
    fn the_state_round_trips_through_the_host_scripts_privately() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let deploy_to = dir.path().join("it's $(x)");
        let layout = Layout::new(deploy_to.to_str().unwrap());
        let line = "{\"reason\":\"step 1: app3: error rate 12% > 5% 'quoted' $(x)\"}";
        let run = |script: String| {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .output()
                .unwrap()
        };
        assert!(run(script::write_rollout(&layout, line)).status.success());
        let out = run(script::read_rollout(&layout));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), line);
        let mode = std::fs::metadata(deploy_to.join(".slipway/rollout.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // No state: nothing printed, success.
        let empty = Layout::new(dir.path().join("none").to_str().unwrap());
        let out = run(script::read_rollout(&empty));
        assert!(out.status.success() && out.stdout.is_empty());
    }

    #[test]
    fn a_paused_or_running_rollout_refuses_a_deploy_naming_it() {
        let now = Utc::now();
        let mut st = RolloutState {
            app: "shop".into(),
            stage: "prod".into(),
            desired: "20261124T050000Z".into(),
            stable: BTreeMap::new(),
            plan: RolloutPlan {
                strategy: "canary".into(),
                steps: vec![],
            },
            completed: 1,
            status: Status::Paused,
            reason: Some("manual pause after step 1 of 3".into()),
            migrated: false,
            last_gate: None,
            pool: None,
            live_pool: None,
            previous_pool: None,
            traffic: None,
            ab: None,
            started_by: "ci@runner".into(),
            started_at: now,
            updated_at: now,
        };
        let e = refuse_if_in_progress(Some(&st)).unwrap_err().to_string();
        assert!(e.contains("20261124T050000Z"), "{e}");
        assert!(e.contains("slipway rollout promote prod"), "{e}");
        assert!(e.contains("ci@runner"), "{e}");
        for done in [Status::Done, Status::Failed, Status::Aborted] {
            st.status = done;
            assert!(refuse_if_in_progress(Some(&st)).is_ok());
        }
        assert!(refuse_if_in_progress(None).is_ok());
        assert_eq!(idle_pool(None), "blue");
        st.live_pool = Some("blue".into());
        assert_eq!(idle_pool(Some(&st)), "green");
    }
}
