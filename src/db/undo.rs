//! The rollback's database step. Planned before any host is switched (and printed, also
//! by `--dry-run`): which migrations to undo, read from the release being left — the
//! older release does not have them — and checked against the database and the two
//! releases' records. Applied after the code switched back: code first, then schema,
//! the mirror of a deploy.
//!
//! The down scripts are read back from the host (`releases/ID/<migrations>`, as a tar),
//! not cached by the deploy: the release directory is what the operator can see and fix
//! (add a missing down script) before retrying, and it lives exactly as long as the
//! release can be rolled back from.

use serde::Serialize;

use crate::config::Database;
use crate::error::Error;
use crate::fleet::Fleet;
use crate::layout::ReleaseId;
use crate::release::HostState;
use crate::script;

use super::migration::MigrationSet;
use super::plan::{self, UndoPlan};
use super::{Db, describe_all};

/// What to do with the schema in a rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    /// Leave irreversible migrations applied and undo the others.
    pub force_schema: bool,
    /// Switch the code only.
    pub skip_schema: bool,
}

/// The planned schema part of a rollback.
pub struct Prepared {
    pub plan: UndoPlan,
    pub set: MigrationSet,
    pub from: ReleaseId,
}

/// For `--dry-run` and `--json`.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub target_version: i64,
    pub undo: Vec<super::plan::UndoStep>,
    pub left_applied: Vec<super::plan::UndoStep>,
}

impl Prepared {
    pub fn summary(&self) -> Summary {
        Summary {
            target_version: self.plan.target,
            undo: self.plan.steps.clone(),
            left_applied: self.plan.left_applied.clone(),
        }
    }

    /// One line for the plan.
    pub fn describe(&self) -> String {
        let versions: Vec<i64> = self.plan.steps.iter().map(|s| s.version).collect();
        let mut s = if versions.is_empty() {
            format!(
                "no migrations to undo (the schema is at version {} already)",
                self.plan.target
            )
        } else {
            format!(
                "undo {} with the down scripts of release {}; the schema ends at version {}",
                describe_all(&self.set, &versions),
                self.from,
                self.plan.target
            )
        };
        if !self.plan.left_applied.is_empty() {
            let left: Vec<i64> = self.plan.left_applied.iter().map(|s| s.version).collect();
            s.push_str(&format!(
                "; irreversible, left applied (--force-schema): {}",
                describe_all(&self.set, &left)
            ));
        }
        s
    }
}

/// The schema part of a rollback, decided before any host is switched.
pub enum SchemaRollback {
    /// The stage has no database, or the code does not change.
    Nothing,
    /// `--skip-schema`: the code only.
    Skipped,
    /// sqlx migrations (postgres, mysql, sqlite): down scripts to run.
    Undo(Prepared),
    /// Command mode: `rollback_command` in the release being left, to `target`.
    Command { left: ReleaseId, target: i64 },
    /// Framework mode: unapply (and apply) exactly the recorded migrations.
    Framework(super::framework::change::Prepared),
}

impl SchemaRollback {
    /// One line for the plan and the report.
    pub fn describe(&self) -> String {
        match self {
            SchemaRollback::Nothing => "no database change".into(),
            SchemaRollback::Skipped => {
                "SKIPPED (--skip-schema): only the code is switched, the database stays as it is"
                    .into()
            }
            SchemaRollback::Undo(p) => p.describe(),
            SchemaRollback::Command { left, target } => format!(
                "run rollback_command in release {left} with SLIPWAY_TARGET_VERSION={target}"
            ),
            SchemaRollback::Framework(p) => p.describe(),
        }
    }

    /// Whether the schema moves before the code (a roll forward), not after.
    pub fn schema_first(&self) -> bool {
        matches!(self, SchemaRollback::Framework(p) if p.change.order == super::framework::plan::Order::SchemaThenCode)
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            SchemaRollback::Nothing => serde_json::json!(null),
            SchemaRollback::Skipped => serde_json::json!({ "skipped": true }),
            SchemaRollback::Undo(p) => serde_json::to_value(p.summary()).unwrap_or_default(),
            SchemaRollback::Command { left, target } => {
                serde_json::json!({ "command": true, "release": left.as_str(), "target_version": target })
            }
            SchemaRollback::Framework(p) => serde_json::json!({
                "framework": p.migrator.framework.as_str(),
                "undo": p.change.undo,
                "forward": p.change.forward,
                "left_applied": p.change.left_applied,
                "order": p.change.order,
                "code_of_undo": p.left.as_str(),
                "code_of_forward": p.target.as_str(),
            }),
        }
    }
}

