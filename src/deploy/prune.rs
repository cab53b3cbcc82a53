//! Retention: releases beyond `keep_releases` are removed (archived first when
//! configured), never the live one or the newest good ones.

use crate::fleet::Fleet;
use crate::layout::{Layout, ReleaseId};
use crate::plan;
use crate::release::{HostState, ReleaseEntry, ReleaseMeta, ReleaseState};
use crate::script;

/// Removes what retention says on each host; returns how many releases went (per host, max).
pub(super) async fn prune(fleet: &Fleet, states: &[HostState], live: &ReleaseMeta) -> usize {
    let mut most = 0;
    let plans: Vec<Vec<ReleaseId>> = states
        .iter()
        .map(|s| prune_plan(s, live, fleet.stage.keep_releases))
        .collect();
    let which: Vec<usize> = fleet
        .all()
        .into_iter()
        .filter(|&i| !plans[i].is_empty())
        .collect();
    let results = fleet
        .step_on(
            &which,
            "prune",
            |i| {
                if fleet.stage.archive_pruned > 0 {
                    script::archive_and_remove(&fleet.layout, &plans[i], fleet.stage.archive_pruned)
                } else {
                    script::remove_releases(&fleet.layout, &plans[i])
                }
            },
            None,
            fleet.stage.timeouts.command,
        )
        .await;
    for (i, r) in results {
        match r {
            Ok(_) => most = most.max(plans[i].len()),
            Err(e) => fleet.reporter.warning(
                Some(fleet.name(i)),
                &format!("pruning old releases failed: {e}"),
            ),
        }
    }
    most
}

/// What retention removes on a host once `live` is current.
pub(super) fn prune_plan(state: &HostState, live: &ReleaseMeta, keep: usize) -> Vec<ReleaseId> {
    let mut after = state.clone();
    if let Some(cur) = state.current()
        && let Some(entry) = after.releases.iter_mut().find(|r| r.id == cur)
        && let Some(meta) = entry.meta.as_mut()
    {
        meta.state = ReleaseState::Ready;
    }
    after.releases.retain(|r| r.id != live.id);
    after.releases.push(ReleaseEntry {
        id: live.id.clone(),
        meta: Some(live.clone()),
    });
    after.releases.sort_by(|a, b| a.id.cmp(&b.id));
    after.current_link = Some(Layout::current_target(&live.id));
    plan::prune(&after, &live.id, keep)
}
