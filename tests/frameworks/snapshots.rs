//! Snapshots in framework mode. The acceptance covers the snapshot a MariaDB deploy
//! restores by itself when a migration fails halfway; here:
//! - `slipway db restore` of a snapshot a framework-mode deploy took (PostgreSQL): the
//!   catalog, the framework's migration table and the rows go back to the snapshot's,
//!   `db status` reports that the database disagrees with the live release until
//!   `rollback --skip-schema` brings the code back too;
//! - without `driver` there is no snapshot: a migration that fails halfway on MariaDB is
//!   named with what it may have left, and no restore is suggested.

use crate::acceptance::last_json;
use crate::scenario::{Fw, Kind, Scenario};

/// A snapshot from before a table that references an older one (v2's `orders` has a
/// foreign key to v1's `items`): restoring it drops the newer table too and gives back
/// exactly the snapshot's tables, catalog and rows (`pg_restore --clean` alone failed
/// here: it cannot drop `items` while `orders` references it).
#[test]
fn db_restore_of_an_older_snapshot_drops_the_tables_created_after_it() {
    let fw = Fw::Django;
    let mut s = Scenario::new(fw, Kind::Postgres);
    s.with_snapshots();
    s.app("v1", false);
    // Snapshots need the URL: without it the deploy stops before uploading anything.
    s.hide_url = true;
    let out = s.run(&["deploy", "test"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.all().contains("DATABASE_URL"), "{}", out.all());
    assert_eq!(s.current(), "", "nothing was deployed");
    s.hide_url = false;
    s.ok(&["deploy", "test"]);
    s.sql(&fw.insert_item("kept"));
    let v1_schema = s.schema();
    let v1_tables = s.tables();
    let v1_data = s.data(&v1_tables);
    s.app("v2", false);
    let deployed = s.ok(&["deploy", "test", "--json"]);
    let snapshot = last_json(&deployed.stdout)["data"]["result"]["snapshot"]
        .as_str()
        .unwrap_or_else(|| panic!("the deploy took no snapshot: {}", deployed.all()))
        .to_string();
    s.sql("INSERT INTO orders (item_id, qty) SELECT id, 2 FROM items");
    assert!(s.tables().contains(&"orders".to_string()));
    let out = s.ok(&["db", "restore", "test", &snapshot, "--yes"]);
    assert_eq!(s.schema(), v1_schema, "{}", out.all());
    assert_eq!(
        s.tables(),
        v1_tables,
        "the table created after the snapshot is gone"
    );
    assert_eq!(s.data(&v1_tables), v1_data);
}

/// The way back from an irreversible migration: the rollback refuses, the snapshot the
/// deploy took is restored, and the code follows with `rollback --skip-schema`.
#[test]
fn db_restore_puts_back_the_snapshot_taken_before_a_framework_migration() {
    let fw = Fw::Django;
    let mut s = Scenario::new(fw, Kind::Postgres);
    s.with_snapshots();
    s.app("v2", false);
    s.ok(&["deploy", "test"]);
    let r2 = s.current();
    s.sql(&fw.insert_item("first"));
    let v2_schema = s.schema();
    let v2_tables = s.tables();
    let v2_data = s.data(&v2_tables);

    s.app("v4", false);
    let deployed = s.ok(&["deploy", "test", "--json"]);
    let snapshot = last_json(&deployed.stdout)["data"]["result"]["snapshot"]
        .as_str()
        .unwrap_or_else(|| panic!("the deploy took no snapshot: {}", deployed.all()))
        .to_string();
    s.sql(&fw.insert_item("second"));
    assert_ne!(s.schema(), v2_schema, "v4 changed the schema");
    let out = s.run(&["rollback", "test"]);
    assert_eq!(out.code, 2, "{}", out.all());

    let out = s.ok(&["db", "restore", "test", &snapshot, "--yes"]);
    let (catalog, table) = s.schema();
    assert_eq!(
        catalog,
        v2_schema.0,
        "the catalog is the snapshot's: {}",
        out.all()
    );
    assert_eq!(table, v2_schema.1, "the migration table is the snapshot's");
    assert_eq!(s.tables(), v2_tables);
    assert_eq!(s.data(&v2_tables), v2_data, "the rows are the snapshot's");
    let status = s.run(&["db", "status", "test", "--json"]);
    assert_eq!(
        status.code,
        4,
        "a database that is not what the live release records fails db status: {}",
        status.all()
    );
    assert_eq!(
        last_json(&status.stdout)["data"]["result"]["report"]["agrees"],
        false,
        "the live release recorded v4's migration: {}",
        status.all()
    );

    s.ok(&["rollback", "test", "--skip-schema"]);
    assert_eq!(s.current(), r2);
    assert_eq!(s.schema(), v2_schema);
    let status = s.ok(&["db", "status", "test", "--json"]);
    assert_eq!(
        last_json(&status.stdout)["data"]["result"]["agrees"],
        true,
        "{}",
        status.all()
    );
    s.assert_no_password_anywhere();
}

#[test]
fn without_a_snapshot_a_half_failed_migration_on_mariadb_is_left_to_repair_by_hand() {
    let fw = Fw::Laravel;
    let mut s = Scenario::new(fw, Kind::MariaDb);
    s.app("v2", false);
    s.ok(&["deploy", "test"]);
    let r2 = s.current();
    let v2_tables = s.tables();
    s.app("v3", false);
    let out = s.run(&["deploy", "test"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert_eq!(s.current(), r2, "the code stays on v2 everywhere");
    let text = out.all();
    assert!(
        text.contains(&format!("migration {} failed", fw.failing())),
        "{text}"
    );
    assert!(text.contains("it did NOT run in a transaction"), "{text}");
    assert!(text.contains("repair it by hand"), "{text}");
    assert!(
        !text.contains("db restore") && !text.contains("restored from"),
        "no snapshot was taken: none may be suggested\n{text}"
    );
    // The migration before it was unapplied; its own first statement stays (MariaDB
    // commits DDL at once), as the report says.
    let mut expected = v2_tables.clone();
    expected.push("broken_part".into());
    expected.sort();
    assert_eq!(s.tables(), expected, "{text}");
    assert!(
        !s.sql(fw.migration_table(Kind::MariaDb))
            .contains("create_notes"),
        "{text}"
    );
    let status = s.ok(&["db", "status", "test"]);
    assert!(
        status
            .stdout
            .contains("may have left a half-applied migration"),
        "{}",
        status.all()
    );
}
