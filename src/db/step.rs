//! The deploy's schema step, whichever migrator runs it: slipway's own SQL migrations
//! (sqlx) or a framework's through its adapter. One type, so that every path that
//! switches back after a deploy (a failed switch, a failed gate, a failed rollout step)
//! undoes the deploy's migrations the same way.

use serde_json::{Value, json};

use super::framework;
use super::migrate::{self, Migrated as SqlxMigrated};
use crate::config::Database;
use crate::fleet::Fleet;

/// What a deploy did to the schema.
#[derive(Debug)]
pub enum Migrated {
    Sqlx(SqlxMigrated),
    Framework(framework::run::Migrated),
    /// Command mode: only the versions `version_command` printed are known.
    Command(super::command::Migrated),
}

impl Migrated {
    /// One line for the report.
    pub fn summary(&self) -> String {
        match self {
            Migrated::Sqlx(m) => {
                if m.applied_now.is_empty() {
                    format!(
                        "no new migrations: schema stays at version {}, database untouched",
                        m.schema_version
                    )
                } else {
                    format!(
                        "migrated the database to schema version {} (applied {}; snapshot backups/db/{})",
                        m.schema_version,
                        super::describe_all(&m.set, &m.applied_now),
                        m.snapshot.as_deref().unwrap_or("-")
                    )
                }
            }
            Migrated::Framework(m) => m.summary(),
            Migrated::Command(m) => match m.before {
                Some(b) if b == m.after => format!("schema version {} (unchanged)", m.after),
                Some(b) => format!(
                    "schema version {} (migrate_command moved it from {b})",
                    m.after
                ),
                None => format!("schema version {}", m.after),
            },
        }
    }

    /// Whether this deploy changed the schema.
    pub fn changed(&self) -> bool {
        match self {
            Migrated::Sqlx(m) => !m.applied_now.is_empty(),
            Migrated::Framework(m) => !m.record.applied_now.is_empty(),
            Migrated::Command(m) => m.before != Some(m.after),
        }
    }

    /// The migrations applied by this deploy, for `--json`.
    pub fn applied_now(&self) -> Value {
        match self {
            Migrated::Sqlx(m) => json!(m.applied_now),
            Migrated::Framework(m) => json!(m.record.applied_now),
            Migrated::Command(_) => Value::Null,
        }
    }

    pub fn snapshot(&self) -> Option<&str> {
        match self {
            Migrated::Sqlx(m) => m.snapshot.as_deref(),
            Migrated::Framework(m) => m.snapshot.as_deref(),
            Migrated::Command(_) => None,
        }
    }

    /// After a switch-back: undoes this deploy's migrations, so that the old code finds
    /// its schema. Returns what was done, for the report, and whether the schema is back
    /// where it was before the deploy.
    pub async fn revert(&self, fleet: &Fleet, config: &Database) -> (String, bool) {
        match self {
            Migrated::Sqlx(m) => migrate::revert(fleet, config, m).await,
            Migrated::Framework(m) => match &config.framework {
                Some(f) => framework::run::revert(fleet, config, f, m).await,
                None => ("the framework is no longer configured: this deploy's migrations were NOT undone".into(), false),
            },
            Migrated::Command(m) => super::command::revert(fleet, config, m).await,
        }
    }
}
