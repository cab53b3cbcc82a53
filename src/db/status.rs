//! `slipway db status STAGE` and `slipway db restore STAGE SNAPSHOT --yes`.

use serde_json::json;

use crate::config::{Database, Stage};
use crate::error::{Error, Result};
use crate::fleet::Fleet;
use crate::operation::{self, Acted, Spec};
use crate::probe::probe;
use crate::run::{Context, Outcome};
use crate::script;

use super::migration::{self, MigrationSet};
use super::{Db, command, plan, snapshot};

fn database(stage: &Stage) -> Result<&Database> {
    stage.database.as_ref().ok_or_else(|| {
        Error::Usage(format!(
            "stage {} has no [database] section: there is no database to show",
            stage.name
        ))
    })
}

/// Applied and pending migrations, the schema version each release recorded, and
/// whether the current release's record agrees with the database.
pub async fn status(stage: &Stage, ctx: &Context) -> Result<Outcome> {
    let config = database(stage)?;
    let fleet = Fleet::connect(stage, ctx.reporter.clone()).await?;
    let result = status_on(&fleet, config).await;
    fleet.close().await;
    result
}

async fn status_on(fleet: &Fleet, config: &Database) -> Result<Outcome> {
    let states = probe(fleet).await?;
    let state = &states[config.primary];
    let current = state.current();
    let mut human = String::new();
    let releases: Vec<serde_json::Value> = state
        .releases
        .iter()
        .rev()
        .map(|r| {
            let version = r.meta.as_ref().and_then(|m| m.schema_version);
            json!({
                "id": r.id.as_str(),
                "state": r.state().map(|s| s.as_str()).unwrap_or("incomplete"),
                "current": Some(&r.id) == current.as_ref(),
                "schema_version": version,
            })
        })
        .collect();
    if let Some(migrator) = &config.framework {
        return super::framework::status::status(fleet, config, migrator, state).await;
    }
    if let (Some(commands), None) = (&config.commands, config.driver) {
        let version = match &current {
            Some(c) => Some(command::version(fleet, config, commands, c).await?),
            None => None,
        };
        human.push_str(&format!(
            "database (command mode) on {}: schema version {}\n",
            fleet.name(config.primary),
            version
                .map(|v| v.to_string())
                .unwrap_or_else(|| "unknown (no current release)".into())
        ));
        human.push_str(&render_releases(&releases));
        return Ok(Outcome {
            human,
            data: json!({ "mode": "command", "schema_version": version, "releases": releases }),
        });
    }
    let mut db = Db::open(fleet, config).await?;
    let applied = db.applied().await;
    let snapshots = db.snapshots().await.unwrap_or_default();
    db.close().await;
    let applied = applied.map_err(|m| Error::Step {
        host: fleet.name(config.primary).into(),
        step: "db-status".into(),
        message: m,
    })?;
    let version = migration::version_of(&applied);
    let driver = config.driver.map(|d| d.as_str()).unwrap_or("command");
    human.push_str(&format!(
        "database ({driver}) on {}: schema version {version}\n",
        fleet.name(config.primary)
    ));
    human.push_str("applied:\n");
    if applied.is_empty() {
        human.push_str("  (none)\n");
    }
    for a in &applied {
        human.push_str(&format!(
            "  {:>6}  {}{}\n",
            a.version,
            a.description,
            if a.success { "" } else { "  (FAILED: dirty)" }
        ));
    }
    let mut pending_json = json!(null);
    let mut agrees = json!(null);
    if let Some(cur) = &current {
        let out = fleet
            .step(
                config.primary,
                "read-migrations",
                &script::fetch_migrations(&fleet.layout, cur, &config.migrations),
                None,
                fleet.stage.timeouts.command,
            )
            .await;
        if let Ok(out) = out
            && let Ok(set) = MigrationSet::from_base64_tar(&out.stdout, &config.migrations).await
        {
            match plan::pending(&set.infos(), &applied) {
                Ok(p) => {
                    human.push_str(&format!(
                        "pending in the current release {cur}: {}\n",
                        if p.is_empty() {
                            "none".to_string()
                        } else {
                            super::describe_all(&set, &p)
                        }
                    ));
                    pending_json = json!(p);
                }
                Err(r) => human.push_str(&format!("current release {cur}: {r}\n")),
            }
        }
        if let Some(meta) = state.release(cur).and_then(|r| r.meta.as_ref()) {
            let same = meta.schema_version == Some(version)
                && meta.migrations == migration::records(&applied);
            agrees = json!(same);
            human.push_str(&format!(
                "current release {cur} recorded schema version {}: {}\n",
                meta.schema_version
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "none".into()),
                if same {
                    "agrees with the database"
                } else {
                    "DISAGREES with the database"
                }
            ));
        }
    }
    human.push_str(&render_releases(&releases));
    if !snapshots.is_empty() {
        human.push_str("snapshots (backups/db/):\n");
        for s in &snapshots {
            human.push_str(&format!("  {s}\n"));
        }
    }
    let applied_json: Vec<serde_json::Value> = applied
        .iter()
        .map(|a| json!({ "version": a.version, "description": a.description, "checksum": plan::hex(&a.checksum), "success": a.success }))
        .collect();
    let data = json!({
            "driver": driver,
            "host": fleet.name(config.primary),
            "schema_version": version,
            "applied": applied_json,
            "pending": pending_json,
            "current": current.map(|c| c.to_string()),
            "current_record_agrees": agrees,
            "releases": releases,
            "snapshots": snapshots,
    });
    super::disagreeing(agrees == json!(false), human.trim_end().to_string(), data)
}

