//! One framework app on two sshd hosts (host1 has the db role) with a throwaway
//! database (PostgreSQL, MariaDB, or a SQLite file on host1), and the real `slipway`
//! binary. Every command's output is kept, so a test can grep all of it for the
//! database password.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::db_support::{Listen, MariaDb, PASSWORD, Postgres, sqlite};
use crate::hosts::Fleet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fw {
    Django,
    Rails,
    Laravel,
    Knex,
    Alembic,
}

impl Fw {
    pub fn name(self) -> &'static str {
        match self {
            Fw::Django => "django",
            Fw::Rails => "rails",
            Fw::Laravel => "laravel",
            Fw::Knex => "knex",
            Fw::Alembic => "alembic",
        }
    }

    /// The `[database]` and `[hooks]` of deploy.toml. Django and Rails use their
    /// recipes' migration settings unchanged (framework and runtime); the hooks are
    /// replaced where the recipe's need the network (pip, rubygems) or systemd.
    fn config(self) -> &'static str {
        match self {
            Fw::Django => {
                "recipe = \"django\"\n\n[hooks]\nbuild = [\"ln -s /var/cache/slipway-tests/django/venv .venv\"]\nrestart = []\n\n[database]\nrole = \"db\"\n"
            }
            Fw::Rails => {
                "recipe = \"rails\"\n\n[hooks]\nbuild = [\"bundle install --local --quiet\"]\nrestart = []\n\n[database]\nrole = \"db\"\n"
            }
            Fw::Laravel => "[shared]\nfiles = [\".env\"]\n\n[database]\nframework = \"laravel\"\n",
            Fw::Knex => "[shared]\nfiles = [\".env\"]\n\n[database]\nframework = \"knex\"\n",
            Fw::Alembic => "[shared]\nfiles = [\".env\"]\n\n[database]\nframework = \"alembic\"\n",
        }
    }

    /// Shared files (path under shared/, content) the app reads its database from.
    fn shared(self, url: &str) -> Vec<(&'static str, String)> {
        match self {
            Fw::Rails => vec![
                (
                    "config/database.yml",
                    // Rails names its adapter after the gem: mysql2://.
                    format!(
                        "production:\n  url: {}\n",
                        url.replacen("mysql://", "mysql2://", 1)
                    ),
                ),
                (
                    "config/master.key",
                    "0123456789abcdef0123456789abcdef\n".into(),
                ),
            ],
            _ => vec![(".env", format!("DATABASE_URL={url}\n"))],
        }
    }

    /// The framework's own migration table, one row per line.
    pub fn migration_table(self, kind: Kind) -> &'static str {
        match self {
            // `||` is OR in MariaDB.
            Fw::Django if kind == Kind::MariaDb => {
                "SELECT CONCAT(app, '.', name) FROM django_migrations ORDER BY app, name"
            }
            Fw::Django => "SELECT app || '.' || name FROM django_migrations ORDER BY app, name",
            Fw::Rails => "SELECT version FROM schema_migrations ORDER BY version",
            Fw::Laravel => "SELECT migration, batch FROM migrations ORDER BY migration",
            Fw::Knex => "SELECT name, batch FROM knex_migrations ORDER BY name",
            Fw::Alembic => "SELECT version_num FROM alembic_version ORDER BY version_num",
        }
    }

    /// Inserts a row into `items` (v1's table).
    pub fn insert_item(self, name: &str) -> String {
        format!("INSERT INTO items (name) VALUES ('{name}')")
    }

    /// The id of v3's failing migration, and of v4's irreversible one.
    pub fn failing(self) -> &'static str {
        match self {
            Fw::Django => "catalog.0004_broken",
            Fw::Rails => "20240103000002",
            Fw::Laravel => "2024_03_01_000001_create_broken_part_table",
            Fw::Knex => "20240101000005_broken_step.js",
            Fw::Alembic => "0005",
        }
    }

    pub fn irreversible(self) -> &'static str {
        match self {
            Fw::Django => "catalog.0003_legacy_column",
            Fw::Rails => "20240104000001",
            Fw::Laravel => "2024_04_01_000000_add_legacy_to_items_table",
            Fw::Knex => "20240101000004_add_legacy_to_items.js",
            Fw::Alembic => "0006",
        }
    }

    /// v2's migrations, as the framework names them (in the order v2 applies them).
    pub fn v2_migrations(self) -> &'static [&'static str] {
        match self {
            Fw::Django => &["catalog.0002_item_price", "orders.0001_create_orders"],
            Fw::Rails => &["20240102000001", "20240102000002"],
            Fw::Laravel => &[
                "2024_02_01_000000_add_price_to_items_table",
                "2024_02_01_000001_create_orders_table",
            ],
            Fw::Knex => &[
                "20240101000002_add_price_to_items.js",
                "20240101000003_create_orders.js",
            ],
            Fw::Alembic => &["0002", "0003"],
        }
    }

    fn installer(self) -> String {
        format!("scripts/install/{}.sh", self.name())
    }
}

