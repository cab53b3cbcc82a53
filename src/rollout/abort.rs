//! Aborting a rollout: every host on the new release goes back to its stable one
//! (code, restart, then schema when the rollout's deploy migrated), through the one
//! switch-back.

use serde_json::json;

use super::state::{self, RolloutState, Status};
use crate::db;
use crate::error::{Error, Result};
use crate::fleet::Fleet;
use crate::layout::{Layout, ReleaseId};
use crate::release::{HostState, ReleaseState};
use crate::run::Outcome;
use crate::script;
use crate::switch::{self, Transition};

/// Returns every host on `desired` to its stable release (code, restart, then schema when
/// the rollout's deploy migrated), marks `desired` rolled-back, records the state.
pub(super) async fn abort(
    fleet: &Fleet,
    states: &[HostState],
    mut st: RolloutState,
    desired: &ReleaseId,
    why: &str,
    ctx: &crate::run::Context,
) -> Result<Outcome> {
    let on_desired: Vec<usize> = fleet
        .all()
        .into_iter()
        .filter(|&i| states[i].current().as_ref() == Some(desired))
        .collect();
    let target_of = |i: usize| -> Option<ReleaseId> {
        st.stable
            .get(fleet.name(i))
            .cloned()
            .flatten()
            .and_then(|t| ReleaseId::parse(&t).ok())
    };
    // The schema is planned before any host moves, like a rollback: a refusal touches nothing.
    let stable_targets: std::collections::BTreeSet<Option<ReleaseId>> =
        fleet.all().into_iter().map(target_of).collect();
    let schema = match (
        &fleet.stage.database,
        st.migrated,
        stable_targets.iter().next(),
    ) {
        (Some(_), true, Some(Some(target))) if stable_targets.len() == 1 => {
            let mut as_if_done: Vec<HostState> = states.to_vec();
            for s in &mut as_if_done {
                s.current_link = Some(Layout::current_target(desired));
            }
            db::undo::prepare(fleet, &as_if_done, target, db::undo::Options::default()).await?
        }
        _ => db::undo::SchemaRollback::Nothing,
    };
    let moves: Vec<Transition> = on_desired
        .iter()
        .map(|&i| {
            let s = &states[i];
            let target = target_of(i);
            let mut records = Vec::new();
            if let Some(meta) = s.release(desired).and_then(|r| r.meta.clone()) {
                records.push((
                    desired.clone(),
                    meta.with_state(ReleaseState::RolledBack, Some(why.to_string()))
                        .to_line(),
                ));
            }
            if let Some(t) = &target
                && let Some(meta) = s.release(t).and_then(|r| r.meta.clone())
            {
                records.push((
                    t.clone(),
                    meta.with_state(ReleaseState::Live, None).to_line(),
                ));
            }
            Transition {
                host: i,
                to: target,
                records,
                restart: true,
            }
        })
        .collect();
    // [traffic]: users go back to the stable slot first (one reload), the new slot's
    // instance stops; `current` left the stable release only if a promotion failed
    // half-way (the switch-back below puts it back). A by-hand abort of a promoted
    // rollout is refused before this (`rollout::command`).
    if let Some(mut t) = st.traffic.clone() {
        let Some(driver) =
            crate::traffic::Driver::new(fleet, ctx.actor.clone(), ctx.command.clone())
        else {
            return Err(Error::Refused(format!(
                "this rollout moves users between slots, but stage {} has no [traffic] table now: put it back, then abort",
                fleet.stage.name
            )));
        };
        let result = crate::traffic::back(&driver, &mut t, desired).await;
        st.traffic = Some(t);
        if let Err(m) = result {
            st.reason = Some(format!("{why}; moving users back failed: {m}"));
            state::write(fleet, &mut st).await;
            return Err(Error::Diverged(format!(
                "moving users back to the stable slot failed: {m}. Check with `slipway rollout status {0}`, fix the proxy, then run `slipway rollout abort {0}` again",
                fleet.stage.name
            )));
        }
    }
    let switched = switch::switch_back(fleet, &moves).await;
    let stuck = switched.stuck_names(fleet);
    // Mark the release rolled-back where it was never switched to, so no rollback picks it.
    let others: Vec<usize> = fleet
        .all()
        .into_iter()
        .filter(|i| !on_desired.contains(i))
        .filter(|&i| {
            states[i]
                .release(desired)
                .and_then(|r| r.meta.as_ref())
                .is_some()
        })
        .collect();
    let _ = fleet
        .step_on(
            &others,
            "mark-rolled-back",
            |i| {
                let meta = states[i]
                    .release(desired)
                    .and_then(|r| r.meta.clone())
                    .map(|m| {
                        m.with_state(ReleaseState::RolledBack, Some(why.to_string()))
                            .to_line()
                    })
                    .unwrap_or_default();
                script::write_meta(&fleet.layout, desired, &meta)
            },
            None,
            fleet.stage.timeouts.command,
        )
        .await;
    let back = &switched.back;
    let restart_failures = &switched.restart_failures;
    let schema_text = if stuck.is_empty() {
        match db::undo::apply_any(fleet, &schema).await {
            Ok(t) => t,
            Err(m) => {
                st.status = Status::Failed;
                st.reason = Some(format!("{why}; schema rollback failed: {m}"));
                state::write(fleet, &mut st).await;
                return Err(Error::Diverged(format!(
                    "every host is back on its stable release, but the schema rollback failed: {m}. Check with `slipway db status {}`",
                    fleet.stage.name
                )));
            }
        }
    } else {
        String::new()
    };
    st.status = if st.status == Status::Failed {
        Status::Failed
    } else {
        Status::Aborted
    };
    st.reason = Some(why.to_string());
    state::write(fleet, &mut st).await;
    if !stuck.is_empty() {
        return Err(Error::Diverged(format!(
            "switching back failed on {}: those hosts may still be on {desired}. Check with `slipway rollout status {}`, then run `slipway rollout abort {1}` again",
            stuck.join(", "),
            fleet.stage.name
        )));
    }
    if !restart_failures.is_empty() {
        return Err(Error::Diverged(format!(
            "every host is back on its stable release, but restart hooks failed ({}): the new code may still be running there",
            restart_failures.join("; ")
        )));
    }
    Ok(Outcome {
        human: format!(
            "{} host(s) switched back to their stable release ({} already there); {desired} marked rolled-back{}",
            back.len(),
            fleet.len() - back.len(),
            if schema_text.is_empty() {
                String::new()
            } else {
                format!("; database: {schema_text}")
            }
        ),
        data: json!({ "release": desired.as_str(), "aborted": true, "switched_back": back.len(), "reason": why, "schema": schema_text }),
    })
}
