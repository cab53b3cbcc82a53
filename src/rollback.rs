//! The rollback executor: plan the target, switch every host back at once, restart.

use serde_json::json;

use crate::config::Stage;
use crate::db::{self, undo::SchemaRollback};
use crate::error::{Error, Result};
use crate::fault;
use crate::fleet::{Fleet, first_failure};
use crate::layout::ReleaseId;
use crate::operation::{self, Acted, Spec};
use crate::plan::{self, PlanStep, RollbackPlan};
use crate::probe::probe;
use crate::release::common_current;
use crate::release::{HostState, ReleaseState};
use crate::run::{Context, Outcome};
use crate::script;
use crate::switch::{self, Transition, restart as run_restart};

pub struct Request {
    pub to: Option<ReleaseId>,
    pub reason: Option<String>,
    pub schema: crate::db::undo::Options,
    /// A drill's switch: the release left stays a good rollback target (`ready`), not
    /// `rolled-back`, so that a drill leaves the stage as it found it.
    pub rehearsal: bool,
}

pub async fn rollback(stage: &Stage, ctx: &Context, request: &Request) -> Result<Outcome> {
    // Blue-green: the previous pool is still on its release; moving traffic back is the rollback.
    if stage.rollout.strategy == crate::config::Strategy::BlueGreen && request.to.is_none() {
        return crate::rollout::blue_green::blue_green_rollback(stage, ctx, request.reason.clone())
            .await;
    }
    let started = std::time::Instant::now();
    let fleet = Fleet::connect(stage, ctx.reporter.clone()).await?;
    let result = if ctx.dry_run {
        dry_run(&fleet, request).await
    } else {
        // The lock script also checks the likely target: a round trip saved.
        let check = script::verify_likely_target(request.to.as_ref(), &stage.shared_paths());
        let spec = Spec {
            action: "rollback",
            then: &check,
            before_unlock: Some("rollback.before-unlock"),
            started,
        };
        operation::with_lock(&fleet, ctx, spec, async |states| {
            let (from, to, result) = match restore_archived(&fleet, request, states).await {
                Ok(states) => run_rollback(&fleet, ctx, request, &states).await,
                Err(e) => (common_current(states), request.to.clone(), Err(e)),
            };
            Acted {
                from,
                to: to.map(|t| t.to_string()),
                reason: request.reason.clone(),
                ..Acted::new(result)
            }
        })
        .await
    };
    fleet.close().await;
    result
}

async fn dry_run(fleet: &Fleet, request: &Request) -> Result<Outcome> {
    let states = probe(fleet).await?;
    let mut plan = plan_rollback(fleet, &states, request)?;
    let schema = db::undo::prepare(fleet, &states, &plan.to, request.schema).await?;
    add_schema_step(&mut plan, &schema);
    let human = render(&plan);
    let mut data = serde_json::to_value(&plan).unwrap_or_default();
    data["schema"] = schema.to_json();
    fleet.reporter.plan(&human, data);
    Ok(Outcome {
        human: "Nothing was changed (--dry-run).".into(),
        data: json!({ "dry_run": true, "to": plan.to.as_str(), "schema": schema.to_json() }),
    })
}

/// The schema step goes after the restart: code first, then schema.
fn add_schema_step(plan: &mut RollbackPlan, schema: &SchemaRollback) {
    if matches!(schema, SchemaRollback::Nothing) {
        return;
    }
    let at = plan
        .steps
        .iter()
        .position(|s| s.step == "audit")
        .unwrap_or(plan.steps.len());
    plan.steps.insert(
        at,
        PlanStep {
            step: "schema".into(),
            detail: schema.describe(),
        },
    );
}

