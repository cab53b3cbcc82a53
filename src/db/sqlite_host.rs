//! SQLite on the host. The database file lives under `shared/` on the host, where the
//! deployer cannot open it (over ssh there is no file to open), so migrations run there,
//! with the `sqlite3` command-line shell, fed a program on stdin that keeps sqlx's
//! bookkeeping exactly: the same `_sqlx_migrations` table, the same columns and values
//! (version, description, installed_on, success, checksum = sqlx's SHA-384 of the up
//! script, execution_time in nanoseconds). sqlx's own migrator, opened on a file
//! migrated this way, agrees: it sees every migration applied, and `run` is a no-op
//! (tests/db_sqlite.rs checks that).
//!
//! Guarantees, as with sqlx: each migration runs in its own transaction together with
//! its bookkeeping row (`.bail on`: the first error stops sqlite3, and the open
//! transaction is rolled back when it closes the file). The transaction starts with
//! `BEGIN IMMEDIATE`, which takes SQLite's write lock, and its first statement inserts
//! the bookkeeping row: if another run applied the same version meanwhile, that insert
//! fails on the primary key before the migration's SQL runs. (sqlx inserts the row
//! after the SQL; inside one transaction the order changes nothing that survives.)
//!
//! The `local` transport runs these very programs through `sh` on this machine: one
//! code path, so `sqlite3` must be installed for the quickstart too.

use super::migration::{Applied, Migration};
use super::plan::hex;

/// sqlx's own statement, byte for byte (sqlx-sqlite `ensure_migrations_table`).
const CREATE_TABLE: &str = r#"
CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    success BOOLEAN NOT NULL,
    checksum BLOB NOT NULL,
    execution_time BIGINT NOT NULL
);
"#;

/// How long a migration waits for another writer's lock before it fails.
const BUSY_TIMEOUT_MS: u32 = 30_000;

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn header() -> String {
    format!(
        ".bail on\n.timeout {BUSY_TIMEOUT_MS}\n{CREATE_TABLE}CREATE TEMP TABLE IF NOT EXISTS _slipway_started (version INTEGER PRIMARY KEY, at REAL NOT NULL);\n"
    )
}

/// The user's SQL, closed so that what follows is a statement of its own: a final
/// line comment or a missing `;` would otherwise swallow our `COMMIT`.
fn user_sql(sql: &str) -> String {
    format!("{sql}\n;\n")
}

/// The program that applies `migrations` (in order), one transaction each. Prints
/// `slipway:begin V` before and `slipway:done V` after each one.
pub fn apply_program(migrations: &[&Migration]) -> String {
    let mut p = header();
    for m in migrations {
        let v = m.info.version;
        p.push_str(&format!(
            ".print slipway:begin {v}\nINSERT OR REPLACE INTO temp._slipway_started VALUES ({v}, julianday('now'));\n"
        ));
        if !m.no_tx {
            p.push_str("BEGIN IMMEDIATE;\n");
        }
        p.push_str(&format!(
            "INSERT INTO _sqlx_migrations ( version, description, success, checksum, execution_time ) VALUES ( {v}, {d}, TRUE, X'{c}', -1 );\n",
            d = literal(&m.info.description),
            c = hex(&m.info.checksum),
        ));
        p.push_str(&user_sql(&m.up));
        if !m.no_tx {
            p.push_str("COMMIT;\n");
        }
        p.push_str(&format!(
            "UPDATE _sqlx_migrations SET execution_time = CAST((julianday('now') - (SELECT at FROM temp._slipway_started WHERE version = {v})) * 86400000000000 AS INTEGER) WHERE version = {v};\n.print slipway:done {v}\n"
        ));
    }
    p
}

/// The program that undoes `migrations` (in the order given: newest first) with their
/// down scripts, each with the removal of its bookkeeping row in one transaction.
pub fn undo_program(migrations: &[&Migration]) -> String {
    let mut p = header();
    for m in migrations {
        let v = m.info.version;
        p.push_str(&format!(".print slipway:begin {v}\n"));
        if !m.no_tx {
            p.push_str("BEGIN IMMEDIATE;\n");
        }
        p.push_str(&user_sql(m.down.as_deref().unwrap_or("")));
        p.push_str(&format!(
            "DELETE FROM _sqlx_migrations WHERE version = {v};\n"
        ));
        if !m.no_tx {
            p.push_str("COMMIT;\n");
        }
        p.push_str(&format!(".print slipway:done {v}\n"));
    }
    p
}

/// The query the `sqlite_applied` script runs (read-only).
pub const APPLIED_QUERY: &str = "SELECT version, hex(checksum), success, replace(replace(description, char(10), ' '), char(13), ' ') FROM _sqlx_migrations ORDER BY version";

