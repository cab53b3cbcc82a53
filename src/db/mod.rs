//! Database migrations that move with the code: applied once per database on the
//! primary host's database before a deploy switches, undone after a rollback switches
//! back, with snapshots taken before every migrating deploy.
//!
//! - [`migration`]: sqlx's migration format, read with sqlx's own resolver.
//! - [`plan`]: pure decisions (what to apply, what to undo, when to refuse).
//! - [`sqlx_driver`]: PostgreSQL and MySQL/MariaDB, from the deployer (optionally
//!   through an ssh tunnel to the primary host).
//! - [`sqlite_host`]: SQLite, migrated on the host with the `sqlite3` shell, keeping
//!   sqlx's bookkeeping.
//! - [`snapshot`]: snapshot names and retention.
//! - [`url`]: the database URL, and masking it out of everything slipway prints.
//! - [`migrate`], [`undo`], [`command`], [`status`]: the deploy step, the rollback
//!   step, command mode, and `slipway db status|restore`.
//!
//! [`Db`] is the one handle the steps use: the same operations (read the applied
//! migrations, apply, undo, snapshot, restore) whatever the engine.

pub mod command;
pub mod framework;
pub mod migrate;
pub mod migration;
pub mod plan;
pub mod snapshot;
pub mod sqlite_host;
pub mod sqlx_driver;
pub mod status;
pub mod step;
pub mod undo;
pub mod url;

use std::sync::Arc;
use std::time::Instant;

pub use migration::{Applied, Migration, MigrationInfo, MigrationSet, Reversibility};

use crate::config::{Database, DbDriver};
use crate::error::Error;
use crate::fleet::Fleet;
use crate::layout::ReleaseId;
use crate::script;
use crate::transport::{Input, Remote};
use sqlx_driver::{RunError, SqlxDb};
use url::{DbUrl, Endpoint};

/// An open database of a stage.
pub struct Db<'a> {
    fleet: &'a Fleet,
    pub config: &'a Database,
    pub driver: DbDriver,
    /// The URL as the db host sees it (postgres, mysql): for snapshots on the host.
    url: Option<DbUrl>,
    sqlx: Option<SqlxDb>,
    tunnel: Option<(u16, Remote)>,
}

