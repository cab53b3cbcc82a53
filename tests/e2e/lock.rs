use crate::scenario::{Scenario, signal, wait_for_stderr};

#[test]
fn a_held_lock_refuses_with_the_holder_and_sigint_cleans_up() {
    let s = Scenario::new().hosts(2);
    let first = s.deploy_ok();
    s.app_file("index.html", "v2");
    // A deploy that stops after its upload, holding the lock, with its new release
    // uploaded but not switched to.
    let mut holder = s.spawn_with_fault(&["deploy", "test"], "deploy.after-upload:pause");
    wait_for_stderr(&mut holder, "fault point deploy.after-upload");
    assert_eq!(
        s.releases(0).len(),
        2,
        "the new release in place: {:?}",
        s.releases(0)
    );

    let run = s.deploy();
    assert_eq!(run.code, 3, "{}", run.all_output());
    assert!(
        run.stderr.contains("the deploy lock is held by"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!("pid {}", holder.id())),
        "names the holder's pid: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("slipway deploy") || run.stderr.contains("deploy test"),
        "names the command: {}",
        run.stderr
    );
    let releases_during: Vec<Vec<String>> = (0..2).map(|i| s.releases(i)).collect();

    // Ctrl-C: the unswitched release goes, the lock goes, current is unchanged.
    signal(&holder, "INT");
    let status = holder.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    s.assert_current_everywhere(&first);
    s.assert_no_partial_and_no_lock();
    for (i, before) in releases_during.iter().enumerate() {
        assert_eq!(
            before.len(),
            2,
            "the refused deploy left the holder's upload alone: {before:?}"
        );
        assert_eq!(s.releases(i), vec![first.clone()]);
    }
    s.deploy_ok();
}

#[test]
fn of_two_deploys_started_at_once_exactly_one_proceeds() {
    let s = Scenario::new().hosts(3);
    s.deploy_ok();
    let mut a = s.spawn_with_fault(&["deploy", "test"], "deploy.after-upload:pause");
    let mut b = s.spawn_with_fault(&["deploy", "test"], "deploy.after-upload:pause");
    // One of them pauses holding the lock; the other exits 3.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let (loser, mut winner) = loop {
        if a.try_wait().unwrap().is_some() {
            break (a.wait_with_output().unwrap(), b);
        }
        if b.try_wait().unwrap().is_some() {
            break (b.wait_with_output().unwrap(), a);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "neither deploy stopped"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(
        loser.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&loser.stderr)
    );
    wait_for_stderr(&mut winner, "fault point deploy.after-upload");
    assert!(
        winner.try_wait().unwrap().is_none(),
        "the winner is still running"
    );
    signal(&winner, "TERM");
    assert_eq!(winner.wait().unwrap().code(), Some(1));
    s.assert_no_partial_and_no_lock();
}

/// A deployer killed with SIGKILL leaves its lock (and an unswitched release) behind.
fn crash_a_deploy(s: &Scenario) -> u32 {
    let mut crashed = s.spawn_with_fault(&["deploy", "test"], "deploy.after-upload:pause");
    wait_for_stderr(&mut crashed, "fault point deploy.after-upload");
    signal(&crashed, "KILL");
    crashed.wait().unwrap();
    assert!(s.app_path(0, ".slipway/lock").exists());
    crashed.id()
}

#[test]
fn a_lock_left_by_a_deployer_that_died_on_this_machine_is_taken_over_by_the_next_deploy() {
    let s = Scenario::new().hosts(2);
    let first = s.deploy_ok();
    let pid = crash_a_deploy(&s);
    let run = s.slipway(&["check", "test"]);
    assert!(
        run.stdout.contains("the deploy lock is held by")
            && run.stdout.contains(&format!("pid {pid}")),
        "check reports the stale lock: {}",
        run.stdout
    );
    // One command recovers: the lock's process is provably gone, so the deploy breaks it.
    let run = s.deploy().ok();
    assert!(
        run.stderr.contains("breaking the deploy lock of")
            && run.stderr.contains("no longer exists"),
        "{}",
        run.stderr
    );
    assert_ne!(run.release_id(), first);
    s.assert_no_partial_and_no_lock();
}

#[test]
fn unlock_breaks_a_lock_from_another_machine_and_is_audited() {
    let s = Scenario::new().hosts(2);
    let first = s.deploy_ok();
    let pid = crash_a_deploy(&s);
    // The same lock, as if taken on another machine: nothing here can tell it is stale.
    for i in 0..2 {
        let path = s.app_path(i, ".slipway/lock/owner.json");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut owner: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        owner["machine"] = "build-server-7".into();
        std::fs::write(&path, format!("{owner}\n")).unwrap();
    }
    let run = s.deploy();
    assert_eq!(run.code, 3, "{}", run.all_output());
    assert!(run.stderr.contains("build-server-7"), "{}", run.stderr);

    let run = s.slipway(&["unlock", "test"]).ok();
    assert!(run.stdout.contains("removed the lock of"), "{}", run.stdout);
    for i in 0..2 {
        let last = s.audit(i).pop().unwrap();
        assert_eq!(last["action"], "unlock");
        assert!(
            last["reason"]
                .as_str()
                .unwrap()
                .contains(&format!("pid {pid}")),
            "{last}"
        );
    }
    // The next deploy succeeds.
    let second = s.deploy_ok();
    assert_ne!(first, second);
    s.assert_no_partial_and_no_lock();
}

#[test]
fn lock_wait_waits_for_the_holder() {
    let s = Scenario::new().hosts(1);
    s.deploy_ok();
    let mut holder = s.spawn_with_fault(&["deploy", "test"], "deploy.after-upload:pause");
    wait_for_stderr(&mut holder, "fault point deploy.after-upload");
    let waiter = s
        .command(&["--lock-wait", "60s", "deploy", "test"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    signal(&holder, "INT");
    holder.wait().unwrap();
    let out = waiter.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("waiting up to"));
}
