//! The deploy's database step, between the build hooks and the switch: if the new
//! release brings migrations the database lacks, snapshot, then apply them. A failure
//! puts the schema back (undo this run's steps with their down scripts, or restore the
//! snapshot: MySQL/MariaDB DDL is not transactional, so there it is always the
//! snapshot) and says which was done. Without new migrations the database is only read.

use crate::config::{Database, DbDriver};
use crate::error::Error;
use crate::fleet::Fleet;
use crate::layout::ReleaseId;
use crate::release::MigrationRecord;

use super::migration::{self, MigrationSet};
use super::{Db, describe, describe_all, plan};

/// What the step did, for the release record and the report.
#[derive(Debug)]
pub struct Migrated {
    pub schema_version: i64,
    pub records: Vec<MigrationRecord>,
    /// Versions applied by this deploy, oldest first.
    pub applied_now: Vec<i64>,
    pub snapshot: Option<String>,
    pub pruned_snapshots: Vec<String>,
    /// The new release's migrations (to revert this deploy's steps if the switch fails).
    pub set: MigrationSet,
    /// The schema version before this deploy.
    pub before: i64,
}

/// The new release's migrations, read from the archive the deployer built. Also checks
/// that the URL is there (postgres, mysql), so that neither mistake costs an upload.
pub async fn load(
    config: &Database,
    tar: impl std::io::Read + Send,
) -> Result<MigrationSet, Error> {
    super::check_url(config)?;
    MigrationSet::from_tar(tar, &config.migrations)
        .await
        .map_err(|m| Error::Usage(format!("{}: {m}", config.migrations)))
}

/// What `--dry-run` says about the database: the pending migrations, or why it would
/// refuse.
pub async fn preview(
    fleet: &Fleet,
    config: &Database,
    set: &MigrationSet,
) -> Result<String, Error> {
    let mut db = Db::open(fleet, config).await?;
    let applied = db.applied().await;
    db.close().await;
    let applied = applied.map_err(|m| step_error(fleet, config, m))?;
    Ok(match plan::pending(&set.infos(), &applied) {
        Ok(p) if p.is_empty() => format!(
            "no new migrations (schema stays at version {}): no snapshot, the database is not touched",
            migration::version_of(&applied)
        ),
        Ok(p) => format!(
            "snapshot into backups/db/ on {}, then apply {}",
            fleet.name(config.primary),
            describe_all(set, &p)
        ),
        Err(refusal) => format!("would refuse: {refusal}"),
    })
}

fn step_error(fleet: &Fleet, config: &Database, message: String) -> Error {
    super::primary_error(fleet, config, "migrate", message)
}

/// Runs the step. `Err` means nothing is to be switched; the error says what happened
/// to the schema.
pub async fn run(
    fleet: &Fleet,
    config: &Database,
    set: MigrationSet,
    release: &ReleaseId,
) -> Result<Migrated, Error> {
    let mut db = Db::open(fleet, config).await?;
    let result = run_open(&mut db, set, release).await;
    db.close().await;
    result.map_err(|failure| match failure {
        Failure::PutBack(m) => step_error(fleet, config, m),
        // The schema may hold a migration no release records: not "as it was".
        Failure::Unknown(m) => Error::Diverged(format!(
            "{}: migrate failed: {m}",
            fleet.name(config.primary)
        )),
    })
}

/// How a failed migration step left the schema.
enum Failure {
    /// As it was before the step (or nothing was changed).
    PutBack(String),
    /// Unknown: it could not be read or put back.
    Unknown(String),
}

impl From<String> for Failure {
    fn from(m: String) -> Failure {
        Failure::PutBack(m)
    }
}

async fn run_open(
    db: &mut Db<'_>,
    set: MigrationSet,
    release: &ReleaseId,
) -> Result<Migrated, Failure> {
    let applied = db.applied().await?;
    let before = migration::version_of(&applied);
    let pending = plan::pending(&set.infos(), &applied).map_err(|r| r.to_string())?;
    if pending.is_empty() {
        return Ok(Migrated {
            schema_version: before,
            records: migration::records(&applied),
            applied_now: vec![],
            snapshot: None,
            pruned_snapshots: vec![],
            set,
            before,
        });
    }
    let snapshot = db
        .snapshot(release)
        .await
        .map_err(|m| format!("the snapshot before migrating failed, nothing was migrated: {m}"))?;
    let pruned = db.prune_snapshots().await.unwrap_or_default();
    match db.apply(&set, &pending).await {
        Ok(()) => {
            // The database said every pending migration committed: if it cannot be read
            // back now (it went away just after), they are applied all the same, and the
            // release must record them, or nothing will ever undo them.
            let after = match db.applied().await {
                Ok(after) => after,
                Err(_) => with_applied(&applied, &set, &pending),
            };
            let applied_now: Vec<i64> = pending
                .iter()
                .copied()
                .filter(|v| after.iter().any(|a| a.version == *v && a.success))
                .collect();
            Ok(Migrated {
                schema_version: migration::version_of(&after),
                records: migration::records(&after),
                applied_now,
                snapshot: Some(snapshot),
                pruned_snapshots: pruned,
                set,
                before,
            })
        }
        Err(e) => {
            let failed = match e.version {
                Some(v) => format!("migration {} failed: {}", describe(&set, v), e.message),
                None => format!("migrating failed: {}", e.message),
            };
            let (recovery, settled) = put_back(db, &set, &applied, before, &snapshot).await;
            let text = db.mask(&format!("{failed}; {recovery}"));
            Err(if settled {
                Failure::PutBack(text)
            } else {
                Failure::Unknown(text)
            })
        }
    }
}