/// The database a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Postgres,
    MariaDb,
    /// A file on the db host (host1), which the app opens itself (Django's default).
    Sqlite,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Postgres => "postgres",
            Kind::MariaDb => "mariadb",
            Kind::Sqlite => "sqlite",
        }
    }

    /// `[database] driver` for a scenario that lets slipway reach the database.
    fn driver(self) -> &'static str {
        match self {
            Kind::Postgres => "postgres",
            Kind::MariaDb => "mysql",
            Kind::Sqlite => "sqlite",
        }
    }

    /// A timestamp one day ahead, in this database's SQL.
    pub fn tomorrow(self) -> &'static str {
        match self {
            Kind::Postgres => "now() + interval '1 day'",
            Kind::MariaDb => "NOW() + INTERVAL 1 DAY",
            Kind::Sqlite => "datetime('now', '+1 day')",
        }
    }

    /// Whether a migration's DDL is rolled back with its transaction.
    pub fn ddl_rolls_back(self) -> bool {
        self != Kind::MariaDb
    }
}

/// The SQLite file as the db host sees it (under shared/, which every release can reach).
const SQLITE_FILE: &str = "/srv/app/shared/db.sqlite3";

enum Server {
    Postgres(Postgres),
    MariaDb(MariaDb),
    /// The file as this machine sees it.
    Sqlite(PathBuf),
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

pub struct Scenario {
    pub fw: Fw,
    pub kind: Kind,
    pub dir: tempfile::TempDir,
    pub fleet: Fleet,
    server: Server,
    /// `[database] driver` is set and the URL is in slipway's DATABASE_URL: slipway
    /// reaches the database, so it takes a snapshot before migrating.
    snapshots: bool,
    /// Run slipway without the URL in its environment (as a user who forgot it).
    pub hide_url: bool,
    /// Extra deploy.toml text for the stage (a rollout, a health gate).
    pub stage_extra: String,
    pub transcript: String,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

impl Scenario {
    pub fn new(fw: Fw, kind: Kind) -> Scenario {
        let fleet = Fleet::start(2);
        let server = match kind {
            Kind::Postgres => Server::Postgres(Postgres::start(Listen::Loopback)),
            Kind::MariaDb => Server::MariaDb(MariaDb::start(Listen::Loopback)),
            Kind::Sqlite => Server::Sqlite(fleet.host(0).path(SQLITE_FILE)),
        };
        let dir = tempfile::Builder::new()
            .prefix("slipway-fwtest-")
            .tempdir()
            .unwrap();
        let s = Scenario {
            fw,
            kind,
            dir,
            fleet,
            server,
            snapshots: false,
            hide_url: false,
            stage_extra: String::new(),
            transcript: String::new(),
        };
        for host in s.fleet.hosts() {
            for (path, content) in fw.shared(&s.url()) {
                let file = host.path("/srv/app/shared").join(path);
                fs::create_dir_all(file.parent().unwrap()).unwrap();
                fs::write(&file, content).unwrap();
            }
        }
        s
    }

