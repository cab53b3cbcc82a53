//! Pure decisions over what the hosts hold: which release a rollback goes to, which
//! releases retention removes, and the plan `--dry-run` prints. No I/O here.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::layout::ReleaseId;
use crate::release::{HostState, ReleaseState};

/// The release a rollback on this host goes to: the newest release older than
/// `current` that is complete (has its record) and good (not failed, not rolled back).
pub fn rollback_target(host: &HostState) -> Option<ReleaseId> {
    let current = host.current()?;
    host.releases
        .iter()
        .rev()
        .filter(|r| r.id < current && r.is_good())
        .map(|r| r.id.clone())
        .next()
}

/// Why a rollback cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackRefusal {
    /// A host has no `current` at all.
    NothingDeployed { host: String },
    /// Hosts disagree on what is current.
    Diverged { hosts: Vec<(String, String)> },
    /// No complete, good release older than current on some host.
    NoTarget { host: String, current: String },
    /// `--to ID` is missing or not complete on a host.
    TargetMissing {
        host: String,
        id: String,
        why: String,
    },
    /// `--to ID` is already current everywhere.
    AlreadyCurrent { id: String },
}

impl std::fmt::Display for RollbackRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RollbackRefusal::NothingDeployed { host } => {
                write!(
                    f,
                    "{host}: nothing is deployed (no `current`), so there is nothing to roll back"
                )
            }
            RollbackRefusal::Diverged { hosts } => {
                let list: Vec<String> = hosts
                    .iter()
                    .map(|(h, c)| format!("{h} is on {c}"))
                    .collect();
                write!(
                    f,
                    "hosts are on different releases ({}); choose the release explicitly: slipway rollback STAGE --to ID",
                    list.join(", ")
                )
            }
            RollbackRefusal::NoTarget { host, current } => write!(
                f,
                "{host}: no complete, good release older than {current} to roll back to (see `slipway releases`; pick one with --to ID)"
            ),
            RollbackRefusal::TargetMissing { host, id, why } => {
                write!(f, "{host}: cannot roll back to {id}: {why}")
            }
            RollbackRefusal::AlreadyCurrent { id } => {
                write!(f, "{id} is already current on every host")
            }
        }
    }
}

/// The rollback target for the whole stage. With `to`, that release must be complete on
/// every host (any recorded state but `preparing`: an operator may deliberately return
/// to a release that was rolled back). Without it, every host must be on the same
/// release and the target is the newest release that is a good rollback target on every
/// host.
pub fn fleet_rollback_target(
    hosts: &[HostState],
    to: Option<&ReleaseId>,
) -> Result<ReleaseId, RollbackRefusal> {
    if let Some(id) = to {
        for h in hosts {
            let why = match h.release(id).map(|r| r.state()) {
                None => Some("it is not in releases/ on this host".to_string()),
                Some(None) => Some(
                    "its release.json is missing or unreadable (incomplete upload)".to_string(),
                ),
                Some(Some(ReleaseState::Preparing)) => {
                    Some("it never finished preparing".to_string())
                }
                Some(Some(_)) => None,
            };
            if let Some(why) = why {
                return Err(RollbackRefusal::TargetMissing {
                    host: h.host.clone(),
                    id: id.to_string(),
                    why,
                });
            }
        }
        if hosts.iter().all(|h| h.current().as_ref() == Some(id)) {
            return Err(RollbackRefusal::AlreadyCurrent { id: id.to_string() });
        }
        return Ok(id.clone());
    }
    let mut currents = BTreeSet::new();
    for h in hosts {
        match h.current() {
            None => {
                return Err(RollbackRefusal::NothingDeployed {
                    host: h.host.clone(),
                });
            }
            Some(c) => {
                currents.insert(c);
            }
        }
    }
    if currents.len() > 1 {
        let list = hosts.iter().map(|h| {
            (
                h.host.clone(),
                h.current().map(|c| c.to_string()).unwrap_or_default(),
            )
        });
        return Err(RollbackRefusal::Diverged {
            hosts: list.collect(),
        });
    }
    // The newest release that every host could roll back to.
    let mut common: Option<BTreeSet<ReleaseId>> = None;
    for h in hosts {
        let Some(current) = h.current() else {
            return Err(RollbackRefusal::NothingDeployed {
                host: h.host.clone(),
            });
        };
        let good: BTreeSet<ReleaseId> = h
            .releases
            .iter()
            .filter(|r| r.id < current && r.is_good())
            .map(|r| r.id.clone())
            .collect();
        if good.is_empty() {
            return Err(RollbackRefusal::NoTarget {
                host: h.host.clone(),
                current: current.to_string(),
            });
        }
        common = Some(match common {
            None => good,
            Some(c) => c.intersection(&good).cloned().collect(),
        });
    }
    let common = common.unwrap_or_default();
    common
        .into_iter()
        .next_back()
        .ok_or_else(|| RollbackRefusal::NoTarget {
            host: hosts.first().map(|h| h.host.clone()).unwrap_or_default(),
            current: currents
                .into_iter()
                .next()
                .map(|c| c.to_string())
                .unwrap_or_default(),
        })
}

