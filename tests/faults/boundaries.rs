//! The deployer SIGKILLed at every step boundary of deploy and rollback.

use crate::scenario::wait_for_stderr;
use crate::{deployed, kill9, observe_and_recover, print_table};

const DEPLOY_POINTS: &[&str] = &[
    "deploy.after-lock",
    "deploy.before-upload",
    "deploy.after-upload",
    "deploy.before-switch",
    "deploy.after-switch",
    "deploy.before-prune",
    "deploy.before-unlock",
];

const ROLLBACK_POINTS: &[&str] = &[
    "rollback.before-switch",
    "rollback.after-switch",
    "rollback.before-unlock",
];

#[test]
fn the_deployer_killed_at_every_step_boundary_leaves_a_recoverable_stage() {
    let (s, _) = deployed(2);
    let mut rows = Vec::new();
    for point in DEPLOY_POINTS {
        s.app_file("index.html", &format!("before {point}"));
        let mut child = s.spawn_with_fault(&["deploy", "test"], &format!("{point}:pause"));
        wait_for_stderr(&mut child, &format!("fault point {point}: paused"));
        let code = kill9(&mut child);
        rows.push(observe_and_recover(
            &s,
            &format!("SIGKILL at {point}"),
            code,
        ));
    }
    for point in ROLLBACK_POINTS {
        // observe_and_recover deployed a new release: there is a rollback target.
        let mut child = s.spawn_with_fault(&["rollback", "test"], &format!("{point}:pause"));
        wait_for_stderr(&mut child, &format!("fault point {point}: paused"));
        let code = kill9(&mut child);
        rows.push(observe_and_recover(
            &s,
            &format!("SIGKILL at {point}"),
            code,
        ));
    }
    print_table("deployer killed at step boundaries", &rows);
}

#[test]
fn a_crash_exit_at_a_boundary_is_recovered_the_same_way() {
    let (s, _) = deployed(2);
    let mut rows = Vec::new();
    for point in ["deploy.after-upload", "deploy.after-switch"] {
        s.app_file("index.html", &format!("exit at {point}"));
        let run = s
            .command(&["deploy", "test"])
            .env(
                "SLIPWAY_FAULT",
                crate::hosts::fault(&format!("{point}:exit")),
            )
            .output()
            .expect("run");
        let code = run.status.code().unwrap_or(-1);
        assert_eq!(code, 99, "{}", String::from_utf8_lossy(&run.stderr));
        rows.push(observe_and_recover(
            &s,
            &format!("exit 99 at {point}"),
            code,
        ));
    }
    print_table("deployer crashed (exit) at step boundaries", &rows);
}

#[test]
fn a_stale_partial_upload_is_removed_by_the_next_deploy() {
    let (s, _) = deployed(2);
    s.app_file("index.html", "v2");
    // What an upload cut off by a host that went down leaves (the deployer itself
    // removes a partial release when the upload fails): a half-written directory.
    for i in 0..s.host_count() {
        let partial = s.app_path(i, "releases/20200101T000000Z.partial/assets");
        std::fs::create_dir_all(&partial).expect("plant a partial release");
        std::fs::write(partial.join("half.js"), "var x =").expect("half a file");
    }
    let id = s.deploy_ok();
    s.assert_current_everywhere(&id);
    s.assert_no_partial_and_no_lock();
}
