//! Throwaway databases for integration tests: a PostgreSQL cluster (`initdb` +
//! `pg_ctl` into a temp dir) and a MariaDB server (`mariadb-install-db` + `mariadbd`
//! into a temp dir), each on a loopback port of its own, with an application user that
//! has a password (so that masking it is tested), and a `sql()` helper that runs
//! statements through the server's own client.
//!
//! PostgreSQL refuses to run as root: when the tests run as root (they must, for the
//! ssh hosts' mount namespaces), the cluster runs as `nobody` through `runuser`, which
//! exists on every Debian system, so nothing has to be created. MariaDB runs as root
//! with `--user=root`, which it accepts when asked explicitly.
//!
//! Either server can listen on a Unix socket only (`socket_only`), in a directory the
//! caller picks: the tunnel test puts it under a test host's `/srv`, which only that
//! host sees, so the database is reachable on the host side of an ssh forward and
//! nowhere else.
//!
//! A missing server binary fails the test with the command that installs it; nothing
//! is ever skipped. Servers stop when dropped.
#![allow(dead_code)]

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The password of every test database's application user. Long and distinctive, so
/// that grepping output and files for it finds only real leaks.
pub const PASSWORD: &str = "Pw-s3cret-9f4e1c7a";

const INSTALL_HINT: &str = "install the database servers: apt-get install -y postgresql mariadb-server sqlite3 (or run scripts/test, which installs what is missing)";

fn is_root() -> bool {
    unsafe extern "C" {
        fn geteuid() -> u32;
    }
    // SAFETY: geteuid has no preconditions.
    unsafe { geteuid() == 0 }
}

fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

