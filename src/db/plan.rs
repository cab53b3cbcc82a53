//! Pure decisions about the schema: which migrations a deploy applies, which a rollback
//! undoes, and when either must refuse. No database and no host here: the inputs are
//! what the release carries, what the database's `_sqlx_migrations` says, and what the
//! releases recorded.

use serde::Serialize;

use super::{Applied, MigrationInfo, Reversibility};
use crate::release::MigrationRecord;

/// Why a schema step refuses to run. Nothing has been touched when one of these is
/// returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A migration failed earlier and left its row with `success = false` (MySQL).
    Dirty(i64),
    /// The database has a migration the release does not (newer code was deployed, or
    /// a file was removed).
    AppliedMissing(i64),
    /// An applied migration's file was edited since (the checksum differs).
    Modified(i64),
    /// The target release recorded no schema version (deployed without `[database]`).
    NoTargetVersion(String),
    /// A migration to undo has no `.down.sql` in the release being left.
    MissingDown { version: i64, description: String },
    /// A migration to undo is marked irreversible (`--force-schema` leaves it applied).
    Irreversible { version: i64, description: String },
    /// What a release recorded and what the database says differ.
    Disagree(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Dirty(v) => write!(
                f,
                "migration {v} is marked failed (success = false) in _sqlx_migrations: an earlier run stopped half-way; repair the schema (or `slipway db restore` a snapshot) and delete that row"
            ),
            Refusal::AppliedMissing(v) => write!(
                f,
                "migration {v} is applied in the database but is not in this release's migrations: the database is ahead of this code (roll back with `slipway rollback`, or restore the file)"
            ),
            Refusal::Modified(v) => write!(
                f,
                "migration {v} was applied but its .up.sql file has changed since (checksum differs): restore the applied version and put the change into a new migration"
            ),
            Refusal::NoTargetVersion(id) => write!(
                f,
                "release {id} recorded no schema version (it was deployed without [database]): cannot tell which migrations to undo (use --skip-schema to switch the code only)"
            ),
            Refusal::MissingDown {
                version,
                description,
            } => write!(
                f,
                "migration {version} ({description}) has no down script in the release being left: cannot undo it (add the .down.sql, or use --skip-schema to switch the code only)"
            ),
            Refusal::Irreversible {
                version,
                description,
            } => write!(
                f,
                "migration {version} ({description}) is irreversible: a rollback across it refuses (use --force-schema to leave it applied and undo the others, or --skip-schema to switch the code only)"
            ),
            Refusal::Disagree(what) => write!(
                f,
                "the recorded schema and the database disagree: {what} (use --skip-schema to switch the code only)"
            ),
        }
    }
}

/// The up-migrations a deploy applies, oldest first, as sqlx would apply them: every
/// applied migration must still be there with the same checksum, and nothing may be dirty.
pub fn pending(local: &[MigrationInfo], applied: &[Applied]) -> Result<Vec<i64>, Refusal> {
    if let Some(dirty) = applied.iter().find(|a| !a.success) {
        return Err(Refusal::Dirty(dirty.version));
    }
    for a in applied {
        match local.iter().find(|m| m.version == a.version) {
            None => return Err(Refusal::AppliedMissing(a.version)),
            Some(m) if m.checksum != a.checksum => return Err(Refusal::Modified(a.version)),
            Some(_) => {}
        }
    }
    let mut out: Vec<i64> = local
        .iter()
        .filter(|m| !applied.iter().any(|a| a.version == m.version))
        .map(|m| m.version)
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// One down step of a rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UndoStep {
    pub version: i64,
    pub description: String,
}

/// What a rollback does to the schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UndoPlan {
    /// The version the schema ends at (the target release's record).
    pub target: i64,
    /// Down steps, newest first.
    pub steps: Vec<UndoStep>,
    /// Irreversible migrations left applied (only with `--force-schema`).
    pub left_applied: Vec<UndoStep>,
}

