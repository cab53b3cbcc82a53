//! Migrations as slipway handles them: sqlx's reversible format (`NNNN_name.up.sql` /
//! `NNNN_name.down.sql`), read with sqlx's own resolver so that versions, descriptions
//! and checksums are exactly the ones sqlx computes and stores.

use std::io::Read;
use std::path::Path;

use base64::Engine;
use sqlx::migrate::{MigrationType, Migrator};

use crate::release::MigrationRecord;

/// Whether a migration can be undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reversibility {
    Reversible,
    /// An `.up.sql` without its `.down.sql`: cannot be undone, and a rollback across it
    /// refuses (a file is missing, not a decision someone made).
    MissingDown,
    /// A simple migration (`NNNN_name.sql`) or a down script whose first line is
    /// `-- irreversible`: undone only by a snapshot; a rollback across it needs
    /// `--force-schema`.
    Irreversible,
}

/// What plans need to know about one migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationInfo {
    pub version: i64,
    pub description: String,
    /// sqlx's checksum of the up script (SHA-384).
    pub checksum: Vec<u8>,
    pub reversibility: Reversibility,
}

/// A row of `_sqlx_migrations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub version: i64,
    pub description: String,
    pub checksum: Vec<u8>,
    pub success: bool,
}

/// One migration with its scripts.
#[derive(Debug, Clone)]
pub struct Migration {
    pub info: MigrationInfo,
    pub up: String,
    pub down: Option<String>,
    /// `-- no-transaction` on the first line (sqlx's marker).
    pub no_tx: bool,
}

/// The migrations of one release, loaded into a private temporary directory (the sqlx
/// migrator reads from a path).
pub struct MigrationSet {
    pub migrations: Vec<Migration>,
    pub migrator: Migrator,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for MigrationSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MigrationSet")
            .field("migrations", &self.infos())
            .finish()
    }
}

impl MigrationSet {
    /// The migrations under `dir/` in a tar stream (a release archive, or a release's
    /// directory read back from a host). A release without that directory has none.
    pub async fn from_tar(
        tar: impl std::io::Read + Send,
        dir: &str,
    ) -> Result<MigrationSet, String> {
        let temp = tempfile::Builder::new()
            .prefix("slipway-migrations-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let mut archive = tar::Archive::new(tar);
        let entries = archive
            .entries()
            .map_err(|e| format!("cannot read the archive: {e}"))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| format!("cannot read the archive: {e}"))?;
            if entry.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let path = entry
                .path()
                .map_err(|e| format!("bad path in the archive: {e}"))?
                .to_string_lossy()
                .into_owned();
            let path = path.trim_start_matches("./");
            let Some(name) = path.strip_prefix(&prefix) else {
                continue;
            };
            // Only the directory's own .sql files (sqlx does not recurse either).
            if name.contains('/') || !name.ends_with(".sql") || name.starts_with('.') {
                continue;
            }
            let mut text = Vec::new();
            entry
                .read_to_end(&mut text)
                .map_err(|e| format!("cannot read {path} from the archive: {e}"))?;
            std::fs::write(temp.path().join(name), text)
                .map_err(|e| format!("cannot write a temporary file: {e}"))?;
        }
        MigrationSet::load(temp).await
    }

    /// As [`MigrationSet::from_tar`], from base64 text (how a host sends a tar back).
    pub async fn from_base64_tar(text: &str, dir: &str) -> Result<MigrationSet, String> {
        let compact: String = text.split_whitespace().collect();
        let tar = base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .map_err(|e| format!("the host sent an unreadable archive: {e}"))?;
        MigrationSet::from_tar(&tar[..], dir).await
    }

    async fn load(dir: tempfile::TempDir) -> Result<MigrationSet, String> {
        let migrator = Migrator::new(dir.path())
            .await
            .map_err(|e| format!("cannot read the migrations: {e}"))?;
        let migrations = combine(&migrator, dir.path())?;
        Ok(MigrationSet {
            migrations,
            migrator,
            _dir: dir,
        })
    }

    pub fn infos(&self) -> Vec<MigrationInfo> {
        self.migrations.iter().map(|m| m.info.clone()).collect()
    }

    pub fn get(&self, version: i64) -> Option<&Migration> {
        self.migrations.iter().find(|m| m.info.version == version)
    }

    pub fn is_empty(&self) -> bool {
        self.migrations.is_empty()
    }
}

