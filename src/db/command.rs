//! Command mode: a framework's own migration tool (rails, django, laravel) run on the
//! primary host in the release directory. slipway records the version the
//! `version_command` prints; a rollback runs `rollback_command` in the release being
//! left (the one that has the down migrations) with the target release's version, as
//! `SLIPWAY_TARGET_VERSION` and in place of `{version}`. The tool reads its own
//! database settings on the host; slipway passes it no URL and takes no snapshot.

use crate::config::{Database, DbCommands};
use crate::error::Error;
use crate::fleet::Fleet;
use crate::layout::ReleaseId;
use crate::script::{self, HookEnv};

fn env_script(
    fleet: &Fleet,
    config: &Database,
    release: &ReleaseId,
    command: &str,
    target: Option<i64>,
) -> String {
    let path = fleet.layout.release(release);
    let env = HookEnv {
        release,
        release_path: &path,
        deploy_to: &fleet.stage.deploy_to,
        stage: &fleet.stage.name,
        host: fleet.name(config.primary),
    };
    script::db_command(&env, command, target)
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
        .map_err(|m| step(fleet, config, "db-version", m))?;
    let text = out.stdout.lines().rev().find(|l| !l.trim().is_empty());
    text.and_then(|t| t.trim().parse().ok()).ok_or_else(|| {
        step(
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

fn step(fleet: &Fleet, config: &Database, step: &str, message: String) -> Error {
    Error::Step {
        host: fleet.name(config.primary).to_string(),
        step: step.into(),
        message,
    }
}

/// Deploy: `migrate_command` in the new release, then its version.
pub async fn migrate(
    fleet: &Fleet,
    config: &Database,
    commands: &DbCommands,
    release: &ReleaseId,
) -> Result<i64, Error> {
    fleet
        .step(
            config.primary,
            "migrate",
            &env_script(fleet, config, release, &commands.migrate, None),
            None,
            fleet.stage.timeouts.hook,
        )
        .await
        .map_err(|m| step(fleet, config, "migrate", m))?;
    version(fleet, config, commands, release).await
}

/// Rollback: `rollback_command` in the release being left, down to `target`.
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
        .map(|_| ())
}