/// Plans the schema rollback from release `from` (current on the primary) to `target`.
/// Refuses, touching nothing, when a down script is missing, a migration is
/// irreversible (without `--force-schema`), or records and database disagree.
pub async fn prepare(
    fleet: &Fleet,
    states: &[HostState],
    target: &ReleaseId,
    options: Options,
) -> Result<SchemaRollback, Error> {
    let Some(config) = fleet.stage.database.as_ref() else {
        return Ok(SchemaRollback::Nothing);
    };
    if options.skip_schema {
        return Ok(SchemaRollback::Skipped);
    }
    let primary = config.primary;
    let state = &states[primary];
    let Some(from) = state.current() else {
        return Ok(SchemaRollback::Nothing);
    };
    if &from == target {
        return Ok(SchemaRollback::Nothing);
    }
    let refuse = |m: String| {
        Error::SchemaRefused(format!(
            "{}: schema rollback refused, nothing was switched: {m}",
            fleet.name(primary)
        ))
    };
    let left_meta = state.release(&from).and_then(|r| r.meta.clone());
    let target_meta = state.release(target).and_then(|r| r.meta.clone());
    if let Some(migrator) = &config.framework {
        let prepared = super::framework::change::prepare(
            fleet,
            config,
            migrator,
            (&from, left_meta.as_ref().and_then(|m| m.schema.as_ref())),
            (target, target_meta.as_ref().and_then(|m| m.schema.as_ref())),
            options.force_schema,
        )
        .await?;
        return Ok(SchemaRollback::Framework(prepared));
    }
    if let Some(commands) = &config.commands {
        let target_version = target_meta
            .as_ref()
            .and_then(|m| m.schema_version)
            .ok_or_else(|| {
                refuse(super::plan::Refusal::NoTargetVersion(target.to_string()).to_string())
            })?;
        if commands.rollback.is_none() {
            return Err(refuse(
                "no rollback_command is configured (set one in [database], or use --skip-schema to switch the code only)".into(),
            ));
        }
        return Ok(SchemaRollback::Command {
            left: from,
            target: target_version,
        });
    }
    let out = fleet
        .step(
            primary,
            "read-migrations",
            &script::fetch_migrations(&fleet.layout, &from, &config.migrations),
            None,
            fleet.stage.timeouts.command,
        )
        .await
        .map_err(|e| refuse(e.into()))?;
    let set = MigrationSet::from_base64_tar(&out.stdout, &config.migrations)
        .await
        .map_err(&refuse)?;
    let mut db = Db::open(fleet, config).await?;
    let applied = db.applied().await;
    db.close().await;
    let applied = applied.map_err(&refuse)?;
    let left_record = left_meta
        .as_ref()
        .filter(|m| m.schema_version.is_some())
        .map(|m| m.migrations.as_slice());
    let target_version = target_meta.as_ref().and_then(|m| m.schema_version);
    let target_record = target_meta
        .as_ref()
        .filter(|m| m.schema_version.is_some())
        .map(|m| m.migrations.as_slice());
    let plan = plan::undo(
        &set.infos(),
        &applied,
        left_record,
        target.as_str(),
        target_version,
        target_record,
        options.force_schema,
    )
    .map_err(|r| refuse(r.to_string()))?;
    Ok(SchemaRollback::Undo(Prepared { plan, set, from }))
}

/// Applies the schema part after the code switched; returns what to report.
pub async fn apply_any(fleet: &Fleet, schema: &SchemaRollback) -> Result<String, String> {
    let Some(config) = fleet.stage.database.as_ref() else {
        return Ok(String::new());
    };
    match schema {
        SchemaRollback::Nothing => Ok(String::new()),
        SchemaRollback::Skipped => Ok(
            "the schema was NOT rolled back (--skip-schema): the database stays as it was".into(),
        ),
        SchemaRollback::Undo(p) => {
            let undone = apply(fleet, config, p).await?;
            Ok(if undone.is_empty() {
                format!(
                    "no migrations to undo (schema at version {})",
                    p.plan.target
                )
            } else {
                format!(
                    "undid {} (schema now at version {})",
                    describe_all(&p.set, &undone),
                    p.plan.target
                )
            })
        }
        SchemaRollback::Framework(p) => super::framework::change::apply(fleet, config, p).await,
        SchemaRollback::Command { left, target } => {
            let commands = config
                .commands
                .as_ref()
                .ok_or_else(|| "command mode is not configured".to_string())?;
            super::command::rollback(fleet, config, commands, left, *target).await?;
            Ok(format!("ran rollback_command to version {target}"))
        }
    }
}

/// Applies a prepared schema rollback; returns the versions undone.
pub async fn apply(
    fleet: &Fleet,
    config: &Database,
    prepared: &Prepared,
) -> Result<Vec<i64>, String> {
    let versions: Vec<i64> = prepared.plan.steps.iter().map(|s| s.version).collect();
    if versions.is_empty() {
        return Ok(vec![]);
    }
    let mut db = Db::open(fleet, config).await.map_err(|e| e.to_string())?;
    let result = db
        .undo(&prepared.set, &versions, prepared.plan.target)
        .await;
    let after = db.applied().await;
    db.close().await;
    let after = after.unwrap_or_default();
    let undone: Vec<i64> = versions
        .iter()
        .copied()
        .filter(|v| !after.iter().any(|a| a.version == *v))
        .collect();
    match result {
        Ok(()) => Ok(undone),
        Err(e) => Err(format!(
            "undoing {} failed: {}{}",
            e.version
                .map(|v| describe_all(&prepared.set, &[v]))
                .unwrap_or_else(|| "the migrations".into()),
            e.message,
            if undone.is_empty() {
                String::new()
            } else {
                format!(
                    " (undone before the failure: {})",
                    describe_all(&prepared.set, &undone)
                )
            }
        )),
    }
}
