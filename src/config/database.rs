//! `[database]`: which database the app migrates, how slipway reaches it, and where its
//! migrations live in a release. Validated like every other section: errors name the key.

use super::field::{Invalid, check_name, check_relative, field};
use super::{DatabaseLayer, Host, KeyPath, TransportKind};

/// The database engines slipway migrates itself (with sqlx's migration format).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DbDriver {
    Postgres,
    Mysql,
    Sqlite,
}

impl DbDriver {
    pub fn as_str(self) -> &'static str {
        match self {
            DbDriver::Postgres => "postgres",
            DbDriver::Mysql => "mysql",
            DbDriver::Sqlite => "sqlite",
        }
    }
}

/// A framework whose own migrator slipway drives through an adapter (`src/db/framework/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Framework {
    Django,
    Rails,
    Laravel,
    Knex,
    Alembic,
}

impl Framework {
    pub const ALL: [Framework; 5] = [
        Framework::Django,
        Framework::Rails,
        Framework::Laravel,
        Framework::Knex,
        Framework::Alembic,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Framework::Django => "django",
            Framework::Rails => "rails",
            Framework::Laravel => "laravel",
            Framework::Knex => "knex",
            Framework::Alembic => "alembic",
        }
    }

    pub fn parse(name: &str) -> Option<Framework> {
        Framework::ALL.into_iter().find(|f| f.as_str() == name)
    }

    /// What runs the adapter program in a release, unless `runtime` says otherwise.
    pub fn default_runtime(self) -> &'static str {
        match self {
            Framework::Django | Framework::Alembic => ".venv/bin/python",
            Framework::Rails => "bin/rails",
            Framework::Laravel => "php",
            Framework::Knex => "node",
        }
    }
}

/// Framework mode: which migrator, and what runs its adapter in a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameworkMigrator {
    pub framework: Framework,
    /// Shell text, run in the release directory (e.g. `.venv/bin/python`).
    pub runtime: String,
}

/// Command mode: the framework's own migration tool, run on the db host in the release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbCommands {
    pub migrate: String,
    /// Gets the target version as `SLIPWAY_TARGET_VERSION` and in place of `{version}`.
    pub rollback: Option<String>,
    /// Prints the current schema version (an integer) on stdout.
    pub version: String,
}

