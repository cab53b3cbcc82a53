//! `deploy --dry-run`: the plan of a deploy, as data and as text, and nothing changed.

use serde_json::json;

use crate::archive::Archive;
use crate::db;
use crate::error::Result;
use crate::fleet::Fleet;
use crate::layout::ReleaseId;
use crate::plan::{DeployPlan, HostPlan, PlanStep};
use crate::probe::probe;
use crate::release::{HostState, ReleaseState, next_release_id};
use crate::rollout;
use crate::run::Outcome;

use super::prune::prune_plan;
pub(super) async fn dry_run(fleet: &Fleet, archive: &Archive) -> Result<Outcome> {
    let states = probe(fleet).await?;
    let id = next_release_id(&states);
    let mut plan = build_plan(fleet, archive, &states, &id);
    if let Some(config) = &fleet.stage.database {
        let detail = match (&config.framework, &config.commands) {
            (Some(f), _) => db::framework::run::preview(config, f),
            (None, Some(c)) => format!(
                "run migrate_command `{}` in the new release on {}, record the version version_command prints",
                c.migrate,
                fleet.name(config.primary)
            ),
            (None, None) => {
                let set = db::migrate::load(config, archive.tar.reader()).await?;
                db::migrate::preview(fleet, config, &set).await?
            }
        };
        let at = plan
            .steps
            .iter()
            .position(|s| s.step == "switch")
            .unwrap_or(plan.steps.len());
        plan.steps.insert(
            at,
            PlanStep {
                step: "migrate".into(),
                detail,
            },
        );
    }
    let human = render_plan(&plan);
    fleet
        .reporter
        .plan(&human, serde_json::to_value(&plan).unwrap_or_default());
    Ok(Outcome {
        human: "Nothing was changed (--dry-run).".into(),
        data: json!({ "dry_run": true, "release": id.as_str() }),
    })
}

pub(super) fn build_plan(
    fleet: &Fleet,
    archive: &Archive,
    states: &[HostState],
    id: &ReleaseId,
) -> DeployPlan {
    let stage = &fleet.stage;
    let live = super::new_release_meta(stage, archive, id, ReleaseState::Live, String::new());
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    let relay = if stage.relay && stage.transport == crate::config::TransportKind::Ssh {
        format!(
            "; [upload] relay: hosts that get the same payload of 1 MiB or more get it from the first of them over their own network as it arrives there (at most {} at once), checked against this deploy's digest; a host that cannot fetch it gets it directly",
            stage.relay_fanout
        )
    } else {
        String::new()
    };
    let steps = vec![
        PlanStep {
            step: "lock".into(),
            detail: format!(
                "take the deploy lock ({}/.slipway/lock) on every host",
                stage.deploy_to
            ),
        },
        PlanStep {
            step: "upload".into(),
            detail: format!(
                "check shared files ({}), stream the archive ({} files, {} bytes) into releases/{id}.partial on every host, verify it against its manifest, link shared files and dirs ({}), rename to releases/{id}{}{relay}",
                list(&stage.shared_files),
                live.files,
                live.bytes,
                list(&stage.shared_dirs),
                if stage.build_hooks.is_empty() {
                    ", mark it ready"
                } else {
                    ""
                }
            ),
        },
        PlanStep {
            step: "build".into(),
            detail: if stage.build_hooks.is_empty() {
                "no build hooks: the release is ready once uploaded".into()
            } else {
                format!(
                    "build hooks in the new release, then mark it ready: {}",
                    list(&stage.build_hooks)
                )
            },
        },
        PlanStep {
            step: "switch".into(),
            detail: switch_detail(stage),
        },
        PlanStep {
            step: "restart".into(),
            detail: format!("restart hooks: {}", list(&stage.restart_hooks)),
        },
        PlanStep {
            step: "prune".into(),
            detail: format!(
                "keep {} good releases (and the rollback target)",
                stage.keep_releases
            ),
        },
        PlanStep {
            step: "audit".into(),
            detail: "append to .slipway/log.jsonl and release the lock".into(),
        },
    ];
    let hosts = states
        .iter()
        .map(|s| HostPlan {
            host: s.host.clone(),
            current: s.current().map(|c| c.to_string()),
            prune: prune_plan(s, &live, stage.keep_releases)
                .iter()
                .map(|r| r.to_string())
                .collect(),
            stale_partials: s.partials.clone(),
        })
        .collect();
    DeployPlan {
        stage: stage.name.clone(),
        release: id.clone(),
        revision: archive.revision.clone(),
        files: live.files,
        bytes: live.bytes,
        hosts,
        steps,
    }
}