fn plan_rollback(fleet: &Fleet, states: &[HostState], request: &Request) -> Result<RollbackPlan> {
    let target =
        plan::fleet_rollback_target(states, request.to.as_ref()).map_err(
            |refusal| match refusal {
                plan::RollbackRefusal::Diverged { .. } => Error::Diverged(refusal.to_string()),
                other => Error::Refused(other.to_string()),
            },
        )?;
    Ok(RollbackPlan {
        stage: fleet.stage.name.clone(),
        from: states
            .iter()
            .map(|s| (s.host.clone(), s.current().map(|c| c.to_string())))
            .collect(),
        to: target.clone(),
        steps: vec![
            PlanStep {
                step: "lock".into(),
                detail: "take the deploy lock on every host".into(),
            },
            PlanStep {
                step: "switch".into(),
                detail: format!(
                    "point current at releases/{target} on every host at once; mark the release left rolled-back"
                ),
            },
            PlanStep {
                step: "restart".into(),
                detail: if fleet.stage.restart_hooks.is_empty() {
                    "no restart hooks".into()
                } else {
                    format!("restart hooks: {}", fleet.stage.restart_hooks.join(", "))
                },
            },
            PlanStep {
                step: "audit".into(),
                detail: "append to .slipway/log.jsonl and release the lock".into(),
            },
        ],
    })
}

fn render(plan: &RollbackPlan) -> String {
    let mut s = format!(
        "Plan: roll back stage {} to release {}\n",
        plan.stage, plan.to
    );
    for (n, step) in plan.steps.iter().enumerate() {
        s.push_str(&format!("  {}. {:<8} {}\n", n + 1, step.step, step.detail));
    }
    s.push_str("Hosts:\n");
    for (host, from) in &plan.from {
        s.push_str(&format!(
            "  {:<24} {} -> {}\n",
            host,
            from.as_deref().unwrap_or("(none)"),
            plan.to
        ));
    }
    s
}

/// `rollback --to ID` where a host no longer has `releases/ID` but has its archive
/// (`archive_pruned`): the release is restored from the archive first; its manifest is
/// verified before the switch like any target's. Returns the hosts' states, read again
/// when something was restored.
async fn restore_archived(
    fleet: &Fleet,
    request: &Request,
    states: &[HostState],
) -> Result<Vec<HostState>> {
    let Some(id) = &request.to else {
        return Ok(states.to_vec());
    };
    let missing: Vec<usize> = fleet
        .all()
        .into_iter()
        .filter(|&i| states[i].release(id).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(states.to_vec());
    }
    let results = fleet
        .step_on(
            &missing,
            "restore",
            |_| script::restore_release(&fleet.layout, id),
            None,
            fleet.stage.timeouts.upload,
        )
        .await;
    if let Some(e) = first_failure(fleet, "restore", &results) {
        return Err(e);
    }
    let restored: Vec<&str> = results
        .iter()
        .filter(|(_, r)| r.as_ref().is_ok_and(|o| o.stdout.contains("restored")))
        .map(|(i, _)| fleet.name(*i))
        .collect();
    if restored.is_empty() {
        return Ok(states.to_vec());
    }
    fleet.reporter.info(&format!(
        "restored release {id} from backups/releases/{id}.tar.zst on {}",
        restored.join(", ")
    ));
    probe(fleet).await
}

