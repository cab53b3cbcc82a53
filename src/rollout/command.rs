//! `slipway rollout plan|status|pause|resume|promote|abort|retry STAGE`: the commands
//! that look at and steer a staged rollout from any invocation, on any machine, through
//! the state persisted on the hosts.

use std::collections::BTreeMap;

use chrono::Utc;
use serde_json::json;

use super::abort::abort;
use super::executor::{Executor, Failure, Mode, Progress};
use super::plan;
use super::state::{self, RolloutState, Status};
use crate::config::Stage;
use crate::error::{Error, Result};
use crate::fleet::Fleet;
use crate::layout::ReleaseId;
use crate::operation::{self, Acted, Spec};
use crate::probe::probe;
use crate::release::{HostState, ReleaseState};
use crate::run::{Context, Outcome};
use crate::script;
use crate::switch::nonce;

/// `rollout plan`: pure, from the configuration; no host is contacted.
pub fn show_plan(stage: &Stage) -> Outcome {
    let names: Vec<String> = stage.hosts.iter().map(|h| h.name.clone()).collect();
    if let crate::config::Strategy::Ab(test) = &stage.rollout.strategy {
        let p = crate::traffic::ab::plan(test, &names, false);
        let human = format!(
            "Rollout plan of {} on stage {}: A/B test by users on all {} host(s) at once, behind the proxy ([traffic])\n  before the test: the new release starts in the free slot and must pass its health check\n  step 1: {}% of users on the new slot (sticky) for {}; both cohorts' requests, 5xx/4xx rates and p50/p95/p99 read from the access log, compared (5xx: two-proportion z-test; latency: Mann-Whitney U; both two-sided, each at alpha/2 = {})\n  then {}\n  step 2 (if the new release is to be stable): everyone on the new slot, `current` renamed, the old slot drained and stopped\n  (a first deploy has one step: everyone on slot a, no test)",
            stage.app,
            stage.name,
            names.len(),
            crate::traffic::split::trim(test.split),
            humantime::format_duration(test.duration),
            stage.gate.as_ref().map(|g| g.alpha / 2.0).unwrap_or(0.025),
            match test.winner {
                crate::config::WinnerRule::Manual => format!(
                    "a pause with the result: `slipway rollout promote {}` makes the winner stable (no winner: the new release), `slipway rollout abort {0}` keeps the stable one",
                    stage.name
                ),
                crate::config::WinnerRule::Auto => "at once: the new release goes on to step 2 if it won; otherwise (the stable release won, or no winner) everyone goes back to the stable slot and the new release is stopped".into(),
            }
        );
        return Outcome {
            human,
            data: json!({ "stage": stage.name, "plan": p, "traffic": true, "ab": { "split": test.split, "duration_secs": test.duration.as_secs_f64(), "winner": match test.winner { crate::config::WinnerRule::Manual => "manual", crate::config::WinnerRule::Auto => "auto" } } }),
        };
    }
    if stage.traffic.is_some() {
        let p = crate::traffic::plan(&stage.rollout.strategy.user_steps(), &names, false);
        let mut human = format!(
            "Rollout plan of {} on stage {}: canary by users on all {} host(s) at once, behind the proxy ([traffic])\n  before step 1: the new release starts in the free slot and must pass its health check\n",
            stage.app,
            stage.name,
            names.len()
        );
        for step in &p.steps {
            human.push_str(&format!(
                "  step {}: {}% of users on the new slot, then the gate on it\n",
                step.number,
                crate::traffic::split::trim(step.percent.unwrap_or(100.0))
            ));
        }
        human.push_str(
            "  then promotion: everyone on the new slot, `current` renamed, the old slot drained and stopped\n  (a first deploy has one step: everyone on slot a)",
        );
        return Outcome {
            human,
            data: json!({ "stage": stage.name, "plan": p, "traffic": true }),
        };
    }
    if stage.rollout.strategy == crate::config::Strategy::BlueGreen {
        let pools: Vec<(String, Option<String>)> = stage
            .hosts
            .iter()
            .map(|h| (h.name.clone(), h.pool.clone()))
            .collect();
        let mut human = format!(
            "Rollout plan of {} on stage {}: blue-green; the next deploy switches the pool without traffic (see `slipway rollout status {}`), gates it, then runs the traffic hook\n",
            stage.app, stage.name, stage.name
        );
        let mut data = Vec::new();
        for pool in ["blue", "green"] {
            let p = plan::blue_green(pool, &pools);
            human.push_str(&format!("  {pool}: {}\n", p.steps[0].hosts.join(", ")));
            data.push(json!({ "pool": pool, "plan": p }));
        }
        return Outcome {
            human,
            data: json!({ "stage": stage.name, "pools": data }),
        };
    }
    let p = plan::plan(&stage.rollout.strategy, &stage.app, &names);
    let worst = plan::worst_case(
        &p,
        &stage.rollout,
        stage.health.as_ref(),
        &stage.timeouts,
        !stage.restart_hooks.is_empty(),
    );
    let human = plan::render(&stage.name, &stage.app, &p, &worst);
    let data = json!({
        "stage": stage.name,
        "plan": p,
        "worst_case": {
            "promotion_secs": worst.promotion.as_secs_f64(),
            "manual_pauses": worst.manual_pauses,
            "rollback_secs": worst.rollback.as_secs_f64(),
        },
    });
    Outcome { human, data }
}

