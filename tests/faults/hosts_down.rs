//! A host's sshd killed between two switches, a full disk, a stalled connection.

use std::fs;
use std::time::{Duration, Instant};

use crate::scenario::Scenario;
use crate::{Outcome, Stderr, assert_sound, deployed, observe_and_recover, print_table};

#[test]
fn a_host_whose_sshd_dies_between_the_switch_and_the_restart_is_named_and_recoverable() {
    let (mut s, v1) = deployed(3);
    s.app_file("index.html", "v2");
    let mut child = s.spawn_with_fault(&["deploy", "test"], "deploy.after-switch:sleep=3s");
    let err = Stderr::collect(&mut child);
    err.wait_for("fault point deploy.after-switch: sleeping");
    s.fleet_mut().stop(1);
    let run = err.finish(child);
    let host = s.fleet().host(1).address.clone();
    // Host 1 cannot run its restart hook nor be switched back: the others go back to v1.
    assert_eq!(run.code, 4, "{}", run.all_output());
    assert!(
        run.stderr.contains(&host),
        "names the lost host: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("slipway"),
        "says what to run: {}",
        run.stderr
    );
    assert_eq!(s.current(0).as_deref(), Some(v1.as_str()));
    assert_eq!(s.current(2).as_deref(), Some(v1.as_str()));
    // While it is down, status still shows every host: the lost one named unreachable.
    let status = s.slipway(&["status", "test"]);
    assert_eq!(status.code, 4, "{}", status.all_output());
    let text = status.all_output();
    assert!(
        text.contains(&host) && text.contains("UNREACHABLE"),
        "{text}"
    );
    for i in [0, 2] {
        assert!(text.contains(&s.fleet().host(i).address), "{text}");
    }
    assert!(
        text.contains(&v1),
        "the reachable hosts' release is shown: {text}"
    );
    s.fleet_mut().start_host(1);
    let row = observe_and_recover(&s, "sshd of host 2 killed after its switch", run.code);
    print_table("a host lost mid-deploy", &[row]);
}

/// A rolling rollout (one host per batch, each gated): the third host's sshd dies while
/// the first batch is being switched. The rollout stops at the lost host, the switched
/// hosts go back, the lost host is named; once it is back, one deploy recovers.
#[test]
fn a_host_whose_sshd_dies_between_two_switches_of_a_rolling_rollout_is_named_and_recoverable() {
    let mut s = Scenario::new()
        .hosts(3)
        .build_hook("bin/build")
        .restart_hook("true");
    s.extra = "\n[rollout]\nstrategy = \"rolling\"\nbatch = 1\n\n[health]\ncommand = \"true\"\nwindow = \"300ms\"\ninterval = \"100ms\"\nmin_samples = 2\n".into();
    let v1 = s.deploy_ok();
    s.app_file("index.html", "v2");
    let mut child = s.spawn_with_fault(&["deploy", "test"], "deploy.after-switch:sleep=2s");
    let err = Stderr::collect(&mut child);
    // The first batch is switched (host 1 of 3): kill the last host before its turn.
    err.wait_for("fault point deploy.after-switch: sleeping");
    s.fleet_mut().stop(2);
    let run = err.finish(child);
    let lost = s.fleet().host(2).address.clone();
    assert_ne!(run.code, 0, "{}", run.all_output());
    assert!(
        run.stderr.contains(&lost),
        "names the lost host: {}",
        run.stderr
    );
    // The hosts it could reach are back on v1.
    for i in [0, 1] {
        assert_eq!(s.current(i).as_deref(), Some(v1.as_str()), "host {i}");
    }
    s.fleet_mut().start_host(2);
    let row = observe_and_recover(
        &s,
        "sshd of host 3 killed between two switches of a rolling rollout",
        run.code,
    );
    print_table("a host lost between two switches of a rollout", &[row]);
}

/// Unmounts the tmpfs when the test ends, even by a panic.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_disk_during_upload_fails_cleanly_naming_the_host() {
    let mut s = Scenario::new().hosts(2).build_hook("bin/build");
    // Host 2's /srv becomes an 8 MB tmpfs: mounted on its directory before it starts,
    // so its mount namespace sees it as /srv.
    s.fleet_mut().stop(1);
    let srv = s.fleet().host(1).srv();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&srv)
        .status()
        .expect("mount");
    assert!(status.success(), "mount a tmpfs on {}", srv.display());
    let _guard = Tmpfs(srv);
    s.fleet_mut().start_host(1);
    let v1 = s.deploy_ok();
    let big: String = (0..12 * 1024 * 1024)
        .map(|i: u32| char::from(b'a' + (i.wrapping_mul(2654435761) >> 27) as u8 % 26))
        .collect();
    s.app_file("big.bin", &big);
    let run = s.deploy();
    let host = s.fleet().host(1).address.clone();
    assert_eq!(run.code, 1, "{}", run.all_output());
    assert!(
        run.stderr.contains(&host) && run.stderr.contains("No space left on device"),
        "names the host and the cause: {}",
        run.stderr
    );
    s.assert_current_everywhere(&v1);
    s.assert_no_partial_and_no_lock();
    assert_sound(&s, "disk full");
    std::fs::remove_file(s.dir().join("app/big.bin")).expect("rm");
    let row = observe_and_recover(&s, "disk full on host 2 during upload", run.code);
    print_table("disk full", &[row]);
}

