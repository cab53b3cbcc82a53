//! The deployer SIGKILLed at random moments during the upload and during the switches.
//! The seed is printed; `SLIPWAY_FAULT_SEED=N` replays a run, `SLIPWAY_FAULT_KILLS=N`
//! changes the number of kills per phase (default 20).

use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::{deployed, events, kill9, observe_and_recover, print_table, wait_event};

fn seed() -> u64 {
    std::env::var("SLIPWAY_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random)
}

fn kills() -> usize {
    std::env::var("SLIPWAY_FAULT_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

/// A new 4 MB file, so every deploy uploads something that takes a while.
fn new_payload(s: &crate::scenario::Scenario, rng: &mut StdRng) {
    let text: String = (0..4 * 1024 * 1024)
        .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
        .collect();
    s.app_file("payload.txt", &text);
}

/// Kills a `--json` deploy `delay` after the first event matching `from`.
fn kill_after(s: &crate::scenario::Scenario, from: &[&str], delay: Duration) -> i32 {
    let mut child = s
        .command(&["--json", "-v", "deploy", "test"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let rx = events(&mut child);
    if wait_event(&rx, from).is_none() {
        // The deploy ended before the phase: nothing to kill.
        return child.wait().map(|s| s.code().unwrap_or(-1)).unwrap_or(-1);
    }
    std::thread::sleep(delay);
    let code = kill9(&mut child);
    // A script already running on a host finishes there (a switch ignores the hangup):
    // give it a moment before looking.
    std::thread::sleep(Duration::from_millis(300));
    code
}

/// How long a phase lasts: from its first `started` to the first later event of `until`.
fn measure(s: &crate::scenario::Scenario, from: &[&str], until: &[&str]) -> Duration {
    let mut child = s
        .command(&["--json", "-v", "deploy", "test"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let rx = events(&mut child);
    let start = wait_event(&rx, from).expect("phase start");
    let end = wait_event(&rx, until).expect("phase end");
    let status = child.wait().expect("wait");
    assert!(status.success());
    end - start
}

#[test]
fn the_deployer_killed_at_random_moments_during_upload_and_switch_is_recoverable() {
    let seed = seed();
    println!("random kills: seed {seed} (replay with SLIPWAY_FAULT_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let (s, _) = deployed(2);
    let phases: [(&str, &[&str], &[&str]); 2] = [
        (
            "upload",
            &["\"step\":\"upload\"", "\"started\""],
            &["\"step\":\"upload\"", "\"ok\""],
        ),
        (
            "switch",
            &["\"step\":\"switch\"", "\"started\""],
            &["\"step\":\"restart\"", "\"ok\""],
        ),
    ];
    let mut rows = Vec::new();
    let only = std::env::var("SLIPWAY_FAULT_PHASE").unwrap_or_default();
    for (name, from, until) in phases {
        if !only.is_empty() && only != name {
            continue;
        }
        new_payload(&s, &mut rng);
        let window = measure(&s, from, until).max(Duration::from_millis(5));
        println!("{name} phase lasts about {window:?}");
        for k in 0..kills() {
            new_payload(&s, &mut rng);
            let delay = Duration::from_micros(rng.random_range(0..window.as_micros() as u64));
            let code = kill_after(&s, from, delay);
            rows.push(observe_and_recover(
                &s,
                &format!("SIGKILL {name} +{}ms (#{k})", delay.as_millis()),
                code,
            ));
        }
    }
    print_table(&format!("random kills (seed {seed})"), &rows);
}
