//! Staged rollouts with a database, on real sshd hosts with SQLite: a failed canary gate
//! rolls the code back and undoes this deploy's migrations; `rollout abort` of a paused
//! canary (from another invocation) does the same from the state on the hosts.

use crate::fixtures::{v1, v2};
use crate::scenario::Kind;
use crate::ssh::on_hosts;

/// Canary over the two hosts; healthy unless the release's VERSION is `bad`.
const ROLLOUT: &str = r#"
[stages.test.rollout]
strategy = "canary"
steps = [50, 100]
PAUSE

[stages.test.health]
command = "test \"$(cat VERSION)\" != bad"
window = "1s"
interval = "100ms"
min_samples = 3
"#;

#[test]
fn a_failed_canary_gate_undoes_the_migrations_of_the_deploy() {
    let mut s = on_hosts(Kind::Sqlite);
    s.stage.push_str(&ROLLOUT.replace("PAUSE", ""));
    s.app(&v1(Kind::Sqlite), "v1");
    s.deploy();
    let r1 = s.current();
    assert_eq!(s.versions(), vec![1, 2]);
    s.app(&v2(Kind::Sqlite), "bad");
    let out = s.run(&["deploy", "test"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.all().contains("health gate failed at step 1"),
        "{}",
        out.all()
    );
    assert_eq!(s.current(), r1);
    assert_eq!(
        s.versions(),
        vec![1, 2],
        "the deploy's migrations were undone"
    );
}

#[test]
fn aborting_a_paused_canary_from_another_invocation_reverts_code_and_schema() {
    let mut s = on_hosts(Kind::Sqlite);
    s.stage
        .push_str(&ROLLOUT.replace("PAUSE", "pause = \"manual\""));
    s.app(&v1(Kind::Sqlite), "v1");
    s.deploy();
    s.ok(&["rollout", "promote", "test"]);
    let r1 = s.current();
    s.app(&v2(Kind::Sqlite), "v2");
    let paused = s.deploy();
    assert!(paused.stdout.contains("paused"), "{}", paused.all());
    assert_eq!(s.versions(), vec![1, 2, 3, 4]);
    let aborted = s.ok(&["rollout", "abort", "test"]);
    assert!(
        aborted.stdout.contains("database: undid"),
        "{}",
        aborted.all()
    );
    assert_eq!(s.current(), r1);
    assert_eq!(s.versions(), vec![1, 2]);
}