impl<'a> Db<'a> {
    /// Opens the stage's database: reads the URL from the deployer's environment,
    /// opens the tunnel if configured, and connects (postgres, mysql). For sqlite
    /// there is nothing to open: every operation is a script on the primary host.
    pub async fn open(fleet: &'a Fleet, config: &'a Database) -> Result<Db<'a>, Error> {
        let driver = config.driver.ok_or_else(|| {
            Error::Usage("[database] has no driver: migrations run in command mode".into())
        })?;
        let mut db = Db {
            fleet,
            config,
            driver,
            url: None,
            sqlx: None,
            tunnel: None,
        };
        if driver == DbDriver::Sqlite {
            return Ok(db);
        }
        let url = DbUrl::from_env(&config.url_env, driver).map_err(Error::Usage)?;
        let connect_url = if config.tunnel {
            let remote = match url.endpoint(driver) {
                Endpoint::Tcp { host, port } => Remote::Tcp { host, port },
                Endpoint::Socket(path) => Remote::Unix(path),
            };
            let port = db.open_tunnel(&remote).await?;
            db.tunnel = Some((port, remote));
            url.through_tunnel(port)
        } else {
            url.clone()
        };
        let host = fleet.name(config.primary).to_string();
        let started = Instant::now();
        fleet.reporter.started(&host, "db-connect");
        match SqlxDb::connect(&connect_url, driver).await {
            Ok(conn) => {
                fleet
                    .reporter
                    .finished(&host, "db-connect", started.elapsed(), None);
                db.sqlx = Some(conn);
            }
            Err(message) => {
                fleet
                    .reporter
                    .failed(&host, "db-connect", started.elapsed(), &message);
                db.close().await;
                return Err(Error::Step {
                    host,
                    step: "db-connect".into(),
                    message: format!(
                        "{message}{}",
                        if config.tunnel {
                            " (through the ssh tunnel: is the URL right as seen from that host?)"
                        } else {
                            ""
                        }
                    ),
                });
            }
        }
        db.url = Some(url);
        Ok(db)
    }

    /// Picks a free loopback port (bind to port 0, read it, let it go: ssh cannot
    /// report the port it chose) and forwards it to the database through the
    /// primary host. Another process could take the port in between: retried.
    async fn open_tunnel(&self, remote: &Remote) -> Result<u16, Error> {
        let host = self.fleet.hosts[self.config.primary].clone();
        let mut last = String::new();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind(("127.0.0.1", 0))
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .map_err(Error::Io)?;
            match host.forward(port, remote).await {
                Ok(()) => return Ok(port),
                Err(e) => last = e.to_string(),
            }
        }
        Err(Error::Step {
            host: host.host().to_string(),
            step: "db-tunnel".into(),
            message: last,
        })
    }

    pub fn primary(&self) -> usize {
        self.config.primary
    }

    pub fn host(&self) -> &str {
        self.fleet.name(self.config.primary)
    }

    /// `text` without the URL or the password in it.
    pub fn mask(&self, text: &str) -> String {
        match &self.url {
            Some(u) => u.mask(text),
            None => text.to_string(),
        }
    }

    fn sqlite_path(&self) -> &str {
        self.config.path.as_deref().unwrap_or_default()
    }

    fn url(&self) -> Result<&DbUrl, String> {
        self.url
            .as_ref()
            .ok_or_else(|| "the database is not connected".to_string())
    }

    /// The rows of `_sqlx_migrations` (none if it does not exist). Reads only.
    pub async fn applied(&mut self) -> Result<Vec<Applied>, String> {
        if self.driver == DbDriver::Sqlite {
            let script = script::sqlite_applied(
                &self.fleet.layout,
                self.sqlite_path(),
                sqlite_host::APPLIED_QUERY,
            );
            let out = self
                .fleet
                .step(
                    self.primary(),
                    "db-read",
                    &script,
                    None,
                    self.fleet.stage.timeouts.command,
                )
                .await?;
            return sqlite_host::parse_applied(&out.stdout);
        }
        let url = self.url()?.clone();
        match self.sqlx.as_mut() {
            Some(db) => db.applied(&url).await,
            None => Err("the database is not connected".into()),
        }
    }

    /// Applies the `pending` migrations of `set`, oldest first, each in its own
    /// transaction, under the database's lock.
    pub async fn apply(&mut self, set: &MigrationSet, pending: &[i64]) -> Result<(), RunError> {
        let host = self.host().to_string();
        let started = Instant::now();
        if self.driver == DbDriver::Sqlite {
            let chosen: Vec<&Migration> = pending.iter().filter_map(|v| set.get(*v)).collect();
            let program = sqlite_host::apply_program(&chosen);
            return self.run_sqlite("migrate", program).await;
        }
        self.fleet.reporter.started(&host, "migrate");
        let url = self.url().map_err(|m| RunError {
            version: None,
            message: m,
        })?;
        let url = url.clone();
        let result = match self.sqlx.as_mut() {
            Some(db) => db.run(set, &url).await,
            None => Err(RunError {
                version: None,
                message: "the database is not connected".into(),
            }),
        };
        self.report("migrate", started, &result);
        result
    }

    /// Undoes `versions` (newest first) with the down scripts of `set`, ending at
    /// `target`. `set` must be the migrations of the release being left.
    pub async fn undo(
        &mut self,
        set: &MigrationSet,
        versions: &[i64],
        target: i64,
    ) -> Result<(), RunError> {
        if versions.is_empty() {
            return Ok(());
        }
        let host = self.host().to_string();
        let started = Instant::now();
        if self.driver == DbDriver::Sqlite {
            let chosen: Vec<&Migration> = versions.iter().filter_map(|v| set.get(*v)).collect();
            let program = sqlite_host::undo_program(&chosen);
            return self.run_sqlite("undo", program).await;
        }
        self.fleet.reporter.started(&host, "undo");
        // Exactly the planned down scripts: every up of the release being left (so
        // sqlx's check that each applied migration is known passes, without
        // set_ignore_missing), and the downs of the steps to undo only (so a down
        // marked irreversible is never run).
        let migrations: Vec<sqlx::migrate::Migration> = set
            .migrator
            .iter()
            .filter(|m| !m.migration_type.is_down_migration() || versions.contains(&m.version))
            .cloned()
            .collect();
        let migrator = sqlx::migrate::Migrator::with_migrations(migrations);
        let url = self
            .url()
            .map_err(|m| RunError {
                version: None,
                message: m,
            })?
            .clone();
        let result = match self.sqlx.as_mut() {
            Some(db) => db.undo(&migrator, target, &url).await,
            None => Err(RunError {
                version: None,
                message: "the database is not connected".into(),
            }),
        };
        self.report("undo", started, &result);
        result
    }

    fn report(&self, step: &str, started: Instant, result: &Result<(), RunError>) {
        let host = self.host();
        match result {
            Ok(()) => self
                .fleet
                .reporter
                .finished(host, step, started.elapsed(), None),
            Err(e) => self
                .fleet
                .reporter
                .failed(host, step, started.elapsed(), &e.message),
        }
    }

    async fn run_sqlite(&self, step: &str, program: String) -> Result<(), RunError> {
        let started = Instant::now();
        let script = script::sqlite(&self.fleet.layout, self.sqlite_path());
        let out = self
            .fleet
            .exec(
                self.primary(),
                step,
                &script,
                Some(Arc::new(Input::bytes(program.into_bytes()))),
                self.fleet.stage.timeouts.hook,
            )
            .await
            .map_err(|message| RunError {
                version: None,
                message: message.to_string(),
            })?;
        let (_, stopped_in) = sqlite_host::progress(&out.stdout);
        let result = if out.success() {
            Ok(())
        } else {
            Err(RunError {
                version: stopped_in,
                message: out.message(),
            })
        };
        self.report(step, started, &result);
        result
    }

    /// The stdin of a snapshot or restore script: the credentials (postgres, mysql).
    fn credentials(&self) -> Result<Option<Arc<Input>>, String> {
        match &self.url {
            None => Ok(None),
            Some(u) => Ok(Some(Arc::new(Input::bytes(
                u.stdin_lines(self.driver)?.into_bytes(),
            )))),
        }
    }

    /// Takes a snapshot named after `release` on the primary host; returns its name.
    pub async fn snapshot(&self, release: &ReleaseId) -> Result<String, String> {
        let name = snapshot::name(release, self.driver);
        let script = script::snapshot(
            &self.fleet.layout,
            self.driver,
            &name,
            self.config.path.as_deref(),
        );
        self.fleet
            .step(
                self.primary(),
                "snapshot",
                &script,
                self.credentials()?,
                self.fleet.stage.timeouts.hook,
            )
            .await
            .map_err(|m| self.mask(&m.to_string()))?;
        Ok(name)
    }

    /// The snapshots on the primary host (all drivers), oldest first.
    pub async fn snapshots(&self) -> Result<Vec<String>, String> {
        let out = self
            .fleet
            .step(
                self.primary(),
                "snapshots",
                &script::list_snapshots(&self.fleet.layout),
                None,
                self.fleet.stage.timeouts.command,
            )
            .await?;
        let mut names: Vec<String> = out
            .stdout
            .lines()
            .filter(|n| snapshot::parse(n).is_some())
            .map(str::to_string)
            .collect();
        names.sort();
        Ok(names)
    }

    /// Removes this driver's snapshots beyond `keep_snapshots`; returns their names.
    pub async fn prune_snapshots(&self) -> Result<Vec<String>, String> {
        let names = self.snapshots().await?;
        let doomed = snapshot::prune(&names, self.driver, self.config.keep_snapshots);
        if !doomed.is_empty() {
            self.fleet
                .step(
                    self.primary(),
                    "prune-snapshots",
                    &script::remove_snapshots(&self.fleet.layout, &doomed),
                    None,
                    self.fleet.stage.timeouts.command,
                )
                .await?;
        }
        Ok(doomed)
    }

    /// Restores the snapshot `name` (a validated snapshot name) into the database.
    pub async fn restore(&self, name: &str) -> Result<(), String> {
        let script = script::restore(
            &self.fleet.layout,
            self.driver,
            name,
            self.config.path.as_deref(),
        );
        self.fleet
            .step(
                self.primary(),
                "restore",
                &script,
                self.credentials()?,
                self.fleet.stage.timeouts.hook,
            )
            .await
            .map(|_| ())
            .map_err(|m| self.mask(&m.to_string()))
    }

    /// Closes the connection and the tunnel.
    pub async fn close(mut self) {
        if let Some(db) = self.sqlx.take() {
            db.close().await;
        }
        if let Some((port, remote)) = self.tunnel.take() {
            self.fleet.hosts[self.config.primary]
                .close_forward(port, &remote)
                .await;
        }
    }
}