/// How the switch step goes, by the stage's strategy.
pub(super) fn switch_detail(stage: &crate::config::Stage) -> String {
    let gate = if stage.health.is_some() {
        ", each step restarted and health-gated"
    } else {
        ""
    };
    if let crate::config::Strategy::Ab(test) = &stage.rollout.strategy {
        return format!(
            "start the new release in the free slot on every host, then an A/B test: {}% of users on it for {}, both cohorts compared on the access log; then {} (see `slipway rollout plan {}`)",
            crate::traffic::split::trim(test.split),
            humantime::format_duration(test.duration),
            match test.winner {
                crate::config::WinnerRule::Manual =>
                    "pause with the result: `slipway rollout promote` makes the winner stable",
                crate::config::WinnerRule::Auto =>
                    "promote the new release if it won beyond noise, else everyone back on the stable one",
            },
            stage.name
        );
    }
    if stage.traffic.is_some() {
        let steps = match &stage.rollout.strategy {
            crate::config::Strategy::Canary { steps } => steps
                .iter()
                .map(|p| format!("{}%", crate::traffic::split::trim(*p)))
                .collect::<Vec<_>>()
                .join(", "),
            _ => "100%".into(),
        };
        return format!(
            "start the new release in the free slot on every host, then move users to it ({steps}){}, then promote: current renamed, the old slot drained and stopped (see `slipway rollout plan {}`)",
            match (stage.health.is_some(), stage.gate.is_some()) {
                (true, true) =>
                    ", each step health-gated on the new slot and judged by its requests in the access log ([gate])",
                (true, false) => ", each step health-gated on the new slot",
                (false, true) => ", each step judged by its requests in the access log ([gate])",
                (false, false) => "",
            },
            stage.name
        );
    }
    match &stage.rollout.strategy {
        crate::config::Strategy::AllAtOnce => format!(
            "point current at the new release on every host at once (rename of a new link){gate}"
        ),
        crate::config::Strategy::BlueGreen => {
            format!("switch the pool without traffic{gate}, then run the traffic hook")
        }
        other => {
            let names: Vec<String> = stage.hosts.iter().map(|h| h.name.clone()).collect();
            let p = rollout::plan::plan(other, &stage.app, &names);
            format!(
                "{} in {} step(s) of {} host(s){gate} (see `slipway rollout plan {}`)",
                p.strategy,
                p.steps.len(),
                p.steps
                    .iter()
                    .map(|s| s.hosts.len().to_string())
                    .collect::<Vec<_>>()
                    .join("+"),
                stage.name
            )
        }
    }
}

pub(super) fn render_plan(plan: &DeployPlan) -> String {
    let mut s = format!(
        "Plan: deploy release {} (revision {}, {} files, {} bytes) to stage {} ({} host{})\n",
        plan.release,
        plan.revision,
        plan.files,
        plan.bytes,
        plan.stage,
        plan.hosts.len(),
        if plan.hosts.len() == 1 { "" } else { "s" }
    );
    for (n, step) in plan.steps.iter().enumerate() {
        s.push_str(&format!("  {}. {:<12} {}\n", n + 1, step.step, step.detail));
    }
    s.push_str("Hosts:\n");
    for h in &plan.hosts {
        s.push_str(&format!(
            "  {:<24} current: {:<18} prune: {}{}\n",
            h.host,
            h.current.as_deref().unwrap_or("(none)"),
            if h.prune.is_empty() {
                "nothing".into()
            } else {
                h.prune.join(", ")
            },
            if h.stale_partials.is_empty() {
                String::new()
            } else {
                format!("  stale uploads to remove: {}", h.stale_partials.join(", "))
            }
        ));
    }
    s
}
