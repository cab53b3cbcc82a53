//! Issue 3's acceptance scenarios, for each database.

use crate::db_support::PASSWORD;
use crate::fixtures::{v1, v2, v2_without_down, v3_broken};
use crate::scenario::{Kind, Scenario, all_files};

fn count(s: &Scenario, table: &str) -> i64 {
    s.sql(&format!("SELECT count(*) FROM {table}"))
        .trim()
        .parse()
        .unwrap()
}

/// 1, 4, 6, 7: deploy v1, a deploy without new migrations, v2, rollback; snapshots,
/// retention and restore; no secret anywhere.
fn deploy_migrate_rollback_restore(mut s: Scenario) {
    let kind = s.kind;
    s.db_extra = "keep_snapshots = 2\n".into();

    // v1: two migrations.
    s.app(&v1(kind), "v1");
    let out = s.deploy();
    assert!(
        out.all()
            .contains("migrated the database to schema version 2"),
        "{}",
        out.all()
    );
    let r1 = s.current();
    assert_eq!(s.versions(), vec![1, 2]);
    let v1_catalog = s.catalog();
    let meta = s.release_json(&r1);
    assert_eq!(meta["schema_version"], 2);
    let recorded = meta["migrations"].as_array().unwrap();
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[1]["description"], "create posts");
    assert_eq!(
        recorded[0]["checksum"].as_str().unwrap().len(),
        96,
        "SHA-384 in hex"
    );
    assert_eq!(s.snapshots(), vec![format!("{r1}-{}.dump", s.driver())]);

    // 7: the same migrations again: no snapshot, the database untouched.
    let before = s
        .sql("SELECT version, installed_on, execution_time FROM _sqlx_migrations ORDER BY version");
    let sqlite_mtime = match &s.server {
        crate::scenario::Server::Sqlite(f) => std::fs::metadata(f).unwrap().modified().ok(),
        _ => None,
    };
    s.app(&v1(kind), "v1 again");
    let out = s.ok(&["deploy", "test", "--json"]);
    assert!(
        out.stdout.contains("\"schema_version\":2"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("\"snapshot\":null"), "{}", out.stdout);
    let r2 = s.current();
    assert_ne!(r1, r2);
    assert_eq!(s.snapshots().len(), 1, "no snapshot without new migrations");
    assert_eq!(
        s.sql(
            "SELECT version, installed_on, execution_time FROM _sqlx_migrations ORDER BY version"
        ),
        before
    );
    if let (crate::scenario::Server::Sqlite(f), Some(m)) = (&s.server, sqlite_mtime) {
        assert_eq!(
            std::fs::metadata(f).unwrap().modified().ok(),
            Some(m),
            "the file was written"
        );
    }
    assert_eq!(s.release_json(&r2)["schema_version"], 2);

    // v2: a table and a filled column (verbose: every script's output is shown, and
    // must still not show the password).
    s.app(&v2(kind), "v2");
    s.ok(&["deploy", "test", "-v"]);
    let r3 = s.current();
    assert_eq!(s.versions(), vec![1, 2, 3, 4]);
    assert_eq!(count(&s, "users WHERE email IS NULL"), 0);
    assert_eq!(s.release_json(&r3)["schema_version"], 4);
    assert_eq!(s.snapshots().len(), 2);
    // The app writes meanwhile.
    s.sql("INSERT INTO users (name, email) VALUES ('cy', 'cy@example.com')");
    s.sql("INSERT INTO posts (user_id, title) VALUES (1, 'hello')");

    let status = s.ok(&["db", "status", "test"]);
    assert!(
        status.stdout.contains("schema version 4"),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("agrees with the database"),
        "{}",
        status.stdout
    );

    // The down steps are printed before anything moves; --dry-run changes nothing.
    let dry = s.ok(&["rollback", "test", "--dry-run"]);
    assert!(
        dry.all()
            .contains("undo 4 (add users email), 3 (create tags)"),
        "{}",
        dry.all()
    );
    assert_eq!(s.current(), r3);
    assert_eq!(s.versions(), vec![1, 2, 3, 4]);

    let out = s.ok(&["rollback", "test", "--json"]);
    assert!(
        out.stdout
            .contains("undid 4 (add users email), 3 (create tags)"),
        "{}",
        out.stdout
    );
    assert_eq!(s.current(), r2);
    assert_eq!(s.versions(), vec![1, 2]);
    assert_eq!(s.catalog(), v1_catalog, "the schema is v1's exactly");
    assert_eq!(
        count(&s, "users"),
        3,
        "rows of v1's tables are all still there"
    );
    assert_eq!(count(&s, "posts"), 1);
    let status = s.ok(&["db", "status", "test", "--json"]);
    assert!(
        status.stdout.contains("\"schema_version\":2"),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("\"current_record_agrees\":true"),
        "{}",
        status.stdout
    );

    // 4: another migrating deploy: a third snapshot, pruned to keep_snapshots = 2.
    s.app(&v2(kind), "v2 again");
    s.deploy();
    let r4 = s.current();
    let snaps = s.snapshots();
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    assert!(
        !snaps.contains(&format!("{r1}-{}.dump", s.driver())),
        "the oldest was pruned"
    );
    let latest = format!("{r4}-{}.dump", s.driver());
    assert!(snaps.contains(&latest));
    // The snapshot holds the moment before r4 migrated: v1's schema, three users.
    s.sql("DROP TABLE users");
    let refused = s.run(&["db", "restore", "test", &latest]);
    assert_eq!(refused.code, 2, "{}", refused.all());
    s.ok(&["db", "restore", "test", &latest, "--yes"]);
    assert_eq!(count(&s, "users"), 3, "the rows are back");
    assert_eq!(s.versions(), vec![1, 2]);

    // 6: the URL and the password appear nowhere.
    let url = s.url.clone().unwrap_or_default();
    assert!(
        !s.transcript.contains(PASSWORD),
        "the password leaked into the output:\n{}",
        s.transcript
    );
    if !url.is_empty() {
        assert!(!s.transcript.contains(&url));
    }
    for (path, bytes) in all_files(&s.deploy_to) {
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(PASSWORD),
            "the password is in {}",
            path.display()
        );
    }
}

