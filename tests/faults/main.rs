//! Fault injection on real sshd hosts: the deployer killed at every step boundary and at
//! random moments, a host's sshd killed between steps, a full disk, a stalled connection,
//! racing deploys and rollbacks. After each fault the hosts must be sound (every
//! `current` a complete release whose files match its manifest), `status` and `check`
//! must tell the truth, and one documented recovery (`slipway unlock` when a dead run
//! left its lock, then `slipway deploy`) must bring every host back to one release.
//!
//! Needs root and sshd, like tests/e2e (run with `scripts/test`). The random kills print
//! their seed; rerun one with `SLIPWAY_FAULT_SEED=N`.

#[path = "../support/hosts.rs"]
mod hosts;
#[allow(dead_code)]
#[path = "../e2e/scenario.rs"]
mod scenario;

mod backups;
mod boundaries;
mod drill;
mod hosts_down;
mod integrity;
mod race;
mod random;
mod security;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use scenario::{Run, Scenario};

/// One row of the faults × outcome table each test prints.
pub struct Outcome {
    pub fault: String,
    /// Exit code of the faulted run (`-9`: SIGKILLed).
    pub run: i32,
    /// Exit code of `slipway status` right after the fault.
    pub status: i32,
    /// Whether `check` reported a lock (and called it stale when its holder was dead).
    pub lock: &'static str,
    /// How the stage was brought back to one release.
    pub recovery: String,
}

pub fn print_table(title: &str, rows: &[Outcome]) {
    println!("\n{title}");
    println!(
        "{:<44} {:>5} {:>7} {:<14} recovery",
        "fault", "run", "status", "lock (check)"
    );
    for r in rows {
        println!(
            "{:<44} {:>5} {:>7} {:<14} {}",
            r.fault, r.run, r.status, r.lock, r.recovery
        );
    }
}

/// A scenario with `n` hosts, a build hook and a restart hook, on release v1.
pub fn deployed(n: usize) -> (Scenario, String) {
    let s = Scenario::new()
        .hosts(n)
        .build_hook("bin/build")
        .restart_hook("true");
    let id = s.deploy_ok();
    (s, id)
}