    /// Sets `[database] driver` and gives slipway the URL: it snapshots before migrating.
    pub fn with_snapshots(&mut self) {
        assert_ne!(
            self.kind,
            Kind::Sqlite,
            "a SQLite snapshot needs [database] path"
        );
        self.snapshots = true;
    }

    /// The database URL, as the hosts see it.
    fn url(&self) -> String {
        match &self.server {
            Server::Postgres(pg) => pg.url(),
            Server::MariaDb(db) => db.url(),
            Server::Sqlite(_) => format!("sqlite://{SQLITE_FILE}"),
        }
    }

    fn label(&self) -> String {
        format!("{}/{}", self.fw.name(), self.kind.name())
    }

    /// Generates the app at `version` (v1..v5) with the framework's own tools, and
    /// writes deploy.toml. `gate`: the release's health gate fails.
    pub fn app(&mut self, version: &str, gate_fails: bool) {
        let app = self.dir.path().join("app");
        let _ = fs::remove_dir_all(&app);
        let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("framework-apps");
        fs::create_dir_all(&cache).unwrap();
        let script = repo().join(format!("tests/frameworks/{}/make-app.sh", self.fw.name()));
        let out = Command::new("bash")
            .arg(&script)
            .arg(&app)
            .arg(version)
            .env("SLIPWAY_FRAMEWORK_CACHE", &cache)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "generating the {} app {version} failed (is the framework installed? run `bash {}` as root, or scripts/test which runs it):\n{}{}",
            self.fw.name(),
            self.fw.installer(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        fs::write(app.join("GATE"), if gate_fails { "bad" } else { "good" }).unwrap();
        let (h1, h2) = (self.fleet.host(0), self.fleet.host(1));
        fs::write(
            self.dir.path().join("deploy.toml"),
            format!(
                "app = \"shop\"\ndeploy_to = \"/srv/app\"\nkeep_releases = 10\n{}{}\n[source]\npath = \"app\"\n\n[stages.test]\nhosts = [\n  {{ address = \"{}\", port = {}, roles = [\"app\", \"db\"] }},\n  {{ address = \"{}\", port = {}, roles = [\"app\"] }},\n]\n{}\n[stages.test.ssh]\nconfig_file = \"{}\"\nconnect_timeout = \"5s\"\n",
                self.fw.config(),
                if self.snapshots {
                    format!("driver = \"{}\"\n", self.kind.driver())
                } else {
                    String::new()
                },
                h1.address,
                h1.port,
                h2.address,
                h2.port,
                self.stage_extra,
                self.fleet.ssh_config().display()
            ),
        )
        .unwrap();
    }

    pub fn run(&mut self, args: &[&str]) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_slipway"));
        command
            .arg("-c")
            .arg(self.dir.path().join("deploy.toml"))
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("DATABASE_URL");
        if self.snapshots && !self.hide_url {
            command.env("DATABASE_URL", self.url());
        }
        let out = command.output().expect("cannot run slipway");
        let run = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        let entry = format!(
            "$ slipway {}\n{}\n{}\n",
            args.join(" "),
            run.stdout,
            run.stderr
        );
        // SLIPWAY_TEST_TRANSCRIPTS=DIR keeps every run's output (timings for the docs).
        if let Some(dir) = std::env::var_os("SLIPWAY_TEST_TRANSCRIPTS") {
            use std::io::Write;
            let file =
                PathBuf::from(dir).join(format!("{}-{}.log", self.fw.name(), self.kind.name()));
            if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(file) {
                let _ = f.write_all(entry.as_bytes());
            }
        }
        self.transcript.push_str(&entry);
        run
    }

    pub fn ok(&mut self, args: &[&str]) -> Run {
        let run = self.run(args);
        assert_eq!(
            run.code,
            0,
            "{}: slipway {} failed:\n{}",
            self.label(),
            args.join(" "),
            run.all()
        );
        run
    }

