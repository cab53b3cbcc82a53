//! Bad input: a proxy whose configuration fails its validator stops a rollout before any
//! user moves, with nginx's own message; `slipway check` names a missing proxy.

use std::fs;

use crate::harness::{SITE, Traffic, app_config, get};

#[test]
fn a_broken_proxy_config_stops_the_rollout_before_any_user_moves() {
    let mut t = Traffic::start(1);
    t.extra = app_config("manual");
    t.ok(&["deploy", "test"]);
    t.install_site(0, SITE);
    let before = t.include_header(0);

    // The user's own nginx configuration breaks (not slipway's include).
    let broken = t.fleet.host(0).srv().join("nginx/sites/broken.conf");
    fs::write(&broken, "server {\n  bogus_directive on;\n}\n").unwrap();
    t.write_app("v2", None);
    let run = t.slipway(&["deploy", "test"]);
    assert_ne!(run.code, 0, "{}", run.all());
    let all = run.all();
    assert!(
        all.contains("unknown directive \"bogus_directive\""),
        "nginx's message is shown:\n{all}"
    );
    assert!(all.contains("refused"), "{all}");
    assert_eq!(
        t.include_header(0),
        before,
        "the include in force is the previous one"
    );
    assert!(
        !t.fleet
            .host(0)
            .path(&format!("{}.new", crate::harness::INCLUDE))
            .exists(),
        "no half-written include is left"
    );
    // Nobody was ever sent to v2; its instance is stopped; it is marked failed.
    for i in 0..200 {
        let cookie = format!("uid=u{i}");
        assert_eq!(
            get(&t.address(0), "/", &[("Cookie", &cookie)]).map(|r| r.1),
            Ok("v1".into())
        );
    }
    assert!(!t.slot_running(0, "b"));
    assert!(t.slot_running(0, "a"));
    let status = t.ok(&["rollout", "status", "test"]);
    assert!(status.stdout.contains("failed"), "{}", status.all());

    // `slipway check` says the validator fails, with nginx's words.
    let check = t.slipway(&["check", "test"]);
    assert_ne!(check.code, 0, "{}", check.all());
    assert!(check.all().contains("bogus_directive"), "{}", check.all());
}

#[test]
fn check_names_a_missing_proxy_and_an_unwritable_include_directory() {
    let mut t = Traffic::start(1);
    t.extra = app_config("manual")
        .replace("test = \"nginx -p", "test = \"/srv/opt/nginx/sbin/nginx -p")
        .replace(
            "include = \"/srv/nginx/conf.d/slipway-shop.conf\"",
            "include = \"/srv/nowhere/conf.d/slipway-shop.conf\"",
        );
    let check = t.slipway(&["check", "test"]);
    assert_ne!(check.code, 0, "{}", check.all());
    let all = check.all();
    assert!(
        all.contains("/srv/opt/nginx/sbin/nginx is not installed on this host")
            && all.contains("apt-get install nginx-light"),
        "{all}"
    );
    assert!(
        all.contains("/srv/nowhere/conf.d is missing or not writable"),
        "{all}"
    );
    // A deploy refuses before any user moves, naming the same.
    let run = t.slipway(&["deploy", "test"]);
    assert_ne!(run.code, 0, "{}", run.all());
    assert!(run.all().contains("/srv/nowhere/conf.d"), "{}", run.all());
}