/// Every host's `current` resolves to a complete release (not a partial upload) whose
/// record says `live` and whose files match its manifest (`sha256sum -c`).
pub fn assert_sound(s: &Scenario, fault: &str) {
    for i in 0..s.host_count() {
        let Some(id) = s.current(i) else {
            panic!("{fault}: host {i} has no current release");
        };
        assert!(
            !id.ends_with(".partial"),
            "{fault}: host {i} current is a partial upload"
        );
        let dir = s.app_path(i, &format!("releases/{id}"));
        assert!(dir.is_dir(), "{fault}: host {i} current -> {id} is missing");
        let states: Vec<String> = s
            .releases(i)
            .iter()
            .map(|r| {
                let st = std::fs::read_to_string(
                    s.app_path(i, &format!("releases/{r}/.slipway/release.json")),
                )
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .map(|v| format!("{} {}", v["state"], v["note"]))
                .unwrap_or_else(|| "-".into());
                format!("{r}: {st}")
            })
            .collect();
        assert_eq!(
            s.state(i, &id),
            "live",
            "{fault}: host {i}: the current release {id} is not recorded as live; releases: {states:#?}"
        );
        let out = Command::new("sha256sum")
            .args(["-c", "--quiet", ".slipway/manifest.sha256"])
            .current_dir(&dir)
            .output()
            .expect("sha256sum");
        assert!(
            out.status.success(),
            "{fault}: host {i}: release {id} does not match its manifest: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

pub fn distinct_currents(s: &Scenario) -> usize {
    let set: std::collections::BTreeSet<_> = (0..s.host_count()).map(|i| s.current(i)).collect();
    set.len()
}

pub fn any_lock(s: &Scenario) -> bool {
    (0..s.host_count()).any(|i| s.app_path(i, ".slipway/lock").exists())
}

/// What `status` and `check` say after a fault, then the documented recovery: `unlock`
/// if a lock is left, then `deploy`. Asserts that status names diverged hosts (exit 4)
/// and that check reports a left lock as stale, with its holder.
pub fn observe_and_recover(s: &Scenario, fault: &str, run: i32) -> Outcome {
    assert_sound(s, fault);
    let status = s.slipway(&["status", "test"]);
    if distinct_currents(s) > 1 {
        assert_eq!(status.code, 4, "{fault}: status\n{}", status.all_output());
        assert!(
            status.all_output().contains("different releases"),
            "{fault}: {}",
            status.all_output()
        );
        for i in 0..s.host_count() {
            let h = s.fleet().host(i);
            assert!(
                status.all_output().contains(&h.address),
                "{fault}: status names every host: {}",
                status.all_output()
            );
        }
    } else {
        assert_eq!(status.code, 0, "{fault}: status\n{}", status.all_output());
    }
    let lock = if any_lock(s) {
        let check = s.slipway(&["check", "test"]);
        let text = check.all_output();
        assert_ne!(
            check.code, 0,
            "{fault}: check passes with a lock left: {text}"
        );
        assert!(
            text.contains("the deploy lock is held by") && text.contains("stale"),
            "{fault}: check names the stale lock and its holder: {text}"
        );
        s.slipway(&["unlock", "test"]).ok();
        "stale, named"
    } else {
        "none"
    };
    s.app_file("version.txt", &format!("after {fault}"));
    let id = s.deploy_ok();
    s.assert_current_everywhere(&id);
    s.assert_no_partial_and_no_lock();
    assert_sound(s, &format!("{fault} (after recovery)"));
    Outcome {
        fault: fault.into(),
        run,
        status: status.code,
        lock,
        recovery: if lock == "none" {
            "deploy".into()
        } else {
            "unlock; deploy".into()
        },
    }
}

/// SIGKILL, then reap (a zombie would still look alive to the stale-lock check).
pub fn kill9(child: &mut Child) -> i32 {
    let _ = child.kill();
    let status = child.wait().expect("wait");
    status.code().unwrap_or(-9)
}

/// Reads a child's stdout lines (the `--json` events) on a thread, with arrival times.
pub fn events(child: &mut Child) -> mpsc::Receiver<(Instant, String)> {
    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for the first event line containing every one of `needles`.
pub fn wait_event(rx: &mpsc::Receiver<(Instant, String)>, needles: &[&str]) -> Option<Instant> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok((at, line)) if needles.iter().all(|n| line.contains(n)) => return Some(at),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

pub fn run_of(child: Child) -> Run {
    let out = child.wait_with_output().expect("wait");
    Run {
        code: out.status.code().unwrap_or(-9),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A child's stderr, collected on a thread so that a test can wait for a line and still
/// read everything at the end.
pub struct Stderr(std::sync::Arc<std::sync::Mutex<String>>);

impl Stderr {
    pub fn collect(child: &mut Child) -> Stderr {
        use std::io::Read;
        let mut err = child.stderr.take().expect("piped stderr");
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = text.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let chunk = String::from_utf8_lossy(&buf[..n]).into_owned();
                sink.lock().expect("lock").push_str(&chunk);
            }
        });
        Stderr(text)
    }

    pub fn wait_for(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.text().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("`{needle}` never appeared on stderr; saw:\n{}", self.text());
    }

    pub fn text(&self) -> String {
        self.0.lock().expect("lock").clone()
    }

    /// Waits for the child and returns its run, stderr included.
    pub fn finish(self, child: Child) -> Run {
        let mut run = run_of(child);
        // The reader thread ends with the pipe; give it a moment to append the tail.
        std::thread::sleep(Duration::from_millis(50));
        run.stderr = self.text();
        run
    }
}