/// `rollout status`: the persisted state and where every host stands. Takes no lock.
pub async fn status(stage: &Stage, ctx: &Context, key: Option<&str>) -> Result<Outcome> {
    if key.is_some() && stage.traffic.is_none() {
        return Err(Error::Usage(format!(
            "--key needs [traffic] in stage {}: it says which slot a user's key lands on",
            stage.name
        )));
    }
    if key.is_some_and(str::is_empty) {
        return Err(Error::Usage(
            "--key needs a value: a request without one is split by its client address".into(),
        ));
    }
    let fleet = Fleet::connect(stage, ctx.reporter.clone()).await?;
    let result = async {
        let st = state::read(&fleet).await?;
        let states = probe(&fleet).await?;
        // [traffic]: the split each host's proxy has in force, read from the hosts.
        let traffic = match crate::traffic::Driver::new(&fleet, ctx.actor.clone(), String::new()) {
            Some(d) => Some(d.read().await?),
            None => None,
        };
        Ok::<_, Error>((st, states, traffic))
    }
    .await;
    fleet.close().await;
    let (st, states, traffic) = result?;
    let traffic_lines = |human: &mut String| -> Vec<serde_json::Value> {
        let Some(found) = &traffic else {
            return vec![];
        };
        let mut out = Vec::new();
        for (s, h) in states.iter().zip(found) {
            let text = h
                .split
                .as_ref()
                .map(|x| x.describe())
                .unwrap_or_else(|| "no include in place".into());
            human.push_str(&format!("  {:<24} traffic: {text}\n", s.host));
            let lands = key.and_then(|k| h.split.as_ref().map(|x| (k, x.slot_for(k))));
            if let Some((k, slot)) = lands {
                human.push_str(&format!(
                    "  {:<24} key {k:?} lands on slot {slot} ({})\n",
                    s.host,
                    h.release_in(slot)
                        .map(|r| r.to_string())
                        .unwrap_or_else(|| "no release".into())
                ));
            }
            out.push(json!({
                "host": s.host,
                "split": h.split,
                "slots": { "a": h.a.as_ref().map(|r| r.to_string()), "b": h.b.as_ref().map(|r| r.to_string()) },
                "key_slot": lands.map(|(_, slot)| slot),
            }));
        }
        out
    };
    let Some(st) = st else {
        let mut human = format!("no rollout recorded on stage {}\n", stage.name);
        let split = traffic_lines(&mut human);
        return Ok(Outcome {
            human: human.trim_end().to_string(),
            data: json!({ "rollout": null, "traffic": split }),
        });
    };
    let step_of: BTreeMap<&str, usize> = st
        .plan
        .steps
        .iter()
        .flat_map(|s| s.hosts.iter().map(move |h| (h.as_str(), s.number)))
        .collect();
    let mut human = format!(
        "{}\n  started by {} at {}, updated {}\n",
        st.describe(),
        st.started_by,
        st.started_at.format("%Y-%m-%dT%H:%M:%SZ"),
        st.updated_at.format("%Y-%m-%dT%H:%M:%SZ"),
    );
    if let Some(live) = &st.live_pool {
        human.push_str(&format!(
            "  traffic: {live} pool{}\n",
            st.previous_pool
                .as_ref()
                .map(|p| format!(" (previous: {p})"))
                .unwrap_or_default()
        ));
    }
    if let Some(g) = &st.last_gate {
        human.push_str(&format!(
            "  last gate (step {}): {}{}\n",
            g.step,
            g.verdict,
            if g.details.is_empty() {
                String::new()
            } else {
                format!(": {}", g.details.join("; "))
            }
        ));
    }
    if let Some(ab) = &st.ab {
        human.push_str(&format!("  {}\n", ab.text().replace('\n', "\n  ")));
    }
    // The pictures of this release's traffic gates, if this machine ran them.
    let charts =
        crate::traffic::chart::written(&stage.app, &stage.name, &st.desired, st.plan.steps.len());
    for (step, path) in &charts {
        human.push_str(&format!("  gate chart, step {step}: {}\n", path.display()));
    }
    let mut hosts = Vec::new();
    for s in &states {
        let current = s.current().map(|c| c.to_string());
        let on = if current.as_deref() == Some(st.desired.as_str()) {
            "desired"
        } else if current == st.stable.get(&s.host).cloned().flatten() {
            "stable"
        } else {
            "other"
        };
        let step = step_of.get(s.host.as_str()).copied();
        let lock = s
            .lock
            .as_ref()
            .map(|l| {
                format!(
                    "  locked by {}",
                    l.as_ref()
                        .map(|l| l.describe())
                        .unwrap_or_else(|| "an unknown holder".into())
                )
            })
            .unwrap_or_default();
        human.push_str(&format!(
            "  {:<24} step {:<3} {:<18} ({on}){lock}\n",
            s.host,
            step.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
            current.as_deref().unwrap_or("(none)"),
        ));
        hosts.push(json!({
            "host": s.host,
            "step": step,
            "current": current,
            "on": on,
            "stable": st.stable.get(&s.host),
            "locked": s.lock.is_some(),
        }));
    }
    if let Some(t) = &st.traffic {
        human.push_str(&format!(
            "  users: new release in slot {}{}, {}% recorded as in force{}\n",
            t.canary,
            t.stable
                .map(|s| format!(", stable in slot {s}"))
                .unwrap_or_default(),
            crate::traffic::split::trim(t.percent),
            if t.promoted { " (promoted)" } else { "" }
        ));
    }
    let split = traffic_lines(&mut human);
    if st.status == Status::Running && states.iter().all(|s| s.lock.is_none()) {
        human.push_str(&format!(
            "  no deployer holds the lock: the run that drove this rollout is gone. Go on with `slipway rollout resume {0}`, or go back with `slipway rollout abort {0}`\n",
            stage.name
        ));
    } else if st.status == Status::Running {
        human.push_str(&format!(
            "  if the deployer that holds the lock is gone (killed, crashed): `slipway rollout resume {0}` or `slipway rollout abort {0}` (they take over a lock left by a dead process on this machine; from another machine, `slipway unlock {0}` first)\n",
            stage.name
        ));
    }
    Ok(Outcome {
        human: human.trim_end().to_string(),
        data: json!({
            "rollout": st,
            "hosts": hosts,
            "traffic": split,
            "gate_charts": charts
                .iter()
                .map(|(step, p)| json!({ "step": step, "path": p.display().to_string() }))
                .collect::<Vec<_>>(),
        }),
    })
}

