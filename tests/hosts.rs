#[path = "support/hosts.rs"]
mod hosts;

use hosts::Fleet;
use std::process::Command;
use std::time::Instant;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn three_hosts_have_separate_srv() {
    let fleet = Fleet::start(3);
    assert_eq!(fleet.hosts().len(), 3);
    let addrs: std::collections::HashSet<_> = fleet
        .hosts()
        .iter()
        .map(|h| (h.address.clone(), h.port))
        .collect();
    assert_eq!(addrs.len(), 3);
    for h in fleet.hosts() {
        assert_ne!(h.address, "127.0.0.1");
    }
    assert_eq!(fleet.user(), "root");

    let out = fleet.ssh(1, "echo hi > /srv/marker && hostname >/dev/null && echo ok");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    assert_eq!(
        std::fs::read_to_string(fleet.host(1).path("/srv/marker")).unwrap(),
        "hi\n"
    );
    assert!(!fleet.host(0).path("/srv/marker").exists());
    assert!(!fleet.host(2).path("/srv/marker").exists());
    assert!(
        !std::path::Path::new("/srv/marker").exists(),
        "leaked into the real /srv"
    );

    // Each host sees its own /srv.
    for (i, h) in fleet.hosts().iter().enumerate() {
        std::fs::create_dir_all(h.path("/srv/app")).unwrap();
        std::fs::write(h.path("/srv/app/who"), &h.name).unwrap();
        assert_eq!(fleet.ssh_ok(i, "cat /srv/app/who"), h.name);
    }
    assert_eq!(fleet.host(0).path("/srv"), fleet.host(0).srv());
    assert_eq!(
        fleet.host(0).path("/srv/app/current"),
        fleet.host(0).srv().join("app/current")
    );

    // The alias in the ssh config works too, and sftp is there.
    let out = Command::new("ssh")
        .arg("-F")
        .arg(fleet.ssh_config())
        .arg("host3")
        .arg("cat /srv/app/who")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "host3");
    let out = Command::new("sftp")
        .arg("-F")
        .arg(fleet.ssh_config())
        .arg("-b")
        .arg("-")
        .arg("host1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"ls /srv\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "sftp: {}", stderr(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("marker"));
}

#[test]
#[should_panic(expected = "is not under /srv")]
fn path_outside_srv_panics() {
    let fleet = Fleet::start(1);
    fleet.host(0).path("/etc/passwd");
}

#[test]
fn stop_and_start_again() {
    let mut fleet = Fleet::start(2);
    fleet.ssh_ok(0, "echo before > /srv/state");
    // A long-running session and a daemon started from a session must die with the host.
    let mut long = fleet
        .ssh_command(0)
        .arg("sleep 300")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    fleet.ssh_ok(
        0,
        "nohup setsid sleep 301 >/dev/null 2>&1 < /dev/null & echo started",
    );
    // Both running before the host is stopped (on a loaded machine the long session may
    // still be starting 200 ms later).
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let ps = Command::new("pgrep")
            .args(["-fx", "sleep 30[01]"])
            .output()
            .unwrap();
        let running = String::from_utf8_lossy(&ps.stdout).lines().count();
        if running >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the two sleeps did not start within 10 s ({running} running)"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let t = Instant::now();
    fleet.stop(0);
    eprintln!("stop took {:?}", t.elapsed());
    assert!(!fleet.is_running(0));
    let status = long.wait().unwrap();
    assert!(!status.success(), "the live session should have been cut");
    let out = fleet.ssh(0, "true");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Connection refused"),
        "{}",
        stderr(&out)
    );
    // Killed processes may take a moment to be gone from /proc on a loaded machine:
    // survivors are those still there after a few seconds.
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    let survivors = loop {
        let ps = Command::new("pgrep")
            .args(["-af", "sleep 30[01]"])
            .output()
            .unwrap();
        if ps.stdout.is_empty() || Instant::now() > deadline {
            break String::from_utf8_lossy(&ps.stdout).into_owned();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(
        survivors.is_empty(),
        "processes of the stopped host survive: {survivors}"
    );
    // host 2 unaffected
    fleet.ssh_ok(1, "true");

    fleet.start_host(0);
    assert!(fleet.is_running(0));
    assert_eq!(fleet.ssh_ok(0, "cat /srv/state"), "before\n");
}

#[test]
fn forgotten_host_key_fails_strict_checking() {
    let fleet = Fleet::start(2);
    let strict = |i: usize| {
        fleet
            .ssh_command(i)
            .args(["-o", "StrictHostKeyChecking=yes", "true"])
            .output()
            .unwrap()
    };
    assert!(strict(0).status.success());
    fleet.forget_host_key(0);
    let out = strict(0);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("Host key verification failed")
            || err.contains("No ED25519 host key is known"),
        "{err}"
    );
    eprintln!("forgotten key: {err}");
    assert!(strict(1).status.success());
    // The default (no StrictHostKeyChecking in the file) + BatchMode refuses too.
    assert!(!fleet.ssh(0, "true").status.success());
    fleet.trust_all_host_keys();
    assert!(strict(0).status.success());
}

