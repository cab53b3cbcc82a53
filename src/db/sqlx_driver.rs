//! PostgreSQL and MySQL/MariaDB through sqlx, from the deployer: one dedicated
//! connection per run, sqlx's runtime migrator (no query macros), and its own lock
//! (pg_advisory_lock / GET_LOCK) around every run and undo.
//!
//! The connection is dedicated and closed on every error because sqlx's PostgreSQL
//! migrator does not release its session advisory lock when a migration fails: a pooled
//! connection would keep it and block the next migrator.

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::{AssertSqlSafe, Connection, MySqlConnection, PgConnection, Row};

use super::migration::{Applied, MigrationSet};
use super::url::DbUrl;
use crate::config::DbDriver;

pub enum SqlxDb {
    Pg(PgConnection),
    My(MySqlConnection),
}

/// A failure of a migration run: which migration (if one failed) and the database's
/// error, already masked.
#[derive(Debug, Clone)]
pub struct RunError {
    pub version: Option<i64>,
    pub message: String,
}

const APPLIED_SQL: &str =
    "SELECT version, description, checksum, success FROM _sqlx_migrations ORDER BY version";

impl SqlxDb {
    pub async fn connect(url: &DbUrl, driver: DbDriver) -> Result<SqlxDb, String> {
        let result = match driver {
            DbDriver::Postgres => PgConnection::connect(url.expose()).await.map(SqlxDb::Pg),
            DbDriver::Mysql => MySqlConnection::connect(url.expose()).await.map(SqlxDb::My),
            DbDriver::Sqlite => return Err("sqlite is migrated on the host".into()),
        };
        result.map_err(|e| url.mask(&format!("cannot connect to the database: {e}")))
    }

    /// The rows of `_sqlx_migrations`; none when the table does not exist yet (reading
    /// never creates it: a deploy without new migrations leaves the database untouched).
    pub async fn applied(&mut self, url: &DbUrl) -> Result<Vec<Applied>, String> {
        let exists = match self {
            SqlxDb::Pg(c) => sqlx::query(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'",
            )
            .fetch_one(&mut *c)
            .await
            .map(|r| r.get::<i64, _>(0) > 0),
            SqlxDb::My(c) => sqlx::query(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = '_sqlx_migrations'",
            )
            .fetch_one(&mut *c)
            .await
            .map(|r| r.get::<i64, _>(0) > 0),
        }
        .map_err(|e| url.mask(&format!("cannot read _sqlx_migrations: {e}")))?;
        if !exists {
            return Ok(Vec::new());
        }
        let mask = |e: sqlx::Error| url.mask(&format!("cannot read _sqlx_migrations: {e}"));
        match self {
            SqlxDb::Pg(c) => {
                let rows = sqlx::query(APPLIED_SQL)
                    .fetch_all(&mut *c)
                    .await
                    .map_err(mask)?;
                rows.iter()
                    .map(|r| {
                        Ok(Applied {
                            version: r.try_get(0)?,
                            description: r.try_get(1)?,
                            checksum: r.try_get(2)?,
                            success: r.try_get(3)?,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(mask)
            }
            SqlxDb::My(c) => {
                let rows = sqlx::query(APPLIED_SQL)
                    .fetch_all(&mut *c)
                    .await
                    .map_err(mask)?;
                rows.iter()
                    .map(|r| {
                        Ok(Applied {
                            version: r.try_get(0)?,
                            description: r.try_get(1)?,
                            checksum: r.try_get(2)?,
                            success: r.try_get(3)?,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(mask)
            }
        }
    }

    /// Applies every pending migration of `set` under sqlx's lock.
    pub async fn run(&mut self, set: &MigrationSet, url: &DbUrl) -> Result<(), RunError> {
        let result = match self {
            SqlxDb::Pg(c) => set.migrator.run(&mut *c).await,
            SqlxDb::My(c) => set.migrator.run(&mut *c).await,
        };
        result.map_err(|e| run_error(e, url))
    }

    /// Reverts applied migrations newer than `target` with the down scripts of `set`
    /// (the release being left: the only one that has them).
    pub async fn undo(&mut self, set: &Migrator, target: i64, url: &DbUrl) -> Result<(), RunError> {
        let result = match self {
            SqlxDb::Pg(c) => set.undo(&mut *c, target).await,
            SqlxDb::My(c) => set.undo(&mut *c, target).await,
        };
        result.map_err(|e| run_error(e, url))
    }

    /// Runs one statement (tests and `db status` use this for small reads).
    pub async fn execute(&mut self, sql: String) -> Result<(), String> {
        match self {
            SqlxDb::Pg(c) => sqlx::raw_sql(AssertSqlSafe(sql))
                .execute(&mut *c)
                .await
                .map(|_| ()),
            SqlxDb::My(c) => sqlx::raw_sql(AssertSqlSafe(sql))
                .execute(&mut *c)
                .await
                .map(|_| ()),
        }
        .map_err(|e| e.to_string())
    }

    pub async fn close(self) {
        match self {
            SqlxDb::Pg(c) => {
                let _ = c.close().await;
            }
            SqlxDb::My(c) => {
                let _ = c.close().await;
            }
        }
    }
}

fn run_error(e: MigrateError, url: &DbUrl) -> RunError {
    let version = match &e {
        MigrateError::ExecuteMigration(_, v)
        | MigrateError::VersionMissing(v)
        | MigrateError::VersionMismatch(v)
        | MigrateError::Dirty(v) => Some(*v),
        _ => None,
    };
    let message = match &e {
        MigrateError::ExecuteMigration(inner, _) => inner.to_string(),
        other => other.to_string(),
    };
    RunError {
        version,
        message: url.mask(&message),
    }
}