/// Plans undoing the schema from what the database has to the target release's recorded
/// version, with the migrations of the release being left (`left`, the only ones with
/// the down scripts). `left_record` is what the release being left recorded; it must
/// agree with the database, as must the target's record.
pub fn undo(
    left: &[MigrationInfo],
    applied: &[Applied],
    left_record: Option<&[MigrationRecord]>,
    target_id: &str,
    target_version: Option<i64>,
    target_record: Option<&[MigrationRecord]>,
    force_irreversible: bool,
) -> Result<UndoPlan, Refusal> {
    let target = target_version.ok_or_else(|| Refusal::NoTargetVersion(target_id.to_string()))?;
    if let Some(dirty) = applied.iter().find(|a| !a.success) {
        return Err(Refusal::Dirty(dirty.version));
    }
    if let Some(record) = left_record {
        agree("the release being left", record, applied, None)?;
    }
    if let Some(record) = target_record {
        agree(
            &format!("release {target_id}"),
            record,
            applied,
            Some(target),
        )?;
    }
    let newest = applied.iter().map(|a| a.version).max().unwrap_or(0);
    if target > newest {
        return Err(Refusal::Disagree(format!(
            "release {target_id} recorded schema version {target}, but the database is at {newest}: a rollback only undoes migrations (to move the schema forward, deploy that code again)"
        )));
    }
    let mut steps = Vec::new();
    let mut left_applied = Vec::new();
    let mut to_undo: Vec<&Applied> = applied.iter().filter(|a| a.version > target).collect();
    to_undo.sort_by_key(|a| std::cmp::Reverse(a.version));
    for a in to_undo {
        let m = left
            .iter()
            .find(|m| m.version == a.version)
            .ok_or_else(|| Refusal::MissingDown {
                version: a.version,
                description: a.description.clone(),
            })?;
        if m.checksum != a.checksum {
            return Err(Refusal::Disagree(format!(
                "migration {} in the database has a different checksum than the release being left's file",
                a.version
            )));
        }
        let step = UndoStep {
            version: m.version,
            description: m.description.clone(),
        };
        match m.reversibility {
            Reversibility::Reversible => steps.push(step),
            Reversibility::MissingDown => {
                return Err(Refusal::MissingDown {
                    version: step.version,
                    description: step.description,
                });
            }
            Reversibility::Irreversible if force_irreversible => left_applied.push(step),
            Reversibility::Irreversible => {
                return Err(Refusal::Irreversible {
                    version: step.version,
                    description: step.description,
                });
            }
        }
    }
    Ok(UndoPlan {
        target,
        steps,
        left_applied,
    })
}