#[test]
fn changed_host_key_fails() {
    let mut fleet = Fleet::start(1);
    fleet.ssh_ok(0, "true");
    fleet.change_host_key(0);
    let out = fleet
        .ssh_command(0)
        .args(["-o", "StrictHostKeyChecking=yes", "true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            || err.contains("Host key verification failed"),
        "{err}"
    );
    fleet.trust_all_host_keys();
    fleet.ssh_ok(0, "true");
}

#[test]
fn parallel_fleets_do_not_collide() {
    let handles: Vec<_> = (0..2)
        .map(|t| {
            std::thread::spawn(move || {
                let fleet = Fleet::start(3);
                for i in 0..3 {
                    fleet.ssh_ok(i, &format!("echo fleet{t}-host{i} > /srv/id"));
                }
                for i in 0..3 {
                    assert_eq!(
                        fleet.ssh_ok(i, "cat /srv/id"),
                        format!("fleet{t}-host{i}\n")
                    );
                }
                fleet
                    .hosts()
                    .iter()
                    .map(|h| (h.address.clone(), h.port))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let all: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let unique: std::collections::HashSet<_> = all.iter().collect();
    assert_eq!(unique.len(), all.len());
}

#[test]
fn drop_kills_everything() {
    let fleet = Fleet::start(2);
    let pids: Vec<u32> = (0..2)
        .map(|i| {
            fleet
                .ssh_ok(
                    i,
                    "nohup setsid sleep 302 >/dev/null 2>&1 </dev/null & echo $!",
                )
                .trim()
                .parse()
                .unwrap()
        })
        .collect();
    let dir = fleet.dir().to_path_buf();
    drop(fleet);
    for p in pids {
        // Gone, or a zombie waiting for init to reap it.
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z "),
            "pid {p} survived: {stat}"
        );
    }
    assert!(!dir.exists());
}

/// Fleets starting and stopping in parallel never touch each other's hosts.
#[test]
fn fleets_in_parallel_threads_do_not_collide() {
    let handles: Vec<_> = (0..3)
        .map(|t| {
            std::thread::spawn(move || {
                for round in 0..2 {
                    let mut fleet = Fleet::start(4);
                    eprintln!("thread {t} round {round} started");
                    for i in 0..4 {
                        fleet.ssh_ok(i, &format!("echo {t}-{round}-{i} > /srv/id"));
                    }
                    fleet.stop(2);
                    fleet.start_host(2);
                    for i in 0..4 {
                        assert_eq!(fleet.ssh_ok(i, "cat /srv/id"), format!("{t}-{round}-{i}\n"));
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn login_user_gets_a_clean_home() {
    let fleet = Fleet::start(2);
    let out = fleet.ssh_ok(0, "cd && pwd && ls -A && echo PATH=$PATH && touch ~/mine");
    assert!(!out.contains("pyenv"), "the machine's ~/.bashrc ran: {out}");
    assert!(fleet.host(0).home().join("mine").exists());
    assert!(!fleet.host(1).home().join("mine").exists());
    let real_home = std::env::var("HOME").unwrap();
    assert!(!std::path::Path::new(&real_home).join("mine").exists());
    eprintln!("{out}");
}
