//! Steps are shares of users, sticky per key, and land where slipway's own model of
//! nginx's split says (MurmurHash2, ranges from 0 in order).

use std::collections::BTreeSet;

use slipway::traffic::murmur::lands_on_canary;

use crate::harness::{SITE, Traffic, app_config, get};

/// Which of `keys` nginx sends to slot `canary` (asked through `/slot`, nginx's own answer).
fn on_slot(t: &Traffic, keys: &[String], canary: &str) -> BTreeSet<String> {
    let addr = t.address(0);
    let chunks: Vec<Vec<String>> = keys
        .chunks(keys.len().div_ceil(4))
        .map(|c| c.to_vec())
        .collect();
    let handles: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let addr = addr.clone();
            let canary = canary.to_string();
            std::thread::spawn(move || {
                let mut out = BTreeSet::new();
                for k in chunk {
                    let cookie = format!("uid={k}");
                    let (code, body) = get(&addr, "/slot", &[("Cookie", &cookie)])
                        .unwrap_or_else(|e| panic!("GET /slot for {k}: {e}"));
                    assert_eq!(code, 200, "{k}: {body}");
                    if body == canary {
                        out.insert(k);
                    }
                }
                out
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().expect("client thread"))
        .collect()
}

#[test]
fn steps_by_cookie_are_shares_of_users_that_only_grow() {
    // Two hosts: every host at the same percentage, with the same salt.
    let mut t = Traffic::start(2);
    t.extra = app_config("manual");
    t.ok(&["deploy", "test"]);
    t.install_site(0, SITE);
    t.install_site(1, SITE);
    let addr = t.address(0);
    assert_eq!(get(&addr, "/", &[]).map(|r| r.1), Ok("v1".to_string()));

    t.write_app("v2", None);
    let plan = t.ok(&["rollout", "plan", "test"]);
    assert!(
        plan.stdout.contains("step 1: 10% of users"),
        "{}",
        plan.all()
    );
    let paused = t.ok(&["deploy", "test"]);
    assert!(paused.stdout.contains("10% of users"), "{}", paused.all());
    assert_eq!(t.header_value(0, "percent").as_deref(), Some("10"));
    let canary = t.header_value(0, "canary").expect("a canary slot");
    assert_eq!(canary, "b");
    let salt = t.header_value(0, "salt").expect("a salt");

    let keys: Vec<String> = (0..10_000).map(|i| format!("user-{i:05}")).collect();
    let mut previous: BTreeSet<String> = BTreeSet::new();
    for (step, percent) in [(1, 10.0), (2, 50.0)] {
        if step > 1 {
            t.ok(&["rollout", "promote", "test"]);
        }
        assert_eq!(
            t.header_value(0, "percent").as_deref(),
            Some(if step == 1 { "10" } else { "50" })
        );
        let on = on_slot(&t, &keys, &canary);
        let share = on.len() as f64 * 100.0 / keys.len() as f64;
        eprintln!("step {step}: {share:.2}% of 10,000 users on the new slot");
        assert!(
            (share - percent).abs() <= 2.0,
            "step {step}: {share:.2}% of 10,000 users on the new slot, expected {percent}% ± 2"
        );
        // Exactly the users slipway's model of nginx's split names.
        let model: BTreeSet<String> = keys
            .iter()
            .filter(|k| lands_on_canary(&salt, k, percent))
            .cloned()
            .collect();
        assert_eq!(
            on, model,
            "nginx and slipway's MurmurHash2 model disagree at {percent}%"
        );
        // Sticky: the users of the previous step are still there.
        assert!(
            previous.is_subset(&on),
            "{} user(s) of the previous step left the new slot",
            previous.difference(&on).count()
        );
        // Sticky across requests: a second round gives the same answer.
        let again = on_slot(&t, &keys[..2000], &canary);
        let first: BTreeSet<String> = on
            .iter()
            .filter(|k| keys[..2000].contains(k))
            .cloned()
            .collect();
        assert_eq!(again, first, "a user changed slot between two requests");
        // The proxied answer is the release of that slot.
        for k in on.iter().take(20) {
            let cookie = format!("uid={k}");
            assert_eq!(
                get(&addr, "/", &[("Cookie", &cookie)]).map(|r| r.1),
                Ok("v2".to_string())
            );
        }
        // `rollout status --key` says where a user lands, as nginx does.
        for k in [
            on.iter().next().unwrap(),
            keys.iter().find(|k| !on.contains(*k)).unwrap(),
        ] {
            let status = t.ok(&["rollout", "status", "test", "--key", k]);
            let want = if on.contains(k) { "b" } else { "a" };
            assert!(
                status
                    .stdout
                    .contains(&format!("key \"{k}\" lands on slot {want}")),
                "{}",
                status.all()
            );
        }
        // The second host splits the same way (same percentage, same salt).
        assert_eq!(t.include_header(1), t.include_header(0));
        let second: Vec<String> = keys[..300].to_vec();
        for k in &second {
            let cookie = format!("uid={k}");
            let (_, slot) = get(&t.address(1), "/slot", &[("Cookie", &cookie)]).unwrap();
            assert_eq!(slot == canary, on.contains(k), "host2 disagrees on {k}");
        }
        previous = on;
    }
    // A pinned tester reaches the canary whatever its key; key-less requests spread by
    // address (here one address: all on one side, never an error).
    assert_eq!(
        get(
            &addr,
            "/",
            &[("X-Slipway-Slot", "canary"), ("Cookie", "uid=nobody")]
        )
        .map(|r| r.1),
        Ok("v2".to_string())
    );
    assert_eq!(get(&addr, "/", &[]).map(|r| r.0), Ok(200));

    // Last step and promotion: everyone on v2, `current` follows, slot a stopped.
    let done = t.ok(&["rollout", "promote", "test"]);
    assert!(done.stdout.contains("done"), "{}", done.all());
    let on = on_slot(&t, &keys[..1000], &canary);
    assert_eq!(on.len(), 1000);
    assert_eq!(t.header_value(0, "canary").as_deref(), Some("-"));
    assert_eq!(t.header_value(0, "stable").as_deref(), Some("b"));
    let current = std::fs::read_link(t.fleet.host(0).path("/srv/app/current")).unwrap();
    let slot_b = std::fs::read_link(t.fleet.host(0).path("/srv/app/slots/b")).unwrap();
    assert_eq!(
        current.file_name(),
        slot_b.file_name(),
        "current follows the promoted slot"
    );
    assert!(
        !t.slot_running(0, "a"),
        "the old slot's instance was stopped"
    );
    assert!(t.slot_running(0, "b"));
}

#[test]
fn slots_on_unix_sockets() {
    let mut t = Traffic::start(1);
    t.extra = app_config("manual")
        .replace(
            "slots = { a = 18001, b = 18002 }",
            "slots = { a = \"unix:/srv/app/slots/a.sock\", b = \"unix:/srv/app/slots/b.sock\" }",
        )
        // No port to check over http: the health check is a command on the host, given
        // the slot's socket in SLIPWAY_PORT.
        .replace(
            "http = { port = 18001, path = \"/healthz\" }",
            "command = \"python3 -c 'import socket,os; s=socket.socket(socket.AF_UNIX); s.connect(os.environ[\\\"SLIPWAY_PORT\\\"])'\"",
        );
    t.ok(&["deploy", "test"]);
    t.install_site(0, SITE);
    assert_eq!(
        get(&t.address(0), "/", &[]).map(|r| r.1),
        Ok("v1".to_string())
    );
    t.write_app("v2", None);
    t.ok(&["deploy", "test"]);
    let keys: Vec<String> = (0..2000).map(|i| format!("sock-{i}")).collect();
    let on = on_slot(&t, &keys, "b");
    let share = on.len() as f64 / 20.0;
    assert!((7.0..=13.0).contains(&share), "{share}% on the new slot");
    for k in on.iter().take(10) {
        let cookie = format!("uid={k}");
        assert_eq!(
            get(&t.address(0), "/", &[("Cookie", &cookie)]).map(|r| r.1),
            Ok("v2".to_string())
        );
    }
    t.ok(&["rollout", "promote", "test", "--full"]);
    assert_eq!(
        get(&t.address(0), "/", &[]).map(|r| r.1),
        Ok("v2".to_string())
    );
    assert!(!t.slot_running(0, "a"));
}