/// `rollout pause`: marks the rollout paused. A deployer driving it stops at the next
/// step boundary; no lock is taken (that deployer holds it).
pub async fn pause(stage: &Stage, ctx: &Context) -> Result<Outcome> {
    let fleet = Fleet::connect(stage, ctx.reporter.clone()).await?;
    let result = async {
        let mut st = in_progress(&fleet).await?;
        if st.status == Status::Paused {
            return Ok(Outcome {
                human: format!("already paused: {}", st.describe()),
                data: json!({ "rollout": st }),
            });
        }
        st.status = Status::Paused;
        st.reason = Some(format!("paused by {} (`slipway rollout pause`)", ctx.actor.name()));
        state::write(&fleet, &mut st).await;
        // On record too; without the deploy lock (the deployer holds it): the append
        // locks the log itself.
        let mut record = operation::record(&fleet, ctx, "rollout-pause", std::time::Instant::now());
        record.to = Some(st.desired.clone());
        record.reason = st.reason.clone();
        crate::audit::append(&fleet, &record).await;
        Ok(Outcome {
            human: format!(
                "{}; a running deployer stops after its current step. Go on with `slipway rollout resume {}`",
                st.describe(),
                stage.name
            ),
            data: json!({ "rollout": st }),
        })
    }
    .await;
    fleet.close().await;
    result
}