/// 2: a v3 whose second migration fails leaves v2 live and v2's schema.
fn failing_migration(mut s: Scenario) {
    let kind = s.kind;
    s.app(&v1(kind), "v1");
    s.deploy();
    s.app(&v2(kind), "v2");
    s.deploy();
    let r2 = s.current();
    let v2_catalog = s.catalog();
    s.app(&v3_broken(kind), "v3");
    let out = s.run(&["deploy", "test"]);
    assert_eq!(out.code, 1, "{}", out.all());
    let text = out.all();
    assert!(text.contains("migration 6 (broken) failed"), "{text}");
    assert!(
        text.contains("no_such_table"),
        "the database's error: {text}"
    );
    assert_eq!(s.current(), r2, "v2 stays current");
    assert_eq!(s.versions(), vec![1, 2, 3, 4]);
    assert_eq!(s.catalog(), v2_catalog, "the schema is v2's");
    match kind {
        Kind::MariaDb => assert!(text.contains("restored from the snapshot"), "{text}"),
        _ => assert!(
            text.contains("undoing the migrations this deploy had applied with their down scripts: 5 (create comments)"),
            "{text}"
        ),
    }
    // The failed release is marked failed.
    let releases = std::fs::read_dir(s.deploy_to.join("releases")).unwrap();
    let newest = releases
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .max()
        .unwrap();
    assert_ne!(newest, r2);
    assert_eq!(s.release_json(&newest)["state"], "failed");
    assert!(!s.transcript.contains(PASSWORD));
}

/// 3: a rollback whose down script is missing refuses before switching; with
/// --skip-schema it switches the code only and says so.
fn missing_down_script(mut s: Scenario) {
    let kind = s.kind;
    s.app(&v1(kind), "v1");
    s.deploy();
    let r1 = s.current();
    s.app(&v2_without_down(kind), "v2");
    s.deploy();
    let r2 = s.current();
    let catalog = s.catalog();
    for args in [
        &["rollback", "test", "--dry-run"][..],
        &["rollback", "test"][..],
    ] {
        let out = s.run(args);
        // Exit 2: refused as unprovable, nothing touched (--skip-schema goes on).
        assert_eq!(out.code, 2, "{}", out.all());
        assert!(
            out.all()
                .contains("migration 4 (add users email) has no down script"),
            "{}",
            out.all()
        );
        assert_eq!(s.current(), r2, "no host was switched");
        assert_eq!(s.versions(), vec![1, 2, 3, 4]);
    }
    let out = s.ok(&["rollback", "test", "--skip-schema"]);
    assert!(
        out.all().contains("NOT rolled back (--skip-schema)"),
        "{}",
        out.all()
    );
    assert_eq!(s.current(), r1);
    assert_eq!(s.versions(), vec![1, 2, 3, 4]);
    assert_eq!(s.catalog(), catalog);
}

/// Each scenario for each database: through the `local` transport, and through two
/// real sshd hosts (host1 has the db role).
macro_rules! for_each_database {
    ($($name:ident),*) => {
        mod local {
            mod postgres { $( #[test] fn $name() { super::super::$name(crate::scenario::Scenario::new(crate::scenario::Kind::Postgres)) } )* }
            mod mariadb { $( #[test] fn $name() { super::super::$name(crate::scenario::Scenario::new(crate::scenario::Kind::MariaDb)) } )* }
            mod sqlite { $( #[test] fn $name() { super::super::$name(crate::scenario::Scenario::new(crate::scenario::Kind::Sqlite)) } )* }
        }
        mod ssh {
            mod postgres { $( #[test] fn $name() { super::super::$name(crate::ssh::on_hosts(crate::scenario::Kind::Postgres)) } )* }
            mod mariadb { $( #[test] fn $name() { super::super::$name(crate::ssh::on_hosts(crate::scenario::Kind::MariaDb)) } )* }
            mod sqlite { $( #[test] fn $name() { super::super::$name(crate::ssh::on_hosts(crate::scenario::Kind::Sqlite)) } )* }
        }
    };
}

for_each_database!(
    deploy_migrate_rollback_restore,
    failing_migration,
    missing_down_script
);
