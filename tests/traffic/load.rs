//! Zero failed requests under continuous load through a whole rollout and its
//! promotion, through an abort and through a rollback; the slot left is stopped only
//! after its in-flight requests finished.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::harness::{SITE, Traffic, app_config, get};

/// A bounded load: `threads` clients, each a new connection per request with its own
/// cookie, until stopped (at most 90 s or 200,000 requests).
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    handles: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(addr: &str, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let handles = (0..threads)
            .map(|n| {
                let (stop, sent, failures) = (stop.clone(), sent.clone(), failures.clone());
                let addr = addr.to_string();
                std::thread::spawn(move || {
                    let mut i = 0u64;
                    while !stop.load(Ordering::SeqCst)
                        && started.elapsed() < Duration::from_secs(90)
                        && sent.load(Ordering::SeqCst) < 200_000
                    {
                        i += 1;
                        let cookie = format!("uid=load-{n}-{}", i % 5000);
                        sent.fetch_add(1, Ordering::SeqCst);
                        match get(&addr, "/", &[("Cookie", &cookie)]) {
                            Ok((200, body)) if body.starts_with('v') => {}
                            Ok((code, body)) => failures
                                .lock()
                                .unwrap()
                                .push(format!("status {code}: {body}")),
                            Err(e) => failures.lock().unwrap().push(e),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            sent,
            failures,
            handles,
        }
    }

    /// Stops the clients; returns (requests sent, failures).
    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.handles {
            h.join().expect("load thread");
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.sent.load(Ordering::SeqCst), failures)
    }
}

/// A response (or why there was none) and when it came.
type Answered = (Result<(u16, String), String>, Instant);

/// A slow request pinned to a slot, started now, answered later.
fn slow(addr: &str, pin: &'static str, seconds: u32) -> JoinHandle<Answered> {
    let addr = addr.to_string();
    std::thread::spawn(move || {
        let r = get(
            &addr,
            &format!("/slow?s={seconds}"),
            &[("X-Slipway-Slot", pin)],
        );
        (r, Instant::now())
    })
}

fn assert_no_failures(what: &str, sent: usize, failures: &[String]) {
    assert!(sent > 200, "{what}: only {sent} requests were sent");
    assert!(
        failures.is_empty(),
        "{what}: {} of {sent} requests failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    eprintln!("{what}: {sent} requests, 0 failed");
}

#[test]
fn a_rollout_its_promotion_an_abort_and_a_rollback_fail_no_request() {
    let mut t = Traffic::start(1);
    t.extra = app_config("manual");
    t.ok(&["deploy", "test"]);
    t.install_site(0, SITE);
    let addr = t.address(0);

    // v2 through 10 %, 50 %, 100 % and promotion under load.
    t.write_app("v2", None);
    let load = Load::start(&addr, 4);
    std::thread::sleep(Duration::from_millis(300));
    t.ok(&["deploy", "test"]);
    t.ok(&["rollout", "promote", "test"]);
    // A slow request on the old slot (v1), in flight while promotion moves everyone.
    let in_flight = slow(&addr, "stable", 3);
    std::thread::sleep(Duration::from_millis(300));
    let promoting = Instant::now();
    let done = t.ok(&["rollout", "promote", "test"]);
    let promoted = Instant::now();
    assert!(done.stdout.contains("done"), "{}", done.all());
    let (answer, answered) = in_flight.join().expect("slow request");
    assert_eq!(
        answer,
        Ok((200, "v1".to_string())),
        "the in-flight request to the old slot"
    );
    assert!(
        answered <= promoted,
        "promotion returned {:?} after it started, before the old slot's in-flight request ended",
        promoted - promoting
    );
    assert!(
        !t.slot_running(0, "a"),
        "the old slot's instance is stopped"
    );
    let stops =
        std::fs::read_to_string(t.fleet.host(0).path("/srv/app/slots/a.stops")).unwrap_or_default();
    assert_eq!(stops.lines().count(), 1, "slot a stopped once: {stops}");
    std::thread::sleep(Duration::from_millis(300));
    let (sent, failures) = load.finish();
    assert_no_failures("rollout and promotion", sent, &failures);
    assert_eq!(get(&addr, "/", &[]).map(|r| r.1), Ok("v2".to_string()));

    // v3 to 10 %, then aborted under load: everyone back on v2, v3's instance stopped
    // only after its in-flight request ended.
    t.write_app("v3", None);
    let load = Load::start(&addr, 4);
    std::thread::sleep(Duration::from_millis(300));
    t.ok(&["deploy", "test"]);
    assert_eq!(t.header_value(0, "canary").as_deref(), Some("a"));
    let in_flight = slow(&addr, "canary", 3);
    std::thread::sleep(Duration::from_millis(300));
    let aborted = t.ok(&["rollout", "abort", "test"]);
    let aborted_at = Instant::now();
    let (answer, answered) = in_flight.join().expect("slow request");
    assert_eq!(
        answer,
        Ok((200, "v3".to_string())),
        "the in-flight request to the canary"
    );
    assert!(
        answered <= aborted_at,
        "abort returned before the canary's in-flight request ended: {}",
        aborted.all()
    );
    assert!(!t.slot_running(0, "a"), "the canary's instance is stopped");
    assert!(t.slot_running(0, "b"));
    std::thread::sleep(Duration::from_millis(300));
    let (sent, failures) = load.finish();
    assert_no_failures("abort", sent, &failures);
    assert_eq!(t.header_value(0, "canary").as_deref(), Some("-"));
    assert_eq!(
        get(&addr, "/", &[("X-Slipway-Slot", "canary")]).map(|r| r.1),
        Ok("v2".to_string())
    );

    // `slipway rollback` under load: v1 starts in the free slot, takes everyone, v2's
    // slot drains (a slow request on it finishes) and stops.
    let load = Load::start(&addr, 4);
    std::thread::sleep(Duration::from_millis(300));
    let in_flight = slow(&addr, "stable", 2);
    std::thread::sleep(Duration::from_millis(200));
    let back = t.ok(&["rollback", "test"]);
    let (answer, _) = in_flight.join().expect("slow request");
    assert_eq!(
        answer,
        Ok((200, "v2".to_string())),
        "the in-flight request to the slot left"
    );
    std::thread::sleep(Duration::from_millis(300));
    let (sent, failures) = load.finish();
    assert_no_failures("rollback", sent, &failures);
    assert!(back.stdout.contains("rolled back"), "{}", back.all());
    assert_eq!(get(&addr, "/", &[]).map(|r| r.1), Ok("v1".to_string()));
    assert!(t.slot_running(0, "a"));
    assert!(!t.slot_running(0, "b"), "the slot left is stopped");
}