/// Releases retention removes from a host, given the release that is (or is about to be)
/// current. Kept: the newest `keep` good releases, the current release, the release a
/// rollback would go to, and failed or rolled-back releases newer than current (kept for
/// inspection and roll-forward). Everything else goes: older bad releases and
/// incomplete ones.
pub fn prune(host: &HostState, current: &ReleaseId, keep: usize) -> Vec<ReleaseId> {
    let mut kept: BTreeSet<&ReleaseId> = BTreeSet::new();
    kept.insert(current);
    let good: Vec<&ReleaseId> = host
        .releases
        .iter()
        .rev()
        .filter(|r| r.is_good() || &r.id == current)
        .map(|r| &r.id)
        .collect();
    // `current` counts as one of the `keep`.
    for id in good.iter().take(keep.max(1)) {
        kept.insert(id);
    }
    let target = host
        .releases
        .iter()
        .rev()
        .find(|r| &r.id < current && r.is_good())
        .map(|r| &r.id);
    if let Some(t) = target {
        kept.insert(t);
    }
    host.releases
        .iter()
        .filter(|r| !kept.contains(&r.id))
        .filter(|r| !(r.id > *current && r.meta.is_some()))
        .map(|r| r.id.clone())
        .collect()
}

/// One step of a plan, as `--dry-run` prints it and `--json` reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanStep {
    pub step: String,
    pub detail: String,
}

/// What a deploy will do, computed before anything is touched.
#[derive(Debug, Clone, Serialize)]
pub struct DeployPlan {
    pub stage: String,
    pub release: ReleaseId,
    pub revision: String,
    pub files: usize,
    pub bytes: u64,
    pub hosts: Vec<HostPlan>,
    pub steps: Vec<PlanStep>,
}

/// What happens on one host.
#[derive(Debug, Clone, Serialize)]
pub struct HostPlan {
    pub host: String,
    pub current: Option<String>,
    pub prune: Vec<String>,
    pub stale_partials: Vec<String>,
}

