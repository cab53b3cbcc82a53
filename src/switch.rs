//! The switch engine: moving `current` on hosts (one atomic rename per host, with the
//! release records written in the same step), restarting what runs there, and the one
//! switch-back that every failure path uses — a failed deploy, a failed rollback, an
//! aborted or failed rollout. Callers say where each host goes and which records it
//! writes; the engine says which hosts got there, which did not, and which restarts
//! failed, and the caller words the outcome.

use futures::future::join_all;

use crate::fleet::{Fleet, StepResult};
use crate::layout::ReleaseId;
use crate::script;

/// A random token that names one switch's temporary link.
pub fn nonce() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// One host's move: where `current` goes (`None`: remove it, a host that had none), the
/// records written with it, and whether the host runs the code being left (its restart
/// hooks ran since the switch), so the code it goes back to must be restarted.
#[derive(Debug, Clone)]
pub struct Transition {
    pub host: usize,
    pub to: Option<ReleaseId>,
    pub records: Vec<(ReleaseId, String)>,
    pub restart: bool,
}

impl Transition {
    fn script(&self, fleet: &Fleet) -> String {
        script::switch(&fleet.layout, self.to.as_ref(), &nonce(), &self.records)
    }
}

/// Switches every host of `moves` in parallel, as step `step`.
pub async fn apply(fleet: &Fleet, step: &str, moves: &[Transition]) -> Vec<(usize, StepResult)> {
    let hosts: Vec<usize> = moves.iter().map(|m| m.host).collect();
    fleet
        .step_on(
            &hosts,
            step,
            |i| {
                moves
                    .iter()
                    .find(|m| m.host == i)
                    .map(|m| m.script(fleet))
                    .unwrap_or_default()
            },
            None,
            fleet.stage.timeouts.command,
        )
        .await
}

/// Points another link the engine owns (a `[traffic]` slot: `slots/a`, `slots/b`) at
/// release `to` on the hosts `which`, in parallel, as step `step`: the same rename under
/// the same per-host lock as `current`, no records written (a slot's release is not
/// live until promotion renames `current`).
pub async fn point_link(
    fleet: &Fleet,
    step: &str,
    which: &[usize],
    link: crate::layout::Link,
    to: &ReleaseId,
) -> Vec<(usize, StepResult)> {
    fleet
        .step_on(
            which,
            step,
            |_| script::switch_link(&fleet.layout, link, Some(to), &nonce(), &[]),
            None,
            fleet.stage.timeouts.command,
        )
        .await
}

/// Runs the restart hooks of release `id` on the hosts `which`, in parallel.
pub async fn restart(fleet: &Fleet, which: &[usize], id: &ReleaseId) -> Vec<(usize, StepResult)> {
    let stage = &fleet.stage;
    fleet
        .step_on(
            which,
            "restart",
            |i| {
                let path = fleet.layout.release(id);
                let env = fleet.hook_env(i, id, &path);
                script::hooks("restart", &env, &stage.restart_hooks, "")
            },
            None,
            stage.timeouts.hook,
        )
        .await
}

/// What a switch-back achieved.
#[derive(Debug, Default)]
pub struct SwitchedBack {
    /// Hosts back where they were.
    pub back: Vec<usize>,
    /// Hosts whose switch-back failed: they may still be on the release being left.
    pub stuck: Vec<usize>,
    /// `host: message` for every restart hook that failed after switching back.
    pub restart_failures: Vec<String>,
}

impl SwitchedBack {
    pub fn reverted(&self) -> bool {
        self.stuck.is_empty()
    }

    /// The names of the hosts that could not be switched back.
    pub fn stuck_names<'a>(&self, fleet: &'a Fleet) -> Vec<&'a str> {
        self.stuck.iter().map(|&i| fleet.name(i)).collect()
    }
}

/// The one switch-back. Every host of `moves` is switched (in parallel, as the step
/// `switch-back`); then the restart policy: each host that was back and ran the code
/// being left restarts the release it is back on — all of them at once, grouped by
/// release. Nothing here decides whether the outcome is reverted or diverged: the
/// caller words that, from [`SwitchedBack`].
pub async fn switch_back(fleet: &Fleet, moves: &[Transition]) -> SwitchedBack {
    let results = apply(fleet, "switch-back", moves).await;
    let mut out = SwitchedBack::default();
    for (i, r) in &results {
        match r {
            Ok(_) => out.back.push(*i),
            Err(_) => out.stuck.push(*i),
        }
    }
    if fleet.stage.restart_hooks.is_empty() {
        return out;
    }
    let mut groups: Vec<(ReleaseId, Vec<usize>)> = Vec::new();
    for m in moves
        .iter()
        .filter(|m| m.restart && out.back.contains(&m.host))
    {
        let Some(to) = &m.to else { continue };
        match groups.iter_mut().find(|(id, _)| id == to) {
            Some((_, hosts)) => hosts.push(m.host),
            None => groups.push((to.clone(), vec![m.host])),
        }
    }
    let runs = groups.iter().map(|(id, hosts)| restart(fleet, hosts, id));
    for (i, r) in join_all(runs).await.into_iter().flatten() {
        if let Err(e) = r {
            out.restart_failures.push(format!("{}: {e}", fleet.name(i)));
        }
    }
    out
}
