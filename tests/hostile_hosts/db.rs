//! The database host lies: rows of `_sqlx_migrations` that are not rows, descriptions
//! with escape sequences, and a release's migrations sent back as a tar whose entries
//! climb out with `../`, are absolute, or are symlinks.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use super::Bench;
use super::scenario::Scenario;

const DATABASE: &str =
    "[database]\ndriver = \"sqlite\"\npath = \"db/app.sqlite3\"\nmigrations = \"migrations\"\n";

/// v1 creates a table, v2 another (each reversible).
fn migrations(s: &Scenario, version: usize) {
    s.app_file(
        "migrations/0001_init.up.sql",
        "CREATE TABLE items (id INTEGER PRIMARY KEY);\n",
    );
    s.app_file("migrations/0001_init.down.sql", "DROP TABLE items;\n");
    if version >= 2 {
        s.app_file(
            "migrations/0002_more.up.sql",
            "CREATE TABLE more (id INTEGER PRIMARY KEY);\n",
        );
        s.app_file("migrations/0002_more.down.sql", "DROP TABLE more;\n");
    }
}

#[test]
fn a_lying_database_host_is_refused_and_writes_nothing_here() {
    // host1 is the database host (the first with the db role), and the liar.
    let mut b = Bench::with(0, DATABASE, migrations, 2);
    let liar = b.liar();

    // 1. A row whose checksum is not hex (and not ASCII): refused, naming the host.
    b.lie("sqlite-junk");
    b.run(
        "_sqlx_migrations row with a non-hex checksum (db status)",
        &["db", "status", "test"],
    )
    .fails()
    .says(&[&liar, "unexpected checksum"]);
    let before = b.honest();
    b.s.app_file("index.html", "<h1>v3</h1>\n");
    b.run(
        "_sqlx_migrations row with a non-hex checksum (deploy)",
        &["deploy", "test"],
    )
    .fails()
    .says(&[&liar, "unexpected checksum"]);
    b.assert_honest_not_switched(&before, "junk rows");

    // 2. Descriptions carrying escape sequences, `\r` and a C1 byte: shown escaped.
    b.lie("sqlite-esc");
    b.run(
        "migration descriptions with escapes (db status)",
        &["db", "status", "test"],
    )
    .says(&["\\x1b]0;pwned"]);
    let ran = b.run(
        "migration descriptions with escapes (--json db status)",
        &["--json", "db", "status", "test"],
    );
    ran.json_lines();

    // 3. The release's migrations sent back as a tar climbing out of its directory
    //    (`migrations/../../../x.sql`, an absolute path) with the down script missing:
    //    nothing is written outside slipway's temporary directory, and the rollback is
    //    refused (it cannot undo 0002 without its down script) before any host moves.
    let evil = b.s.fleet().host(0).srv().join(".liar/evil");
    fs::create_dir_all(evil.join("a/b/c/migrations")).expect("evil dirs");
    fs::write(
        evil.join("a/slipway-hostile-evil.sql"),
        "DROP TABLE items;\n",
    )
    .expect("evil");
    fs::write(
        b.s.fleet()
            .host(0)
            .srv()
            .join(".liar/slipway-hostile-abs.sql"),
        "DROP TABLE items;\n",
    )
    .expect("abs");
    symlink(
        "/etc/passwd",
        evil.join("a/b/c/migrations/0002_more.down.sql"),
    )
    .expect("link");
    b.lie("evil-tar");
    let before = b.honest();
    b.run(
        "migrations tar with ../ absolute and symlink entries (rollback)",
        &["rollback", "test"],
    )
    .expect(2)
    .blames(&liar)
    .says(&[
        "migration 2 (more) has no down script",
        "nothing was switched",
    ]);
    b.assert_honest_unchanged(&before, "evil tar");
    for p in [
        "/slipway-hostile-evil.sql",
        "/tmp/slipway-hostile-evil.sql",
        "/srv/.liar/slipway-hostile-abs.sql",
    ] {
        assert!(!Path::new(p).exists(), "{p} was written on the deployer");
    }

    b.lie("honest");
    b.print_table("a lying database host");
}