/// What a rollback will do.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackPlan {
    pub stage: String,
    pub from: Vec<(String, Option<String>)>,
    pub to: ReleaseId,
    pub steps: Vec<PlanStep>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::{ReleaseEntry, ReleaseMeta};
    use chrono::Utc;

    fn entry(id: &str, state: Option<ReleaseState>) -> ReleaseEntry {
        let rid = ReleaseId::parse(id).unwrap();
        let meta = state.map(|state| ReleaseMeta {
            id: rid.clone(),
            app: "a".into(),
            stage: "s".into(),
            revision: "r".into(),
            state,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            deployed_by: "u@m".into(),
            manifest_digest: "d".into(),
            files: 0,
            bytes: 0,
            schema_version: None,
            migrations: vec![],
            schema: None,
            note: None,
        });
        ReleaseEntry { id: rid, meta }
    }

    fn host(name: &str, current: Option<&str>, releases: Vec<ReleaseEntry>) -> HostState {
        HostState {
            host: name.into(),
            exists: true,
            current_link: current.map(|c| format!("releases/{c}")),
            releases,
            ..HostState::default()
        }
    }

    const A: &str = "20260101T000000Z";
    const B: &str = "20260102T000000Z";
    const C: &str = "20260103T000000Z";
    const D: &str = "20260104T000000Z";
    const E: &str = "20260105T000000Z";

    use ReleaseState::*;

    #[test]
    fn rollback_skips_failed_rolled_back_and_incomplete_releases() {
        let h = host(
            "h",
            Some(E),
            vec![
                entry(A, Some(Ready)),
                entry(B, Some(Failed)),
                entry(C, Some(RolledBack)),
                entry(D, None),
                entry(E, Some(Live)),
            ],
        );
        assert_eq!(rollback_target(&h).unwrap().as_str(), A);
    }

    #[test]
    fn rollback_never_goes_forward() {
        let h = host(
            "h",
            Some(B),
            vec![
                entry(A, Some(Ready)),
                entry(B, Some(Live)),
                entry(C, Some(Ready)),
            ],
        );
        assert_eq!(rollback_target(&h).unwrap().as_str(), A);
    }

    #[test]
    fn fleet_target_is_common_to_all_hosts() {
        let h1 = host(
            "h1",
            Some(C),
            vec![
                entry(A, Some(Ready)),
                entry(B, Some(Ready)),
                entry(C, Some(Live)),
            ],
        );
        let h2 = host(
            "h2",
            Some(C),
            vec![
                entry(A, Some(Ready)),
                entry(B, Some(Failed)),
                entry(C, Some(Live)),
            ],
        );
        assert_eq!(fleet_rollback_target(&[h1, h2], None).unwrap().as_str(), A);
    }

    #[test]
    fn fleet_target_refuses_diverged_hosts_and_missing_targets() {
        let h1 = host(
            "h1",
            Some(B),
            vec![entry(A, Some(Ready)), entry(B, Some(Live))],
        );
        let h2 = host(
            "h2",
            Some(A),
            vec![entry(A, Some(Live)), entry(B, Some(Ready))],
        );
        assert!(matches!(
            fleet_rollback_target(&[h1.clone(), h2.clone()], None),
            Err(RollbackRefusal::Diverged { .. })
        ));
        let a = ReleaseId::parse(A).unwrap();
        assert_eq!(
            fleet_rollback_target(&[h1.clone(), h2], Some(&a)).unwrap(),
            a
        );
        let missing = ReleaseId::parse(D).unwrap();
        assert!(matches!(
            fleet_rollback_target(std::slice::from_ref(&h1), Some(&missing)),
            Err(RollbackRefusal::TargetMissing { .. })
        ));
        let only = host("h", Some(A), vec![entry(A, Some(Live))]);
        assert!(matches!(
            fleet_rollback_target(&[only], None),
            Err(RollbackRefusal::NoTarget { .. })
        ));
        let none = host("h", None, vec![]);
        assert!(matches!(
            fleet_rollback_target(&[none], None),
            Err(RollbackRefusal::NothingDeployed { .. })
        ));
    }

    #[test]
    fn prune_keeps_n_good_releases_current_and_rollback_target() {
        let h = host(
            "h",
            Some(E),
            vec![
                entry(A, Some(Ready)),
                entry(B, Some(Ready)),
                entry(C, Some(Ready)),
                entry(D, Some(Ready)),
                entry(E, Some(Live)),
            ],
        );
        let e = ReleaseId::parse(E).unwrap();
        let gone: Vec<String> = prune(&h, &e, 3).iter().map(|r| r.to_string()).collect();
        assert_eq!(gone, vec![A, B]);
        // keep = 1 still keeps the rollback target.
        let gone: Vec<String> = prune(&h, &e, 1).iter().map(|r| r.to_string()).collect();
        assert_eq!(gone, vec![A, B, C]);
    }

    #[test]
    fn prune_does_not_count_bad_releases_and_never_removes_last_good() {
        let h = host(
            "h",
            Some(E),
            vec![
                entry(A, Some(Ready)),
                entry(B, Some(Failed)),
                entry(C, Some(RolledBack)),
                entry(D, Some(Failed)),
                entry(E, Some(Live)),
            ],
        );
        let e = ReleaseId::parse(E).unwrap();
        let gone: Vec<String> = prune(&h, &e, 1).iter().map(|r| r.to_string()).collect();
        assert_eq!(
            gone,
            vec![B, C, D],
            "A is the last good release before current"
        );
    }

    #[test]
    fn prune_keeps_newer_bad_releases_after_a_rollback() {
        // Rolled back from D to B: D (rolled-back) is newer than current and kept for roll-forward.
        let h = host(
            "h",
            Some(B),
            vec![
                entry(A, Some(Ready)),
                entry(B, Some(Live)),
                entry(C, None),
                entry(D, Some(RolledBack)),
            ],
        );
        let b = ReleaseId::parse(B).unwrap();
        let gone: Vec<String> = prune(&h, &b, 1).iter().map(|r| r.to_string()).collect();
        assert_eq!(
            gone,
            vec![C],
            "incomplete releases go; A is the rollback target"
        );
    }
}