    /// `current` on each host (release ids).
    pub fn currents(&self) -> Vec<String> {
        self.fleet
            .hosts()
            .iter()
            .map(|h| {
                fs::read_link(h.path("/srv/app/current"))
                    .map(|p| {
                        p.to_string_lossy()
                            .trim_start_matches("releases/")
                            .to_string()
                    })
                    .unwrap_or_default()
            })
            .collect()
    }

    /// The release every host is on (asserting they agree).
    pub fn current(&self) -> String {
        let all = self.currents();
        assert!(all.iter().all(|c| c == &all[0]), "hosts disagree: {all:?}");
        all[0].clone()
    }

    pub fn release_json(&self, id: &str) -> serde_json::Value {
        let path = self
            .fleet
            .host(0)
            .path("/srv/app/releases")
            .join(id)
            .join(".slipway/release.json");
        serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
    }

    /// Runs SQL in the app's database (as its superuser), one row per line.
    pub fn sql(&self, sql: &str) -> String {
        match &self.server {
            Server::Postgres(pg) => pg.sql(sql),
            Server::MariaDb(db) => db.sql(sql),
            Server::Sqlite(file) => sqlite(file, sql),
        }
    }

    /// The columns of the app's database, one line each, sorted (for SQLite from
    /// `pragma_table_info`, as the others' from information_schema: a table SQLite's
    /// ALTER made anew has other `CREATE TABLE` text, but the same columns).
    pub fn catalog(&self) -> String {
        match &self.server {
            Server::Postgres(pg) => pg.catalog(),
            Server::MariaDb(db) => db.catalog(),
            Server::Sqlite(file) => sqlite(
                file,
                "SELECT m.name, p.name, p.type, p.\"notnull\", coalesce(p.dflt_value, '') FROM sqlite_master m JOIN pragma_table_info(m.name) p WHERE m.type = 'table' ORDER BY m.name, p.name",
            ),
        }
    }

    /// The database as a whole: the catalog, and the framework's migration table.
    pub fn schema(&self) -> (String, String) {
        (self.catalog(), self.sql(self.fw.migration_table(self.kind)))
    }

    /// The app's tables (the framework's own bookkeeping left out).
    pub fn tables(&self) -> Vec<String> {
        const BOOKKEEPING: [&str; 7] = [
            "django_migrations",
            "schema_migrations",
            "ar_internal_metadata",
            "migrations",
            "knex_migrations",
            "knex_migrations_lock",
            "alembic_version",
        ];
        self.sql(match self.kind {
            Kind::Postgres => {
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name"
            }
            Kind::MariaDb => {
                "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE' ORDER BY table_name"
            }
            Kind::Sqlite => {
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
            }
        })
        .lines()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty() && !BOOKKEEPING.contains(&t.as_str()))
        .collect()
    }

    /// Row counts of `tables`, and the items themselves.
    pub fn data(&self, tables: &[String]) -> String {
        let mut out = String::new();
        for t in tables {
            let quoted = match self.kind {
                Kind::MariaDb => format!("`{t}`"),
                _ => format!("\"{t}\""),
            };
            out.push_str(&format!(
                "{t}: {}\n",
                self.sql(&format!("SELECT count(*) FROM {quoted}")).trim()
            ));
        }
        out.push_str(&self.sql("SELECT id, name FROM items ORDER BY id"));
        out
    }

    /// No output, log or file on any host holds the database password.
    pub fn assert_no_password_anywhere(&self) {
        assert!(
            !self.transcript.contains(PASSWORD),
            "the password leaked into slipway's output"
        );
        for host in self.fleet.hosts() {
            let root = host.path("/srv/app");
            for file in files(&root) {
                if file.starts_with(root.join("shared")) {
                    continue; // the app's own settings: written there by the operator
                }
                let bytes = fs::read(&file).unwrap_or_default();
                let text = String::from_utf8_lossy(&bytes);
                assert!(
                    !text.contains(PASSWORD),
                    "the password is in {}",
                    file.display()
                );
            }
        }
    }
}

/// Every regular file under `dir` (symlinks not followed).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let p = e.path();
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => out.extend(files(&p)),
            Ok(m) if m.is_file() => out.push(p),
            _ => {}
        }
    }
    out
}
