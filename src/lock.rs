//! The deploy lock, one per host in `.slipway/lock` (a directory: `mkdir` is atomic).
//!
//! Hosts are locked in a fixed order, the first host alone before the others: two runs
//! that start at once both go for the first host, exactly one gets it, and the winner
//! then takes the rest. Locking every host in parallel could leave each run holding some
//! hosts and neither able to proceed.

use std::time::{Duration, Instant};

use chrono::Utc;

use crate::audit::Actor;
use crate::error::{Error, Result};
use crate::fleet::Fleet;
use crate::interrupt::Interrupt;
use crate::release::{HostState, LockInfo};
use crate::script;

/// A lock this run holds on every host of the fleet, and each host's state as read
/// right after the lock was taken (by the same script).
#[derive(Debug, Clone)]
pub struct HeldLock {
    pub token: String,
    pub states: Vec<HostState>,
}

enum Attempt {
    Acquired(Vec<HostState>),
    Held {
        host: String,
        holder: String,
        taken: Vec<usize>,
    },
}

/// Takes the lock on every host, waiting up to `wait` for a held lock to be released.
pub async fn acquire(
    fleet: &Fleet,
    actor: &Actor,
    command: &str,
    wait: Duration,
    interrupt: &Interrupt,
) -> Result<HeldLock> {
    let token = format!("{:032x}", rand::random::<u128>());
    let info = LockInfo {
        user: actor.user.clone(),
        machine: actor.machine.clone(),
        pid: std::process::id(),
        command: command.to_string(),
        since: Utc::now(),
        token: token.clone(),
    };
    let owner = serde_json::to_string(&info).unwrap_or_default();
    let deadline = Instant::now() + wait;
    let mut announced = false;
    loop {
        match attempt(fleet, &owner).await? {
            Attempt::Acquired(states) => return Ok(HeldLock { token, states }),
            Attempt::Held {
                host,
                holder,
                taken,
            } => {
                release_on(fleet, &taken, &token).await;
                if Instant::now() >= deadline {
                    return Err(Error::Locked {
                        host,
                        holder,
                        stage: fleet.stage.name.clone(),
                    });
                }
                if !announced {
                    fleet.reporter.info(&format!(
                        "{host}: the deploy lock is held by {holder}; waiting up to {}",
                        humantime::format_duration(wait)
                    ));
                    announced = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500 + rand::random::<u64>() % 1000)) => {}
                    signal = interrupt.wait() => {
                        return Err(Error::Interrupted(format!("{signal} while waiting for the deploy lock; nothing was changed")));
                    }
                }
            }
        }
    }
}

async fn attempt(fleet: &Fleet, owner: &str) -> Result<Attempt> {
    let timeout = fleet.stage.timeouts.command;
    let script = script::lock(&fleet.layout, owner);
    let mut taken = Vec::new();
    let mut states: Vec<Option<HostState>> = vec![None; fleet.len()];
    let order = fleet.all();
    let (first, rest) = order
        .split_first()
        .map(|(f, r)| (vec![*f], r.to_vec()))
        .unwrap_or_default();
    for group in [first, rest] {
        let runs = futures::future::join_all(group.iter().map(|&i| {
            let script = &script;
            async move {
                let started = std::time::Instant::now();
                let result = fleet.exec(i, "lock", script, None, timeout).await;
                (i, result, started.elapsed())
            }
        }))
        .await;
        let mut held = None;
        let mut failure = None;
        for (i, result, elapsed) in runs {
            match result {
                Ok(out) if out.success() => {
                    // One event per step per host: the lock (and the probe it carries).
                    fleet
                        .reporter
                        .finished(fleet.name(i), "lock", elapsed, None);
                    taken.push(i);
                    states[i] = Some(HostState::parse(fleet.name(i), &out.stdout));
                }
                Ok(out) if out.code == script::EXIT_LOCK_HELD => {
                    let holder =
                        serde_json::from_str::<crate::release::LockInfo>(out.stdout.trim())
                            .map(|l| l.describe())
                            .unwrap_or_else(|_| {
                                "another run (its lock record is unreadable or still being written)"
                                    .into()
                            });
                    held.get_or_insert((fleet.name(i).to_string(), holder));
                }
                Ok(out) => {
                    fleet
                        .reporter
                        .failed(fleet.name(i), "lock", elapsed, &out.message());
                    failure.get_or_insert(Error::Step {
                        host: fleet.name(i).into(),
                        step: "lock".into(),
                        message: out.message(),
                    });
                }
                Err(message) => {
                    failure.get_or_insert(Error::Step {
                        host: fleet.name(i).into(),
                        step: "lock".into(),
                        message,
                    });
                }
            }
        }
        if let Some(error) = failure {
            release_on(fleet, &taken, owner_token(owner)).await;
            return Err(error);
        }
        if let Some((host, holder)) = held {
            return Ok(Attempt::Held {
                host,
                holder,
                taken,
            });
        }
    }
    Ok(Attempt::Acquired(states.into_iter().flatten().collect()))
}

fn owner_token(owner: &str) -> &str {
    // The token is the last field of the serialised LockInfo; parse rather than slice.
    owner
        .rsplit("\"token\":\"")
        .next()
        .and_then(|t| t.split('"').next())
        .unwrap_or("")
}

async fn release_on(fleet: &Fleet, which: &[usize], token: &str) {
    let script = script::unlock(&fleet.layout, token);
    let timeout = fleet.stage.timeouts.command;
    futures::future::join_all(which.iter().map(|&i| {
        let script = &script;
        async move {
            if let Err(e) = fleet.exec(i, "unlock", script, None, timeout).await {
                fleet.reporter.warning(
                    Some(fleet.name(i)),
                    &format!("could not release the deploy lock: {e}"),
                );
            }
        }
    }))
    .await;
}

/// Releases this run's lock on every host.
pub async fn release(fleet: &Fleet, lock: &HeldLock) {
    release_on(fleet, &fleet.all(), &lock.token).await;
}

/// Appends the run's audit record and releases its lock, in one round trip per host.
pub async fn finish(fleet: &Fleet, lock: &HeldLock, record: &crate::audit::Record) {
    let script = script::finish(&fleet.layout, &record.to_line(), &lock.token);
    let timeout = fleet.stage.timeouts.command;
    let results = fleet
        .step_on(&fleet.all(), "finish", |_| script.clone(), None, timeout)
        .await;
    for (i, r) in results {
        if let Err(e) = r {
            fleet.reporter.warning(
                Some(fleet.name(i)),
                &format!("could not write the audit log or release the deploy lock: {e}"),
            );
        }
    }
}