/// Pairs sqlx's up and down migrations by version.
fn combine(migrator: &Migrator, dir: &Path) -> Result<Vec<Migration>, String> {
    let mut out: Vec<Migration> = Vec::new();
    for m in migrator.iter() {
        if m.migration_type.is_down_migration() {
            continue;
        }
        let down = migrator
            .iter()
            .find(|d| d.version == m.version && d.migration_type.is_down_migration());
        let reversibility = match (m.migration_type, down) {
            (MigrationType::Simple, _) => Reversibility::Irreversible,
            (_, None) => Reversibility::MissingDown,
            (_, Some(d)) if marked_irreversible(d.sql.as_str()) => Reversibility::Irreversible,
            (_, Some(_)) => Reversibility::Reversible,
        };
        if out.iter().any(|o| o.info.version == m.version) {
            return Err(format!(
                "two migrations have version {} in {}",
                m.version,
                dir.display()
            ));
        }
        out.push(Migration {
            info: MigrationInfo {
                version: m.version,
                description: m.description.to_string(),
                checksum: m.checksum.to_vec(),
                reversibility,
            },
            up: m.sql.as_str().to_string(),
            down: down.map(|d| d.sql.as_str().to_string()),
            no_tx: m.no_tx,
        });
    }
    out.sort_by_key(|m| m.info.version);
    Ok(out)
}

/// A down script that says, on its first non-empty line, `-- irreversible`.
fn marked_irreversible(sql: &str) -> bool {
    sql.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .is_some_and(|l| {
            l.strip_prefix("--")
                .is_some_and(|rest| rest.trim().eq_ignore_ascii_case("irreversible"))
        })
}

/// The records a release keeps of the applied migrations.
pub fn records(applied: &[Applied]) -> Vec<MigrationRecord> {
    applied
        .iter()
        .filter(|a| a.success)
        .map(|a| MigrationRecord {
            version: a.version,
            description: a.description.clone(),
            checksum: super::plan::hex(&a.checksum),
        })
        .collect()
}

/// The schema version: the newest applied migration, 0 for none.
pub fn version_of(applied: &[Applied]) -> i64 {
    applied
        .iter()
        .filter(|a| a.success)
        .map(|a| a.version)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(files: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, text) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(text.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path, text.as_bytes()).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[tokio::test]
    async fn reads_versions_descriptions_and_reversibility() {
        let tar = tar_of(&[
            (
                "migrations/0001_create_users.up.sql",
                "CREATE TABLE users(id int);",
            ),
            ("migrations/0001_create_users.down.sql", "DROP TABLE users;"),
            ("migrations/0002_no_down.up.sql", "SELECT 1;"),
            ("migrations/0003_gone.up.sql", "DROP TABLE x;"),
            ("migrations/0003_gone.down.sql", "-- irreversible\n"),
            ("other/0009_x.up.sql", "SELECT 1;"),
        ]);
        let set = MigrationSet::from_tar(&tar[..], "migrations")
            .await
            .unwrap();
        let infos = set.infos();
        assert_eq!(infos.len(), 3);
        assert_eq!(infos[0].description, "create users");
        assert_eq!(infos[0].reversibility, Reversibility::Reversible);
        assert_eq!(infos[1].reversibility, Reversibility::MissingDown);
        assert_eq!(infos[2].reversibility, Reversibility::Irreversible);
        assert_eq!(
            infos[0].checksum,
            sqlx::migrate::Migration::new(
                1,
                "x".into(),
                MigrationType::ReversibleUp,
                sqlx::SqlSafeStr::into_sql_str("CREATE TABLE users(id int);"),
                false
            )
            .checksum
            .to_vec()
        );
    }

    #[tokio::test]
    async fn a_release_without_migrations_has_none() {
        let tar = tar_of(&[("app.txt", "hi")]);
        assert!(
            MigrationSet::from_tar(&tar[..], "migrations")
                .await
                .unwrap()
                .is_empty()
        );
    }
}
