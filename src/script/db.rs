//! The database's scripts (src/db): snapshots and their restore, sqlite, the migrations
//! a release holds, and the migration command of command mode.
//!
//! Credentials of postgres/mysql reach these scripts on stdin (one value per line: host or
//! socket, port, user, password, database), never on a command line (`ps` shows those)
//! and never in a file: the tools read them from their environment (PGPASSWORD,
//! MYSQL_PWD), which only the same user and root can read.

use super::{HookEnv, PRELUDE, hooks::enter, need_tool};
use crate::config::{Framework, FrameworkMigrator};
use crate::db::framework::Op;
use crate::layout::{Layout, ReleaseId, quote};

const READ_DB_CREDENTIALS: &str = "IFS= read -r db_host || { echo 'no database credentials on stdin' >&2; exit 1; }\nIFS= read -r db_port\nIFS= read -r db_user\nIFS= read -r db_password\nIFS= read -r db_name\n";

/// Runs `sqlite3` on the database file `shared/<path>` with the SQL program on stdin:
/// `-bail` stops at the first error (sqlite3 exits non-zero; an open transaction is
/// rolled back when it closes the file).
pub fn sqlite(layout: &Layout, path: &str) -> String {
    format!(
        "{PRELUDE}{}f={}\nmkdir -p -- \"$(dirname -- \"$f\")\" || exit 1\nexec sqlite3 -bail -batch \"$f\"\n",
        need_tool("sqlite3", "sqlite3"),
        quote(&layout.shared_path(path))
    )
}

/// Runs the read-only `query` on `_sqlx_migrations` of `shared/<path>`, rows separated
/// by `|`; prints nothing when the file or the table does not exist (a read never
/// creates either).
pub fn sqlite_applied(layout: &Layout, path: &str, query: &str) -> String {
    format!(
        "{PRELUDE}{}f={}\n[ -f \"$f\" ] || exit 0\nn=$(sqlite3 -readonly -batch \"$f\" \"SELECT count(*) FROM sqlite_master WHERE type='table' AND name='_sqlx_migrations'\") || exit 1\n[ \"$n\" = 0 ] && exit 0\nexec sqlite3 -readonly -batch -noheader -separator '|' \"$f\" {}\n",
        need_tool("sqlite3", "sqlite3"),
        quote(&layout.shared_path(path)),
        quote(query),
    )
}

/// Prints, base64-encoded, a tar of the directory `dir` of release `id` (nothing if the
/// release has no such directory): how a rollback reads the down scripts of the release
/// being left, which only the host has.
pub fn fetch_migrations(layout: &Layout, id: &ReleaseId, dir: &str) -> String {
    format!(
        "{PRELUDE}r={r}\n[ -d \"$r\" ] || {{ echo \"release \"{id}\" is not on this host\" >&2; exit 1; }}\ncd -- \"$r\" || exit 1\n[ -d {dir} ] || exit 0\nset -e\ntar -cf - -- {dir} | base64\n",
        r = quote(&layout.release(id)),
        id = quote(id.as_str()),
        dir = quote(dir),
    )
}