/// The rows `_sqlx_migrations` holds once `pending` (of `set`) committed on top of `before`.
fn with_applied(
    before: &[super::Applied],
    set: &MigrationSet,
    pending: &[i64],
) -> Vec<super::Applied> {
    let mut rows = before.to_vec();
    rows.extend(
        pending
            .iter()
            .filter_map(|v| set.get(*v))
            .map(|m| super::Applied {
                version: m.info.version,
                description: m.info.description.clone(),
                checksum: m.info.checksum.clone(),
                success: true,
            }),
    );
    rows.sort_by_key(|a| a.version);
    rows
}

/// After a failed run: brings the schema back to where it was, and says how; `true`
/// when it is back (or was never changed), `false` when it is not known to be.
async fn put_back(
    db: &mut Db<'_>,
    set: &MigrationSet,
    before: &[super::Applied],
    version: i64,
    snapshot: &str,
) -> (String, bool) {
    if db.driver == DbDriver::Mysql {
        // DDL commits implicitly on MySQL/MariaDB: the failed migration may have left
        // half its statements behind, which no down script knows about.
        return match db.restore(snapshot).await {
            Ok(()) => (
                format!(
                    "MySQL/MariaDB DDL is not transactional: the database was restored from the snapshot {snapshot} taken just before"
                ),
                true,
            ),
            Err(m) => (
                format!(
                    "restoring the snapshot {snapshot} FAILED ({m}): the schema may be half-migrated; restore it with `slipway db restore STAGE {snapshot} --yes`"
                ),
                false,
            ),
        };
    }
    let now = match db.applied().await {
        Ok(a) => a,
        Err(m) => {
            return (
                format!(
                    "cannot read the schema after the failure ({m}): this deploy's migrations may be applied with no release recording them; `slipway db status STAGE` shows it once the database answers, the snapshot taken before is {snapshot}"
                ),
                false,
            );
        }
    };
    let mut ours: Vec<i64> = now
        .iter()
        .filter(|a| !before.iter().any(|b| b.version == a.version))
        .map(|a| a.version)
        .collect();
    if ours.is_empty() {
        return (
            "the failed migration's transaction was rolled back: the schema is as it was".into(),
            true,
        );
    }
    ours.sort_unstable_by(|a, b| b.cmp(a));
    let reversible = ours.iter().all(|v| {
        set.get(*v)
            .is_some_and(|m| m.info.reversibility == super::Reversibility::Reversible)
    });
    if reversible {
        match db.undo(set, &ours, version).await {
            Ok(()) => {
                return (
                    format!(
                        "the schema was put back by undoing the migrations this deploy had applied with their down scripts: {}",
                        describe_all(set, &ours)
                    ),
                    true,
                );
            }
            Err(e) => {
                let restored = db.restore(snapshot).await;
                return match restored {
                    Ok(()) => (
                        format!(
                            "undoing this deploy's migrations failed ({}); the database was restored from the snapshot {snapshot}",
                            e.message
                        ),
                        true,
                    ),
                    Err(m) => (
                        format!(
                            "undoing this deploy's migrations failed ({}) and restoring the snapshot {snapshot} failed too ({m}): restore it with `slipway db restore STAGE {snapshot} --yes`",
                            e.message
                        ),
                        false,
                    ),
                };
            }
        }
    }
    match db.restore(snapshot).await {
        Ok(()) => (
            format!(
                "migrations without down scripts were applied ({}): the database was restored from the snapshot {snapshot}",
                describe_all(set, &ours)
            ),
            true,
        ),
        Err(m) => (
            format!(
                "restoring the snapshot {snapshot} FAILED ({m}): restore it with `slipway db restore STAGE {snapshot} --yes`"
            ),
            false,
        ),
    }
}

/// After the switch failed: undoes what this deploy applied, so the old code finds its
/// schema. Returns what was done, for the report, and whether the schema is back where
/// it was (`false`: it may still hold this deploy's migrations).
pub async fn revert(fleet: &Fleet, config: &Database, migrated: &Migrated) -> (String, bool) {
    if migrated.applied_now.is_empty() {
        return ("the database was not changed by this deploy".into(), true);
    }
    let mut db = match Db::open(fleet, config).await {
        Ok(db) => db,
        Err(e) => {
            return (
                format!(
                    "cannot reach the database to undo this deploy's migrations ({}): they are still applied",
                    describe_all(&migrated.set, &migrated.applied_now)
                ) + &format!("; {e}"),
                false,
            );
        }
    };
    let applied = match db.applied().await {
        Ok(a) => a,
        Err(m) => {
            db.close().await;
            return (
                format!(
                    "cannot read the schema to undo this deploy's migrations ({}): {m}",
                    describe_all(&migrated.set, &migrated.applied_now)
                ),
                false,
            );
        }
    };
    let snapshot = migrated.snapshot.clone().unwrap_or_default();
    let done = put_back(
        &mut db,
        &migrated.set,
        &before_rows(&applied, migrated.before),
        migrated.before,
        &snapshot,
    )
    .await;
    db.close().await;
    done
}

fn before_rows(applied: &[super::Applied], version: i64) -> Vec<super::Applied> {
    applied
        .iter()
        .filter(|a| a.version <= version)
        .cloned()
        .collect()
}
