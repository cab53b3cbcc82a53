//! Running a framework's adapter on the db host, and the schema steps built on it: the
//! deploy's migrate step (inspect, snapshot, migrate, record what was applied, put it
//! back on failure), undoing a deploy's migrations, and applying a planned [`Change`].

use std::time::Instant;

use super::plan;
use super::{Known, Op, Report, command};
use crate::config::{Database, FrameworkMigrator};
use crate::db::primary_error;
use crate::error::Error;
use crate::fleet::Fleet;
use crate::layout::ReleaseId;
use crate::redact::scrub;
use crate::release::SchemaRecord;
use crate::script::{self, EXIT_NOT_FOUND};

/// One adapter run.
#[derive(Debug)]
pub struct Ran {
    pub report: Report,
    pub code: i32,
    /// The last lines of stderr, scrubbed (for a run that broke the contract).
    pub stderr: String,
}

impl Ran {
    /// The applied migrations, or why they are unknown.
    pub fn applied(&self) -> Result<&[String], String> {
        self.report
            .applied
            .as_deref()
            .ok_or_else(|| self.why_unreadable())
    }

    fn why_unreadable(&self) -> String {
        let mut parts: Vec<String> = self.report.errors.clone();
        if parts.is_empty() && !self.stderr.is_empty() {
            parts.push(self.stderr.clone());
        }
        if parts.is_empty() {
            parts.push(format!("exit status {}", self.code));
        }
        format!(
            "the migrator did not report its applied migrations: {}",
            parts.join("; ")
        )
    }
}

/// Runs `op` of the adapter in `release` on the db host.
pub async fn run(
    fleet: &Fleet,
    config: &Database,
    migrator: &FrameworkMigrator,
    release: &ReleaseId,
    step: &str,
    op: Op,
    ids: &[String],
) -> Result<Ran, String> {
    let host = fleet.name(config.primary);
    let path = fleet.layout.release(release);
    let text = script::in_release(
        &fleet.hook_env(config.primary, release, &path),
        &command(migrator, op, ids),
    );
    let timeout = match op {
        Op::Inspect => fleet.stage.timeouts.command.max(fleet.stage.timeouts.hook),
        _ => fleet.stage.timeouts.hook,
    };
    let started = Instant::now();
    let out = fleet
        .exec(config.primary, step, &text, None, timeout)
        .await
        .map_err(|m| scrub(&m.to_string()))?;
    let stderr = scrub(&out.message());
    if out.code == EXIT_NOT_FOUND {
        let m = format!(
            "`{}` was not found in release {release} ({} runs the {} adapter with it: set [database] runtime, or create it in a build hook)",
            migrator.runtime,
            fleet.name(config.primary),
            migrator.framework.as_str()
        );
        fleet.reporter.failed(host, step, started.elapsed(), &m);
        return Err(m);
    }
    let report = Report::parse(&out.stdout).map_err(|m| {
        let m = format!(
            "the {} adapter's output is not understood: {m}",
            migrator.framework.as_str()
        );
        fleet.reporter.failed(host, step, started.elapsed(), &m);
        m
    })?;
    let report = Report {
        failed: report.failed.map(|(id, message)| (id, scrub(&message))),
        errors: report.errors.iter().map(|e| scrub(e)).collect(),
        ..report
    };
    if out.code == 0 && report.done {
        fleet.reporter.finished(host, step, started.elapsed(), None);
    } else {
        let m = report
            .failed
            .as_ref()
            .map(|(id, e)| format!("migration {id} failed: {e}"))
            .or_else(|| report.errors.first().cloned())
            .unwrap_or_else(|| stderr.clone());
        fleet.reporter.failed(host, step, started.elapsed(), &m);
    }
    Ok(Ran {
        report,
        code: out.code,
        stderr,
    })
}

/// What the deploy's migrate step did.
#[derive(Debug, Clone)]
pub struct Migrated {
    pub release: ReleaseId,
    pub before: Vec<String>,
    pub record: SchemaRecord,
    /// The new release's migrations (to undo this deploy's if the switch fails).
    pub known: Vec<Known>,
    pub snapshot: Option<String>,
}

