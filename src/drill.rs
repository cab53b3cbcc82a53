//! `slipway drill STAGE`: a rehearsed rollback. Deploys (or reuses the last two
//! releases), rolls back, verifies `current` and the schema version on every host, rolls
//! forward again, and reports each step's timing and the time to recover.
//!
//! Only on a stage marked `drill = true`: a drill switches every host twice.

use std::time::Instant;

use serde_json::json;

use crate::config::Stage;
use crate::db;
use crate::deploy;
use crate::error::{Error, Result};
use crate::fleet::Fleet;
use crate::layout::ReleaseId;
use crate::plan;
use crate::probe::probe;
use crate::release::HostState;
use crate::rollback::{self, Request};
use crate::run::{Context, Outcome};

/// One step of a drill, as reported.
#[derive(Debug, Clone)]
pub struct DrillStep {
    pub name: String,
    pub ms: u128,
    pub ok: bool,
    pub detail: String,
}

/// The rendered report: one row per step, then the verdict.
pub fn render(steps: &[DrillStep], recover_ms: Option<u128>, passed: bool) -> String {
    let mut s = format!(
        "{:<16} {:>9}  {:<6} {}\n",
        "step", "time", "result", "detail"
    );
    for st in steps {
        s.push_str(&format!(
            "{:<16} {:>7}ms  {:<6} {}\n",
            st.name,
            st.ms,
            if st.ok { "ok" } else { "FAILED" },
            st.detail
        ));
    }
    if let Some(ms) = recover_ms {
        s.push_str(&format!("time to recover (rollback + verify): {ms} ms\n"));
    }
    s.push_str(if passed {
        "drill passed\n"
    } else {
        "drill FAILED\n"
    });
    s
}

async fn read(stage: &Stage, ctx: &Context) -> Result<Vec<HostState>> {
    let fleet = Fleet::connect(stage, ctx.reporter.clone()).await?;
    let states = probe(&fleet).await;
    fleet.close().await;
    states
}

/// The pair (current, rollback target) if it is the same on every host.
fn pair(states: &[HostState]) -> Option<(ReleaseId, ReleaseId)> {
    let first = states.first()?;
    let current = first.current()?;
    let target = plan::rollback_target(first)?;
    states
        .iter()
        .all(|s| {
            s.current().as_ref() == Some(&current)
                && plan::rollback_target(s).as_ref() == Some(&target)
        })
        .then_some((current, target))
}

/// Every host on `id`, and (with a database) the database at the schema version `id`
/// recorded.
async fn verify(stage: &Stage, ctx: &Context, id: &ReleaseId) -> (bool, String) {
    let states = match read(stage, ctx).await {
        Ok(s) => s,
        Err(e) => return (false, e.to_string()),
    };
    let off: Vec<String> = states
        .iter()
        .filter(|s| s.current().as_ref() != Some(id))
        .map(|s| {
            format!(
                "{} is on {}",
                s.host,
                s.current()
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "nothing".into())
            )
        })
        .collect();
    if !off.is_empty() {
        return (false, format!("current: {}", off.join(", ")));
    }
    let mut detail = format!("current = {id} on {} host(s)", states.len());
    let Some(config) = &stage.database else {
        detail.push_str("; no [database]: schema not checked");
        return (true, detail);
    };
    let recorded = states
        .iter()
        .find_map(|s| {
            s.release(id)
                .and_then(|r| r.meta.as_ref())
                .map(|m| m.schema_version)
        })
        .flatten();
    if config.commands.is_some() {
        detail.push_str("; command-mode database: schema checked by its own tool only");
        return (true, detail);
    }
    let fleet = match Fleet::connect(stage, ctx.reporter.clone()).await {
        Ok(f) => f,
        Err(e) => return (false, e.to_string()),
    };
    let actual = match db::Db::open(&fleet, config).await {
        Ok(mut d) => {
            let applied = d.applied().await;
            d.close().await;
            applied.map(|a| a.iter().filter(|m| m.success).map(|m| m.version).max())
        }
        Err(e) => Err(e.to_string()),
    };
    fleet.close().await;
    match actual {
        Err(e) => (false, format!("{detail}; reading the schema failed: {e}")),
        Ok(actual) => {
            let ok = actual.unwrap_or(0) == recorded.unwrap_or(0);
            (
                ok,
                format!(
                    "{detail}; schema version {} (release records {})",
                    actual
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "none".into()),
                    recorded
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "none".into())
                ),
            )
        }
    }
}

