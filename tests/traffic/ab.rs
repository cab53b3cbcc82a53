//! `[rollout] strategy = "ab"`: two releases on fixed cohorts of users for a set time,
//! compared on the real nginx's access log; the report gives both cohorts' numbers, the
//! tests' results and the winner; `rollout promote` (or `winner = "auto"`) makes the
//! winner stable and every request lands on it afterwards.

use std::fs;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::harness::{Run, SITE, Traffic, app_config, get};

/// An A/B rollout of `duration`, with the access-log gate's reading interval and test
/// thresholds (at least 100 requests per cohort, alpha 0.05); a new cohort answering
/// 5xx to more than half its requests in 2 readings in a row stops the test.
fn config(duration: &str, winner: &str) -> String {
    let canary = "strategy = \"canary\"\nsteps = [10, 50, 100]\npause = \"0s\"\n";
    let base = app_config("0s");
    assert!(base.contains(canary), "the harness's [rollout] changed");
    format!(
        "{}\n[gate]\ninterval = \"1s\"\nmin_requests = 100\nalpha = 0.05\nmax_error_rate = 0.5\nmax_consecutive_failures = 2\n",
        base.replace(
            canary,
            &format!(
                "strategy = \"ab\"\nsplit = 50\nduration = \"{duration}\"\nwinner = \"{winner}\"\n"
            )
        )
    )
}

