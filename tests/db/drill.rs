//! `slipway drill` on 3 sshd hosts with PostgreSQL: rolls code and schema back, verifies
//! both on every host, rolls forward, reports the time to recover.

use crate::db_support::Listen;
use crate::fixtures::{v1, v2};
use crate::hosts::Fleet;
use crate::scenario::{Kind, Scenario};

#[test]
fn a_drill_on_three_hosts_with_postgres_passes_and_reports_the_time_to_recover() {
    let fleet = Fleet::start(3);
    let dir = tempfile::Builder::new()
        .prefix("slipway-dbtest-")
        .tempdir()
        .expect("tempdir");
    let mut s = Scenario::build(
        Kind::Postgres,
        Listen::Loopback,
        dir,
        fleet.host(0).path("/srv/app"),
        "/srv/app".into(),
    );
    s.other_hosts = (1..3).map(|i| fleet.host(i).path("/srv/app")).collect();
    let hosts: Vec<String> = (0..3)
        .map(|i| {
            let h = fleet.host(i);
            let roles = if i == 0 { "\"app\", \"db\"" } else { "\"app\"" };
            format!(
                "  {{ address = \"{}\", port = {}, roles = [{roles}] }},",
                h.address, h.port
            )
        })
        .collect();
    s.stage = format!(
        "drill = true\nhosts = [\n{}\n]\n\n[stages.test.ssh]\nconfig_file = \"{}\"\nconnect_timeout = \"5s\"\n",
        hosts.join("\n"),
        fleet.ssh_config().display()
    );
    s.guards.push(Box::new(fleet));
    s.app(&v1(Kind::Postgres), "v1");
    s.deploy();
    s.app(&v2(Kind::Postgres), "v2");
    s.deploy();
    assert_eq!(s.versions(), vec![1, 2, 3, 4]);

    let run = s.run(&["--json", "drill", "test"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let report = run
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "result")
        .expect("result event")["data"]["result"]
        .clone();
    assert_eq!(report["passed"], true, "{report}");
    let text = report.to_string();
    assert!(
        text.contains("on 3 host(s); schema version 2 (release records 2)"),
        "rolled back: code and schema checked: {text}"
    );
    assert!(
        text.contains("on 3 host(s); schema version 4 (release records 4)"),
        "rolled forward: {text}"
    );
    let recover = report["time_to_recover_ms"]
        .as_u64()
        .expect("time to recover");
    println!(
        "drill, 3 hosts, PostgreSQL: time to recover {recover} ms, total {} ms",
        report["total_ms"]
    );
    assert_eq!(
        s.versions(),
        vec![1, 2, 3, 4],
        "the drill leaves the schema where it was"
    );
    assert!(!s.transcript.contains(crate::db_support::PASSWORD));
}