fn render_releases(releases: &[serde_json::Value]) -> String {
    let mut s = String::from("releases:\n");
    for r in releases {
        s.push_str(&format!(
            "  {}  {:<12} schema {}{}\n",
            r["id"].as_str().unwrap_or_default(),
            r["state"].as_str().unwrap_or_default(),
            r["schema_version"]
                .as_i64()
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
            if r["current"].as_bool() == Some(true) {
                "  (current)"
            } else {
                ""
            }
        ));
    }
    s
}

/// Replaces the database's content with a snapshot, under the deploy lock.
pub async fn restore(stage: &Stage, ctx: &Context, name: &str, yes: bool) -> Result<Outcome> {
    let config = database(stage)?;
    let driver = config.driver.ok_or_else(|| {
        Error::Usage("command mode takes no snapshots: nothing to restore".into())
    })?;
    match snapshot::parse(name) {
        Some((_, d)) if d == driver => {}
        _ => {
            return Err(Error::Usage(format!(
                "`{}` is not a {} snapshot name (RELEASE-{}.dump, see `slipway db status {}`)",
                name.escape_debug(),
                driver.as_str(),
                driver.as_str(),
                stage.name
            )));
        }
    }
    if !yes && !ctx.dry_run {
        return Err(Error::Usage(format!(
            "restoring {name} replaces the database's current content with the snapshot: add --yes to do it"
        )));
    }
    let fleet = Fleet::connect(stage, ctx.reporter.clone()).await?;
    if ctx.dry_run {
        fleet.close().await;
        ctx.reporter.plan(
            &format!(
                "Plan: restore backups/db/{name} into the {} database on {}",
                driver.as_str(),
                fleet.name(config.primary)
            ),
            json!({ "snapshot": name }),
        );
        return Ok(Outcome {
            human: "Nothing was changed (--dry-run).".into(),
            data: json!({ "dry_run": true }),
        });
    }
    let spec = Spec {
        action: "db-restore",
        then: "",
        before_unlock: None,
        started: std::time::Instant::now(),
    };
    let result = operation::with_lock(&fleet, ctx, spec, async |_| {
        let result = async {
            let db = Db::open(&fleet, config).await?;
            let r = db.restore(name).await;
            db.close().await;
            r.map_err(|m| Error::Step {
                host: fleet.name(config.primary).into(),
                step: "restore".into(),
                message: m,
            })
        }
        .await;
        Acted {
            to: Some(name.to_string()),
            ..Acted::new(result)
        }
    })
    .await;
    fleet.close().await;
    result.map(|()| Outcome {
        human: format!(
            "restored {name} into the {} database on {}",
            driver.as_str(),
            fleet.name(config.primary)
        ),
        data: json!({ "restored": name }),
    })
}

/// What `slipway check` verifies for the database, without touching it: the URL is in
/// the deployer's environment (postgres, mysql), and the db host has the tools the
/// snapshots and the sqlite migrations need. `(host, ok, what)`.
pub async fn check(fleet: &Fleet, config: &Database) -> Vec<(String, bool, String)> {
    use crate::config::DbDriver;
    let host = fleet.name(config.primary).to_string();
    let mut out = Vec::new();
    if let Some(migrator) = &config.framework {
        out.extend(super::framework::status::check(fleet, config, migrator).await);
    }
    let Some(driver) = config.driver else {
        if config.framework.is_some() {
            return out;
        }
        out.push((
            host,
            true,
            "database: command mode (the framework's tool runs the migrations)".into(),
        ));
        return out;
    };
    if driver != DbDriver::Sqlite {
        match super::url::DbUrl::from_env(&config.url_env, driver) {
            Ok(_) => out.push((
                host.clone(),
                true,
                format!("database URL: set in {} (not shown)", config.url_env),
            )),
            Err(m) => out.push((host.clone(), false, format!("database URL: {m}"))),
        }
    }
    let needed: &[(&[&str], &str)] = match driver {
        DbDriver::Sqlite => &[(&["sqlite3"], "sqlite3")],
        DbDriver::Postgres => &[
            (&["pg_dump"], "postgresql-client"),
            (&["pg_restore"], "postgresql-client"),
        ],
        DbDriver::Mysql => &[
            (&["mariadb-dump", "mysqldump"], "mariadb-client"),
            (&["mariadb", "mysql"], "mariadb-client"),
        ],
    };
    let all: Vec<&str> = needed.iter().flat_map(|(t, _)| t.iter().copied()).collect();
    match fleet
        .step(
            config.primary,
            "check",
            &script::db_tools(&all),
            None,
            fleet.stage.timeouts.command,
        )
        .await
    {
        Ok(o) => {
            let found: Vec<&str> = o
                .stdout
                .lines()
                .filter_map(|l| {
                    let mut p = l.splitn(3, '\t');
                    match (p.next(), p.next(), p.next()) {
                        (Some("tool"), Some(t), Some(path)) if !path.is_empty() => Some(t),
                        _ => None,
                    }
                })
                .collect();
            for (tools, package) in needed {
                let have = tools.iter().find(|t| found.contains(t));
                out.push(match have {
                    Some(t) => (host.clone(), true, format!("database tool: {t}")),
                    None => (
                        host.clone(),
                        false,
                        format!(
                            "database tool missing: {} (install {package} on the db host)",
                            tools.join(" or ")
                        ),
                    ),
                });
            }
        }
        Err(e) => out.push((host, false, format!("database tools: cannot check ({e})"))),
    }
    out
}
