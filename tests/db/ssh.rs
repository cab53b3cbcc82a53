//! The same scenarios through real sshd hosts (tests/support/hosts.rs): two hosts, the
//! first with the `db` role. And the tunnel: a database that only the db host can
//! reach, migrated from the deployer through an ssh port forward.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::db_support::Listen;
use crate::fixtures::{v1, v2};
use crate::hosts::Fleet;
use crate::scenario::{Kind, Scenario, Server};

/// A scenario on two fresh hosts; `listen` picks where the database listens.
pub fn on_hosts_with(kind: Kind, listen: impl FnOnce(&Fleet) -> Listen) -> Scenario {
    let fleet = Fleet::start(2);
    let listen = listen(&fleet);
    let dir = tempfile::Builder::new()
        .prefix("slipway-dbtest-")
        .tempdir()
        .unwrap();
    let mut s = Scenario::build(
        kind,
        listen,
        dir,
        fleet.host(0).path("/srv/app"),
        "/srv/app".into(),
    );
    s.other_hosts = vec![fleet.host(1).path("/srv/app")];
    let (h1, h2) = (fleet.host(0), fleet.host(1));
    s.stage = format!(
        "hosts = [\n  {{ address = \"{}\", port = {}, roles = [\"app\", \"db\"] }},\n  {{ address = \"{}\", port = {}, roles = [\"app\"] }},\n]\n\n[stages.test.ssh]\nconfig_file = \"{}\"\nconnect_timeout = \"5s\"\n",
        h1.address,
        h1.port,
        h2.address,
        h2.port,
        fleet.ssh_config().display()
    );
    s.guards.push(Box::new(fleet));
    s
}

pub fn on_hosts(kind: Kind) -> Scenario {
    on_hosts_with(kind, |_| Listen::Loopback)
}

/// Lets the database's server user (PostgreSQL runs as `nobody`) reach `dir` under
/// the fleet's private temp dir.
fn open_up(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut p = Some(dir);
    while let Some(d) = p {
        if d == Path::new("/tmp") || d.parent().is_none() {
            break;
        }
        let mode = std::fs::metadata(d).unwrap().permissions().mode();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode | 0o711)).unwrap();
        p = d.parent();
    }
}

/// 5: the database listens only on a Unix socket under host1's /srv, which exists in
/// host1's mount namespace and nowhere else (no TCP at all): the deployer cannot reach
/// it directly, and migrations still run through the forward.
fn tunnel(kind: Kind) {
    let remote_dir = match kind {
        Kind::Postgres => "/srv/pgsock",
        _ => "/srv/mysock",
    };
    let mut s = on_hosts_with(kind, |fleet| {
        let dir = fleet.host(0).path(remote_dir);
        open_up(&dir);
        Listen::SocketOnly(dir)
    });
    s.url = Some(match &s.server {
        Server::Postgres(p) => p.url_with_socket_dir(remote_dir),
        Server::MariaDb(m) => m.url_with_socket(&format!("{remote_dir}/mysqld.sock")),
        Server::Sqlite(_) => unreachable!(),
    });
    assert!(
        !Path::new(remote_dir).exists(),
        "{remote_dir} must exist only inside the test host"
    );

    // Without the tunnel the deployer cannot reach the database.
    s.app(&v1(kind), "v1");
    let out = s.run(&["deploy", "test"]);
    assert_ne!(out.code, 0, "{}", out.all());
    assert!(
        out.all().contains("cannot connect to the database"),
        "{}",
        out.all()
    );
    assert_eq!(s.current(), "");

    // Through it, it can: deploy, migrate, roll back.
    s.db_extra = "tunnel = true\n".into();
    s.app(&v1(kind), "v1");
    s.deploy();
    let r1 = s.current();
    assert_eq!(s.versions(), vec![1, 2]);
    let catalog = s.catalog();
    s.app(&v2(kind), "v2");
    s.deploy();
    assert_eq!(s.versions(), vec![1, 2, 3, 4]);
    assert_eq!(s.snapshots().len(), 2, "snapshots are taken on the host");
    s.ok(&["rollback", "test"]);
    assert_eq!(s.current(), r1);
    assert_eq!(s.versions(), vec![1, 2]);
    assert_eq!(s.catalog(), catalog);
    assert!(!s.transcript.contains(crate::db_support::PASSWORD));
}

#[test]
fn postgres_through_a_tunnel() {
    tunnel(Kind::Postgres)
}

#[test]
fn mariadb_through_a_tunnel() {
    tunnel(Kind::MariaDb)
}
