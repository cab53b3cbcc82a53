//! The schema part of a rollback (or a roll forward) in framework mode: planned before
//! any host moves (reading the database through the code of the release being left),
//! applied after the code switched back (or before, for a roll forward).

use super::Op;
use super::plan::{self, Change};
use crate::config::{Database, FrameworkMigrator};
use crate::error::Error;
use crate::fleet::Fleet;
use crate::layout::ReleaseId;
use crate::release::SchemaRecord;

use super::run::{run, unapply};

/// A planned rollback (or roll forward) of the schema.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub change: Change,
    pub left: ReleaseId,
    pub target: ReleaseId,
    /// What the target release recorded: the schema to end at.
    pub expected: Vec<String>,
    pub migrator: FrameworkMigrator,
}

impl Prepared {
    pub fn describe(&self) -> String {
        let c = &self.change;
        let mut parts = Vec::new();
        if !c.undo.is_empty() {
            parts.push(format!(
                "unapply {} with release {}'s code",
                c.undo.join(", "),
                self.left
            ));
        }
        if !c.forward.is_empty() {
            parts.push(format!(
                "apply {} with release {}'s code",
                c.forward.join(", "),
                self.target
            ));
        }
        if parts.is_empty() {
            return format!(
                "no migrations to undo or apply ({} migrations applied, as release {} recorded)",
                self.expected.len(),
                self.target
            );
        }
        let mut s = parts.join(", then ");
        if !c.left_applied.is_empty() {
            s.push_str(&format!(
                "; irreversible, left applied (--force-schema): {}",
                c.left_applied.join(", ")
            ));
        }
        s.push_str(&format!("; {}", c.order.describe()));
        s
    }
}

/// Plans the schema part of moving from `left` (current on the db host) to `target`:
/// reads the database through `left`'s code, checks the records, refuses what it
/// cannot prove. Nothing is changed.
pub async fn prepare(
    fleet: &Fleet,
    config: &Database,
    migrator: &FrameworkMigrator,
    (left, left_record): (&ReleaseId, Option<&SchemaRecord>),
    (target, target_record): (&ReleaseId, Option<&SchemaRecord>),
    force_irreversible: bool,
) -> Result<Prepared, Error> {
    let primary = fleet.name(config.primary).to_string();
    let refuse = |m: String| {
        Error::SchemaRefused(format!(
            "{primary}: schema rollback refused, nothing was switched: {m}"
        ))
    };
    for record in [left_record, target_record].into_iter().flatten() {
        if let Some(bad) = record
            .applied
            .iter()
            .chain(&record.applied_now)
            .find(|id| !super::report::valid_id(id))
        {
            return Err(refuse(format!(
                "a release record holds {}, which is not a migration id",
                super::report::clean(&bad.chars().take(80).collect::<String>())
            )));
        }
    }
    let ran = run(
        fleet,
        config,
        migrator,
        left,
        "db-inspect",
        Op::Inspect,
        &[],
    )
    .await
    .map_err(&refuse)?;
    let applied = ran.applied().map_err(&refuse)?.to_vec();
    let change = plan::change(
        &applied,
        left.as_str(),
        left_record,
        &ran.report.known,
        target.as_str(),
        target_record,
        force_irreversible,
    )
    .map_err(|r| refuse(r.to_string()))?;
    Ok(Prepared {
        change,
        left: left.clone(),
        target: target.clone(),
        expected: target_record.map(|r| r.applied.clone()).unwrap_or_default(),
        migrator: migrator.clone(),
    })
}

/// Applies the planned change: unapply with the left release's code, then apply with
/// the target's. Checks the end state against the target's record.
pub async fn apply(fleet: &Fleet, config: &Database, p: &Prepared) -> Result<String, String> {
    let mut done = Vec::new();
    if !p.change.undo.is_empty() {
        unapply(fleet, config, &p.migrator, &p.left, &p.change.undo).await?;
        done.push(format!("unapplied {}", p.change.undo.join(", ")));
    }
    if !p.change.forward.is_empty() {
        let ran = run(
            fleet,
            config,
            &p.migrator,
            &p.target,
            "migrate",
            Op::Migrate,
            &[],
        )
        .await?;
        if !(ran.code == 0 && ran.report.done) {
            let why = ran
                .report
                .failed
                .as_ref()
                .map(|(id, m)| format!("migration {id} failed: {m}"))
                .or_else(|| ran.report.errors.first().cloned())
                .unwrap_or_else(|| ran.stderr.clone());
            return Err(format!(
                "{}migrating forward with release {}'s code failed: {why}",
                if done.is_empty() {
                    String::new()
                } else {
                    format!("{}; then ", done.join("; "))
                },
                p.target
            ));
        }
        let after = ran.applied()?.to_vec();
        let extra: Vec<String> = after
            .iter()
            .filter(|a| !p.expected.contains(a))
            .cloned()
            .collect();
        let missing: Vec<String> = p
            .expected
            .iter()
            .filter(|e| !after.contains(e))
            .cloned()
            .collect();
        if !extra.is_empty() || !missing.is_empty() {
            return Err(format!(
                "after migrating forward the database does not match release {}'s record (applied beyond it: {}; missing: {})",
                p.target,
                if extra.is_empty() {
                    "none".into()
                } else {
                    extra.join(", ")
                },
                if missing.is_empty() {
                    "none".into()
                } else {
                    missing.join(", ")
                },
            ));
        }
        done.push(format!(
            "applied {} with release {}'s code",
            p.change.forward.join(", "),
            p.target
        ));
    }
    if done.is_empty() {
        return Ok("no migrations to undo or apply".into());
    }
    if !p.change.left_applied.is_empty() {
        done.push(format!(
            "left applied (irreversible, --force-schema): {}",
            p.change.left_applied.join(", ")
        ));
    }
    Ok(done.join("; "))
}