fn check(output: Output, what: &str) -> String {
    if !output.status.success() {
        panic!(
            "{what} failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn wait_for(path: &Path, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        if Instant::now() > deadline {
            panic!(
                "{what} did not come up (no {}); its log:\n{}",
                path.display(),
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A directory the server's user can use: world-traversable parents, owned by it.
fn server_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("slipway-db-")
        .tempdir()
        .expect("cannot create a temp dir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Where a server listens.
#[derive(Debug, Clone)]
pub enum Listen {
    /// 127.0.0.1 on a free port (and a socket in the server's temp dir).
    Loopback,
    /// Only a Unix socket in this directory (created if needed), no TCP.
    SocketOnly(PathBuf),
}

pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    pub socket_dir: PathBuf,
    pub database: String,
    pub user: String,
    listen: Listen,
}

impl Postgres {
    pub fn start(listen: Listen) -> Postgres {
        let bin = fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.path().join("bin"))
                    .filter(|b| b.join("initdb").exists() && b.join("pg_ctl").exists())
                    .max()
            })
            .unwrap_or_else(|| {
                panic!("PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin: {INSTALL_HINT}")
            });
        let dir = server_dir();
        let data = dir.path().join("data");
        let port = free_port();
        let socket_dir = match &listen {
            Listen::Loopback => dir.path().join("sock"),
            Listen::SocketOnly(d) => d.clone(),
        };
        fs::create_dir_all(&socket_dir).unwrap();
        fs::set_permissions(&socket_dir, fs::Permissions::from_mode(0o777)).unwrap();
        fs::create_dir_all(&data).unwrap();
        if is_root() {
            check(
                Command::new("chown")
                    .arg("-R")
                    .arg("nobody:nogroup")
                    .arg(&data)
                    .output()
                    .unwrap(),
                "chown of the PostgreSQL data dir",
            );
        }
        let pg = Postgres {
            dir,
            bin,
            port,
            socket_dir,
            database: "appdb".into(),
            user: "app".into(),
            listen,
        };
        check(
            pg.as_server(&pg.bin.join("initdb"))
                .args([
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "-D",
                ])
                .arg(&data)
                .output()
                .expect("cannot run initdb"),
            "initdb",
        );
        // Everyone but the superuser (used by the tests over the socket) needs the password.
        fs::write(
            data.join("pg_hba.conf"),
            "local all postgres trust\nlocal all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n",
        )
        .unwrap();
        let log = pg.dir.path().join("postgres.log");
        fs::write(&log, "").unwrap();
        if is_root() {
            let _ = Command::new("chown")
                .arg("nobody:nogroup")
                .arg(&log)
                .status();
        }
        pg.server_start();
        pg.admin(&format!("CREATE ROLE app LOGIN PASSWORD '{PASSWORD}'"));
        pg.admin("CREATE DATABASE appdb OWNER app");
        pg
    }

    /// Starts the cluster's server (after `start` created it, or after [`Postgres::kill`]).
    pub fn server_start(&self) {
        let listen_addresses = match &self.listen {
            Listen::Loopback => "127.0.0.1",
            Listen::SocketOnly(_) => "",
        };
        check(
            self.as_server(&self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .arg("-l")
                .arg(self.dir.path().join("postgres.log"))
                .arg("-o")
                .arg(format!(
                    "-p {} -k {} -c listen_addresses='{listen_addresses}' -c fsync=off",
                    self.port,
                    self.socket_dir.display()
                ))
                .args(["-w", "-t", "60", "start"])
                .output()
                .expect("cannot run pg_ctl"),
            "pg_ctl start",
        );
    }

    /// Kills the server as a crash would (`pg_ctl stop -m immediate`: no shutdown
    /// checkpoint, every session cut); [`Postgres::server_start`] brings it back.
    pub fn kill(&self) {
        let _ = self
            .as_server(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    fn as_server(&self, program: &Path) -> Command {
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "nobody", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    /// Runs SQL as the superuser in the postgres database.
    fn admin(&self, sql: &str) -> String {
        check(
            Command::new("psql")
                .arg("-h")
                .arg(&self.socket_dir)
                .args([
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                ])
                .args(["-v", "ON_ERROR_STOP=1", "-X", "-q", "-c", sql])
                .output()
                .expect("cannot run psql: apt-get install postgresql-client"),
            "psql",
        )
    }

    /// Runs SQL in the app's database (as the superuser: tests inspect and break
    /// things), returning rows as `a|b` lines.
    pub fn sql(&self, sql: &str) -> String {
        check(
            Command::new("psql")
                .arg("-h")
                .arg(&self.socket_dir)
                .args([
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "-d",
                    &self.database,
                ])
                .args(["-v", "ON_ERROR_STOP=1", "-X", "-q", "-A", "-t", "-c", sql])
                .output()
                .expect("cannot run psql"),
            "psql",
        )
    }

    /// The URL slipway gets (through its environment), as the db host sees the server.
    pub fn url(&self) -> String {
        match &self.listen {
            Listen::Loopback => format!(
                "postgres://{}:{PASSWORD}@127.0.0.1:{}/{}",
                self.user, self.port, self.database
            ),
            Listen::SocketOnly(_) => format!(
                "postgres://{}:{PASSWORD}@localhost:{}/{}?host={}",
                self.user,
                self.port,
                self.database,
                self.socket_dir.display()
            ),
        }
    }

    /// The same URL with the socket directory as a host sees it (`/srv/...`).
    pub fn url_with_socket_dir(&self, remote_dir: &str) -> String {
        format!(
            "postgres://{}:{PASSWORD}@localhost:{}/{}?host={remote_dir}",
            self.user, self.port, self.database
        )
    }

    /// The catalog of the app's tables: one line per column, sorted.
    pub fn catalog(&self) -> String {
        self.sql(
            "SELECT table_name, column_name, data_type, is_nullable, coalesce(column_default, '') FROM information_schema.columns WHERE table_schema = 'public' ORDER BY table_name, column_name",
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .as_server(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

pub struct MariaDb {
    dir: tempfile::TempDir,
    child: std::process::Child,
    pub port: u16,
    pub socket: PathBuf,
    pub database: String,
    pub user: String,
    listen: Listen,
}

impl MariaDb {
    pub fn start(listen: Listen) -> MariaDb {
        let server = ["/usr/sbin/mariadbd", "/usr/bin/mariadbd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or_else(|| panic!("mariadbd not found: {INSTALL_HINT}"));
        let dir = server_dir();
        let data = dir.path().join("data");
        let socket = match &listen {
            Listen::Loopback => dir.path().join("mysqld.sock"),
            Listen::SocketOnly(d) => {
                fs::create_dir_all(d).unwrap();
                d.join("mysqld.sock")
            }
        };
        // Its own temporary directory: the bootstrap's temporary tables in a shared /tmp
        // were seen to vanish under another instance's feet.
        let tmp = dir.path().join("tmp");
        fs::create_dir_all(&tmp).unwrap();
        check(
            Command::new("mariadb-install-db")
                .env("TMPDIR", &tmp)
                .args(["--no-defaults", "--skip-test-db", "--user=root"])
                .arg(format!("--datadir={}", data.display()))
                .arg("--auth-root-authentication-method=socket")
                .output()
                .unwrap_or_else(|e| panic!("cannot run mariadb-install-db ({e}): {INSTALL_HINT}")),
            "mariadb-install-db",
        );
        let port = free_port();
        let log = dir.path().join("mariadb.log");
        let mut cmd = Command::new(server);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!(
                "--pid-file={}",
                dir.path().join("mariadb.pid").display()
            ))
            .arg(format!("--log-error={}", log.display()))
            .arg("--user=root")
            .arg("--innodb-flush-log-at-trx-commit=0")
            .arg("--skip-log-bin");
        match &listen {
            Listen::Loopback => {
                cmd.arg("--bind-address=127.0.0.1")
                    .arg(format!("--port={port}"));
            }
            Listen::SocketOnly(_) => {
                cmd.arg("--skip-networking");
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start mariadbd ({e}): {INSTALL_HINT}"));
        let db = MariaDb {
            dir,
            child,
            port,
            socket,
            database: "appdb".into(),
            user: "app".into(),
            listen,
        };
        wait_for(&db.socket, "mariadbd", &log);
        db.root_sql(&format!(
            "CREATE DATABASE appdb; CREATE USER 'app'@'%' IDENTIFIED BY '{PASSWORD}'; CREATE USER 'app'@'localhost' IDENTIFIED BY '{PASSWORD}'; GRANT ALL ON appdb.* TO 'app'@'%'; GRANT ALL ON appdb.* TO 'app'@'localhost';"
        ));
        db
    }

    fn client(&self) -> Command {
        let mut c = Command::new("mariadb");
        c.arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["-u", "root", "--batch", "--skip-column-names"]);
        c
    }

    fn root_sql(&self, sql: &str) -> String {
        check(
            self.client()
                .args(["-e", sql])
                .output()
                .expect("cannot run mariadb: apt-get install mariadb-client"),
            "mariadb",
        )
    }

    /// Runs SQL in the app's database (as root), rows as tab-separated lines.
    pub fn sql(&self, sql: &str) -> String {
        check(
            self.client()
                .args(["-D", &self.database, "-e", sql])
                .output()
                .expect("cannot run mariadb"),
            "mariadb",
        )
    }

    pub fn url(&self) -> String {
        match &self.listen {
            Listen::Loopback => format!(
                "mysql://{}:{PASSWORD}@127.0.0.1:{}/{}",
                self.user, self.port, self.database
            ),
            Listen::SocketOnly(_) => format!(
                "mysql://{}:{PASSWORD}@localhost/{}?socket={}",
                self.user,
                self.database,
                self.socket.display()
            ),
        }
    }

    /// The URL with the socket as a host sees it (`/srv/...`).
    pub fn url_with_socket(&self, remote_socket: &str) -> String {
        format!(
            "mysql://{}:{PASSWORD}@localhost/{}?socket={remote_socket}",
            self.user, self.database
        )
    }

    pub fn catalog(&self) -> String {
        self.sql(
            "SELECT table_name, column_name, column_type, is_nullable, coalesce(column_default, '') FROM information_schema.columns WHERE table_schema = 'appdb' ORDER BY table_name, column_name",
        )
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs SQL on a SQLite file with the `sqlite3` shell, rows as `a|b` lines.
pub fn sqlite(file: &Path, sql: &str) -> String {
    check(
        Command::new("sqlite3")
            .arg("-batch")
            .arg(file)
            .arg(sql)
            .output()
            .unwrap_or_else(|e| panic!("cannot run sqlite3 ({e}): {INSTALL_HINT}")),
        "sqlite3",
    )
}

/// The catalog of a SQLite file, `sqlite_master` sorted.
pub fn sqlite_catalog(file: &Path) -> String {
    sqlite(
        file,
        "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_master ORDER BY type, name",
    )
}
