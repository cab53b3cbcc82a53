//! Database snapshots: taken on the db host into `<deploy_to>/backups/db/` before a
//! deploy migrates (pg_dump -Fc, mysqldump --single-transaction, sqlite `VACUUM INTO`),
//! kept to `keep_snapshots`, restored by `slipway db restore`.
//!
//! Why on the host, not on the deployer: the dump stays next to the database (no round
//! trip of a large file through a laptop's uplink), the host already reaches the
//! database (a tunnel is not needed for it), and the host is where DESIGN keeps
//! backups. The credentials reach the dump tool on the stdin of its script and from
//! there its environment (PGPASSWORD, MYSQL_PWD), never a command line or a file.

use crate::config::DbDriver;
use crate::layout::ReleaseId;

/// `<release>-<driver>.dump`.
pub fn name(release: &ReleaseId, driver: DbDriver) -> String {
    format!("{release}-{}.dump", driver.as_str())
}

/// The release and driver of a snapshot name; `None` for anything else (such names are
/// never passed to a script).
pub fn parse(name: &str) -> Option<(ReleaseId, DbDriver)> {
    let stem = name.strip_suffix(".dump")?;
    let (id, driver) = stem.split_once('-')?;
    let driver = match driver {
        "postgres" => DbDriver::Postgres,
        "mysql" => DbDriver::Mysql,
        "sqlite" => DbDriver::Sqlite,
        _ => return None,
    };
    Some((ReleaseId::parse(id).ok()?, driver))
}

/// The snapshots of `driver` that retention removes: all but the newest `keep`.
pub fn prune(names: &[String], driver: DbDriver, keep: usize) -> Vec<String> {
    let mut mine: Vec<(ReleaseId, &String)> = names
        .iter()
        .filter_map(|n| {
            parse(n)
                .filter(|(_, d)| *d == driver)
                .map(|(id, _)| (id, n))
        })
        .collect();
    mine.sort();
    let excess = mine.len().saturating_sub(keep);
    mine.into_iter()
        .take(excess)
        .map(|(_, n)| n.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_strangers_are_ignored() {
        let id = ReleaseId::parse("20261124T040512Z").unwrap();
        let n = name(&id, DbDriver::Sqlite);
        assert_eq!(n, "20261124T040512Z-sqlite.dump");
        assert_eq!(parse(&n), Some((id, DbDriver::Sqlite)));
        for bad in [
            "x.dump",
            "20261124T040512Z-oracle.dump",
            "../x-sqlite.dump",
            "a",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn keeps_the_newest_of_its_driver() {
        let names: Vec<String> = [
            "20261124T010000Z-sqlite.dump",
            "20261124T030000Z-sqlite.dump",
            "20261124T020000Z-sqlite.dump",
            "20261124T000000Z-postgres.dump",
            "junk.dump",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            prune(&names, DbDriver::Sqlite, 2),
            vec!["20261124T010000Z-sqlite.dump".to_string()]
        );
        assert!(prune(&names, DbDriver::Postgres, 2).is_empty());
    }
}
