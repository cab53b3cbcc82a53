//! A project on disk (deploy.toml + an app with migrations), a database behind it, and
//! the real `slipway` binary run against it. Every command's output is kept, so that a
//! test can grep all of it for the database password.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::db_support::{self, Listen, MariaDb, Postgres};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Postgres,
    MariaDb,
    Sqlite,
}

/// The database a scenario migrates.
pub enum Server {
    Postgres(Postgres),
    MariaDb(MariaDb),
    /// The file, as the deployer sees it, and its path under shared/.
    Sqlite(PathBuf),
}

/// One migration: version, name, up, down (`None`: no down file).
pub type Mig = (u32, &'static str, String, Option<String>);

pub struct Scenario {
    pub kind: Kind,
    pub dir: tempfile::TempDir,
    /// `deploy_to` of the primary (db) host, as this machine sees it.
    pub deploy_to: PathBuf,
    /// `deploy_to` as written in the config (as the hosts see it).
    pub remote_deploy_to: String,
    /// `deploy_to` of the other hosts, as this machine sees them.
    pub other_hosts: Vec<PathBuf>,
    pub server: Server,
    /// Everything every command printed, for the leak test.
    pub transcript: String,
    /// The stage's extra `[database]` lines.
    pub db_extra: String,
    /// Stage definition (hosts, transport), the default is the local transport.
    pub stage: String,
    /// Environment for slipway.
    pub url: Option<String>,
    /// More environment for the next commands (e.g. SLIPWAY_FAULT).
    pub env: Vec<(String, String)>,
    /// Replaces the whole `[database]` section when set (command mode).
    pub database_section: Option<String>,
    /// Things that must live as long as the scenario (the ssh test hosts).
    pub guards: Vec<Box<dyn std::any::Any>>,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl Scenario {
    pub fn new(kind: Kind) -> Scenario {
        Scenario::with_listen(kind, Listen::Loopback)
    }

    pub fn with_listen(kind: Kind, listen: Listen) -> Scenario {
        let dir = tempfile::Builder::new()
            .prefix("slipway-dbtest-")
            .tempdir()
            .unwrap();
        let deploy_to = dir.path().join("srv").join("app");
        Scenario::build(
            kind,
            listen,
            dir,
            deploy_to.clone(),
            deploy_to.display().to_string(),
        )
    }

    /// A scenario whose stage is `stage` (hosts, ssh settings), deploying to
    /// `remote_deploy_to`, which this machine sees at `deploy_to` on the db host.
    pub fn build(
        kind: Kind,
        listen: Listen,
        dir: tempfile::TempDir,
        deploy_to: PathBuf,
        remote_deploy_to: String,
    ) -> Scenario {
        let server = match kind {
            Kind::Postgres => Server::Postgres(Postgres::start(listen)),
            Kind::MariaDb => Server::MariaDb(MariaDb::start(listen)),
            Kind::Sqlite => Server::Sqlite(deploy_to.join("shared/db/app.sqlite3")),
        };
        let url = match &server {
            Server::Postgres(p) => Some(p.url()),
            Server::MariaDb(m) => Some(m.url()),
            Server::Sqlite(_) => None,
        };
        Scenario {
            kind,
            dir,
            deploy_to,
            remote_deploy_to,
            other_hosts: Vec::new(),
            server,
            transcript: String::new(),
            db_extra: String::new(),
            stage: "transport = \"local\"\n".into(),
            url,
            env: Vec::new(),
            database_section: None,
            guards: Vec::new(),
        }
    }

    pub fn driver(&self) -> &'static str {
        match self.kind {
            Kind::Postgres => "postgres",
            Kind::MariaDb => "mysql",
            Kind::Sqlite => "sqlite",
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("deploy.toml")
    }

    /// Writes deploy.toml and the app with these migrations.
    pub fn app(&mut self, migrations: &[Mig], marker: &str) -> &mut Scenario {
        let app = self.dir.path().join("app");
        let _ = fs::remove_dir_all(&app);
        fs::create_dir_all(app.join("migrations")).unwrap();
        fs::write(app.join("VERSION"), marker).unwrap();
        for (v, name, up, down) in migrations {
            fs::write(app.join(format!("migrations/{v:04}_{name}.up.sql")), up).unwrap();
            if let Some(down) = down {
                fs::write(app.join(format!("migrations/{v:04}_{name}.down.sql")), down).unwrap();
            }
        }
        let sqlite_path = if self.kind == Kind::Sqlite {
            "path = \"db/app.sqlite3\"\n"
        } else {
            ""
        };
        let database = self.database_section.clone().unwrap_or_else(|| {
            format!(
                "[database]\ndriver = \"{}\"\n{sqlite_path}{}",
                self.driver(),
                self.db_extra
            )
        });
        fs::write(
            self.config_path(),
            format!(
                "app = \"shop\"\ndeploy_to = \"{}\"\nkeep_releases = 10\n\n[source]\npath = \"app\"\n\n{database}\n[stages.test]\n{}",
                self.remote_deploy_to,
                self.stage
            ),
        )
        .unwrap();
        self
    }

    /// Runs `slipway -c deploy.toml ARGS` with the URL in the environment.
    pub fn run(&mut self, args: &[&str]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_slipway"));
        cmd.arg("-c").arg(self.config_path()).args(args);
        cmd.env_remove("DATABASE_URL");
        if let Some(url) = &self.url {
            cmd.env("DATABASE_URL", url);
        }
        cmd.env("NO_COLOR", "1");
        for (k, v) in &self.env {
            if k == "SLIPWAY_FAULT" {
                crate::hosts::fault(v);
            }
            cmd.env(k, v);
        }
        let out: Output = cmd.output().expect("cannot run slipway");
        let run = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        self.transcript.push_str(&format!(
            "$ slipway {}\n{}\n{}\n",
            args.join(" "),
            run.stdout,
            run.stderr
        ));
        run
    }

    /// Runs and expects exit 0.
    pub fn ok(&mut self, args: &[&str]) -> Run {
        let run = self.run(args);
        assert_eq!(
            run.code,
            0,
            "slipway {} failed:\n{}",
            args.join(" "),
            run.all()
        );
        run
    }

    pub fn deploy(&mut self) -> Run {
        self.ok(&["deploy", "test"])
    }

    /// SQL in the app's database, rows as lines (columns separated by `|` or a tab).
    pub fn sql(&self, sql: &str) -> String {
        match &self.server {
            Server::Postgres(p) => p.sql(sql),
            Server::MariaDb(m) => m.sql(sql),
            Server::Sqlite(file) => db_support::sqlite(file, sql),
        }
    }

    pub fn catalog(&self) -> String {
        match &self.server {
            Server::Postgres(p) => p.catalog(),
            Server::MariaDb(m) => m.catalog(),
            Server::Sqlite(file) => db_support::sqlite_catalog(file),
        }
    }

    /// Versions in `_sqlx_migrations`, in order.
    pub fn versions(&self) -> Vec<i64> {
        self.sql("SELECT version FROM _sqlx_migrations ORDER BY version")
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    pub fn current(&self) -> String {
        fs::read_link(self.deploy_to.join("current"))
            .map(|p| {
                p.to_string_lossy()
                    .trim_start_matches("releases/")
                    .to_string()
            })
            .unwrap_or_default()
    }

    pub fn release_json(&self, id: &str) -> serde_json::Value {
        let text = fs::read_to_string(
            self.deploy_to
                .join("releases")
                .join(id)
                .join(".slipway/release.json"),
        )
        .unwrap();
        serde_json::from_str(&text).unwrap()
    }

    pub fn snapshots(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.deploy_to.join("backups/db"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Every file under `dir`, recursively (symlinks not followed), with its bytes.
pub fn all_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let p = e.path();
        let meta = fs::symlink_metadata(&p).unwrap();
        if meta.is_dir() {
            out.extend(all_files(&p));
        } else if meta.is_file() {
            out.push((p.clone(), fs::read(&p).unwrap_or_default()));
        }
    }
    out
}