async fn in_progress(fleet: &Fleet) -> Result<RolloutState> {
    match state::read(fleet).await? {
        Some(st) if st.in_progress() => Ok(st),
        Some(st) => Err(Error::Refused(format!(
            "no rollout in progress on stage {}: the last one is {}",
            fleet.stage.name,
            st.describe()
        ))),
        None => Err(Error::Refused(format!(
            "no rollout recorded on stage {}",
            fleet.stage.name
        ))),
    }
}

/// What a locked rollout command does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Go on from where the rollout stands (a pause, or a crashed deployer's step).
    Resume,
    /// Go on past the pause; `full`: through every remaining step without pausing.
    Promote { full: bool },
    /// Every host back to its stable release.
    Abort,
    /// An aborted or failed rollout again, from its first step.
    Retry,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Resume => "rollout-resume",
            Action::Promote { .. } => "rollout-promote",
            Action::Abort => "rollout-abort",
            Action::Retry => "rollout-retry",
        }
    }
}

/// `rollout resume|promote|abort|retry`: under the deploy lock, with an audit record.
pub async fn steer(stage: &Stage, ctx: &Context, action: Action) -> Result<Outcome> {
    let started = std::time::Instant::now();
    let fleet = Fleet::connect(stage, ctx.reporter.clone()).await?;
    if matches!(action, Action::Resume | Action::Abort)
        && let Err(e) = take_over_orphaned_lock(&fleet, ctx).await
    {
        fleet.close().await;
        return Err(e);
    }
    let spec = Spec {
        action: action.name(),
        then: "",
        before_unlock: None,
        started,
    };
    let result = operation::with_lock(&fleet, ctx, spec, async |states| {
        let (desired, result) = locked(&fleet, ctx, action, states).await;
        match result {
            Ok(steered) => Acted {
                from: None,
                to: desired,
                reason: steered.reason,
                paused: steered.paused,
                result: Ok(steered.outcome),
            },
            Err(e) => Acted {
                to: desired,
                reason: Some(e.to_string()),
                ..Acted::new(Err(e))
            },
        }
    })
    .await;
    fleet.close().await;
    result
}

/// A deployer killed mid-rollout leaves its lock behind. When that lock was taken on this
/// machine by a process that no longer exists, and the rollout state says `running`,
/// `resume` and `abort` break it (saying so) instead of sending the user to `unlock`.
/// A lock from another machine cannot be checked: it is left to `slipway unlock`.
async fn take_over_orphaned_lock(fleet: &Fleet, ctx: &Context) -> Result<()> {
    let states = probe(fleet).await?;
    let holders: Vec<(usize, &crate::release::LockInfo)> = states
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.lock.as_ref().map(|l| (i, l)))
        .filter_map(|(i, l)| l.as_ref().map(|l| (i, l)))
        .collect();
    let locked = states.iter().filter(|s| s.lock.is_some()).count();
    if locked == 0 || holders.len() != locked {
        return Ok(());
    }
    let orphaned = holders
        .iter()
        .all(|(_, l)| l.machine == ctx.actor.machine && !crate::lock::process_alive(l.pid));
    if !orphaned {
        return Ok(());
    }
    match state::read(fleet).await? {
        Some(st) if st.status == Status::Running => {}
        _ => return Ok(()),
    }
    let which: Vec<usize> = holders.iter().map(|(i, _)| *i).collect();
    fleet.reporter.warning(
        None,
        &format!(
            "breaking the deploy lock of {}: that process is gone (killed mid-rollout)",
            holders[0].1.describe()
        ),
    );
    let script = script::break_lock(&fleet.layout);
    let results = fleet
        .step_on(
            &which,
            "unlock",
            |_| script.clone(),
            None,
            fleet.stage.timeouts.command,
        )
        .await;
    if let Some((i, Err(m))) = results.iter().find(|(_, r)| r.is_err()) {
        return Err(Error::Step {
            host: fleet.name(*i).into(),
            step: "unlock".into(),
            message: m.to_string(),
        });
    }
    Ok(())
}

/// What steering a rollout did, for the command's result and its audit record.
struct Steered {
    outcome: Outcome,
    /// Stopped at a pause (recorded as `paused`).
    paused: bool,
    /// Why it paused or went back.
    reason: Option<String>,
}

