//! Two deploys from two processes at once; a deploy racing a rollback.

use crate::scenario::Run;
use crate::{assert_sound, deployed, observe_and_recover, print_table, run_of};

fn assert_one_wins(a: &Run, b: &Run, what: &str) {
    let codes = [a.code, b.code];
    assert!(
        codes.iter().all(|c| *c == 0 || *c == 3) && codes.contains(&0),
        "{what}: exit codes {codes:?}\n--- a:\n{}\n--- b:\n{}",
        a.all_output(),
        b.all_output()
    );
    for r in [a, b] {
        if r.code == 3 {
            assert!(
                r.stderr.contains("the deploy lock is held by") && r.stderr.contains('@'),
                "{what}: the loser names the holder: {}",
                r.stderr
            );
        }
    }
}

#[test]
fn two_deploys_at_once_exactly_one_succeeds_the_other_names_the_holder() {
    let (s, _) = deployed(3);
    let mut rows = Vec::new();
    for round in 0..3 {
        s.app_file("index.html", &format!("race {round}"));
        let a = s
            .command(&["deploy", "test"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("a");
        let b = s
            .command(&["deploy", "test"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("b");
        let (a, b) = (run_of(a), run_of(b));
        assert_one_wins(&a, &b, "two deploys");
        // Deploys take long enough to overlap: one of them must have lost.
        assert!(
            a.code == 3 || b.code == 3,
            "both deploys ran: {} / {}",
            a.stderr,
            b.stderr
        );
        assert_sound(&s, "two deploys");
        rows.push(observe_and_recover(
            &s,
            &format!("two deploys at once ({round})"),
            a.code.max(b.code),
        ));
    }
    print_table("racing deploys", &rows);
}

#[test]
fn a_deploy_racing_a_rollback_leaves_one_release_everywhere() {
    let (s, _) = deployed(3);
    s.app_file("index.html", "v2");
    s.deploy_ok();
    let mut rows = Vec::new();
    for round in 0..3 {
        s.app_file("index.html", &format!("racing rollback {round}"));
        let a = s
            .command(&["deploy", "test"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("deploy");
        let b = s
            .command(&["rollback", "test"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("rollback");
        let (a, b) = (run_of(a), run_of(b));
        assert_one_wins(&a, &b, "deploy vs rollback");
        assert_eq!(crate::distinct_currents(&s), 1, "one release everywhere");
        rows.push(observe_and_recover(
            &s,
            &format!("deploy racing a rollback ({round})"),
            a.code.max(b.code),
        ));
    }
    print_table("deploy racing rollback", &rows);
}