/// The resolved `[database]` section of a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Database {
    /// `None` only in command mode without snapshots.
    pub driver: Option<DbDriver>,
    /// The deployer's environment variable holding the URL (postgres, mysql).
    pub url_env: String,
    /// The migrations directory inside a release.
    pub migrations: String,
    pub role: String,
    /// The index (in the stage's hosts) of the primary: the first host with `role`.
    pub primary: usize,
    pub tunnel: bool,
    pub keep_snapshots: usize,
    /// sqlite: the database file, relative to `shared/` on the host.
    pub path: Option<String>,
    pub commands: Option<DbCommands>,
    pub framework: Option<FrameworkMigrator>,
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
    let commands = resolve_commands(stage, top, at)?;
    let framework = resolve_framework(stage, top, at)?;
    if let (Some(_), Some((_, p))) = (&commands, field!(stage, top, at, "database", framework)) {
        return Err((
            p,
            "framework and migrate_command are two ways to migrate: keep one (framework lets slipway record and undo exactly the migrations each deploy applied)".into(),
        ));
    }
    let driver = match field!(stage, top, at, "database", driver) {
        Some((d, _)) if d == "postgres" || d == "postgresql" => Some(DbDriver::Postgres),
        Some((d, _)) if d == "mysql" || d == "mariadb" => Some(DbDriver::Mysql),
        Some((d, _)) if d == "sqlite" => Some(DbDriver::Sqlite),
        Some((d, p)) => {
            return Err((
                p,
                format!(
                    "unknown driver `{}` (use \"postgres\", \"mysql\" or \"sqlite\")",
                    d.escape_debug()
                ),
            ));
        }
        None if commands.is_some() || framework.is_some() => None,
        None => {
            return Err((
                section.key("driver"),
                "missing: set framework = \"django\" (or rails, laravel, knex, alembic) to use your framework's migrator, or driver = \"postgres\", \"mysql\" or \"sqlite\" for slipway's own SQL migrations".into(),
            ));
        }
    };
    let url_env = match field!(stage, top, at, "database", url_env) {
        Some((v, p)) => {
            let ok = !v.is_empty()
                && v.len() <= 128
                && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !v.starts_with(|c: char| c.is_ascii_digit());
            if !ok {
                return Err((
                    p,
                    format!(
                        "`{}` is not an environment variable name (letters, digits, `_`)",
                        v.escape_debug()
                    ),
                ));
            }
            v.clone()
        }
        None => "DATABASE_URL".to_string(),
    };
    let migrations = match field!(stage, top, at, "database", migrations) {
        Some((v, p)) => check_relative(v, "migrations directory", &p)?,
        None => "migrations".to_string(),
    };
    let (role, role_at) = match field!(stage, top, at, "database", role) {
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
    let tunnel = field!(stage, top, at, "database", tunnel).is_some_and(|(v, _)| *v);
    if tunnel && transport == TransportKind::Local {
        return Err((
            section.key("tunnel"),
            "a tunnel goes through ssh: it needs transport = \"ssh\"".into(),
        ));
    }
    let keep_snapshots = match field!(stage, top, at, "database", keep_snapshots) {
        None => 5,
        Some((&n, p)) => {
            if !(1..=1000).contains(&n) {
                return Err((p, format!("must be between 1 and 1000 (got {n})")));
            }
            n as usize
        }
    };
    let path = match field!(stage, top, at, "database", path) {
        Some((v, p)) => {
            if driver != Some(DbDriver::Sqlite) {
                return Err((
                    p,
                    "`path` is the sqlite database file: only with driver = \"sqlite\" (postgres and mysql take their URL from url_env)".into(),
                ));
            }
            Some(check_relative(v, "database path", &p)?)
        }
        None if driver == Some(DbDriver::Sqlite) && commands.is_none() && framework.is_none() => {
            return Err((
                section.key("path"),
                "missing: set path = \"db/app.sqlite3\" (the database file, relative to shared/ on the host)".into(),
            ));
        }
        None => None,
    };
    if driver == Some(DbDriver::Sqlite) && tunnel {
        return Err((
            section.key("tunnel"),
            "a sqlite database is a file on the host, migrated there: a tunnel has nothing to reach".into(),
        ));
    }
    Ok(Some(Database {
        driver,
        url_env,
        migrations,
        role,
        primary,
        tunnel,
        keep_snapshots,
        path,
        commands,
        framework,
    }))
}

fn resolve_framework(
    stage: Option<&DatabaseLayer>,
    top: Option<&DatabaseLayer>,
    at: &KeyPath,
) -> Result<Option<FrameworkMigrator>, Invalid> {
    let runtime = field!(stage, top, at, "database", runtime);
    let Some((name, p)) = field!(stage, top, at, "database", framework) else {
        return match runtime {
            Some((_, p)) => Err((
                p,
                "runtime belongs to framework mode: set framework too".into(),
            )),
            None => Ok(None),
        };
    };
    let framework = Framework::parse(name).ok_or_else(|| {
        (
            p,
            format!(
                "unknown framework `{}` (use {}; for another tool set migrate_command and version_command)",
                name.escape_debug(),
                Framework::ALL.map(|f| format!("\"{}\"", f.as_str())).join(", ")
            ),
        )
    })?;
    let runtime = match runtime {
        Some((r, p)) => {
            if r.trim().is_empty() || r.contains(['\0', '\n', '\r']) {
                return Err((p, "must be a non-empty command on one line".into()));
            }
            r.clone()
        }
        None => framework.default_runtime().to_string(),
    };
    Ok(Some(FrameworkMigrator { framework, runtime }))
}