/// SQL string literal (for sqlite3's command line; then shell-quoted as a whole).
fn sql_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Argument of a sqlite3 dot-command, double-quoted with C escapes.
fn dot_quote(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Takes a snapshot into `backups/db/<name>` (written to a temporary name, then renamed:
/// a snapshot that exists is complete). For postgres and mysql the credentials come on
/// stdin; `sqlite_path` is the database file under `shared/`.
pub fn snapshot(
    layout: &Layout,
    driver: crate::config::DbDriver,
    name: &str,
    sqlite_path: Option<&str>,
) -> String {
    use crate::config::DbDriver;
    let file = layout.db_snapshot(name);
    let tmp = format!("{file}.tmp");
    let mut s = format!(
        "{PRELUDE}mkdir -p -- {dir} || exit 1\nf={f}\nt={t}\nrm -f -- \"$t\"\n",
        dir = quote(&layout.db_backups()),
        f = quote(&file),
        t = quote(&tmp),
    );
    match driver {
        DbDriver::Postgres => {
            s.push_str(&need_tool("pg_dump", "postgresql-client"));
            s.push_str(READ_DB_CREDENTIALS);
            s.push_str("PGHOST=$db_host PGUSER=$db_user PGPASSWORD=$db_password PGDATABASE=$db_name\nexport PGHOST PGUSER PGPASSWORD PGDATABASE\nif [ -n \"$db_port\" ]; then PGPORT=$db_port; export PGPORT; fi\n");
            s.push_str("pg_dump -Fc -f \"$t\" || { rm -f -- \"$t\"; echo 'pg_dump failed' >&2; exit 1; }\n");
        }
        DbDriver::Mysql => {
            s.push_str("if command -v mariadb-dump >/dev/null 2>&1; then dump=mariadb-dump; elif command -v mysqldump >/dev/null 2>&1; then dump=mysqldump; else echo 'mariadb-dump/mysqldump is not installed on this host: install it (Debian/Ubuntu: apt-get install mariadb-client)' >&2; exit 1; fi\n");
            s.push_str(READ_DB_CREDENTIALS);
            s.push_str(MYSQL_CONNECTION);
            s.push_str("MYSQL_PWD=$db_password \"$dump\" \"$@\" --single-transaction --routines --triggers --no-tablespaces --add-drop-database --databases \"$db_name\" > \"$t\" || { rm -f -- \"$t\"; echo \"$dump failed\" >&2; exit 1; }\n");
        }
        DbDriver::Sqlite => {
            let db = layout.shared_path(sqlite_path.unwrap_or_default());
            s.push_str(&need_tool("sqlite3", "sqlite3"));
            s.push_str(&format!(
                "mkdir -p -- \"$(dirname -- {db})\" || exit 1\nsqlite3 -bail {db} {sql} || {{ rm -f -- \"$t\"; echo 'sqlite3 VACUUM INTO failed' >&2; exit 1; }}\n",
                db = quote(&db),
                sql = quote(&format!("VACUUM INTO {}", sql_literal(&tmp))),
            ));
        }
    }
    s.push_str("mv -f -- \"$t\" \"$f\" || exit 1\n");
    s
}

/// Sets the positional parameters to the mysql client's connection options.
const MYSQL_CONNECTION: &str = "if [ -z \"$db_port\" ]; then set -- \"--socket=$db_host\" \"--user=$db_user\"; else set -- \"--host=$db_host\" \"--port=$db_port\" \"--user=$db_user\"; fi\n";

/// Restores the snapshot `backups/db/<name>` into the database.
pub fn restore(
    layout: &Layout,
    driver: crate::config::DbDriver,
    name: &str,
    sqlite_path: Option<&str>,
) -> String {
    use crate::config::DbDriver;
    let mut s = format!(
        "{PRELUDE}f={f}\n[ -f \"$f\" ] || {{ echo \"no snapshot $f on this host\" >&2; exit 1; }}\n",
        f = quote(&layout.db_snapshot(name)),
    );
    match driver {
        DbDriver::Postgres => {
            s.push_str(&need_tool("pg_restore", "postgresql-client"));
            s.push_str(&need_tool("psql", "postgresql-client"));
            s.push_str(READ_DB_CREDENTIALS);
            s.push_str("PGHOST=$db_host PGUSER=$db_user PGPASSWORD=$db_password\nexport PGHOST PGUSER PGPASSWORD\nif [ -n \"$db_port\" ]; then PGPORT=$db_port; export PGPORT; fi\n");
            // The database as it was: every table goes first (a table created after
            // the snapshot may reference one of its tables, which `--clean` alone
            // cannot drop), then the snapshot is loaded, all in one transaction: a
            // failure leaves the database as it was. The script holds the data: it is
            // written beside the snapshot, private, and removed.
            s.push_str(&format!(
                "umask 077\nsql=$(mktemp {dir}/.restore.XXXXXX) || {{ echo 'cannot write in the snapshot directory' >&2; exit 1; }}\ntrap 'rm -f \"$sql\"' EXIT\n",
                dir = quote(&layout.db_backups()),
            ));
            s.push_str("psql -Atq -v ON_ERROR_STOP=1 -d \"$db_name\" -c \"SELECT format('DROP TABLE IF EXISTS %I.%I CASCADE;', schemaname, tablename) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')\" > \"$sql\" || { echo 'cannot list the tables to replace' >&2; exit 1; }\n");
            s.push_str("pg_restore --clean --if-exists --no-owner -f - \"$f\" >> \"$sql\" || { echo 'pg_restore cannot read the snapshot' >&2; exit 1; }\n");
            s.push_str("psql -q -v ON_ERROR_STOP=1 --single-transaction -d \"$db_name\" -f \"$sql\" >/dev/null || { echo 'loading the snapshot failed: the database is as it was' >&2; exit 1; }\n");
        }
        DbDriver::Mysql => {
            s.push_str("if command -v mariadb >/dev/null 2>&1; then client=mariadb; elif command -v mysql >/dev/null 2>&1; then client=mysql; else echo 'the mariadb/mysql client is not installed on this host: install it (Debian/Ubuntu: apt-get install mariadb-client)' >&2; exit 1; fi\n");
            // The snapshot names its database (taken with `--databases`): the name on
            // stdin is read, and not used.
            s.push_str(&READ_DB_CREDENTIALS.replace("read -r db_name", "read -r _"));
            s.push_str(MYSQL_CONNECTION);
            s.push_str("MYSQL_PWD=$db_password \"$client\" \"$@\" < \"$f\" || { echo \"$client failed to load the snapshot\" >&2; exit 1; }\n");
        }
        DbDriver::Sqlite => {
            let db = layout.shared_path(sqlite_path.unwrap_or_default());
            s.push_str(&need_tool("sqlite3", "sqlite3"));
            s.push_str(&format!(
                "mkdir -p -- \"$(dirname -- {db})\" || exit 1\nsqlite3 -bail {db} {cmd} || {{ echo 'sqlite3 .restore failed' >&2; exit 1; }}\n",
                db = quote(&db),
                cmd = quote(&format!(".restore {}", dot_quote(&layout.db_snapshot(name)))),
            ));
        }
    }
    s
}

/// Which of the database tools the db host has: one `tool<TAB>path-or-empty` per line.
pub fn db_tools(tools: &[&str]) -> String {
    let mut s = String::from(PRELUDE);
    for t in tools {
        s.push_str(&format!(
            "printf 'tool\t%s\t%s\n' {t} \"$(command -v {t} 2>/dev/null)\"\n",
            t = quote(t)
        ));
    }
    s
}

/// Lists the snapshots in `backups/db/`, one name per line.
pub fn list_snapshots(layout: &Layout) -> String {
    format!(
        "{PRELUDE}d={d}\n[ -d \"$d\" ] || exit 0\nfor f in \"$d\"/*.dump; do [ -f \"$f\" ] && printf '%s\\n' \"${{f##*/}}\"; done\nexit 0\n",
        d = quote(&layout.db_backups()),
    )
}

/// Removes snapshots (retention); `names` are validated snapshot names.
pub fn remove_snapshots(layout: &Layout, names: &[String]) -> String {
    let mut s = String::from(PRELUDE);
    for n in names {
        s.push_str(&format!("rm -f -- {}\n", quote(&layout.db_snapshot(n))));
    }
    s
}

/// Command mode: runs a framework's migration command on the db host in the release,
/// with the hook environment and, for a rollback, `SLIPWAY_TARGET_VERSION`.
pub fn db_command(env: &HookEnv<'_>, command: &str, target: Option<i64>) -> String {
    let mut s = enter(env);
    let command = match target {
        Some(v) => {
            s.push_str(&format!("export SLIPWAY_TARGET_VERSION={v}\n"));
            command.replace("{version}", &v.to_string())
        }
        None => command.to_string(),
    };
    s.push_str(&format!(
        "sh -c {cmd} </dev/null || {{ rc=$?; printf 'database command `%s` exited with status %s\\n' {cmd} \"$rc\" >&2; exit 1; }}\n",
        cmd = quote(&command),
    ));
    s
}

/// Framework mode: the shell command that runs `migrator`'s adapter `program` for `op` in
/// a release directory (the caller changes into it: see [`in_release`](super::in_release)).
/// `runtime` is the user's own shell text, like a hook; the program and the migration ids
/// go through the quoting function (`op` is one of a few fixed words).
pub fn adapter(migrator: &FrameworkMigrator, program: &str, op: Op, ids: &[String]) -> String {
    let program = quote(program);
    let runtime = &migrator.runtime;
    let launch = match migrator.framework {
        Framework::Django => format!("{runtime} manage.py shell -c {program}"),
        Framework::Alembic => format!("{runtime} -c {program}"),
        Framework::Rails => {
            format!("RAILS_ENV=\"${{RAILS_ENV:-production}}\" {runtime} runner {program}")
        }
        Framework::Laravel => format!("{runtime} -r {program}"),
        Framework::Knex => format!("{runtime} -e {program}"),
    };
    format!(
        "SLIPWAY_OP={} SLIPWAY_MIGRATIONS={} {launch}",
        op.as_str(),
        quote(&ids.join("\n"))
    )
}
