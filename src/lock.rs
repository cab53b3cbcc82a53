//! The deploy lock, one per host in `.slipway/lock` (a directory: `mkdir` is atomic).
//!
//! Every host is locked in parallel (one round trip), and the first host decides between
//! two runs that start at once: exactly one of them gets it. The other gives way at once
//! (releases what it took); the winner retries, for a moment, the hosts the loser had
//! taken. Without a deciding host, each run could end up holding some hosts and neither
//! proceed.

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
    /// Locks of other runs this one broke to get here (a dead process, a finished run),
    /// described for the audit record.
    pub took_over: Vec<String>,
}

/// How long the holder of the first host waits for a concurrent run to give way on
/// the others (it does so within one round trip); past that, the other locks are stale
/// or held by a run that has the first host's lock too, and the lock is reported held.
const GIVE_WAY: Duration = Duration::from_secs(5);

enum Attempt {
    Acquired(Vec<HostState>, Vec<String>),
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
    acquire_then(fleet, actor, command, wait, interrupt, "").await
}

/// As [`acquire`], running `then` (a script fragment whose output the probe's parser
/// reads too) on each host once its lock is taken, in the same round trip.
pub async fn acquire_then(
    fleet: &Fleet,
    actor: &Actor,
    command: &str,
    wait: Duration,
    interrupt: &Interrupt,
    then: &str,
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
        match attempt(fleet, &owner, then).await? {
            Attempt::Acquired(states, took_over) => {
                return Ok(HeldLock {
                    token,
                    states,
                    took_over,
                });
            }
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

async fn attempt(fleet: &Fleet, owner: &str, then: &str) -> Result<Attempt> {
    let script = script::lock(&fleet.layout, owner, then);
    let me = serde_json::from_str::<LockInfo>(owner).ok();
    let mut taken = Vec::new();
    let mut states: Vec<Option<HostState>> = vec![None; fleet.len()];
    let mut pending = fleet.all();
    let deadline = std::time::Instant::now() + GIVE_WAY;
    let mut took_over = false;
    let mut took_over_finished = false;
    let mut broken: Vec<String> = Vec::new();
    loop {
        let held = match try_lock(fleet, &pending, &script, &mut taken, &mut states).await {
            Ok(held) => held,
            Err(error) => {
                release_on(fleet, &taken, owner_token(owner)).await;
                return Err(error);
            }
        };
        if held.is_empty() {
            return Ok(Attempt::Acquired(
                states.into_iter().flatten().collect(),
                broken,
            ));
        }
        // A lock left by a deployer that died on this very machine (killed, crashed) is
        // provably stale: break it, once, saying so, instead of sending the user to
        // `unlock`. A lock from another machine cannot be checked from here.
        if !took_over && me.as_ref().is_some_and(|me| orphaned(&held, &me.machine)) {
            took_over = true;
            let which: Vec<usize> = held.iter().map(|(i, _, _)| *i).collect();
            broken.push(format!(
                "broke the lock of {} on {}: that process no longer existed",
                held[0].1,
                which
                    .iter()
                    .map(|&i| fleet.name(i))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            fleet.reporter.warning(
                None,
                &format!(
                    "breaking the deploy lock of {}: that process no longer exists",
                    held[0].1
                ),
            );
            let text = script::break_lock(&fleet.layout);
            let results = fleet
                .step_on(
                    &which,
                    "unlock",
                    |_| text.clone(),
                    None,
                    fleet.stage.timeouts.command,
                )
                .await;
            if let Some(error) = crate::fleet::first_failure(fleet, "unlock", &results) {
                release_on(fleet, &taken, owner_token(owner)).await;
                return Err(error);
            }
            pending = which;
            continue;
        }
        // A lock left by a run that finished (its last step failed on that host only): its
        // audit record, written by that same last step, is on a host taken here.
        if !took_over_finished && !taken.is_empty() {
            took_over_finished = true;
            match take_over_finished(fleet, &taken, &held).await {
                Ok(Some(what)) => {
                    broken.push(what);
                    pending = held.iter().map(|(i, _, _)| *i).collect();
                    continue;
                }
                Ok(None) => {}
                Err(error) => {
                    release_on(fleet, &taken, owner_token(owner)).await;
                    return Err(error);
                }
            }
        }
        // The first host decides between two runs: the one that holds it waits a moment
        // for the other to give way on the rest; the other gives way at once.
        if !taken.contains(&0) || std::time::Instant::now() >= deadline {
            let (i, holder, _) =
                held.into_iter()
                    .min_by_key(|(i, _, _)| *i)
                    .unwrap_or((0, String::new(), None));
            return Ok(Attempt::Held {
                host: fleet.name(i).to_string(),
                holder,
                taken,
            });
        }
        pending = held.into_iter().map(|(i, _, _)| i).collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether every held lock was taken on `machine` by a process that is gone.
fn orphaned(held: &[(usize, String, Option<LockInfo>)], machine: &str) -> bool {
    !held.is_empty()
        && held.iter().all(|(_, _, info)| {
            info.as_ref()
                .is_some_and(|l| l.machine == machine && !process_alive(l.pid))
        })
}

/// Releases the held locks that belong to a run that has finished (see [`finished_runs`]),
/// saying so. Only a lock with that run's token is removed: one taken since stays.
/// Returns what it took over, if anything.
async fn take_over_finished(
    fleet: &Fleet,
    taken: &[usize],
    held: &[(usize, String, Option<LockInfo>)],
) -> Result<Option<String>> {
    let finished = finished_runs(fleet, taken, held).await;
    for (i, holder, _) in held.iter().filter(|(i, _, _)| finished.contains(i)) {
        fleet.reporter.warning(
            Some(fleet.name(*i)),
            &format!(
                "taking over the deploy lock of {holder}: that run has finished (its audit record is on the other hosts; its last step failed here)"
            ),
        );
    }
    let timeout = fleet.stage.timeouts.command;
    let results =
        futures::future::join_all(held.iter().filter(|(i, _, _)| finished.contains(i)).map(
            |(i, _, info)| {
                let token = info.as_ref().map(|l| l.token.clone()).unwrap_or_default();
                async move {
                    let text = script::unlock(&fleet.layout, &token);
                    (*i, fleet.exec(*i, "unlock", &text, None, timeout).await)
                }
            },
        ))
        .await;
    for (i, r) in results {
        let message = match r {
            Ok(out) if out.success() => continue,
            Ok(out) => out.message(),
            Err(e) => e.to_string(),
        };
        return Err(Error::Step {
            host: fleet.name(i).into(),
            step: "unlock".into(),
            message,
        });
    }
    if finished.is_empty() {
        return Ok(None);
    }
    let names: Vec<&str> = finished.iter().map(|&i| fleet.name(i)).collect();
    let holder = held
        .iter()
        .find(|(i, _, _)| finished.contains(i))
        .map(|(_, h, _)| h.as_str())
        .unwrap_or_default();
    Ok(Some(format!(
        "took over the lock of {holder} on {}: that run had finished",
        names.join(", ")
    )))
}

/// The held hosts whose lock belongs to a run that has finished: its audit record (which
/// carries its lock's token as `run`) is in the recent log of a host in `taken`. That
/// record is written by the run's last step, which releases the lock in the same script:
/// a run with a record anywhere does nothing more on any host.
async fn finished_runs(
    fleet: &Fleet,
    taken: &[usize],
    held: &[(usize, String, Option<LockInfo>)],
) -> Vec<usize> {
    let tokens: Vec<(usize, &str)> = held
        .iter()
        .filter_map(|(i, _, info)| info.as_ref().map(|l| (*i, l.token.as_str())))
        .filter(|(_, t)| !t.is_empty())
        .collect();
    if tokens.is_empty() {
        return Vec::new();
    }
    let text = script::read_audit(&fleet.layout, Some(200));
    let timeout = fleet.stage.timeouts.command;
    let tails = futures::future::join_all(
        taken
            .iter()
            .map(|&i| fleet.exec(i, "read-log", &text, None, timeout)),
    )
    .await;
    let mut runs = std::collections::BTreeSet::new();
    for out in tails.into_iter().flatten().filter(|o| o.success()) {
        for line in out.stdout.lines() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
                && let Some(run) = v["run"].as_str()
            {
                runs.insert(run.to_string());
            }
        }
    }
    tokens
        .into_iter()
        .filter(|(_, t)| runs.contains(*t))
        .map(|(i, _)| i)
        .collect()
}

/// Whether a process with `pid` exists on this machine.
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks whether the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Tries the lock on `which`, in parallel. Returns the hosts where someone else holds
/// it, with the holder; hosts taken are added to `taken` with the state read with them.
async fn try_lock(
    fleet: &Fleet,
    which: &[usize],
    script: &str,
    taken: &mut Vec<usize>,
    states: &mut [Option<HostState>],
) -> Result<Vec<(usize, String, Option<LockInfo>)>> {
    let timeout = fleet.stage.timeouts.command;
    let runs = futures::future::join_all(which.iter().map(|&i| async move {
        let started = std::time::Instant::now();
        let result = fleet.exec(i, "lock", script, None, timeout).await;
        (i, result, started.elapsed())
    }))
    .await;
    let mut held = Vec::new();
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
                let info = serde_json::from_str::<LockInfo>(out.stdout.trim()).ok();
                let holder = info.as_ref().map(LockInfo::describe).unwrap_or_else(|| {
                    "another run (its lock record is unreadable or still being written)".into()
                });
                held.push((i, holder, info));
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
                    message: message.to_string(),
                });
            }
        }
    }
    match failure {
        Some(error) => Err(error),
        None => Ok(held),
    }
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
/// Returns the hosts where that failed, with why (each also reported as a failed step).
pub async fn finish(
    fleet: &Fleet,
    lock: &HeldLock,
    record: &crate::audit::Record,
) -> Vec<(String, String)> {
    let script = script::finish(&fleet.layout, &record.to_line(), &lock.token);
    let results = fleet
        .step_on(
            &fleet.all(),
            "finish",
            |_| script.clone(),
            None,
            fleet.stage.timeouts.command,
        )
        .await;
    results
        .into_iter()
        .filter_map(|(i, r)| {
            let message = match r {
                Ok(out) if out.success() => return None,
                Ok(out) => out.message(),
                Err(e) => e.to_string(),
            };
            Some((fleet.name(i).to_string(), message))
        })
        .collect()
}