async fn locked(
    fleet: &Fleet,
    ctx: &Context,
    action: Action,
    states: &[HostState],
) -> (Option<String>, Result<Steered>) {
    let st = match action {
        Action::Retry => match state::read(fleet).await {
            Ok(Some(st)) if matches!(st.status, Status::Aborted | Status::Failed) => st,
            Ok(Some(st)) => {
                return (
                    Some(st.desired.clone()),
                    Err(Error::Refused(format!(
                        "only an aborted or failed rollout can be retried; the last one is {}",
                        st.describe()
                    ))),
                );
            }
            Ok(None) => {
                return (
                    None,
                    Err(Error::Refused(format!(
                        "no rollout recorded on stage {}",
                        fleet.stage.name
                    ))),
                );
            }
            Err(e) => return (None, Err(e)),
        },
        _ => match in_progress(fleet).await {
            Ok(st) => st,
            Err(e) => return (None, Err(e)),
        },
    };
    let desired_text = Some(st.desired.clone());
    let desired = match ReleaseId::parse(&st.desired) {
        Ok(d) => d,
        Err(m) => {
            return (
                desired_text,
                Err(Error::Refused(format!(
                    "the rollout state names no valid release: {m}"
                ))),
            );
        }
    };
    // After an A/B test the stable release won: going on means keeping it.
    let stable_won = matches!(action, Action::Promote { .. } | Action::Resume)
        && st.plan.strategy == "ab"
        && st.completed >= 1
        && st
            .ab
            .as_ref()
            .is_some_and(|r| r.winner == crate::traffic::ab::Winner::Stable);
    let result = match action {
        _ if stable_won => {
            let why = format!(
                "the stable release won the A/B test against {desired}; kept by {} (`rollout {}`)",
                ctx.actor.name(),
                if action == Action::Resume {
                    "resume"
                } else {
                    "promote"
                }
            );
            aborted_by_hand(fleet, ctx, states, st, &desired, why)
                .await
                .map(|mut steered| {
                    steered.outcome.human = format!(
                        "A/B test: the stable release won, so it stays: every user is on it again and {desired} is stopped; {}",
                        steered.outcome.human
                    );
                    if let Some(o) = steered.outcome.data.as_object_mut() {
                        o.insert("ab_winner".into(), "stable".into());
                    }
                    steered
                })
        }
        Action::Abort => {
            let why = format!("aborted by {}", ctx.actor.name());
            aborted_by_hand(fleet, ctx, states, st, &desired, why).await
        }
        Action::Retry => {
            if fleet.stage.database.is_some() && st.migrated {
                Err(Error::Refused(format!(
                    "rollout of {desired} cannot be retried: its migrations were undone when it was rolled back. Deploy again instead (`slipway deploy {}`), which migrates first",
                    fleet.stage.name
                )))
            } else {
                let mut st = st;
                st.stable = states
                    .iter()
                    .map(|s| (s.host.clone(), s.current().map(|c| c.to_string())))
                    .collect();
                // [traffic]: the slots are chosen again from what the proxies have now
                // (a rollback since may have moved users to the other slot).
                if st.traffic.is_some() {
                    match retry_traffic(fleet, ctx).await {
                        Ok(t) => st.traffic = Some(t),
                        Err(e) => return (desired_text, Err(e)),
                    }
                }
                st.completed = 0;
                st.last_gate = None;
                st.ab = None;
                st.started_by = ctx.actor.name();
                st.started_at = Utc::now();
                proceed(fleet, ctx, states, st, &desired, Mode::default()).await
            }
        }
        Action::Resume => {
            proceed(
                fleet,
                ctx,
                states,
                st,
                &desired,
                Mode {
                    resumed: true,
                    full: false,
                },
            )
            .await
        }
        Action::Promote { full } => {
            proceed(
                fleet,
                ctx,
                states,
                st,
                &desired,
                Mode {
                    resumed: true,
                    full,
                },
            )
            .await
        }
    };
    (desired_text, result)
}

/// The traffic part of a retried rollout: slots chosen from the proxies' includes now.
async fn retry_traffic(fleet: &Fleet, ctx: &Context) -> Result<crate::traffic::TrafficState> {
    let Some(driver) = crate::traffic::Driver::new(fleet, ctx.actor.clone(), ctx.command.clone())
    else {
        return Err(Error::Refused(format!(
            "this rollout moved users between slots, but stage {} has no [traffic] table now",
            fleet.stage.name
        )));
    };
    crate::traffic::start_state(&driver).await
}

