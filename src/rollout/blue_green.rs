//! Blue-green rollback: the `traffic` hook moves traffic back to the pool that is still
//! on its release; no host is switched.

use serde_json::json;

use super::state::{self, Status};
use crate::config::Stage;
use crate::error::{Error, Result};
use crate::fleet::Fleet;
use crate::operation::{self, Acted, Spec};
use crate::release::{HostState, ReleaseState};
use crate::run::{Context, Outcome};
use crate::script;

/// `slipway rollback STAGE` with blue-green: the `traffic` hook moves traffic back to the
/// previous pool (still on its release, restarted and untouched since), and the release
/// of the pool left is marked rolled-back. No host is switched.
pub async fn blue_green_rollback(
    stage: &Stage,
    ctx: &Context,
    reason: Option<String>,
) -> Result<Outcome> {
    let started = std::time::Instant::now();
    let fleet = Fleet::connect(stage, ctx.reporter.clone()).await?;
    let spec = Spec {
        action: "rollback",
        then: "",
        before_unlock: None,
        started,
    };
    let result = operation::with_lock(&fleet, ctx, spec, async |states| {
        match traffic_back(&fleet, ctx, states, reason.as_deref()).await {
            Ok((outcome, from, to)) => Acted {
                from,
                to,
                reason: reason.clone(),
                paused: false,
                result: Ok(outcome),
            },
            Err(e) => Acted {
                reason: reason.clone(),
                ..Acted::new(Err(e))
            },
        }
    })
    .await;
    fleet.close().await;
    result
}

async fn traffic_back(
    fleet: &Fleet,
    ctx: &Context,
    states: &[HostState],
    reason: Option<&str>,
) -> Result<(Outcome, Option<String>, Option<String>)> {
    let stage = &fleet.stage;
    let Some(mut st) = state::read(fleet).await? else {
        return Err(Error::Refused(format!(
            "no blue-green rollout recorded on stage {}: nothing to move traffic back to",
            stage.name
        )));
    };
    if st.in_progress() {
        return Err(Error::Refused(format!(
            "a rollout is in progress ({}): traffic has not moved yet; use `slipway rollout abort {}`",
            st.describe(),
            stage.name
        )));
    }
    let (Some(live), Some(back)) = (st.live_pool.clone(), st.previous_pool.clone()) else {
        return Err(Error::Refused(format!(
            "only one pool has ever had traffic on stage {}: there is no previous pool to move traffic back to",
            stage.name
        )));
    };
    if live == back {
        return Err(Error::Refused(
            "traffic is already on the previous pool".into(),
        ));
    }
    // The pool taking traffic must be on a release that is still complete and good.
    let back_hosts: Vec<usize> = fleet
        .all()
        .into_iter()
        .filter(|&i| fleet.host_config(i).pool.as_deref() == Some(back.as_str()))
        .collect();
    let mut back_release = None;
    for &i in &back_hosts {
        let cur = states[i].current();
        let good = cur
            .as_ref()
            .and_then(|c| states[i].release(c))
            .is_some_and(|r| r.is_good());
        if !good {
            return Err(Error::Refused(format!(
                "{}: the {back} pool is not on a good release ({}): deploy instead",
                fleet.name(i),
                cur.map(|c| c.to_string())
                    .unwrap_or_else(|| "nothing".into())
            )));
        }
        back_release = cur;
    }
    let why = reason.unwrap_or("rollback");
    let mut env = vec![
        ("SLIPWAY_APP".to_string(), stage.app.clone()),
        ("SLIPWAY_STAGE".to_string(), stage.name.clone()),
        ("SLIPWAY_POOL".to_string(), back.clone()),
        ("SLIPWAY_ROLLOUT_REASON".to_string(), why.to_string()),
    ];
    if let Some(r) = &back_release {
        env.push(("SLIPWAY_RELEASE_ID".to_string(), r.to_string()));
    }
    super::executor::local_hooks(fleet, "traffic", &stage.rollout.traffic, &env)
        .await
        .map_err(|m| {
            Error::Refused(format!(
                "moving traffic back to the {back} pool failed, traffic stays on {live}: {m}"
            ))
        })?;
    // The release the left pool runs is marked rolled-back (it stays current there until
    // the next deploy, which goes to that pool: it is now the idle one).
    let left_hosts: Vec<usize> = fleet
        .all()
        .into_iter()
        .filter(|&i| fleet.host_config(i).pool.as_deref() == Some(live.as_str()))
        .filter(|&i| {
            states[i]
                .current()
                .and_then(|c| states[i].release(&c).and_then(|r| r.meta.clone()))
                .is_some()
        })
        .collect();
    let left = left_hosts.first().and_then(|&i| states[i].current());
    let _ = fleet
        .step_on(
            &left_hosts,
            "mark-rolled-back",
            |i| {
                let cur = states[i].current();
                let meta = cur
                    .as_ref()
                    .and_then(|c| states[i].release(c))
                    .and_then(|r| r.meta.clone());
                match (cur, meta) {
                    (Some(c), Some(m)) => script::write_meta(
                        &fleet.layout,
                        &c,
                        &m.with_state(ReleaseState::RolledBack, Some(why.to_string()))
                            .to_line(),
                    ),
                    _ => String::new(),
                }
            },
            None,
            stage.timeouts.command,
        )
        .await;
    st.live_pool = Some(back.clone());
    st.previous_pool = Some(live.clone());
    st.status = Status::Aborted;
    st.reason = Some(format!(
        "traffic moved back to the {back} pool by {}: {why}",
        ctx.actor.name()
    ));
    state::write(fleet, &mut st).await;
    let from = left.map(|r| r.to_string());
    let to = back_release.map(|r| r.to_string());
    let outcome = Outcome {
        human: format!(
            "traffic moved back to the {back} pool ({}); the {live} pool keeps {} (marked rolled-back) and gets the next deploy",
            to.clone().unwrap_or_default(),
            from.clone().unwrap_or_default()
        ),
        data: json!({ "pool": back, "from": from, "to": to }),
    };
    // The release left and the release gone back to, for the audit record.
    Ok((outcome, from, to))
}