pub async fn drill(stage: &Stage, ctx: &Context) -> Result<Outcome> {
    if !stage.drill {
        return Err(Error::Usage(format!(
            "stage {name} is not marked for drills: a drill switches every host back and forth. Set drill = true in [stages.{name}] (staging, never production)",
            name = stage.name
        )));
    }
    if ctx.dry_run {
        return Ok(Outcome {
            human: format!(
                "Plan: on {}: deploy if there are not two releases to switch between, roll back, verify current and schema, roll forward, verify. Nothing was changed (--dry-run).",
                stage.name
            ),
            data: json!({ "dry_run": true }),
        });
    }
    let started = Instant::now();
    let mut steps = Vec::new();
    let mut timed = |name: &str, t: Instant, ok: bool, detail: String| {
        steps.push(DrillStep {
            name: name.into(),
            ms: t.elapsed().as_millis(),
            ok,
            detail,
        });
    };
    // Two releases to switch between: reuse them, or deploy until there are.
    let mut states = read(stage, ctx).await?;
    let mut deploys = 0;
    while pair(&states).is_none() && deploys < 2 {
        let t = Instant::now();
        let r = deploy::deploy(stage, ctx).await;
        let ok = r.is_ok();
        timed(
            "deploy",
            t,
            ok,
            match &r {
                Ok(o) => o.human.lines().last().unwrap_or_default().to_string(),
                Err(e) => e.to_string(),
            },
        );
        if !ok {
            return finish(stage, ctx, steps, None, started).await;
        }
        deploys += 1;
        states = read(stage, ctx).await?;
    }
    let Some((forward, back)) = pair(&states) else {
        timed(
            "plan",
            Instant::now(),
            false,
            "the hosts have no common current release and rollback target".into(),
        );
        return finish(stage, ctx, steps, None, started).await;
    };
    if deploys == 0 {
        timed(
            "reuse",
            Instant::now(),
            true,
            format!("switching between {back} and {forward}"),
        );
    }
    // Roll back; time to recover = the rollback plus its verification.
    let recover = Instant::now();
    let t = Instant::now();
    let request = |to: Option<ReleaseId>, reason: &str| Request {
        to,
        reason: Some(reason.into()),
        schema: db::undo::Options {
            force_schema: false,
            skip_schema: false,
        },
        rehearsal: true,
    };
    let r = rollback::rollback(stage, ctx, &request(Some(back.clone()), "drill: roll back")).await;
    timed(
        "rollback",
        t,
        r.is_ok(),
        match &r {
            Ok(o) => o.human.clone(),
            Err(e) => e.to_string(),
        },
    );
    let mut recover_ms = None;
    if r.is_ok() {
        let t = Instant::now();
        let (ok, detail) = verify(stage, ctx, &back).await;
        timed("verify", t, ok, detail);
        // The old release must also answer its health checks: recovered means healthy.
        let t = Instant::now();
        let (healthy, detail) = health(stage, ctx, &back).await;
        timed("health", t, healthy, detail);
        if ok && healthy {
            recover_ms = Some(recover.elapsed().as_millis());
        }
    }
    // Roll forward, whatever happened: the drill leaves the stage where it found it.
    // With a database, the schema moves forward only by migrating: the roll forward is a
    // deploy (of the source as it is now, which a drill expects to be what was live).
    // Without one, it is a switch back to the release that was live.
    let t = Instant::now();
    let r = if stage.database.is_some() {
        deploy::deploy(stage, ctx).await
    } else {
        rollback::rollback(
            stage,
            ctx,
            &request(Some(forward.clone()), "drill: roll forward"),
        )
        .await
    };
    timed(
        "roll-forward",
        t,
        r.is_ok(),
        match &r {
            Ok(o) => o.human.lines().last().unwrap_or_default().to_string(),
            Err(e) => e.to_string(),
        },
    );
    if r.is_ok() {
        let t = Instant::now();
        let now = match read(stage, ctx).await {
            Ok(states) => states.first().and_then(HostState::current),
            Err(_) => None,
        };
        let (ok, detail) = match now {
            Some(id) => verify(stage, ctx, &id).await,
            None => (false, "cannot read where the hosts are".into()),
        };
        timed("verify", t, ok, detail);
    }
    finish(stage, ctx, steps, recover_ms, started).await
}