/// `rollout abort` (or `promote` after an A/B test the stable release won): back to the
/// stable releases, then `on_rollback` and the event.
async fn aborted_by_hand(
    fleet: &Fleet,
    ctx: &Context,
    states: &[HostState],
    st: RolloutState,
    desired: &ReleaseId,
    why: String,
) -> Result<Steered> {
    if st.traffic.as_ref().is_some_and(|t| t.promoted) {
        return Err(Error::Refused(format!(
            "the rollout of {desired} was promoted (every user is on it and `current` moved): finish it with `slipway rollout resume {0}`, then go back with `slipway rollback {0}`",
            fleet.stage.name
        )));
    }
    let result = abort(fleet, states, st, desired, &why, ctx).await;
    if let Ok(Some(after)) = state::read(fleet).await {
        let env = vec![
            ("SLIPWAY_APP".to_string(), after.app.clone()),
            ("SLIPWAY_STAGE".to_string(), after.stage.clone()),
            ("SLIPWAY_RELEASE_ID".to_string(), after.desired.clone()),
            ("SLIPWAY_ROLLOUT_REASON".to_string(), why.clone()),
        ];
        if let Err(m) = super::executor::local_hooks(
            fleet,
            "on_rollback",
            &fleet.stage.rollout.on_rollback,
            &env,
        )
        .await
        {
            fleet.reporter.warning(None, &format!("on_rollback: {m}"));
        }
        super::executor::send_event(fleet, &after, "aborted", None).await;
    }
    result.map(|outcome| Steered {
        outcome,
        paused: false,
        reason: Some(why),
    })
}

/// Drives the rollout on from its state; on a failure, every switched host goes back.
async fn proceed(
    fleet: &Fleet,
    ctx: &Context,
    states: &[HostState],
    st: RolloutState,
    desired: &ReleaseId,
    mode: Mode,
) -> Result<Steered> {
    let driver = if st.traffic.is_some() {
        crate::traffic::Driver::new(fleet, ctx.actor.clone(), ctx.command.clone())
    } else {
        None
    };
    if st.traffic.is_some() && driver.is_none() {
        return Err(Error::Refused(format!(
            "this rollout moves users between slots, but stage {} has no [traffic] table now: put it back to go on or abort",
            fleet.stage.name
        )));
    }
    let switch = |i: usize| {
        let records = states[i].switch_records(desired, ReleaseState::Ready, None);
        script::switch(&fleet.layout, Some(desired), &nonce(), &records)
    };
    let mut exec = Executor {
        fleet,
        release: desired.clone(),
        state: st,
        persist: true,
        switch: &switch,
        interrupt: ctx.interrupt.clone(),
        traffic: driver.as_ref(),
    };
    let total = exec.state.plan.steps.len();
    match exec.advance(mode).await {
        Ok(Progress::Done) => Ok(Steered {
            outcome: Outcome {
                human: format!(
                    "rollout of {} to {} done: {desired} is live on all {} host(s) of the plan",
                    fleet.stage.app,
                    fleet.stage.name,
                    exec.state.plan.host_count()
                ),
                data: json!({ "release": desired.as_str(), "done": true, "steps": total }),
            },
            paused: false,
            reason: None,
        }),
        Ok(Progress::Paused(why)) => Ok(Steered {
            outcome: Outcome {
                human: format!(
                    "rollout of {} to {} paused: {desired} is live on {} of {} host(s) ({why}). Go on with `slipway rollout promote {2}`, or go back with `slipway rollout abort {2}`",
                    fleet.stage.app,
                    fleet.stage.name,
                    exec.state.hosts_through(exec.state.completed).len(),
                    exec.state.plan.host_count(),
                ),
                data: json!({ "release": desired.as_str(), "paused": true, "reason": why, "completed_steps": exec.state.completed, "steps": total }),
            },
            paused: true,
            reason: Some(why),
        }),
        Err(Failure { reason, .. }) => {
            // Hosts are read again: the executor switched some since the lock's probe.
            let now = probe(fleet).await?;
            let st = exec.state.clone();
            let result = abort(fleet, &now, st, desired, &reason, ctx).await;
            exec.rolled_back(&reason).await;
            match result {
                Ok(o) => Err(Error::Reverted(format!(
                    "rollout of {desired} failed ({reason}); {}",
                    o.human
                ))),
                Err(e) => Err(e),
            }
        }
    }
}
