use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::scenario::Scenario;

/// A reader resolving `current` in a tight loop while `current` is switched 200 times
/// never finds it missing or dangling.
#[test]
fn two_hundred_switches_are_never_observed_half_done() {
    let s = Scenario::new().hosts(1);
    s.app_file("index.html", "A");
    let a = s.deploy_ok();
    s.app_file("index.html", "B");
    let b = s.deploy_ok();

    let probe_path = s.app_path(0, "current/index.html");
    let stop = Arc::new(AtomicBool::new(false));
    let probes = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let reader = {
        let (stop, probes, failures) = (stop.clone(), probes.clone(), failures.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match std::fs::read_to_string(&probe_path) {
                    Ok(text) if text == "A" || text == "B" => {}
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                probes.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    for n in 0..200 {
        let target = if n % 2 == 0 { &a } else { &b };
        s.rollback(&["--to", target]).ok();
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    let (probes, failures) = (
        probes.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed),
    );
    println!("atomic switch: 200 switches, {probes} probes of current/, {failures} failures");
    assert!(probes > 1000, "the reader ran ({probes} probes)");
    assert_eq!(
        failures, 0,
        "{failures} of {probes} probes saw no valid current"
    );
    s.assert_current_everywhere(&b);
}