impl Migrated {
    pub fn summary(&self) -> String {
        if self.record.applied_now.is_empty() {
            format!(
                "no new migrations: {} applied, database untouched",
                self.record.applied.len()
            )
        } else {
            format!(
                "migrated the database with {} (applied {}; {})",
                self.record.framework,
                self.record.applied_now.join(", "),
                match &self.snapshot {
                    Some(s) => format!("snapshot backups/db/{s}"),
                    None => "no snapshot: set [database] driver to take one".into(),
                }
            )
        }
    }
}

/// What `--dry-run` says: the pending migrations, read from the database with the
/// code of `release`... which is not uploaded yet in a dry run: the current release's
/// view is the best there is, so the dry run names the framework step only.
pub fn preview(config: &Database, migrator: &FrameworkMigrator) -> String {
    format!(
        "{} migrate in the new release on the db host: read the applied migrations, warn about each new one that drops or renames what the running release uses (the dry run cannot: the new code is not on the host yet), {}apply the new ones, record exactly which were applied",
        migrator.framework.as_str(),
        if config.driver.is_some() {
            "snapshot, "
        } else {
            ""
        }
    )
}

/// The deploy's step: inspect, snapshot (when the database can be reached), migrate,
/// inspect again through the adapter's own report. `Err` means nothing is to be
/// switched; its message says which migration failed and where the schema is.
pub async fn migrate(
    fleet: &Fleet,
    config: &Database,
    migrator: &FrameworkMigrator,
    release: &ReleaseId,
) -> Result<Migrated, Error> {
    let fail = |m: String| primary_error(fleet, config, "migrate", m);
    let inspected = run(
        fleet,
        config,
        migrator,
        release,
        "db-inspect",
        Op::Inspect,
        &[],
    )
    .await
    .map_err(|m| primary_error(fleet, config, "db-inspect", m))?;
    let before = inspected
        .applied()
        .map_err(|m| primary_error(fleet, config, "db-inspect", m))?
        .to_vec();
    let known = inspected.report.known.clone();
    let pending: Vec<&Known> = known.iter().filter(|k| !before.contains(&k.id)).collect();
    let record = |applied: Vec<String>, applied_now: Vec<String>| SchemaRecord {
        framework: migrator.framework.as_str().to_string(),
        applied,
        applied_now,
    };
    let unknown: Vec<&String> = before
        .iter()
        .filter(|a| !known.iter().any(|k| &k.id == *a))
        .collect();
    if !unknown.is_empty() {
        fleet.reporter.warning(
            Some(fleet.name(config.primary)),
            &format!(
                "the database has migrations release {release} does not know: {} (applied by a newer release or by hand; `slipway db status` shows them)",
                unknown
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    for warning in super::destructive::warnings(&known, &before) {
        fleet
            .reporter
            .warning(Some(fleet.name(config.primary)), &warning);
    }
    if pending.is_empty() {
        return Ok(Migrated {
            release: release.clone(),
            before: before.clone(),
            record: record(before, vec![]),
            known,
            snapshot: None,
        });
    }
    let snapshot = super::super::snapshot_if_reachable(fleet, config, release)
        .await
        .map_err(|m| {
            fail(format!(
                "the snapshot before migrating failed, nothing was migrated: {m}"
            ))
        })?;
    let ran = run(
        fleet,
        config,
        migrator,
        release,
        "migrate",
        Op::Migrate,
        &[],
    )
    .await
    .map_err(|m| {
        fail(format!(
            "{m}; the schema may have changed: check it with `slipway db status {}`",
            fleet.stage.name
        ))
    })?;
    if ran.code == 0 && ran.report.done {
        let after = ran.applied().map_err(&fail)?.to_vec();
        let removed = plan::removed_between(&before, &after);
        if !removed.is_empty() {
            fleet.reporter.warning(
                Some(fleet.name(config.primary)),
                &format!(
                    "migrating unapplied {} (the framework's own doing)",
                    removed.join(", ")
                ),
            );
        }
        let now = plan::applied_between(&before, &after);
        return Ok(Migrated {
            release: release.clone(),
            before,
            record: record(after, now),
            // The code is the same as inspected; an adapter need not list it again.
            known: if ran.report.known.is_empty() {
                known
            } else {
                ran.report.known.clone()
            },
            snapshot,
        });
    }
    Err(fail(
        failed_migration(
            fleet,
            config,
            migrator,
            release,
            &before,
            &known,
            &ran,
            snapshot.as_deref(),
        )
        .await,
    ))
}

/// The message for a failed migrate, after putting back what it could.
#[allow(clippy::too_many_arguments)]
async fn failed_migration(
    fleet: &Fleet,
    config: &Database,
    migrator: &FrameworkMigrator,
    release: &ReleaseId,
    before: &[String],
    known: &[Known],
    ran: &Ran,
    snapshot: Option<&str>,
) -> String {
    let after = ran.report.applied.clone();
    let failed_id = ran
        .report
        .failed
        .as_ref()
        .map(|(id, _)| id.clone())
        .or_else(|| after.as_ref().and_then(|a| plan::first_pending(known, a)));
    let cause = ran
        .report
        .failed
        .as_ref()
        .map(|(_, m)| m.clone())
        .or_else(|| ran.report.errors.first().cloned())
        .unwrap_or_else(|| ran.stderr.clone());
    let mut text = match &failed_id {
        Some(id) => format!("migration {id} failed: {cause}"),
        None => format!("migrating failed: {cause}"),
    };
    let Some(after) = after else {
        text.push_str(&format!(
            "; the applied migrations could not be read afterwards: the schema may be partially changed (check it with `slipway db status {}`{})",
            fleet.stage.name,
            snapshot
                .map(|s| format!(", the snapshot taken before is {s}"))
                .unwrap_or_default()
        ));
        return text;
    };
    let atomic = failed_id
        .as_ref()
        .and_then(|id| known.iter().find(|k| &k.id == id))
        .is_some_and(|k| k.atomic)
        && ran.report.ddl_transactions != Some(false);
    text.push_str(if atomic {
        "; it ran in a transaction, which the database rolled back: that migration left nothing behind"
    } else {
        "; it did NOT run in a transaction the database can roll back: the schema may be partially changed by it"
    });
    let ours = plan::applied_between(before, &after);
    text.push_str(&if ours.is_empty() {
        "; no other migration was applied".to_string()
    } else {
        format!("; applied before it failed: {}", ours.join(", "))
    });
    if atomic {
        if !ours.is_empty() {
            text.push_str(
                &put_back(
                    fleet, config, migrator, release, known, &ours, snapshot, true,
                )
                .await
                .0,
            );
        }
        return text;
    }
    // Half a migration cannot be unapplied (its down step expects all of it): only the
    // snapshot puts everything back, the migrations applied before it included.
    if let Some(s) = snapshot {
        text.push_str(&match super::super::restore_snapshot(fleet, config, s).await {
            Ok(()) => format!(
                "; the database was restored from the snapshot {s} taken just before migrating: the schema is as before this deploy"
            ),
            Err(m) => format!(
                "; restoring the snapshot {s} FAILED ({m}): restore it with `slipway db restore {} {s} --yes`",
                fleet.stage.name
            ),
        });
        return text;
    }
    if !ours.is_empty() {
        text.push_str(
            &put_back(fleet, config, migrator, release, known, &ours, None, false)
                .await
                .0,
        );
    }
    text.push_str(&format!(
        "; no snapshot was taken (set [database] driver and url_env to have one): what {} changed before failing is still there, repair it by hand",
        failed_id.as_deref().unwrap_or("the failed migration")
    ));
    text
}

/// Unapplies `ours` (applied oldest first) with the code of `release`; says how it went.
/// `whole`: nothing else changed the schema, so once they are unapplied it is as before
/// the deploy (false when a failed migration may have left part of its change).
#[allow(clippy::too_many_arguments)]
async fn put_back(
    fleet: &Fleet,
    config: &Database,
    migrator: &FrameworkMigrator,
    release: &ReleaseId,
    known: &[Known],
    ours: &[String],
    snapshot: Option<&str>,
    whole: bool,
) -> (String, bool) {
    let undo: Vec<String> = ours.iter().rev().cloned().collect();
    let irreversible: Vec<&String> = undo
        .iter()
        .filter(|id| !known.iter().any(|k| &k.id == *id && k.reversible))
        .collect();
    if !irreversible.is_empty() {
        let list = irreversible
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        return match snapshot {
            Some(s) => match super::super::restore_snapshot(fleet, config, s).await {
                Ok(()) => (
                    format!(
                        "; {list} cannot be unapplied (no down step): the database was restored from the snapshot {s}"
                    ),
                    true,
                ),
                Err(m) => (
                    format!(
                        "; {list} cannot be unapplied (no down step) and restoring the snapshot {s} FAILED ({m}): restore it with `slipway db restore {} {s} --yes`",
                        fleet.stage.name
                    ),
                    false,
                ),
            },
            None => (
                format!(
                    "; {list} cannot be unapplied (no down step) and no snapshot was taken: these stay applied"
                ),
                false,
            ),
        };
    }
    match unapply(fleet, config, migrator, release, &undo).await {
        Ok(()) => (
            format!(
                "; put back: unapplied {} with release {release}'s code{}",
                undo.join(", "),
                if whole {
                    ", the schema is as before this deploy"
                } else {
                    ""
                }
            ),
            true,
        ),
        Err(m) => (format!("; putting the schema back FAILED: {m}"), false),
    }
}

/// Unapplies exactly `ids` (newest first) with the code of `release`, and checks with
/// the adapter's report that exactly those went.
pub async fn unapply(
    fleet: &Fleet,
    config: &Database,
    migrator: &FrameworkMigrator,
    release: &ReleaseId,
    ids: &[String],
) -> Result<(), String> {
    if ids.is_empty() {
        return Ok(());
    }
    let ran = run(fleet, config, migrator, release, "undo", Op::Unapply, ids).await?;
    let after = ran.report.applied.clone();
    let still: Vec<String> = after
        .as_ref()
        .map(|a| ids.iter().filter(|id| a.contains(id)).cloned().collect())
        .unwrap_or_default();
    if ran.code == 0 && ran.report.done && after.is_some() && still.is_empty() {
        return Ok(());
    }
    let why = ran
        .report
        .failed
        .as_ref()
        .map(|(id, m)| format!("unapplying {id} failed: {m}"))
        .or_else(|| ran.report.errors.first().cloned())
        .unwrap_or_else(|| ran.stderr.clone());
    Err(match after {
        Some(_) if still.is_empty() => {
            format!("{why} (the migrator reported every one unapplied, but did not finish cleanly)")
        }
        Some(_) => format!("{why}; still applied: {}", still.join(", ")),
        None => format!("{why}; the applied migrations could not be read afterwards"),
    })
}

/// After a failed switch or gate: undoes what this deploy applied, with its code.
pub async fn revert(
    fleet: &Fleet,
    config: &Database,
    migrator: &FrameworkMigrator,
    migrated: &Migrated,
) -> (String, bool) {
    let ours = &migrated.record.applied_now;
    if ours.is_empty() {
        return ("the database was not changed by this deploy".into(), true);
    }
    let (text, settled) = put_back(
        fleet,
        config,
        migrator,
        &migrated.release,
        &migrated.known,
        ours,
        migrated.snapshot.as_deref(),
        true,
    )
    .await;
    let text = text.trim_start_matches("; ").to_string();
    if text.starts_with("put back") {
        (
            format!("this deploy's migrations were undone ({text})"),
            settled,
        )
    } else {
        (text, settled)
    }
}
