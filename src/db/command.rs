//! Command mode: a framework's own migration tool (rails, django, laravel) run on the
//! primary host in the release directory. slipway records the version the
//! `version_command` prints; a rollback runs `rollback_command` in the release being
//! left (the one that has the down migrations) with the target release's version, as
//! `SLIPWAY_TARGET_VERSION` and in place of `{version}`. The tool reads its own
//! database settings on the host; slipway passes it no URL and takes no snapshot.
//!
//! slipway cannot see what these commands do, so it checks what it can: the version
//! before and after migrating (a deploy whose switch fails runs `rollback_command` back
//! to the version before), and the version after a rollback must be the target's —
//! otherwise the rollback says it could not prove the schema moved, and fails.

use crate::config::{Database, DbCommands};
use crate::error::Error;
use crate::fleet::Fleet;
use crate::layout::ReleaseId;
use crate::script;

fn env_script(
    fleet: &Fleet,
    config: &Database,
    release: &ReleaseId,
    command: &str,
    target: Option<i64>,
) -> String {
    let path = fleet.layout.release(release);
    script::db_command(
        &fleet.hook_env(config.primary, release, &path),
        command,
        target,
    )
}

/// Runs `version_command` in `release`: the schema version it prints.
pub async fn version(
    fleet: &Fleet,
    config: &Database,
    commands: &DbCommands,
    release: &ReleaseId,
) -> Result<i64, Error> {
    let out = fleet
        .step(
            config.primary,
            "db-version",
            &env_script(fleet, config, release, &commands.version, None),
            None,
            fleet.stage.timeouts.command,
        )
        .await
        .map_err(|m| super::primary_error(fleet, config, "db-version", m.into()))?;
    let text = out.stdout.lines().rev().find(|l| !l.trim().is_empty());
    text.and_then(|t| t.trim().parse().ok()).ok_or_else(|| {
        super::primary_error(
            fleet,
            config,
            "db-version",
            format!(
                "version_command printed no integer on its last line (got {:?})",
                text.unwrap_or_default()
            ),
        )
    })
}

/// What a command-mode deploy did: the versions `version_command` printed before and
/// after `migrate_command`, in the new release.
#[derive(Debug, Clone)]
pub struct Migrated {
    pub release: ReleaseId,
    /// `None`: version_command could not say before migrating (a first deploy, say).
    pub before: Option<i64>,
    pub after: i64,
}

/// Deploy: the version, `migrate_command` in the new release, then the version again.
pub async fn migrate(
    fleet: &Fleet,
    config: &Database,
    commands: &DbCommands,
    release: &ReleaseId,
) -> Result<Migrated, Error> {
    // Before the first migration there may be no version to read: unknown, not 0.
    let before = version(fleet, config, commands, release).await.ok();
    fleet
        .step(
            config.primary,
            "migrate",
            &env_script(fleet, config, release, &commands.migrate, None),
            None,
            fleet.stage.timeouts.hook,
        )
        .await
        .map_err(|m| super::primary_error(fleet, config, "migrate", m.into()))?;
    let after = version(fleet, config, commands, release).await?;
    Ok(Migrated {
        release: release.clone(),
        before,
        after,
    })
}

/// After a failed switch or gate: `rollback_command` in the new release back to the
/// version before the deploy, checked by `version_command`. Returns what to report.
pub async fn revert(fleet: &Fleet, config: &Database, m: &Migrated) -> (String, bool) {
    let Some(commands) = &config.commands else {
        return (
            "command mode is no longer configured: the schema was NOT put back".into(),
            false,
        );
    };
    let Some(before) = m.before else {
        return (
            format!(
                "the schema stays at version {}: version_command printed nothing before this deploy migrated, so there is no version to go back to (check it by hand)",
                m.after
            ),
            false,
        );
    };
    match rollback(fleet, config, commands, &m.release, before).await {
        Ok(()) => (
            format!(
                "ran rollback_command back to schema version {before} (checked by version_command)"
            ),
            true,
        ),
        Err(e) => (
            format!(
                "the schema stays at version {} (this deploy moved it from {before}): {e}",
                m.after
            ),
            false,
        ),
    }
}

/// Rollback: `rollback_command` in the release being left, down to `target`, then
/// `version_command` must print `target`: anything else is reported, not assumed.
pub async fn rollback(
    fleet: &Fleet,
    config: &Database,
    commands: &DbCommands,
    left: &ReleaseId,
    target: i64,
) -> Result<(), String> {
    let command = commands
        .rollback
        .as_deref()
        .ok_or_else(|| "no rollback_command is configured".to_string())?;
    fleet
        .step(
            config.primary,
            "undo",
            &env_script(fleet, config, left, command, Some(target)),
            None,
            fleet.stage.timeouts.hook,
        )
        .await
        .map_err(String::from)?;
    match version(fleet, config, commands, left).await {
        Ok(v) if v == target => Ok(()),
        Ok(v) => Err(format!(
            "rollback_command ran, but version_command now prints {v}, not {target}: slipway cannot prove the schema is the target's (check it by hand)"
        )),
        Err(e) => Err(format!(
            "rollback_command ran, but the schema version could not be read afterwards ({e}): slipway cannot prove the schema is the target's"
        )),
    }
}
