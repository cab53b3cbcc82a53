//! A phased update feed: the static-site recipe with the split keyed on a query
//! parameter (a Sparkle appcast asked for as `appcast.xml?machine=ID`), served by nginx
//! straight from the slots' files.

use std::collections::BTreeSet;
use std::fs;

use slipway::traffic::murmur::lands_on_canary;

use crate::harness::{INCLUDE, Traffic, get};

const FEED: &str = r#"
[rollout]
strategy = "canary"
steps = [10, 100]
pause = "manual"

[traffic]
include = "INCLUDE"
key = "query:machine"
salt = "appcast:"
test = "nginx -p /srv/nginx/ -c /srv/nginx/nginx.conf -t"
reload = "nginx -p /srv/nginx/ -c /srv/nginx/nginx.conf -s reload"
access_log = "/srv/nginx/logs/slipway-shop.log"
pid = "/srv/nginx/nginx.pid"
drain = "5s"
"#;

const SITE: &str = "server {\n  listen ADDR;\n  location / { root /srv/app/slots/$slipway_shop_slot/public; }\n}\n";

fn feed(t: &Traffic, version: &str) {
    let app = t.app_dir();
    let _ = fs::remove_dir_all(&app);
    fs::create_dir_all(app.join("public")).unwrap();
    fs::write(
        app.join("public/appcast.xml"),
        format!("<rss><channel><item><title>{version}</title></item></channel></rss>\n"),
    )
    .unwrap();
}

/// The machine ids that get the feed of `version`.
fn getting(t: &Traffic, ids: &[String], version: &str) -> BTreeSet<String> {
    let addr = t.address(0);
    ids.iter()
        .filter(|id| {
            let (code, body) = get(&addr, &format!("/appcast.xml?machine={id}"), &[])
                .unwrap_or_else(|e| panic!("GET appcast for {id}: {e}"));
            assert_eq!(code, 200, "{id}: {body}");
            body.contains(&format!("<title>{version}</title>"))
        })
        .cloned()
        .collect()
}

#[test]
fn a_phased_update_feed_by_machine_id_and_its_rollback() {
    let mut t = Traffic::start(1);
    t.top = "recipe = \"static-site\"".into();
    t.extra = FEED.replace("INCLUDE", INCLUDE);
    feed(&t, "1.0");
    t.ok(&["deploy", "test"]);
    t.install_site(0, SITE);
    let ids: Vec<String> = (0..1000).map(|i| format!("{:08X}-MAC", i * 7919)).collect();
    assert_eq!(getting(&t, &ids, "1.0").len(), 1000);

    feed(&t, "1.1");
    let plan = t.ok(&["--dry-run", "deploy", "test"]);
    assert!(
        plan.stdout.contains("move users to it (10%, 100%)"),
        "{}",
        plan.all()
    );
    assert_eq!(
        getting(&t, &ids[..50], "1.1").len(),
        0,
        "a dry run moves nobody"
    );
    t.ok(&["deploy", "test"]);
    let new = getting(&t, &ids, "1.1");
    assert_eq!(getting(&t, &ids, "1.1"), new);
    let salt = t.header_value(0, "salt").unwrap();
    assert_eq!(salt, "appcast:");
    let model: BTreeSet<String> = ids
        .iter()
        .filter(|id| lands_on_canary(&salt, id, 10.0))
        .cloned()
        .collect();
    assert_eq!(
        new, model,
        "nginx and slipway's model of its split disagree"
    );
    let share = new.len() as f64 / 10.0;
    eprintln!("feed: {share}% of 1,000 machines on the new feed");
    assert!(
        (8.0..=12.0).contains(&share),
        "{share}% of 1,000 machines get the new feed, expected 10% ± 2"
    );
    // Deterministic: the same machines again, the ones slipway's model names for the
    // configured salt (the same on every rollout of this feed).

    // Everyone, then a rollback: no machine gets 1.1 any more.
    t.ok(&["rollout", "promote", "test"]);
    assert_eq!(getting(&t, &ids, "1.1").len(), 1000);
    let back = t.ok(&["rollback", "test"]);
    assert!(back.stdout.contains("rolled back"), "{}", back.all());
    assert!(
        getting(&t, &ids, "1.1").is_empty(),
        "after the rollback no machine gets the new feed"
    );
    assert_eq!(getting(&t, &ids, "1.0").len(), 1000);
    let current = fs::read_link(t.fleet.host(0).path("/srv/app/current")).unwrap();
    let slot_a = fs::read_link(t.fleet.host(0).path("/srv/app/slots/a")).unwrap();
    assert_eq!(
        current.file_name(),
        slot_a.file_name(),
        "current is the release everyone is on"
    );
}