/// A steady, bounded load on loopback: `threads` clients, a new connection per request,
/// each with its own cookie, until stopped (at most 150 s or 60,000 requests). Failed
/// requests are kept, to be judged by the test.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    failed: Arc<std::sync::Mutex<Vec<String>>>,
    handles: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(addr: &str, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let started = Instant::now();
        let handles = (0..threads)
            .map(|n| {
                let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
                let addr = addr.to_string();
                std::thread::spawn(move || {
                    let mut i = 0u64;
                    while !stop.load(Ordering::SeqCst)
                        && started.elapsed() < Duration::from_secs(150)
                        && sent.load(Ordering::SeqCst) < 60_000
                    {
                        i += 1;
                        let cookie = format!("uid=ab-{n}-{}", i % 3000);
                        sent.fetch_add(1, Ordering::SeqCst);
                        match get(&addr, "/", &[("Cookie", &cookie)]) {
                            Ok((200, _)) => {}
                            // The release under test may answer 500 on purpose.
                            Ok((500, body)) if body == "injected failure" => {}
                            Ok((code, body)) => {
                                failed.lock().unwrap().push(format!("{code}: {body}"))
                            }
                            Err(e) => failed.lock().unwrap().push(e),
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        Load {
            stop,
            sent,
            failed,
            handles,
        }
    }

    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.handles {
            h.join().expect("load thread");
        }
        let failed = self.failed.lock().unwrap().clone();
        (self.sent.load(Ordering::SeqCst), failed)
    }
}

/// The A/B results a `--json` run reported (`data.ab` of its info events).
fn ab_events(run: &Run) -> Vec<serde_json::Value> {
    run.stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "info")
        .filter_map(|e| {
            e["data"]
                .get("ab")
                .map(|ab| serde_json::json!({ "ab": ab, "message": e["message"] }))
        })
        .collect()
}

/// Which slot nginx sends each key to (its own answer, `/slot`).
fn slots_of(t: &Traffic, keys: &[String]) -> Vec<String> {
    keys.iter()
        .map(|k| {
            let cookie = format!("uid={k}");
            let (code, body) = get(&t.address(0), "/slot", &[("Cookie", &cookie)])
                .unwrap_or_else(|e| panic!("GET /slot for {k}: {e}"));
            assert_eq!(code, 200, "{k}: {body}");
            body
        })
        .collect()
}

/// Many requests, with different keys (and some with none: split by address): every
/// one is answered by `version`.
fn every_request_served_by(t: &Traffic, version: &str) {
    let mut others = Vec::new();
    for i in 0..400 {
        let cookie = format!("uid=after-{i}");
        let headers: &[(&str, &str)] = if i % 20 == 0 {
            &[]
        } else {
            &[("Cookie", &cookie)]
        };
        match get(&t.address(0), "/", headers) {
            Ok((200, body)) if body == version => {}
            other => others.push(format!("{cookie}: {other:?}")),
        }
    }
    assert!(
        others.is_empty(),
        "{} of 400 requests not served by {version}: {:?}",
        others.len(),
        &others[..others.len().min(10)]
    );
}

fn release_record(t: &Traffic, id: &str) -> serde_json::Value {
    let p = t
        .fleet
        .host(0)
        .path(&format!("/srv/app/releases/{id}/.slipway/release.json"));
    let text = fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(text.trim()).expect("release.json")
}

/// The acceptance run: 60 s, half the users on a release twice as slow. The report
/// names both cohorts' numbers, both tests and the stable release as the winner; the
/// cohorts stay fixed during the test; `rollout promote` keeps the stable release and
/// every request lands on it.
#[test]
fn a_sixty_second_test_finds_the_slower_release_and_promote_keeps_the_winner() {
    let mut t = Traffic::start(1);
    t.extra = config("60s", "manual");
    t.app_file("DELAY_MS", "20");
    let first = t.ok(&["deploy", "test"]);
    assert!(
        !first.all().contains("A/B test:"),
        "a first deploy has nothing to compare: {}",
        first.all()
    );
    t.install_site(0, SITE);
    let load = Load::start(&t.address(0), 4);

    t.write_app("v2", None);
    t.app_file("DELAY_MS", "40");
    let out = t.dir.path().join("deploy.out");
    let err = t.dir.path().join("deploy.err");
    let started = Instant::now();
    let mut child = t
        .command(&["--json", "deploy", "test"])
        .stdout(Stdio::from(fs::File::create(&out).unwrap()))
        .stderr(Stdio::from(fs::File::create(&err).unwrap()))
        .spawn()
        .expect("run slipway");
    // Fixed cohorts: once the split is in force, the same keys land on the same slots
    // near the test's start and near its end.
    let keys: Vec<String> = (0..200).map(|i| format!("cohort-{i}")).collect();
    let mut early = None;
    let status = loop {
        if early.is_none() && t.header_value(0, "percent").as_deref() == Some("50") {
            std::thread::sleep(Duration::from_secs(2));
            early = Some((Instant::now(), slots_of(&t, &keys)));
        }
        if let Some((at, _)) = &early
            && at.elapsed() > Duration::from_secs(45)
            && t.header_value(0, "percent").as_deref() == Some("50")
        {
            break None;
        }
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (_, early) = early.expect("the 50% split was never seen in the include");
    let late = slots_of(&t, &keys);
    assert_eq!(early, late, "a user changed cohort during the test");
    for slot in ["a", "b"] {
        assert!(
            early.iter().any(|s| s == slot),
            "both cohorts have users: {early:?}"
        );
    }
    let status = match status {
        Some(s) => s,
        None => child.wait().expect("slipway"),
    };
    let took = started.elapsed();
    let run = Run {
        code: status.code().unwrap_or(-1),
        stdout: fs::read_to_string(&out).unwrap_or_default(),
        stderr: fs::read_to_string(&err).unwrap_or_default(),
    };
    assert_eq!(run.code, 0, "{}", run.all());
    let events = ab_events(&run);
    assert_eq!(events.len(), 1, "one A/B result: {events:?}");
    let ab = &events[0]["ab"];
    let message = events[0]["message"].as_str().unwrap_or_default();
    eprintln!("deploy with a 60 s A/B test took {took:?}:\n{message}");
    assert!(ab["watched_secs"].as_f64().unwrap() >= 60.0, "{ab}");
    for cohort in ["new", "stable"] {
        let n = &ab[cohort];
        assert!(n["requests"].as_u64().unwrap() >= 100, "{cohort}: {ab}");
        assert_eq!(n["rate_5xx"].as_f64(), Some(0.0), "{cohort}: {ab}");
        assert!(n["rate_4xx"].as_f64().is_some(), "{cohort}: {ab}");
        for p in ["p50_ms", "p95_ms", "p99_ms"] {
            assert!(n[p].as_u64().is_some(), "{cohort} {p}: {ab}");
        }
    }
    assert!(
        ab["new"]["p50_ms"].as_u64() > ab["stable"]["p50_ms"].as_u64(),
        "{ab}"
    );
    assert_eq!(ab["tests"]["errors_p"].as_f64(), Some(1.0), "{ab}");
    assert!(ab["tests"]["latency_p"].as_f64().unwrap() < 0.001, "{ab}");
    assert!(
        ab["tests"]["latency_p_new_slower"].as_f64().unwrap() < 0.001,
        "{ab}"
    );
    assert_eq!(
        (&ab["winner"], &ab["basis"]),
        (&"stable".into(), &"latency".into()),
        "{ab}"
    );
    for needle in [
        "A/B test over 6",
        "50% of users on the new release",
        "  new    ",
        "  stable ",
        "requests, 5xx 0.0%, 4xx 0.0%, p50 ",
        " p95 ",
        " p99 ",
        "5xx rates: two-proportion z-test, two-sided",
        "latency: Mann-Whitney U, two-sided, p = <0.0001",
        "each test at alpha/2 = 0.025 (alpha 0.05)",
        "winner: the stable release",
        "the stable release is faster",
    ] {
        assert!(
            message.contains(needle),
            "missing {needle:?} in:\n{message}"
        );
    }
    let new_release = ab["new_release"].as_str().unwrap().to_string();
    let new_slot = ab["new_slot"].as_str().unwrap().to_string();
    // Paused at the result, still split, recorded on the hosts and in the audit log.
    let result = run
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "result")
        .expect("a result");
    assert_eq!(result["data"]["result"]["paused"], true, "{result}");
    assert_eq!(
        result["data"]["result"]["ab"]["winner"], "stable",
        "{result}"
    );
    assert_eq!(t.header_value(0, "percent").as_deref(), Some("50"));
    let status = t.ok(&["rollout", "status", "test"]);
    for needle in [
        "A/B test over",
        "winner: the stable release",
        "Mann-Whitney",
    ] {
        assert!(
            status.stdout.contains(needle),
            "{needle:?}: {}",
            status.stdout
        );
    }
    let audit = t.audit(0);
    let record = audit
        .iter()
        .find(|r| r["action"] == "ab-test")
        .unwrap_or_else(|| panic!("no ab-test record in {audit:?}"));
    assert_eq!(record["result"], "stable", "{record}");
    assert!(
        record["message"]
            .as_str()
            .is_some_and(|m| m.contains("  new ") && m.contains("  stable ")),
        "{record}"
    );

    // Promote: the winner (the stable release) stays; every request lands on it.
    let promoted = t.ok(&["rollout", "promote", "test"]);
    assert!(
        promoted
            .all()
            .contains("the stable release won, so it stays"),
        "{}",
        promoted.all()
    );
    let (sent, failed) = load.finish();
    eprintln!("load: {sent} requests, {} failed", failed.len());
    assert!(
        failed.is_empty(),
        "requests failed: {:?}",
        &failed[..failed.len().min(10)]
    );
    every_request_served_by(&t, "v1");
    assert_eq!(t.header_value(0, "canary").as_deref(), Some("-"));
    assert!(
        !t.slot_running(0, &new_slot),
        "the loser's instance is stopped"
    );
    let loser = release_record(&t, &new_release);
    assert_eq!(loser["state"], "rolled-back", "{loser}");
    assert!(
        loser["note"]
            .as_str()
            .is_some_and(|n| n.contains("won the A/B test")),
        "{loser}"
    );
}

/// `winner = "auto"`, short tests: a faster release wins and is promoted at once (the
/// release it replaced stays the rollback target, noted as the loser); then a release
/// failing a fifth of its requests loses on errors and everyone goes back to the stable
/// one, with the deploy's exit code 1; one failing most requests stops its test early.
/// Then `winner = "manual"`: a faster release's deploy pauses and `rollout promote`
/// makes it stable.
#[test]
fn short_tests_promote_a_faster_release_and_keep_the_stable_one_over_a_failing_one() {
    let mut t = Traffic::start(1);
    t.extra = config("8s", "auto");
    t.app_file("DELAY_MS", "30");
    t.ok(&["deploy", "test"]);
    t.install_site(0, SITE);
    let old_release = t.header_value(0, "stable_release");
    let load = Load::start(&t.address(0), 4);

    t.write_app("v2", None);
    t.app_file("DELAY_MS", "10");
    let started = Instant::now();
    let run = t.slipway(&["--json", "deploy", "test"]);
    eprintln!("auto, faster release: {:?}", started.elapsed());
    assert_eq!(run.code, 0, "{}", run.all());
    let events = ab_events(&run);
    assert_eq!(events.len(), 1, "{events:?}");
    let ab = &events[0]["ab"];
    eprintln!("{}", events[0]["message"].as_str().unwrap_or_default());
    assert_eq!(
        (&ab["winner"], &ab["basis"]),
        (&"new".into(), &"latency".into()),
        "{ab}"
    );
    assert!(
        ab["tests"]["latency_p_new_faster"].as_f64().unwrap() < 0.001,
        "{ab}"
    );
    every_request_served_by(&t, "v2");
    let stable_slot = ab["stable_slot"].as_str().unwrap().to_string();
    assert!(
        !t.slot_running(0, &stable_slot),
        "the loser's instance is stopped"
    );
    let v1 = ab["stable_release"]
        .as_str()
        .expect("the stable release")
        .to_string();
    if let Some(id) = &old_release {
        assert_eq!(id, &v1);
    }
    let loser = release_record(&t, &v1);
    assert_eq!(loser["state"], "ready", "still a rollback target: {loser}");
    assert!(
        loser["note"]
            .as_str()
            .is_some_and(|n| n.starts_with("lost the A/B test to ")),
        "{loser}"
    );

    // A release failing a fifth of its requests: the stable one wins on errors.
    t.write_app("v3", None);
    t.app_file("DELAY_MS", "10");
    t.app_file("ERROR_RATE", "0.2");
    let run = t.slipway(&["--json", "deploy", "test"]);
    assert_eq!(run.code, 1, "{}", run.all());
    let events = ab_events(&run);
    assert_eq!(events.len(), 1, "{events:?}");
    let ab = &events[0]["ab"];
    eprintln!("{}", events[0]["message"].as_str().unwrap_or_default());
    assert_eq!(
        (&ab["winner"], &ab["basis"]),
        (&"stable".into(), &"errors".into()),
        "{ab}"
    );
    assert!(ab["tests"]["errors_p"].as_f64().unwrap() < 0.001, "{ab}");
    let rate = ab["new"]["rate_5xx"].as_f64().unwrap();
    assert!((0.1..0.3).contains(&rate), "{ab}");
    assert!(
        run.all().contains("A/B test, winner: the stable release"),
        "{}",
        run.all()
    );
    every_request_served_by(&t, "v2");
    let v3 = ab["new_release"].as_str().unwrap();
    assert_eq!(release_record(&t, v3)["state"], "failed");
    assert!(!t.slot_running(0, ab["new_slot"].as_str().unwrap()));

    // Failing 80 % of its requests (above [gate] max_error_rate = 0.5): the test stops
    // after two readings instead of serving its cohort for the whole duration.
    t.write_app("v4", None);
    t.app_file("ERROR_RATE", "0.8");
    let started = Instant::now();
    let run = t.slipway(&["--json", "deploy", "test"]);
    let took = started.elapsed();
    let (sent, failed) = load.finish();
    eprintln!("load: {sent} requests, {} failed", failed.len());
    assert_eq!(run.code, 1, "{}", run.all());
    let events = ab_events(&run);
    assert_eq!(events.len(), 1, "{events:?}");
    let ab = &events[0]["ab"];
    eprintln!(
        "guard, deploy {took:?}: {}",
        events[0]["message"].as_str().unwrap_or_default()
    );
    assert_eq!(
        (&ab["winner"], &ab["basis"]),
        (&"stable".into(), &"guard".into()),
        "{ab}"
    );
    assert!(
        ab["watched_secs"].as_f64().unwrap() < 7.0,
        "stopped early: {ab}"
    );
    assert!(
        run.all()
            .contains("A/B test stopped, winner: the stable release"),
        "{}",
        run.all()
    );
    every_request_served_by(&t, "v2");
    assert!(
        failed.is_empty(),
        "requests failed: {:?}",
        &failed[..failed.len().min(10)]
    );

    // winner = "manual" and a faster release: the deploy pauses with the result, and
    // `rollout promote` makes the new release stable.
    t.extra = config("8s", "manual");
    let load = Load::start(&t.address(0), 4);
    t.write_app("v5", None);
    let run = t.ok(&["--json", "deploy", "test"]);
    let events = ab_events(&run);
    assert_eq!(events.len(), 1, "{events:?}");
    let ab = &events[0]["ab"];
    eprintln!("{}", events[0]["message"].as_str().unwrap_or_default());
    assert_eq!(ab["winner"], "new", "{ab}");
    assert_eq!(t.header_value(0, "percent").as_deref(), Some("50"));
    let promoted = t.ok(&["rollout", "promote", "test"]);
    let (sent, failed) = load.finish();
    eprintln!("load: {sent} requests, {} failed", failed.len());
    let live = format!("done: {} is live", ab["new_release"].as_str().unwrap());
    assert!(promoted.all().contains(&live), "{}", promoted.all());
    every_request_served_by(&t, "v5");
    assert!(!t.slot_running(0, ab["stable_slot"].as_str().unwrap()));
    let v2 = release_record(&t, ab["stable_release"].as_str().unwrap());
    assert!(
        v2["note"]
            .as_str()
            .is_some_and(|n| n.starts_with("lost the A/B test to ")),
        "{v2}"
    );
    assert!(
        failed.is_empty(),
        "requests failed: {:?}",
        &failed[..failed.len().min(10)]
    );
}
