//! `[database]`, command mode only: the framework's own migration tool (the recipes'
//! `migrate_command`, `rollback_command`, `version_command`).
//!
//! A stand-in, with the shape the migrations work (branch `db`) gives this file: that
//! branch's `database.rs` replaces this one whole when it is merged, and adds what is
//! refused here (slipway's own migrator: `driver`, `url_env`, `migrations`, `tunnel`,
//! `keep_snapshots`, `path`).

use super::validate::{Invalid, check_name, pick};
use super::{DatabaseLayer, Host, KeyPath, TransportKind};

/// The database engines slipway migrates itself (not in this build).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DbDriver {
    Postgres,
    Mysql,
    Sqlite,
}

/// Command mode: the framework's own migration tool, run on the db host in the release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbCommands {
    pub migrate: String,
    /// Gets the target version in place of `{version}`.
    pub rollback: Option<String>,
    /// Prints the current schema version (an integer) on stdout.
    pub version: String,
}

/// The resolved `[database]` section of a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Database {
    pub driver: Option<DbDriver>,
    pub role: String,
    /// The index (in the stage's hosts) of the primary: the first host with `role`.
    pub primary: usize,
    pub commands: Option<DbCommands>,
}

macro_rules! db_field {
    ($stage:expr, $top:expr, $at:expr, $key:ident) => {
        pick(
            $stage.and_then(|s| s.$key.as_ref()),
            $top.and_then(|s| s.$key.as_ref()),
            &$at.key("database").key(stringify!($key)),
            &KeyPath::root().key("database").key(stringify!($key)),
        )
    };
}

pub(super) fn resolve(
    stage: Option<&DatabaseLayer>,
    top: Option<&DatabaseLayer>,
    at: &KeyPath,
    hosts: &[Host],
    transport: TransportKind,
) -> Result<Option<Database>, Invalid> {
    if stage.is_none() && top.is_none() {
        return Ok(None);
    }
    let section = if stage.is_some() {
        at.key("database")
    } else {
        KeyPath::root().key("database")
    };
    let unsupported = [
        db_field!(stage, top, at, driver).map(|(_, p)| p),
        db_field!(stage, top, at, url_env).map(|(_, p)| p),
        db_field!(stage, top, at, migrations).map(|(_, p)| p),
        db_field!(stage, top, at, tunnel).map(|(_, p)| p),
        db_field!(stage, top, at, keep_snapshots).map(|(_, p)| p),
        db_field!(stage, top, at, path).map(|(_, p)| p),
    ];
    if let Some(p) = unsupported.into_iter().flatten().next() {
        return Err((
            p,
            "slipway's own migrator is not in this build: use migrate_command, rollback_command and version_command (a framework's tool)".into(),
        ));
    }
    let commands = resolve_commands(stage, top, at)?.ok_or_else(|| {
        (
            section.key("migrate_command"),
            "missing: set migrate_command and version_command (or a recipe that has them)"
                .to_string(),
        )
    })?;
    let (role, role_at) = match db_field!(stage, top, at, role) {
        Some((v, p)) => {
            check_name(v, "role", &p)?;
            (v.clone(), Some(p))
        }
        None => ("db".to_string(), None),
    };
    // The `local` transport has one host, this machine: it is the primary whatever its roles.
    let primary = if transport == TransportKind::Local {
        0
    } else {
        hosts
            .iter()
            .position(|h| h.roles.iter().any(|r| r == &role))
            .ok_or_else(|| {
                (
                    role_at.unwrap_or_else(|| at.key("hosts")),
                    format!(
                        "no host of this stage has the role `{role}`, which runs the migrations ([database] role): add roles = [\"{role}\"] to one host"
                    ),
                )
            })?
    };
    Ok(Some(Database {
        driver: None,
        role,
        primary,
        commands: Some(commands),
    }))
}

fn resolve_commands(
    stage: Option<&DatabaseLayer>,
    top: Option<&DatabaseLayer>,
    at: &KeyPath,
) -> Result<Option<DbCommands>, Invalid> {
    let mut found = [None, None, None];
    for (slot, item) in found.iter_mut().zip([
        db_field!(stage, top, at, migrate_command),
        db_field!(stage, top, at, rollback_command),
        db_field!(stage, top, at, version_command),
    ]) {
        if let Some((c, p)) = item {
            if c.trim().is_empty() || c.contains('\0') {
                return Err((p, "must be a non-empty command without NUL bytes".into()));
            }
            *slot = Some((c.clone(), p));
        }
    }
    let [migrate, rollback, version] = found;
    match (migrate, version) {
        (None, None) => match rollback {
            Some((_, p)) => Err((
                p,
                "rollback_command belongs to command mode: set migrate_command and version_command too".into(),
            )),
            None => Ok(None),
        },
        (Some(m), Some(v)) => Ok(Some(DbCommands {
            migrate: m.0,
            rollback: rollback.map(|r| r.0),
            version: v.0,
        })),
        (Some((_, p)), None) => Err((
            p,
            "command mode needs version_command too (it prints the schema version slipway records)".into(),
        )),
        (None, Some((_, p))) => Err((p, "command mode needs migrate_command too".into())),
    }
}