/// Thaws a frozen host when the test ends, even by a panic.
struct Frozen<'a>(&'a Scenario, usize);

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        self.0.fleet().thaw(self.1);
    }
}

#[test]
fn a_stalled_connection_is_cut_by_the_step_timeout_naming_host_and_step() {
    let (mut s, v1) = deployed(2);
    s.extra = "[timeouts]\ncommand = \"3s\"\n".into();
    s.app_file("index.html", "v2");
    let mut child = s.spawn_with_fault(&["deploy", "test"], "deploy.before-switch:sleep=2s");
    let err = Stderr::collect(&mut child);
    err.wait_for("fault point deploy.before-switch: sleeping");
    let frozen = Frozen(&s, 1);
    s.fleet().freeze(1);
    let started = Instant::now();
    let run = err.finish(child);
    let took = started.elapsed();
    let host = s.fleet().host(1).address.clone();
    // 2 s of sleep left at most, then the switch (3 s) and the switch-back (3 s) time out.
    assert!(
        took < Duration::from_secs(15),
        "the stalled host was cut off in {took:?}"
    );
    assert_eq!(run.code, 4, "{}", run.all_output());
    assert!(
        run.stderr.contains(&host)
            && run.stderr.contains("switch")
            && run.stderr.contains("no answer within 3s"),
        "names host, step and timeout: {}",
        run.stderr
    );
    assert_eq!(
        s.current(0).as_deref(),
        Some(v1.as_str()),
        "host 1 switched back"
    );
    drop(frozen);
    // The stalled host wakes up: whatever it carries out late, the next deploy recovers.
    std::thread::sleep(Duration::from_secs(1));
    let row: Outcome = observe_and_recover(&s, "host 2 stalled during the switch", run.code);
    print_table("network stall", &[row]);
    println!("stalled deploy ended after {took:?} (command timeout 3s)");
}

/// The last step of a deploy (its audit record and unlock) fails on one host: its sshd
/// dies while the deployer is about to finish. The deploy is live everywhere, yet it is
/// not a plain success: exit 4 naming the host. The lock left on that host is taken over
/// by the next deploy without `slipway unlock`, even from another machine: that run's
/// audit record on the other hosts proves it finished.
#[test]
fn a_deploy_whose_last_step_fails_on_one_host_exits_4_naming_it_and_the_next_run_takes_its_lock_over()
 {
    let (mut s, v1) = deployed(3);
    s.app_file("index.html", "v2");
    let mut child = s.spawn_with_fault(&["deploy", "test"], "deploy.before-unlock:sleep=3s");
    let err = Stderr::collect(&mut child);
    err.wait_for("fault point deploy.before-unlock: sleeping");
    s.fleet_mut().stop(1);
    let run = err.finish(child);
    let lost = s.fleet().host(1).address.clone();
    assert_eq!(run.code, 4, "{}", run.all_output());
    assert!(
        run.stderr.contains(&lost)
            && run
                .stderr
                .contains("final step (audit record and unlock) failed"),
        "names the host and the step: {}",
        run.stderr
    );
    let v2 = s.current(0).expect("a release");
    assert_ne!(v2, v1);
    assert_eq!(s.current(2).as_deref(), Some(v2.as_str()));
    s.fleet_mut().start_host(1);
    // Switched before its sshd died; its lock and the missing record are what is left.
    assert_eq!(s.current(1).as_deref(), Some(v2.as_str()));
    let status = s.slipway(&["status", "test"]);
    assert!(
        status
            .stdout
            .lines()
            .any(|l| l.starts_with(lost.as_str()) && l.contains("locked by")),
        "status shows the lock left on the lost host: {}",
        status.all_output()
    );
    let owner = s.app_path(1, ".slipway/lock/owner.json");
    let record = fs::read_to_string(&owner).expect("the lock is left on the lost host");
    // As if that run had been on another machine (a CI runner): its process cannot be
    // checked from here, only its record on the other hosts.
    let mut info: serde_json::Value = serde_json::from_str(record.trim()).unwrap();
    info["machine"] = "ci-runner-elsewhere".into();
    fs::write(&owner, format!("{info}\n")).unwrap();

    let merged = s.slipway(&["log", "test"]).ok();
    assert!(
        merged.stdout.contains(&format!("MISSING on {lost}")),
        "the merged log says host 1 lacks the deploy's record: {}",
        merged.stdout
    );
    s.app_file("index.html", "v3");
    let next = s.deploy().ok();
    assert!(
        next.stderr.contains("taking over the deploy lock of")
            && next.stderr.contains("that run has finished"),
        "{}",
        next.stderr
    );
    let v3 = next.release_id();
    let record = s.audit(0).pop().expect("the deploy's record");
    assert!(
        record["took_over"]
            .as_str()
            .is_some_and(|t| t.contains(&lost) && t.contains("that run had finished")),
        "the deploy's record says whose lock it took over: {record}"
    );
    s.assert_current_everywhere(&v3);
    s.assert_no_partial_and_no_lock();
    // Every host's chain is intact: the lost record is missing, not torn out.
    s.slipway(&["log", "--verify", "test"]).ok();
    print_table(
        "the last step failing on one host",
        &[Outcome {
            fault: "sshd of host 2 killed before the last step".into(),
            run: run.code,
            status: status.code,
            lock: "left on host 2",
            recovery: "deploy (takes the finished run's lock over)".into(),
        }],
    );
}
