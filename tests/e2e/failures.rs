use crate::scenario::{Run, Scenario};

/// After a failure before the switch: `current` unchanged everywhere, no partial
/// release, no lock, a non-zero exit.
fn assert_untouched(s: &Scenario, before: &str, run: &Run) {
    assert_ne!(run.code, 0, "{}", run.all_output());
    s.assert_current_everywhere(before);
    s.assert_no_partial_and_no_lock();
}

#[test]
fn a_missing_shared_file_fails_before_the_switch_naming_host_and_path() {
    let s = Scenario::new()
        .hosts(3)
        .shared_file("config/database.yml")
        .put_shared_file("config/database.yml", "x: 1\n");
    let first = s.deploy_ok();
    std::fs::remove_file(s.app_path(2, "shared/config/database.yml")).unwrap();
    s.app_file("index.html", "v2");
    let run = s.deploy();
    assert_untouched(&s, &first, &run);
    let host = s.fleet().host(2);
    let expected = format!(
        "{}:{}: upload failed: shared file 'config/database.yml' is missing in /srv/app/shared",
        host.address, host.port
    );
    assert!(
        run.stderr.contains(&expected) || run.stderr.contains("config/database.yml is missing"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(&format!("{}:{}", host.address, host.port)),
        "{}",
        run.stderr
    );
    assert_eq!(run.code, 1);
}

#[test]
fn a_failing_build_hook_fails_before_the_switch_and_marks_the_release_failed() {
    let s = Scenario::new().hosts(3).build_hook(
        "test \"$SLIPWAY_HOST\" != \"$BAD_HOST\" || { echo 'compilation failed' >&2; exit 3; }",
    );
    let first = s.deploy_ok();
    let bad = s.fleet().host(1);
    let bad_name = format!("{}:{}", bad.address, bad.port);
    // The hook reads BAD_HOST from its own line: rewrite the hook to fail on host 1 only.
    let s = Scenario {
        build_hooks: vec![format!(
            "test \"$SLIPWAY_HOST\" != '{bad_name}' || {{ echo 'compilation failed' >&2; exit 3; }}"
        )],
        ..s
    };
    s.app_file("index.html", "v2");
    let run = s.deploy();
    assert_untouched(&s, &first, &run);
    assert!(
        run.stderr.contains(&bad_name)
            && run.stderr.contains("build hook")
            && run.stderr.contains("status 3"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("compilation failed"),
        "the hook's own message is shown: {}",
        run.stderr
    );
    // The failed release is on record and never becomes a rollback target.
    let failed: Vec<String> = s.releases(0).into_iter().filter(|r| r != &first).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(s.state(0, &failed[0]), "failed");
    assert_eq!(s.audit(0).last().unwrap()["result"], "failed");
}

#[test]
fn an_unreachable_host_fails_the_deploy_before_anything_changes() {
    let mut s = Scenario::new().hosts(3);
    let first = s.deploy_ok();
    s.fleet_mut().stop(1);
    s.app_file("index.html", "v2");
    let run = s.deploy();
    assert_eq!(run.code, 1, "{}", run.all_output());
    let host = s.fleet().host(1);
    assert!(
        run.stderr
            .contains(&format!("{}:{}: connect failed", host.address, host.port)),
        "{}",
        run.stderr
    );
    for i in [0, 2] {
        assert_eq!(s.current(i).as_deref(), Some(first.as_str()));
        assert_eq!(
            s.releases(i),
            vec![first.clone()],
            "nothing uploaded to host {i}"
        );
        assert!(!s.app_path(i, ".slipway/lock").exists());
    }
    s.fleet_mut().start_host(1);
    s.deploy_ok();
}

#[test]
fn rollback_never_picks_failed_or_rolled_back_releases_and_retention_keeps_the_last_good() {
    let s = Scenario::new().hosts(2).keep_releases(1);
    let good = s.deploy_ok();
    s.app_file("index.html", "v2");
    let second = s.deploy_ok();
    // A failed deploy.
    let s = Scenario {
        build_hooks: vec!["exit 1".into()],
        ..s
    };
    s.app_file("index.html", "v3");
    s.deploy().expect_code(1);
    let s = Scenario {
        build_hooks: vec![],
        ..s
    };
    // Roll back from second to good, then again: nothing older and good remains.
    s.rollback(&[]).ok();
    s.assert_current_everywhere(&good);
    let run = s.rollback(&[]);
    assert_eq!(run.code, 1, "{}", run.all_output());
    s.assert_current_everywhere(&good);
    // Deploy a fourth; with keep_releases = 1, the last good (current) stays, and the
    // release a rollback would go to (good) stays too.
    s.app_file("index.html", "v4");
    let fourth = s.deploy_ok();
    let releases = s.releases(0);
    assert!(
        releases.contains(&fourth) && releases.contains(&good),
        "{releases:?}"
    );
    assert!(
        !releases.contains(&second),
        "rolled-back releases older than current are pruned: {releases:?}"
    );
    // Rolling back goes to `good`, never to the failed or the rolled-back one.
    s.rollback(&[]).ok();
    s.assert_current_everywhere(&good);
}
