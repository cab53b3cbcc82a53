//! `slipway unlock STAGE`: breaks the deploy lock explicitly, on record.

use serde_json::json;

use crate::audit::append as audit;
use crate::config::Stage;
use crate::error::{Error, Result};
use crate::fleet::Fleet;
use crate::probe::probe;
use crate::release::LockInfo;
use crate::run::{Context, Outcome};
use crate::script;

pub(super) fn describe_lock(lock: Option<&LockInfo>) -> String {
    lock.map(LockInfo::describe)
        .unwrap_or_else(|| "an unknown holder (unreadable lock record)".into())
}

/// `slipway unlock STAGE`: breaks the lock whoever holds it, and says whose it was.
pub async fn unlock(stage: &Stage, ctx: &Context) -> Result<Outcome> {
    let fleet = Fleet::connect(stage, ctx.reporter.clone()).await?;
    if ctx.dry_run {
        let states = probe(&fleet).await;
        fleet.close().await;
        let mut human = String::from("Plan: remove the deploy lock on:\n");
        for s in states? {
            if let Some(l) = &s.lock {
                human.push_str(&format!(
                    "  {}: held by {}\n",
                    s.host,
                    describe_lock(l.as_ref())
                ));
            }
        }
        ctx.reporter.plan(&human, json!({}));
        return Ok(Outcome {
            human: "Nothing was changed (--dry-run).".into(),
            data: json!({ "dry_run": true }),
        });
    }
    let script = script::break_lock(&fleet.layout);
    let results = fleet
        .step_on(
            &fleet.all(),
            "unlock",
            |_| script.clone(),
            None,
            stage.timeouts.command,
        )
        .await;
    let mut broken = Vec::new();
    let mut errors = Vec::new();
    for (i, r) in &results {
        match r {
            Ok(out) if !out.stdout.trim().is_empty() => {
                let holder = serde_json::from_str::<LockInfo>(out.stdout.trim()).ok();
                broken.push((fleet.name(*i).to_string(), describe_lock(holder.as_ref())));
            }
            Ok(_) => {}
            Err(e) => errors.push(format!("{}: {e}", fleet.name(*i))),
        }
    }
    // Breaking a lock is on record too (it does not take the lock: it removes it).
    let mut record = crate::operation::record(&fleet, ctx, "unlock", std::time::Instant::now());
    record.reason = Some(if broken.is_empty() {
        "no lock was held".into()
    } else {
        format!("broke the lock of {}", broken[0].1)
    });
    if !errors.is_empty() {
        record.result = "failed".into();
    }
    audit(&fleet, &record).await;
    fleet.close().await;
    if !errors.is_empty() {
        return Err(Error::Step {
            host: "-".into(),
            step: "unlock".into(),
            message: errors.join("; "),
        });
    }
    let human = if broken.is_empty() {
        format!("no deploy lock was held on {}", stage.name)
    } else {
        broken
            .iter()
            .map(|(h, who)| format!("{h}: removed the lock of {who}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(Outcome {
        human,
        data: json!({ "unlocked": broken.iter().map(|(h, _)| h).collect::<Vec<_>>() }),
    })
}
