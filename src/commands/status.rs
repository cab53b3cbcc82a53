//! `slipway status STAGE`: where every host stands, even when some cannot be reached.

use serde_json::json;

use super::unlock::describe_lock;
use crate::config::Stage;
use crate::error::{Error, Result};
use crate::fleet::Fleet;
use crate::probe::probe;
use crate::rollout::state::{RolloutState, Status};
use crate::run::{Context, Outcome};

/// How the stage's last rollout stands, or how it ended: `failed at step 2/3: app3: error
/// rate 12% > 5%`, `aborted after step 1/3: ...`, `done: 3 of 3 step(s)`, `paused after
/// step 1/3: manual pause`, `running: step 2/3 under way`.
pub fn rollout_summary(st: &RolloutState) -> String {
    let total = st.plan.steps.len();
    let under_way = (st.completed + 1).min(total);
    let reason = st
        .reason
        .as_deref()
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    let how = match st.status {
        Status::Running => format!("running: step {under_way}/{total} under way"),
        Status::Paused => format!("paused after step {}/{total}{reason}", st.completed),
        Status::Done => format!("done: {total} of {total} step(s)"),
        Status::Failed => format!("failed at step {under_way}/{total}{reason}"),
        Status::Aborted => format!("aborted after step {}/{total}{reason}", st.completed),
    };
    format!("{} rollout of {}: {how}", st.plan.strategy, st.desired)
}

/// One host's place in the last rollout. While it runs or is paused: its step, done or
/// pending. Once it ended: what became of that step (a failed or aborted rollout's
/// hosts are back on their stable release; its later steps were never reached).
pub fn host_step(st: &RolloutState, host: &str) -> Option<String> {
    let total = st.plan.steps.len();
    let step = st
        .plan
        .steps
        .iter()
        .find(|s| s.hosts.iter().any(|h| h == host))?
        .number;
    let done = step <= st.completed;
    let what = match st.status {
        Status::Running | Status::Paused | Status::Done if done => "done",
        Status::Running | Status::Paused | Status::Done => "pending",
        Status::Failed if step == st.completed + 1 => "failed, switched back",
        Status::Failed | Status::Aborted if done => "switched back",
        Status::Failed | Status::Aborted => "not reached",
    };
    Some(format!("step {step}/{total} {what}"))
}

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
        let current = match (s.current(), s.current_elsewhere()) {
            (Some(c), _) => c.to_string(),
            (None, Some(link)) => format!("(current points outside releases/: {link:?})"),
            (None, None) => "(nothing deployed)".into(),
        };
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
            Some(r) => (
                host_step(r, &s.host),
                crate::rollout::state::host_summary(r, &s.host).1,
            ),
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
    let summary = rollout.as_ref().map(rollout_summary);
    if let Some(r) = rollout.as_ref().filter(|r| r.in_progress()) {
        // Hosts on two releases are what a rollout in progress looks like.
        human.push_str(&format!(
            "rollout in progress: {} (`slipway rollout status {}`)\n",
            summary.as_deref().unwrap_or_default(),
            stage.name
        ));
        return Ok(Outcome {
            human,
            data: json!({ "hosts": data, "rollout": r, "rollout_summary": summary }),
        });
    }
    if let Some(summary) = &summary {
        human.push_str(&format!("last rollout: {summary}\n"));
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
        data: json!({ "hosts": data, "rollout": rollout, "rollout_summary": summary }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::plan::{RolloutPlan, Step};

    fn state(status: Status, completed: usize, reason: Option<&str>) -> RolloutState {
        let step = |number: usize, host: &str| Step {
            number,
            percent: None,
            hosts: vec![host.to_string()],
            total: number,
        };
        let now = chrono::Utc::now();
        RolloutState {
            app: "shop".into(),
            stage: "prod".into(),
            desired: "20261124T050000Z".into(),
            stable: Default::default(),
            plan: RolloutPlan {
                strategy: "canary".into(),
                steps: vec![step(1, "a"), step(2, "b"), step(3, "c")],
            },
            completed,
            status,
            reason: reason.map(str::to_string),
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
        }
    }

    #[test]
    fn every_ending_of_a_rollout_is_told_as_it_is() {
        let gate = Some("health gate failed at step 2: b: status 500");
        let failed = state(Status::Failed, 1, gate);
        assert_eq!(
            rollout_summary(&failed),
            "canary rollout of 20261124T050000Z: failed at step 2/3: health gate failed at step 2: b: status 500"
        );
        let steps: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|h| host_step(&failed, h).unwrap())
            .collect();
        assert_eq!(
            steps,
            [
                "step 1/3 switched back",
                "step 2/3 failed, switched back",
                "step 3/3 not reached"
            ]
        );
        let aborted = state(Status::Aborted, 1, Some("aborted by ops@laptop"));
        assert!(
            rollout_summary(&aborted).ends_with("aborted after step 1/3: aborted by ops@laptop")
        );
        assert_eq!(host_step(&aborted, "a").unwrap(), "step 1/3 switched back");
        assert_eq!(host_step(&aborted, "b").unwrap(), "step 2/3 not reached");
        let done = state(Status::Done, 3, None);
        assert!(rollout_summary(&done).ends_with("done: 3 of 3 step(s)"));
        assert_eq!(host_step(&done, "c").unwrap(), "step 3/3 done");
        let paused = state(Status::Paused, 1, Some("manual pause"));
        assert!(rollout_summary(&paused).ends_with("paused after step 1/3: manual pause"));
        assert_eq!(host_step(&paused, "b").unwrap(), "step 2/3 pending");
        let running = state(Status::Running, 2, None);
        assert!(rollout_summary(&running).ends_with("running: step 3/3 under way"));
        assert_eq!(host_step(&running, "x"), None);
    }
}