/// Parses the `|`-separated rows of [`APPLIED_QUERY`].
pub fn parse_applied(stdout: &str) -> Result<Vec<Applied>, String> {
    let mut out = Vec::new();
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let mut parts = line.splitn(4, '|');
        let (Some(v), Some(c), Some(s), Some(d)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("unexpected row from sqlite3: {line}"));
        };
        let version = v
            .parse()
            .map_err(|_| format!("unexpected version from sqlite3: {v}"))?;
        // Pairs of bytes, not of characters: the host may send anything.
        let checksum = c
            .as_bytes()
            .chunks(2)
            .map(|pair| {
                std::str::from_utf8(pair)
                    .ok()
                    .filter(|p| p.len() == 2)
                    .and_then(|p| u8::from_str_radix(p, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| format!("unexpected checksum from sqlite3: {c}"))?;
        out.push(Applied {
            version,
            description: d.to_string(),
            checksum,
            success: s == "1",
        });
    }
    Ok(out)
}

/// Which migrations a run finished and which one it was in when it stopped, from the
/// `slipway:begin` / `slipway:done` lines.
pub fn progress(stdout: &str) -> (Vec<i64>, Option<i64>) {
    let mut done = Vec::new();
    let mut current = None;
    for line in stdout.lines() {
        if let Some(v) = line.strip_prefix("slipway:begin ") {
            current = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("slipway:done ") {
            if let Ok(v) = v.trim().parse() {
                done.push(v);
            }
            current = None;
        }
    }
    (done, current)
}

#[cfg(test)]
mod tests {
    use super::super::migration::{MigrationInfo, Reversibility};
    use super::*;

    fn m(v: i64, up: &str, down: &str) -> Migration {
        Migration {
            info: MigrationInfo {
                version: v,
                description: format!("it's m{v}"),
                checksum: vec![0xab, v as u8],
                reversibility: Reversibility::Reversible,
            },
            up: up.into(),
            down: Some(down.into()),
            no_tx: false,
        }
    }

    #[test]
    fn programs_quote_descriptions_and_close_user_sql() {
        let a = m(1, "CREATE TABLE t(x) -- trailing comment", "DROP TABLE t");
        let p = apply_program(&[&a]);
        assert!(p.contains("'it''s m1'"));
        assert!(p.contains("X'ab01'"));
        assert!(p.contains("-- trailing comment\n;\nCOMMIT;"));
        let u = undo_program(&[&a]);
        assert!(u.contains("DROP TABLE t\n;\nDELETE FROM _sqlx_migrations WHERE version = 1;"));
    }

    #[test]
    fn a_checksum_of_any_text_is_refused_not_sliced() {
        for c in ["aé", "é0", "abc", "zz", "\u{1b}["] {
            let row = format!("1|{c}|1|x\n");
            assert!(parse_applied(&row).is_err(), "{c:?}");
        }
        assert_eq!(
            parse_applied("1|0aFF|1|x\n").unwrap()[0].checksum,
            vec![10, 255]
        );
    }

    #[test]
    fn parses_rows_and_progress() {
        let rows = parse_applied("1|AB01|1|create users\n2|FF|0|a|b\n").unwrap();
        assert_eq!(rows[0].checksum, vec![0xab, 1]);
        assert!(rows[0].success);
        assert_eq!(rows[1].description, "a|b");
        assert!(!rows[1].success);
        assert_eq!(
            progress("slipway:begin 1\nslipway:done 1\nslipway:begin 2\n"),
            (vec![1], Some(2))
        );
    }

    /// The program really runs in sqlite3 and produces sqlx's bookkeeping.
    #[test]
    fn runs_in_the_sqlite3_shell() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let a = m(1, "CREATE TABLE t(x);", "DROP TABLE t;");
        let b = m(2, "INSERT INTO t VALUES (1); SELECT nope FROM missing;", "");
        let run = |program: String| {
            let mut child = std::process::Command::new("sqlite3")
                .arg("-batch")
                .arg(&db)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("sqlite3 is needed by the tests: apt-get install sqlite3");
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(program.as_bytes())
                .unwrap();
            child.wait_with_output().unwrap()
        };
        let out = run(apply_program(&[&a, &b]));
        assert!(!out.status.success());
        let (done, failed) = progress(&String::from_utf8_lossy(&out.stdout));
        assert_eq!((done, failed), (vec![1], Some(2)));
        let out = run(format!("{APPLIED_QUERY};\nSELECT count(*) FROM t;\n"));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(text.starts_with("1|AB01|1|it's m1\n0\n"), "{text}");
    }
}
