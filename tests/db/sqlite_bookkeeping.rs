//! The proof that SQLite migrated on the host keeps sqlx's bookkeeping: sqlx's own
//! migrator, opened on a file slipway migrated with the `sqlite3` shell, finds every
//! migration applied with the checksums it computes itself, and `run` changes nothing.

use sqlx::Connection;
use sqlx::migrate::Migrator;

use crate::fixtures::v2;
use crate::scenario::{Kind, Scenario, Server};

#[tokio::test]
async fn sqlx_agrees_with_the_bookkeeping_written_on_the_host() {
    let mut s = Scenario::new(Kind::Sqlite);
    s.app(&v2(Kind::Sqlite), "v2");
    s.deploy();
    let Server::Sqlite(file) = &s.server else {
        unreachable!()
    };
    let dump = |s: &Scenario| {
        s.sql("SELECT version, description, installed_on, success, hex(checksum), execution_time FROM _sqlx_migrations ORDER BY version")
    };
    let before = dump(&s);
    assert_eq!(before.lines().count(), 4);
    let catalog = s.catalog();

    let migrator = Migrator::new(s.path().join("app/migrations"))
        .await
        .unwrap();
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", file.display()))
        .await
        .unwrap();
    // Same checksums: `run` validates every applied one (VersionMismatch otherwise)...
    migrator
        .run(&mut conn)
        .await
        .expect("sqlx refuses the bookkeeping");
    conn.close().await.unwrap();
    // ... and it applied nothing: not a row, not a column changed.
    assert_eq!(dump(&s), before);
    assert_eq!(s.catalog(), catalog);
    // sqlx's own rows look the same: success = 1, the exact sqlx checksum.
    for (line, m) in before.lines().zip(
        migrator
            .iter()
            .filter(|m| !m.migration_type.is_down_migration()),
    ) {
        let hex: String = m.checksum.iter().map(|b| format!("{b:02X}")).collect();
        assert!(line.contains(&hex), "{line}");
        assert!(line.contains(&format!("|{}|", m.description)), "{line}");
    }
}