async fn run_rollback(
    fleet: &Fleet,
    ctx: &Context,
    request: &Request,
    states: &[HostState],
) -> (Option<String>, Option<ReleaseId>, Result<Outcome>) {
    let from = common_current(states);
    // A staged rollout in progress has its own way back, to each host's stable release.
    if let Some(r) = crate::rollout::state::from_states(states).filter(|r| r.in_progress()) {
        return (
            from,
            None,
            Err(Error::Refused(format!(
                "a rollout is in progress: {}. Return every host to its stable release with `slipway rollout abort {}`",
                r.describe(),
                fleet.stage.name
            ))),
        );
    }
    let mut plan = match plan_rollback(fleet, states, request) {
        Ok(p) => p,
        Err(e) => return (from, None, Err(e)),
    };
    let target = plan.to.clone();
    // The schema is planned (and any refusal made) before a single host is switched.
    let schema = match db::undo::prepare(fleet, states, &target, request.schema).await {
        Ok(s) => s,
        Err(e) => return (from, Some(target), Err(e)),
    };
    add_schema_step(&mut plan, &schema);
    if !matches!(schema, SchemaRollback::Nothing) {
        fleet
            .reporter
            .info(&format!("schema: {}", schema.describe()));
    }
    let reason = request.reason.clone().unwrap_or_else(|| "rollback".into());
    fleet.reporter.info(&format!(
        "rolling back {} to {target} ({} host{})",
        fleet.stage.name,
        fleet.len(),
        if fleet.len() == 1 { "" } else { "s" }
    ));
    // Integrity: the target must still be what was deployed, on every host, before any
    // host is switched to it. The lock script checked the likely target already; the
    // hosts where that was another release (or nothing) are checked now.
    let mut unchecked = Vec::new();
    for (i, state) in states.iter().enumerate() {
        match &state.verified {
            Some(v) if v.id == target.as_str() && v.status == 0 => {}
            Some(v) if v.id == target.as_str() => {
                let error = Error::Step {
                    host: fleet.name(i).to_string(),
                    step: "verify".into(),
                    message: v.message.clone(),
                };
                fleet.reporter.failed(
                    fleet.name(i),
                    "verify",
                    std::time::Duration::ZERO,
                    &v.message,
                );
                return (from, Some(target), Err(error));
            }
            _ => unchecked.push(i),
        }
    }
    let shared = fleet.stage.shared_paths();
    let verified = fleet
        .step_on(
            &unchecked,
            "verify",
            |_| script::verify_release(&fleet.layout, &target, &shared),
            None,
            fleet.stage.timeouts.upload,
        )
        .await;
    if let Some(e) = first_failure(fleet, "verify", &verified) {
        return (from, Some(target), Err(e));
    }
    let all = fleet.all();
    // A roll forward migrates first, with the newer release's code: the older code
    // can run on the newer schema (as during any deploy), not the other way round.
    let mut schema_result = String::new();
    let mut schema_done = None;
    if schema.schema_first() {
        match db::undo::apply_any(fleet, &schema).await {
            Ok(text) => {
                schema_result = text;
                schema_done = Some(std::time::Instant::now());
            }
            Err(m) => {
                return (
                    from,
                    Some(target),
                    Err(Error::Step {
                        host: fleet
                            .stage
                            .database
                            .as_ref()
                            .map(|c| fleet.name(c.primary).to_string())
                            .unwrap_or_default(),
                        step: "migrate".into(),
                        message: format!(
                            "{m}; no host was switched (check the schema with `slipway db status {}`)",
                            fleet.stage.name
                        ),
                    }),
                );
            }
        }
    }
    if let Err(m) = fault::point("rollback.before-switch").await {
        return (
            from,
            Some(target),
            Err(Error::Step {
                host: "-".into(),
                step: "switch".into(),
                message: m,
            }),
        );
    }
    // [traffic]: the target starts in the slot that is not serving and takes every user
    // before `current` moves; the slot left drains and stops after.
    let driver = crate::traffic::Driver::new(fleet, ctx.actor.clone(), ctx.command.clone());
    let mut left_slot = None;
    if let Some(d) = &driver {
        match crate::traffic::rollback_to(d, &target).await {
            Ok(left) => left_slot = left,
            Err(e) => return (from, Some(target), Err(e)),
        }
    }
    let moves: Vec<Transition> = all
        .iter()
        .map(|&i| Transition {
            host: i,
            to: Some(target.clone()),
            records: records(&states[i], &target, &reason, request.rehearsal),
            restart: false,
        })
        .collect();
    let results = switch::apply(fleet, "switch", &moves).await;
    let failed: Vec<(usize, String)> = results
        .iter()
        .filter_map(|(i, r)| r.as_ref().err().map(|e| (*i, e.to_string())))
        .collect();
    if let Some((_, why)) = failed.first() {
        // Undo: put the hosts back where they were, so the stage stays on one release.
        // Every host, not only those that reported success: a host whose switch timed out
        // (a stalled connection) may still carry it out later. Nothing was restarted yet.
        let moves: Vec<Transition> = all
            .iter()
            .map(|&i| {
                let prior = states[i].current();
                let records: Vec<(ReleaseId, String)> = [prior.as_ref(), Some(&target)]
                    .into_iter()
                    .flatten()
                    .filter_map(|id| {
                        states[i]
                            .release(id)
                            .and_then(|r| r.meta.clone())
                            .map(|m| (id.clone(), m.to_line()))
                    })
                    .collect();
                Transition {
                    host: i,
                    to: prior,
                    records,
                    restart: false,
                }
            })
            .collect();
        let back = switch::switch_back(fleet, &moves).await;
        let stuck = back.stuck_names(fleet);
        let names: Vec<&str> = failed.iter().map(|(i, _)| fleet.name(*i)).collect();
        if schema_done.is_some() {
            return (
                from,
                Some(target.clone()),
                Err(Error::Diverged(format!(
                    "rollback to {target} failed on {} ({why}) after the schema was moved forward ({schema_result}): the hosts run older code on the newer schema. Run `slipway rollback {} --to {target}` again once the hosts are reachable",
                    names.join(", "),
                    fleet.stage.name
                ))),
            );
        }
        let error = if stuck.is_empty() {
            Error::Reverted(format!(
                "rollback to {target} failed on {} ({why}); every host was left on the release it was on",
                names.join(", ")
            ))
        } else {
            Error::Diverged(format!(
                "rollback to {target} failed on {} ({why}) and undoing it failed on {}: hosts are on different releases. Fix the hosts, then run `slipway rollback {} --to {target}`",
                names.join(", "),
                stuck.join(", "),
                fleet.stage.name
            ))
        };
        return (from, Some(target), Err(error));
    }
    let switched_at = std::time::Instant::now();
    let _ = fault::point("rollback.after-switch").await;
    if let (Some(d), Some((slot, release))) = (&driver, &left_slot) {
        d.drain(*slot).await;
        if let Err(m) = d.run(true, *slot, release).await {
            fleet.reporter.warning(None, &m);
        }
    }
    // With [traffic], `start` and `stop` run the slots' instances instead of restart hooks.
    if !fleet.stage.restart_hooks.is_empty() && driver.is_none() {
        let results = run_restart(fleet, &all, &target).await;
        let bad: Vec<String> = results
            .iter()
            .filter_map(|(i, r)| r.as_ref().err().map(|e| format!("{}: {e}", fleet.name(*i))))
            .collect();
        if !bad.is_empty() {
            return (
                from,
                Some(target.clone()),
                Err(Error::Diverged(format!(
                    "every host is on {target}, but the restart hooks failed ({}): the old code may still be running there. Fix it and restart by hand, or run `slipway rollback {} --to {target}` again",
                    bad.join("; "),
                    fleet.stage.name
                ))),
            );
        }
    }
    let schema_result = match schema_done {
        Some(_) => Ok(schema_result),
        None => db::undo::apply_any(fleet, &schema).await,
    };
    // How long the older and the newer side ran on a schema that was not theirs.
    let window = match schema_done {
        Some(done) => switched_at.duration_since(done),
        None => switched_at.elapsed(),
    };
    let schema_result = match schema_result {
        Ok(text) if text.is_empty() => text,
        Ok(text) => format!(
            "{text} ({}; old code and new schema met for {:.2}s)",
            if schema_done.is_some() {
                "schema first, then code"
            } else {
                "code first, then schema"
            },
            window.as_secs_f64()
        ),
        Err(m) => {
            return (
                from,
                Some(target.clone()),
                Err(Error::Diverged(format!(
                    "every host is on {target}, but the schema rollback failed: {m}. The database may be between versions: check it with `slipway db status {}`, fix it, or restore a snapshot with `slipway db restore`",
                    fleet.stage.name
                ))),
            );
        }
    };
    let human = format!(
        "rolled back {} ({} host{}) to {target}{}",
        fleet.stage.name,
        fleet.len(),
        if fleet.len() == 1 { "" } else { "s" },
        if schema_result.is_empty() {
            String::new()
        } else {
            format!("; {schema_result}")
        }
    );
    let data = json!({
        "to": target.as_str(),
        "from": from,
        "hosts": fleet.len(),
        "schema": schema.to_json(),
        "schema_result": schema_result,
        "schema_window_ms": (!matches!(schema, SchemaRollback::Nothing | SchemaRollback::Skipped))
            .then_some(window.as_millis() as u64),
    });
    (from, Some(target), Ok(Outcome { human, data }))
}

/// The records written with the switch: the target becomes live, the release being
/// left becomes rolled-back (with the reason).
fn records(
    state: &HostState,
    target: &ReleaseId,
    reason: &str,
    rehearsal: bool,
) -> Vec<(ReleaseId, String)> {
    if rehearsal {
        state.switch_records(target, ReleaseState::Ready, None)
    } else {
        state.switch_records(target, ReleaseState::RolledBack, Some(reason.to_string()))
    }
}