fn resolve_commands(
    stage: Option<&DatabaseLayer>,
    top: Option<&DatabaseLayer>,
    at: &KeyPath,
) -> Result<Option<DbCommands>, Invalid> {
    let mut found = [None, None, None];
    for (slot, item) in found.iter_mut().zip([
        field!(stage, top, at, "database", migrate_command),
        field!(stage, top, at, "database", rollback_command),
        field!(stage, top, at, "database", version_command),
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
        (None, Some((_, p))) => Err((
            p,
            "command mode needs migrate_command too".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, DbDriver};
    use std::path::Path;

    fn parse(text: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(text, Path::new("deploy.toml"), Path::new("."))
    }

    const BASE: &str = "app = \"shop\"\ndeploy_to = \"/srv/shop\"\n[source]\npath = \".\"\n";

    #[test]
    fn defaults_and_the_primary_host() {
        let c = parse(&format!(
            "{BASE}[database]\ndriver = \"postgres\"\n[stages.p]\nhosts = [{{ address = \"a\" }}, {{ address = \"b\", roles = [\"db\"] }}]\n"
        ))
        .unwrap();
        let db = c.stage("p").unwrap().database.clone().unwrap();
        assert_eq!(db.driver, Some(DbDriver::Postgres));
        assert_eq!(db.url_env, "DATABASE_URL");
        assert_eq!(db.migrations, "migrations");
        assert_eq!(db.primary, 1);
        assert_eq!(db.keep_snapshots, 5);
        assert!(!db.tunnel);
    }

    #[test]
    fn a_stage_without_the_role_is_an_error_naming_the_key() {
        let text = format!(
            "{BASE}[database]\ndriver = \"mysql\"\nrole = \"primary\"\n[stages.p]\nhosts = [{{ address = \"a\" }}]\n"
        );
        let e = parse(&text).unwrap_err();
        assert_eq!(e.key, "database.role");
        assert_eq!(e.line, Some(7));
        assert!(
            e.message
                .contains("no host of this stage has the role `primary`")
        );
        let e = parse(&format!(
            "{BASE}[database]\ndriver = \"mysql\"\n[stages.p]\nhosts = [{{ address = \"a\" }}]\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "stages.p.hosts");
    }

    #[test]
    fn driver_specific_rules() {
        let local = "[stages.d]\ntransport = \"local\"\n";
        for (db, key) in [
            ("driver = \"sqlite\"\n", "database.path"),
            ("driver = \"oracle\"\n", "database.driver"),
            ("driver = \"postgres\"\npath = \"x.db\"\n", "database.path"),
            ("driver = \"postgres\"\ntunnel = true\n", "database.tunnel"),
            ("driver = \"sqlite\"\npath = \"../x.db\"\n", "database.path"),
            (
                "driver = \"postgres\"\nmigrations = \"/abs\"\n",
                "database.migrations",
            ),
            (
                "driver = \"postgres\"\nurl_env = \"A-B\"\n",
                "database.url_env",
            ),
            ("migrate_command = \"m\"\n", "database.migrate_command"),
            (
                "driver = \"postgres\"\nkeep_snapshots = 0\n",
                "database.keep_snapshots",
            ),
            ("driver = \"postgres\"\nurl = \"x\"\n", "database.url"),
        ] {
            let e = parse(&format!("{BASE}[database]\n{db}{local}")).unwrap_err();
            assert_eq!(e.key, key, "{db}: {e}");
        }
        let ok = parse(&format!(
            "{BASE}[database]\ndriver = \"sqlite\"\npath = \"db/app.sqlite3\"\n{local}"
        ))
        .unwrap();
        assert_eq!(
            ok.stage("d")
                .unwrap()
                .database
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("db/app.sqlite3")
        );
    }
}
