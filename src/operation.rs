//! The lifecycle of every command that changes hosts: lock → act → audit → unlock.
//! One place owns it, so a new command cannot forget the lock, the audit record or the
//! unlock, and every record is built the same way. The connection is opened and closed
//! by the command around it (a deploy connects while it builds its archive).

use std::time::Instant;

use chrono::Utc;

use crate::audit::Record;
use crate::error::{Error, Result};
use crate::fault;
use crate::fleet::Fleet;
use crate::lock;
use crate::release::HostState;
use crate::run::Context;

/// What an operation tells the audit log besides its result.
#[derive(Debug)]
pub struct Acted<T> {
    pub result: Result<T>,
    /// The release the stage was on.
    pub from: Option<String>,
    /// The release (or snapshot) it went to.
    pub to: Option<String>,
    pub reason: Option<String>,
    /// A rollout stopped at a pause: recorded as `paused`, not `ok`.
    pub paused: bool,
}

impl<T> Acted<T> {
    pub fn new(result: Result<T>) -> Acted<T> {
        Acted {
            result,
            from: None,
            to: None,
            reason: None,
            paused: false,
        }
    }
}

/// How a locked operation is named and checked.
pub struct Spec<'a> {
    /// The audit record's `action` (`deploy`, `rollback`, `promote`, `db-restore`, ...).
    pub action: &'a str,
    /// A script fragment run on each host right after its lock is taken (the probe's
    /// parser reads its output too): a round trip saved.
    pub then: &'a str,
    /// The fault point just before the unlock (tests kill the deployer there).
    pub before_unlock: Option<&'a str>,
    /// When the command started (the record's duration counts from there).
    pub started: Instant,
}

/// Takes the deploy lock on every host, runs `act` with the hosts' states as read under
/// the lock, writes the audit record on every host and releases the lock — whatever
/// `act` returned. The lock not taken: nothing ran, nothing is recorded.
pub async fn with_lock<T>(
    fleet: &Fleet,
    ctx: &Context,
    spec: Spec<'_>,
    act: impl AsyncFnOnce(&[HostState]) -> Acted<T>,
) -> Result<T> {
    let held = lock::acquire_then(
        fleet,
        &ctx.actor,
        &ctx.command,
        ctx.lock_wait,
        &ctx.interrupt,
        spec.then,
    )
    .await?;
    let acted = act(&held.states).await;
    if let Some(point) = spec.before_unlock {
        // A crash here leaves the work done and the lock held: what `unlock` is for.
        let _ = fault::point(point).await;
    }
    let mut record = record(fleet, ctx, spec.action, spec.started);
    record.from = acted.from;
    record.to = acted.to;
    record.reason = acted.reason;
    record.result = match &acted.result {
        Ok(_) if acted.paused => "paused".into(),
        Ok(_) => "ok".into(),
        Err(e) => e.class().name().into(),
    };
    record.message = acted.result.as_ref().err().map(|e| e.to_string());
    record.run = Some(held.token.clone());
    record.took_over = (!held.took_over.is_empty()).then(|| held.took_over.join("; "));
    let unfinished = lock::finish(fleet, &held, &record).await;
    if unfinished.is_empty() {
        return acted.result;
    }
    let hosts: Vec<&str> = unfinished.iter().map(|(h, _)| h.as_str()).collect();
    let detail: Vec<String> = unfinished
        .iter()
        .map(|(h, m)| format!("{h}: {m}"))
        .collect();
    let leftover = if unfinished.len() < fleet.len() {
        format!(
            "the deploy lock may be left on {} and the audit record missing there; the next command takes that lock over by itself (this run's record is on the other hosts)",
            hosts.join(", ")
        )
    } else {
        format!(
            "the deploy lock may be left on every host; the next command run on this machine takes it over (this run's process is gone by then), from another machine run `slipway unlock {}` first",
            fleet.stage.name
        )
    };
    match acted.result {
        // The work is done, but not everywhere on record and unlocked: not a plain success.
        Ok(_) => Err(Error::Diverged(format!(
            "{} on stage {} did its work{}, but its final step (audit record and unlock) failed on {}: {}; {leftover}",
            spec.action,
            fleet.stage.name,
            record
                .to
                .as_ref()
                .map(|to| format!(" (to {to})"))
                .unwrap_or_default(),
            hosts.join(", "),
            detail.join("; ")
        ))),
        Err(e) => {
            fleet.reporter.warning(
                None,
                &format!(
                    "the final step (audit record and unlock) failed too: {}; {leftover}",
                    detail.join("; ")
                ),
            );
            Err(e)
        }
    }
}

/// An audit record of `action` on this stage by this run, result `ok` until said
/// otherwise, timed from `started`: the one place a record is made.
pub fn record(fleet: &Fleet, ctx: &Context, action: &str, started: Instant) -> Record {
    Record {
        time: Utc::now(),
        action: action.into(),
        stage: fleet.stage.name.clone(),
        actor: ctx.actor.clone(),
        command: ctx.command.clone(),
        from: None,
        to: None,
        reason: None,
        result: "ok".into(),
        message: None,
        duration_ms: started.elapsed().as_millis() as u64,
        run: None,
        took_over: None,
    }
}
