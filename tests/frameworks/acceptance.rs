//! The framework-migrations acceptance, once per framework and database (PostgreSQL and
//! MariaDB for all five, SQLite for Django, its default; the canary on PostgreSQL):
//! - deploy v1, v2, insert rows, rollback: catalog and migration table equal v1's, every
//!   row is still there, `db status` agrees; `rollback --to` v2 migrates forward;
//! - v3's failing migration: code stays on v2, the report names the migration and the
//!   schema equals v2's. PostgreSQL and SQLite roll the failed migration's DDL back: the
//!   report says so and suggests no restore (no snapshot was taken). MariaDB does not:
//!   there slipway reaches the database (`driver`), snapshots before migrating, and the
//!   report says the migration did NOT run in a transaction and the snapshot was
//!   restored;
//! - v4's irreversible migration: a rollback refuses before any host moves, exit 2;
//! - a canary whose health gate fails: every host back on the old release, the schema
//!   the old release's, the undone migrations named in the message and in `--json`;
//! - the password never appears in any output or any file slipway writes on the hosts.

use crate::scenario::{Fw, Kind, Scenario};

fn rollback_undoes_exactly_what_the_deploy_applied(fw: Fw, kind: Kind) {
    let mut s = Scenario::new(fw, kind);
    if !kind.ddl_rolls_back() {
        s.with_snapshots();
    }
    s.app("v1", false);
    s.ok(&["deploy", "test"]);
    let r1 = s.current();
    s.sql(&fw.insert_item("first"));
    if fw == Fw::Django {
        // The table an earlier rollback dropped: its rows must survive every step.
        s.sql(&format!(
            "INSERT INTO django_session (session_key, session_data, expire_date) VALUES ('k1', 'd', {})",
            kind.tomorrow()
        ));
    }
    let v1_schema = s.schema();
    let v1_tables = s.tables();

    s.app("v2", false);
    let deployed = s.ok(&["deploy", "test", "--json"]);
    let r2 = s.current();
    assert_ne!(r1, r2);
    let result = last_json(&deployed.stdout);
    let applied: Vec<String> =
        serde_json::from_value(result["data"]["result"]["migrations_applied"].clone())
            .unwrap_or_else(|_| panic!("no migrations_applied in {}", deployed.stdout));
    assert_eq!(
        applied,
        fw.v2_migrations(),
        "the deploy applied exactly v2's migrations"
    );
    let record = s.release_json(&r2);
    assert_eq!(
        record["schema"]["applied_now"],
        serde_json::json!(fw.v2_migrations())
    );
    s.sql(&fw.insert_item("second"));
    let v2_schema = s.schema();
    let v2_tables = s.tables();
    let data = s.data(&v1_tables);

    // Back to v1: exactly v2's migrations are unapplied, nothing else.
    let out = s.ok(&["rollback", "test"]);
    assert_eq!(s.current(), r1);
    let (catalog, table) = s.schema();
    assert_eq!(catalog, v1_schema.0, "the catalog is v1's again");
    assert_eq!(table, v1_schema.1, "the migration table is v1's again");
    assert_eq!(
        s.data(&v1_tables),
        data,
        "every row of v1's tables is still there"
    );
    assert_eq!(s.tables(), v1_tables, "no other table was touched");
    assert!(out.all().contains("unapplied"), "{}", out.all());
    assert!(
        out.all().contains("old code and new schema met for"),
        "{}",
        out.all()
    );
    let status = s.ok(&["db", "status", "test"]);
    assert!(status.stdout.contains("agrees"), "{}", status.all());

    // Forward again: the newer release's code migrates.
    let out = s.ok(&["rollback", "test", "--to", &r2]);
    assert_eq!(s.current(), r2);
    assert_eq!(s.schema(), v2_schema, "{}", out.all());
    assert!(
        out.all().contains("schema first, then code"),
        "{}",
        out.all()
    );
    let status = s.ok(&["db", "status", "test", "--json"]);
    assert_eq!(
        last_json(&status.stdout)["data"]["result"]["agrees"],
        true,
        "{}",
        status.all()
    );

    // v3 fails midway: nothing switches, the schema is v2's, the report names it.
    s.app("v3", false);
    let out = s.run(&["deploy", "test"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert_eq!(s.current(), r2, "the code stays on v2 everywhere");
    assert_eq!(s.schema(), v2_schema, "{}", out.all());
    assert_eq!(
        s.tables(),
        v2_tables,
        "no table of v3's is left: {}",
        out.all()
    );
    let text = out.all();
    assert!(
        text.contains(&format!("migration {} failed", fw.failing())),
        "{text}"
    );
    if kind.ddl_rolls_back() {
        assert!(text.contains("; it ran in a transaction"), "{text}");
        assert!(
            !text.contains("db restore"),
            "no snapshot was taken: none may be suggested\n{text}"
        );
    } else {
        assert!(text.contains("it did NOT run in a transaction"), "{text}");
        assert!(
            text.contains("the database was restored from the snapshot"),
            "{text}"
        );
        let status = s.ok(&["db", "status", "test"]);
        assert!(
            !status.stdout.contains("half-applied"),
            "restored: nothing is half-applied\n{}",
            status.all()
        );
    }

    // v4 carries an irreversible migration: deploying works, rolling back refuses.
    s.app("v4", false);
    s.ok(&["deploy", "test"]);
    let r4 = s.current();
    let with_v4 = s.schema();
    let out = s.run(&["rollback", "test"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.all().contains(fw.irreversible()), "{}", out.all());
    assert!(out.all().contains("irreversible"), "{}", out.all());
    assert_eq!(s.current(), r4, "no host moved");
    assert_eq!(s.schema(), with_v4);
    s.assert_no_password_anywhere();
}

fn a_failed_canary_undoes_its_migrations(fw: Fw, kind: Kind) {
    let mut s = Scenario::new(fw, kind);
    s.stage_extra = "\n[stages.test.rollout]\nstrategy = \"canary\"\nsteps = [50, 100]\n\n[stages.test.health]\ncommand = \"test \\\"$(cat GATE)\\\" != bad\"\nwindow = \"1s\"\ninterval = \"100ms\"\nmin_samples = 3\n".into();
    s.app("v1", false);
    s.ok(&["deploy", "test"]);
    let r1 = s.current();
    s.sql(&fw.insert_item("kept"));
    let v1_schema = s.schema();
    // Django's post_migrate handler adds content types and permissions for the models
    // a migration brings, and unapplying does not remove them (Django's own
    // `remove_stale_contenttypes` does): rows added, none lost; see README limits.
    let v1_tables: Vec<String> = s
        .tables()
        .into_iter()
        .filter(|t| t != "django_content_type" && t != "auth_permission")
        .collect();
    let data = s.data(&v1_tables);
    s.app("v2", true);
    let out = s.run(&["deploy", "test", "--json"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert_eq!(s.current(), r1, "every host is back on the old release");
    assert_eq!(
        s.schema(),
        v1_schema,
        "the old release's schema: {}",
        out.all()
    );
    assert_eq!(s.data(&v1_tables), data);
    let result = last_json(&out.stdout);
    let message = result["message"].as_str().unwrap_or_default().to_string();
    for id in fw.v2_migrations() {
        assert!(
            message.contains(id),
            "the undone migration {id} is named: {}",
            out.all()
        );
    }
    assert!(message.contains("undone"), "{}", out.all());
    assert!(
        !out.all().contains("db restore"),
        "no snapshot was taken: none may be suggested\n{}",
        out.all()
    );
    s.assert_no_password_anywhere();
}

/// The last JSON line of `--json` output (the result).
pub fn last_json(stdout: &str) -> serde_json::Value {
    stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .unwrap_or_else(|| panic!("no JSON result in {stdout}"))
}

/// `framework => module [database => module, ...]`: the rollback test for each pair, e.g.
/// `acceptance::django::mariadb::rollback_undoes_exactly_what_the_deploy_applied`, and
/// the canary test once per framework, on PostgreSQL
/// (`acceptance::django::a_failed_canary_undoes_its_migrations`): its undo is the same
/// unapply the rollback test runs on every database, and the whole file must stay
/// within a few minutes on two cores.
macro_rules! for_each_framework {
    ($($fw:ident => $module:ident [$($kind:ident => $db:ident),*]),*) => {
        $(
            mod $module {
                use crate::scenario::{Fw, Kind};
                #[test]
                fn a_failed_canary_undoes_its_migrations() {
                    super::a_failed_canary_undoes_its_migrations(Fw::$fw, Kind::Postgres)
                }
                $(
                    mod $db {
                        use crate::scenario::{Fw, Kind};
                        #[test]
                        fn rollback_undoes_exactly_what_the_deploy_applied() {
                            super::super::rollback_undoes_exactly_what_the_deploy_applied(
                                Fw::$fw,
                                Kind::$kind,
                            )
                        }
                    }
                )*
            }
        )*
    };
}

for_each_framework!(
    Django => django [Postgres => postgres, MariaDb => mariadb, Sqlite => sqlite],
    Rails => rails [Postgres => postgres, MariaDb => mariadb],
    Laravel => laravel [Postgres => postgres, MariaDb => mariadb],
    Knex => knex [Postgres => postgres, MariaDb => mariadb],
    Alembic => alembic [Postgres => postgres, MariaDb => mariadb]
);

/// 6: a migration whose error carries the connection settings (as Rails' and Django's
/// errors can): the password is in no output, no `--json`, no file on the hosts.
#[test]
fn a_framework_error_with_the_connection_settings_leaks_no_password() {
    let mut s = Scenario::new(Fw::Django, Kind::Postgres);
    s.app("v2", false);
    let leak = s.dir.path().join("app/catalog/migrations/0003_leak.py");
    std::fs::write(
        &leak,
        "from django.db import connection, migrations\n\n\ndef fail(apps, schema_editor):\n    d = connection.settings_dict\n    raise RuntimeError(f\"cannot go on with {d!r} at postgres://{d['USER']}:{d['PASSWORD']}@{d['HOST']}:{d['PORT']}/{d['NAME']} PGPASSWORD={d['PASSWORD']}\")\n\n\nclass Migration(migrations.Migration):\n    dependencies = [('catalog', '0002_item_price')]\n    operations = [migrations.RunPython(fail, migrations.RunPython.noop)]\n",
    )
    .unwrap();
    for args in [&["deploy", "test"][..], &["deploy", "test", "--json"][..]] {
        let out = s.run(args);
        assert_eq!(out.code, 1, "{}", out.all());
        assert!(
            out.all().contains("migration catalog.0003_leak failed"),
            "{}",
            out.all()
        );
        assert!(
            out.all().contains("***"),
            "the settings are shown, masked: {}",
            out.all()
        );
    }
    s.ok(&["log", "test"]);
    s.assert_no_password_anywhere();
}

/// 6, slipway's own guard: a build step that prints the app's settings (a URL with its
/// password, a Ruby hash, PGPASSWORD=) is masked by slipway itself, whatever the
/// framework's adapter does.
#[test]
fn whatever_a_host_prints_is_scrubbed_before_it_is_shown_or_stored() {
    let mut s = Scenario::new(Fw::Laravel, Kind::Postgres);
    s.stage_extra = "\n[stages.test.hooks]\nbuild = [\"sh leak.sh\"]\n".into();
    s.app("v1", false);
    std::fs::write(
        s.dir.path().join("app/leak.sh"),
        "cat .env >&2\npw=$(sed -n 's/^DATABASE_URL=[^:]*:\\/\\/[^:]*:\\([^@]*\\)@.*/\\1/p' .env)\necho \"{:adapter=>\\\"postgresql\\\", :password=>\\\"$pw\\\"}\" >&2\necho \"PGPASSWORD=$pw psql\" >&2\nexit 1\n",
    )
    .unwrap();
    for args in [&["deploy", "test"][..], &["deploy", "test", "--json"][..]] {
        let out = s.run(args);
        assert_eq!(out.code, 1, "{}", out.all());
        assert!(out.all().contains(":password=>\"***\""), "{}", out.all());
        assert!(out.all().contains("PGPASSWORD=***"), "{}", out.all());
    }
    s.ok(&["log", "test"]);
    s.assert_no_password_anywhere();
}