/// "3 (add email)" for messages.
pub fn describe(set: &MigrationSet, version: i64) -> String {
    match set.get(version) {
        Some(m) => format!("{version} ({})", m.info.description),
        None => version.to_string(),
    }
}

/// "3 (add email), 2 (create posts)".
pub fn describe_all(set: &MigrationSet, versions: &[i64]) -> String {
    versions
        .iter()
        .map(|v| describe(set, *v))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The URL slipway connects with (postgres, mysql: slipway's own migrations, and the
/// snapshots of framework mode) is in the deployer's environment: checked before
/// anything is uploaded, so a missing one costs nothing.
pub fn check_url(config: &Database) -> Result<(), Error> {
    match config.driver {
        Some(driver) if driver != DbDriver::Sqlite => DbUrl::from_env(&config.url_env, driver)
            .map(|_| ())
            .map_err(Error::Usage),
        _ => Ok(()),
    }
}

/// A step on the db host failed: the error names that host and the step.
pub fn primary_error(fleet: &Fleet, config: &Database, step: &str, message: String) -> Error {
    Error::Step {
        host: fleet.name(config.primary).to_string(),
        step: step.into(),
        message,
    }
}

/// Framework mode: a snapshot before migrating when slipway can reach the database
/// (`driver` set, with the URL in `url_env`, or a sqlite `path`); `None` when it cannot.
pub async fn snapshot_if_reachable(
    fleet: &Fleet,
    config: &Database,
    release: &ReleaseId,
) -> Result<Option<String>, String> {
    let Some(driver) = config.driver else {
        return Ok(None);
    };
    if driver == DbDriver::Sqlite && config.path.is_none() {
        return Ok(None);
    }
    let db = Db::open(fleet, config).await.map_err(|e| e.to_string())?;
    let taken = db.snapshot(release).await;
    if taken.is_ok() {
        let _ = db.prune_snapshots().await;
    }
    db.close().await;
    taken.map(Some)
}

/// Loads snapshot `name` back into the stage's database.
pub async fn restore_snapshot(fleet: &Fleet, config: &Database, name: &str) -> Result<(), String> {
    let db = Db::open(fleet, config).await.map_err(|e| e.to_string())?;
    let result = db.restore(name).await;
    db.close().await;
    result
}

/// `db status`'s ending: exit 0 only when the database is what the live release
/// records; otherwise the same report, as a failure (exit 4) that says what to do.
pub(crate) fn disagreeing(
    disagrees: bool,
    human: String,
    data: serde_json::Value,
) -> crate::error::Result<crate::run::Outcome> {
    if !disagrees {
        return Ok(crate::run::Outcome { human, data });
    }
    Err(crate::error::Error::Disagrees {
        message: format!(
            "{human}\nthe database is not what the live release records: a deploy or rollback that could not finish its schema step left it so. \
             Deploy again (migrations the new release has are kept, others are refused by name), roll back, or restore a snapshot (`slipway db restore STAGE SNAPSHOT --yes`)"
        ),
        report: data,
    })
}
