//! Beyond the acceptance list: a failed switch takes the schema back with the code, and
//! command mode (a framework's own migration tool).

use crate::fixtures::{v1, v2};
use crate::scenario::{Kind, Scenario, Server};

fn switch_failure_reverts_the_schema(kind: Kind) {
    let mut s = Scenario::new(kind);
    s.app(&v1(kind), "v1");
    s.deploy();
    let r1 = s.current();
    let catalog = s.catalog();
    s.app(&v2(kind), "v2");
    s.env = vec![("SLIPWAY_FAULT".into(), "deploy.after-switch:fail".into())];
    let out = s.run(&["deploy", "test"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.all().contains("database: the schema was put back"),
        "{}",
        out.all()
    );
    assert_eq!(s.current(), r1);
    assert_eq!(s.versions(), vec![1, 2]);
    assert_eq!(s.catalog(), catalog);
}

#[test]
fn sqlite_switch_failure_reverts_the_schema() {
    switch_failure_reverts_the_schema(Kind::Sqlite)
}

#[test]
fn postgres_switch_failure_reverts_the_schema() {
    switch_failure_reverts_the_schema(Kind::Postgres)
}

/// The switch fails after the migration, and by then the database is gone: the code goes
/// back, the schema cannot. That is not "reverted" (exit 1) but diverged (exit 4), naming
/// the migrations left applied; `db status` fails until a deploy records them again.
#[test]
fn a_switch_failure_with_the_database_gone_is_not_reported_as_reverted() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let mut s = Scenario::new(Kind::Postgres);
    s.app(&v1(Kind::Postgres), "v1");
    s.deploy();
    let r1 = s.current();
    s.app(&v2(Kind::Postgres), "v2");
    let mut child = Command::new(env!("CARGO_BIN_EXE_slipway"))
        .arg("-c")
        .arg(s.config_path())
        .args(["deploy", "test"])
        .env("DATABASE_URL", s.url.clone().expect("postgres url"))
        .env("NO_COLOR", "1")
        .env(
            "SLIPWAY_FAULT",
            crate::hosts::fault("deploy.after-switch:fail-after=3s"),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 {
        said.push_str(&line);
        if line.contains("fault point deploy.after-switch") {
            break;
        }
        line.clear();
    }
    assert!(said.contains("fault point deploy.after-switch"), "{said}");
    let Server::Postgres(pg) = &s.server else {
        unreachable!()
    };
    pg.kill();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    pg.server_start();
    let all = format!("{said}{rest}");
    assert_eq!(status.code(), Some(4), "{all}");
    assert!(all.contains("NOT put back"), "{all}");
    assert!(
        all.contains("3 (create tags)") && all.contains("4 (add users email)"),
        "the migrations left applied are named: {all}"
    );
    assert_eq!(s.current(), r1, "the code went back");
    assert_eq!(s.versions(), vec![1, 2, 3, 4], "the schema stayed: {all}");

    let status = s.run(&["db", "status", "test"]);
    assert_eq!(status.code, 4, "{}", status.all());
    assert!(status.all().contains("DISAGREES"), "{}", status.all());

    // The way out the message gives: deploy again; the release records what is applied.
    s.deploy();
    assert_eq!(s.versions(), vec![1, 2, 3, 4]);
    s.ok(&["db", "status", "test"]);
}

/// Command mode: slipway runs the tool, records the version it reports, and a rollback
/// runs rollback_command in the release being left with the target version.
#[test]
fn command_mode_records_and_rolls_back_the_reported_version() {
    let mut s = Scenario::new(Kind::Sqlite);
    // A "framework" whose schema version is a file in shared/, and whose migrate
    // command sets it to the release's own number.
    s.database_section = Some(
        "[database]\nmigrate_command = \"cp SCHEMA ../../shared/schema\"\nversion_command = \"cat ../../shared/schema\"\nrollback_command = \"echo {version} > ../../shared/schema; echo $SLIPWAY_TARGET_VERSION > ../../shared/target\"\n".into(),
    );
    let write = |s: &mut Scenario, v: &str| {
        s.app(&[], v);
        std::fs::write(s.path().join("app/SCHEMA"), v).unwrap();
    };
    write(&mut s, "7");
    s.deploy();
    let r1 = s.current();
    assert_eq!(s.release_json(&r1)["schema_version"], 7);
    write(&mut s, "9");
    let out = s.deploy();
    assert!(out.all().contains("schema version 9"), "{}", out.all());
    let dry = s.ok(&["rollback", "test", "--dry-run"]);
    assert!(
        dry.all().contains("SLIPWAY_TARGET_VERSION=7"),
        "{}",
        dry.all()
    );
    s.ok(&["rollback", "test"]);
    assert_eq!(s.current(), r1);
    let shared = s.deploy_to.join("shared");
    assert_eq!(
        std::fs::read_to_string(shared.join("schema"))
            .unwrap()
            .trim(),
        "7"
    );
    assert_eq!(
        std::fs::read_to_string(shared.join("target"))
            .unwrap()
            .trim(),
        "7"
    );
}

/// Without the URL in the environment nothing is uploaded, and the message says which
/// variable to set.
#[test]
fn a_missing_database_url_fails_before_the_upload() {
    let mut s = Scenario::new(Kind::Sqlite);
    s.database_section =
        Some("[database]\ndriver = \"postgres\"\nurl_env = \"SHOP_DB_URL\"\n".into());
    s.app(&v1(Kind::Postgres), "v1");
    let out = s.run(&["deploy", "test"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.all().contains("SHOP_DB_URL"), "{}", out.all());
    assert!(!out.all().contains("upload ok"), "{}", out.all());
    // `check` says so too, and looks for the snapshot tools on the db host.
    let out = s.run(&["check", "test"]);
    assert_ne!(out.code, 0, "{}", out.all());
    assert!(
        out.all().contains("FAIL") && out.all().contains("SHOP_DB_URL"),
        "{}",
        out.all()
    );
    assert!(
        out.all().contains("database tool: pg_dump"),
        "{}",
        out.all()
    );
    // A URL of the wrong kind is refused without being echoed.
    s.env = vec![("SHOP_DB_URL".into(), "mysql://u:Very-Secret-1@h/db".into())];
    let out = s.run(&["deploy", "test"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(!out.all().contains("Very-Secret-1"), "{}", out.all());
}

/// Quotes, spaces and `$(...)` in deploy_to, the database path and migration names reach
/// the host-side sqlite3 program intact.
#[test]
fn hostile_names_survive_the_sqlite_host_path() {
    let dir = tempfile::Builder::new()
        .prefix("slipway-dbtest-")
        .tempdir()
        .unwrap();
    let deploy_to = dir.path().join("it's a $(touch pwned) dir");
    let mut s = Scenario::build(
        Kind::Sqlite,
        crate::db_support::Listen::Loopback,
        dir,
        deploy_to.clone(),
        deploy_to.display().to_string(),
    );
    let file = deploy_to.join("shared/db/o'hare \"db\".sqlite3");
    s.server = crate::scenario::Server::Sqlite(file.clone());
    s.database_section =
        Some("[database]\ndriver = \"sqlite\"\npath = \"db/o'hare \\\"db\\\".sqlite3\"\n".into());
    let migrations = vec![
        (
            1,
            "it's_a_table",
            "CREATE TABLE t (x TEXT);\nINSERT INTO t VALUES ('it''s');\n".to_string(),
            Some("DROP TABLE t;\n".to_string()),
        ),
        (
            2,
            "more",
            "CREATE TABLE u (y TEXT);\n".to_string(),
            Some("DROP TABLE u;\n".to_string()),
        ),
    ];
    s.app(&migrations[..1], "v1");
    s.deploy();
    s.app(&migrations, "v2");
    s.deploy();
    assert_eq!(
        s.sql("SELECT description FROM _sqlx_migrations ORDER BY version"),
        "it's a table\nmore\n"
    );
    s.ok(&["rollback", "test"]);
    assert_eq!(s.versions(), vec![1]);
    assert!(std::fs::metadata(&file).is_ok());
    assert!(!s.path().join("pwned").exists() && !std::path::Path::new("pwned").exists());
}

/// Two deployers of two stages sharing one database, at the same moment: the database's
/// own lock (pg_advisory_lock) lets exactly one apply each migration, and both succeed.
#[test]
fn two_deployers_never_migrate_at_once() {
    let mut s = Scenario::new(Kind::Postgres);
    let mut migrations = v1(Kind::Postgres);
    // Slow enough that the two runs overlap.
    migrations[0].2 = format!("SELECT pg_sleep(1);\n{}", migrations[0].2);
    s.app(&migrations, "v1");
    let first = s.config_path();
    let second = s.path().join("deploy2.toml");
    let text = std::fs::read_to_string(&first).unwrap();
    let other = s.path().join("other-stage");
    std::fs::write(
        &second,
        text.replace(
            &format!("deploy_to = \"{}\"", s.remote_deploy_to),
            &format!("deploy_to = \"{}\"", other.display()),
        ),
    )
    .unwrap();
    let url = s.url.clone().unwrap();
    let spawn = |config: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_slipway"))
            .arg("-c")
            .arg(config)
            .args(["deploy", "test"])
            .env("DATABASE_URL", &url)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(&first), spawn(&second));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    for out in [&a, &b] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(s.versions(), vec![1, 2]);
    assert_eq!(
        s.sql("SELECT count(*) FROM users").trim(),
        "2",
        "migration 1 ran once"
    );
}

/// Command mode cannot see what its commands do, so slipway checks what it can: a
/// switch that fails runs rollback_command back to the version before the deploy
/// (checked by version_command), and a rollback whose rollback_command does not reach
/// the target version says it could not prove the schema moved, and fails.
#[test]
fn command_mode_checks_its_rollbacks_and_reverts_a_failed_switch() {
    let mut s = Scenario::new(Kind::Sqlite);
    let section = |rollback: &str| {
        format!(
            "[database]\nmigrate_command = \"cp SCHEMA ../../shared/schema\"\nversion_command = \"cat ../../shared/schema\"\nrollback_command = \"{rollback}\"\n"
        )
    };
    s.database_section = Some(section("echo {version} > ../../shared/schema"));
    let write = |s: &mut Scenario, v: &str| {
        s.app(&[], v);
        std::fs::write(s.path().join("app/SCHEMA"), v).unwrap();
    };
    let schema = |s: &Scenario| {
        std::fs::read_to_string(s.deploy_to.join("shared/schema"))
            .unwrap()
            .trim()
            .to_string()
    };
    write(&mut s, "7");
    s.deploy();
    let r1 = s.current();

    // A failed switch: the schema goes back to 7 with the code.
    write(&mut s, "9");
    s.env = vec![("SLIPWAY_FAULT".into(), "deploy.after-switch:fail".into())];
    let out = s.run(&["deploy", "test"]);
    s.env.clear();
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.all()
            .contains("ran rollback_command back to schema version 7"),
        "{}",
        out.all()
    );
    assert_eq!(s.current(), r1);
    assert_eq!(schema(&s), "7");

    // A rollback_command that does nothing: the rollback cannot prove the schema moved.
    s.database_section = Some(section("true"));
    write(&mut s, "9");
    s.deploy();
    assert_eq!(schema(&s), "9");
    let out = s.run(&["rollback", "test"]);
    assert_eq!(out.code, 4, "{}", out.all());
    assert!(
        out.all().contains("version_command now prints 9, not 7")
            && out.all().contains("cannot prove"),
        "{}",
        out.all()
    );
}