/// The stage's `[health]` gate on every host, for release `id`: passed, and what it saw.
async fn health(stage: &Stage, ctx: &Context, id: &ReleaseId) -> (bool, String) {
    let Some(config) = &stage.health else {
        return (true, "skipped: the stage has no [health] checks".into());
    };
    let fleet = match crate::fleet::Fleet::connect(stage, ctx.reporter.clone()).await {
        Ok(f) => f,
        Err(e) => return (false, e.to_string()),
    };
    let outcome = crate::rollout::gate::run(&fleet, &fleet.all(), config, id).await;
    fleet.close().await;
    let mut problems: Vec<&str> = outcome.failures();
    problems.extend(outcome.inconclusive());
    if problems.is_empty() {
        (true, format!("healthy on {} host(s)", stage.hosts.len()))
    } else {
        (false, problems.join("; "))
    }
}

async fn finish(
    stage: &Stage,
    ctx: &Context,
    steps: Vec<DrillStep>,
    recover_ms: Option<u128>,
    started: Instant,
) -> Result<Outcome> {
    let passed = !steps.is_empty() && steps.iter().all(|s| s.ok) && recover_ms.is_some();
    let human = render(&steps, recover_ms, passed);
    // The drill itself is on record on every host (its deploys and rollbacks are too).
    if let Ok(fleet) = Fleet::connect(stage, ctx.reporter.clone()).await {
        let mut record = crate::operation::record(&fleet, ctx, "drill", started);
        record.result = if passed { "ok" } else { "failed" }.into();
        record.message = Some(match recover_ms {
            Some(ms) => format!("time to recover {ms} ms"),
            None => "did not recover".into(),
        });
        crate::audit::append(&fleet, &record).await;
        fleet.close().await;
    }
    let data = json!({
        "stage": stage.name,
        "passed": passed,
        "time_to_recover_ms": recover_ms.map(|m| m as u64),
        "total_ms": started.elapsed().as_millis() as u64,
        "steps": steps.iter().map(|s| json!({"step": s.name, "ms": s.ms as u64, "ok": s.ok, "detail": s.detail})).collect::<Vec<_>>(),
    });
    if passed {
        Ok(Outcome { human, data })
    } else {
        ctx.reporter.result(&human, "failed", data);
        let failed: Vec<&str> = steps
            .iter()
            .filter(|s| !s.ok)
            .map(|s| s.name.as_str())
            .collect();
        Err(Error::Refused(format!(
            "the drill on {} failed (at: {})",
            stage.name,
            if failed.is_empty() {
                "-".to_string()
            } else {
                failed.join(", ")
            }
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_names_each_step_and_the_verdict() {
        let steps = vec![
            DrillStep {
                name: "rollback".into(),
                ms: 120,
                ok: true,
                detail: "x".into(),
            },
            DrillStep {
                name: "verify".into(),
                ms: 30,
                ok: false,
                detail: "h2 is on A".into(),
            },
        ];
        let text = render(&steps, Some(150), false);
        assert!(text.contains("rollback") && text.contains("120ms"));
        assert!(text.contains("FAILED") && text.contains("h2 is on A"));
        assert!(text.contains("time to recover (rollback + verify): 150 ms"));
        assert!(text.ends_with("drill FAILED\n"));
    }
}