/// Checks a release's record against the database: the same versions with the same
/// checksums (up to `upto`, for a target that is older than the database).
fn agree(
    who: &str,
    record: &[MigrationRecord],
    applied: &[Applied],
    upto: Option<i64>,
) -> Result<(), Refusal> {
    let in_db: Vec<&Applied> = applied
        .iter()
        .filter(|a| upto.is_none_or(|u| a.version <= u))
        .collect();
    for r in record {
        match in_db.iter().find(|a| a.version == r.version) {
            None => {
                return Err(Refusal::Disagree(format!(
                    "{who} recorded migration {} ({}), which is not applied in the database",
                    r.version, r.description
                )));
            }
            Some(a) if hex(&a.checksum) != r.checksum => {
                return Err(Refusal::Disagree(format!(
                    "{who} recorded migration {} with another checksum than the database has",
                    r.version
                )));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = in_db
        .iter()
        .find(|a| !record.iter().any(|r| r.version == a.version))
    {
        return Err(Refusal::Disagree(format!(
            "the database has migration {} ({}), which {who} did not record",
            extra.version, extra.description
        )));
    }
    Ok(())
}

/// Lower-case hex, as checksums are recorded in `release.json`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(version: i64, r: Reversibility) -> MigrationInfo {
        MigrationInfo {
            version,
            description: format!("m{version}"),
            checksum: vec![version as u8; 4],
            reversibility: r,
        }
    }

    fn applied(version: i64) -> Applied {
        Applied {
            version,
            description: format!("m{version}"),
            checksum: vec![version as u8; 4],
            success: true,
        }
    }

    fn record(version: i64) -> MigrationRecord {
        MigrationRecord {
            version,
            description: format!("m{version}"),
            checksum: hex(&[version as u8; 4]),
        }
    }

    use Reversibility::*;

    #[test]
    fn pending_is_what_the_database_lacks() {
        let local = [
            info(1, Reversible),
            info(2, Reversible),
            info(3, Reversible),
        ];
        assert_eq!(pending(&local, &[applied(1)]).unwrap(), vec![2, 3]);
        assert!(
            pending(&local, &[applied(1), applied(2), applied(3)])
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn pending_refuses_a_database_ahead_of_the_code_or_edited_files() {
        let local = [info(1, Reversible)];
        assert_eq!(
            pending(&local, &[applied(1), applied(2)]),
            Err(Refusal::AppliedMissing(2))
        );
        let mut edited = applied(1);
        edited.checksum = vec![9];
        assert_eq!(pending(&local, &[edited]), Err(Refusal::Modified(1)));
        let mut dirty = applied(1);
        dirty.success = false;
        assert_eq!(pending(&local, &[dirty]), Err(Refusal::Dirty(1)));
    }

    #[test]
    fn undo_goes_newest_first_down_to_the_target() {
        let left = [
            info(1, Reversible),
            info(2, Reversible),
            info(3, Reversible),
            info(4, Reversible),
        ];
        let db = [applied(1), applied(2), applied(3), applied(4)];
        let rec_left = [record(1), record(2), record(3), record(4)];
        let rec_target = [record(1), record(2)];
        let plan = undo(
            &left,
            &db,
            Some(&rec_left),
            "T",
            Some(2),
            Some(&rec_target),
            false,
        )
        .unwrap();
        let versions: Vec<i64> = plan.steps.iter().map(|s| s.version).collect();
        assert_eq!(versions, vec![4, 3]);
        assert!(plan.left_applied.is_empty());
    }

    #[test]
    fn undo_to_the_same_version_is_empty() {
        let left = [info(1, Reversible)];
        let plan = undo(&left, &[applied(1)], None, "T", Some(1), None, false).unwrap();
        assert!(plan.steps.is_empty());
    }

    #[test]
    fn undo_refuses_missing_downs_and_irreversible_steps() {
        let left = [
            info(1, Reversible),
            info(2, MissingDown),
            info(3, Irreversible),
        ];
        let db = [applied(1), applied(2), applied(3)];
        assert_eq!(
            undo(&left, &db, None, "T", Some(2), None, false),
            Err(Refusal::Irreversible {
                version: 3,
                description: "m3".into()
            })
        );
        let forced = undo(&left, &db, None, "T", Some(2), None, true).unwrap();
        assert!(forced.steps.is_empty());
        assert_eq!(forced.left_applied[0].version, 3);
        assert_eq!(
            undo(&left, &db, None, "T", Some(1), None, true),
            Err(Refusal::MissingDown {
                version: 2,
                description: "m2".into()
            })
        );
        // A migration the release being left does not even have.
        assert!(matches!(
            undo(&left[..1], &db[..2], None, "T", Some(1), None, false),
            Err(Refusal::MissingDown { version: 2, .. })
        ));
    }

    #[test]
    fn undo_refuses_when_records_and_database_disagree() {
        let left = [info(1, Reversible), info(2, Reversible)];
        let db = [applied(1), applied(2)];
        // The release being left says only 1 was applied.
        assert!(matches!(
            undo(&left, &db, Some(&[record(1)]), "T", Some(1), None, false),
            Err(Refusal::Disagree(_))
        ));
        // The target recorded 2 migrations at version 1.
        assert!(matches!(
            undo(
                &left,
                &db,
                None,
                "T",
                Some(1),
                Some(&[record(1), record(2)]),
                false
            ),
            Err(Refusal::Disagree(_))
        ));
        // The target is ahead of the database.
        assert!(matches!(
            undo(&left, &db, None, "T", Some(5), None, false),
            Err(Refusal::Disagree(_))
        ));
        assert_eq!(
            undo(&left, &db, None, "T", None, None, false),
            Err(Refusal::NoTargetVersion("T".into()))
        );
    }
}
