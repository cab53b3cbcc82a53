//! `[gate]` without `[traffic]`: a canary of hosts judged by each host's own nginx
//! access log (the documented `log_format` with `slot=-`), the hosts switched so far
//! against those not yet. Two sshd hosts, each a real nginx in front of the slot app run
//! from `current` by the restart hook; a steady load on both.

use std::time::Instant;

use crate::gate::{Load, gate_events, result_message};
use crate::harness::Traffic;

/// What the README tells users to add to their nginx for a host canary's gate.
const SITE: &str = "log_format slipway_gate '$time_iso8601 slot=- status=$status request_time=$request_time upstream_time=$upstream_response_time method=$request_method uri=$request_uri';\nserver {\n  listen ADDR;\n  access_log /srv/nginx/logs/gate.log slipway_gate;\n  location / { proxy_pass http://UPSTREAM; }\n}\n";

/// A host canary in two steps (one host, then both), the app restarted from `current`
/// by the restart hook; `gate`: the [gate] section, if any.
fn config(gate: &str) -> String {
    format!(
        r#"
[rollout]
strategy = "canary"
steps = [50, 100]
pause = "0s"

[hooks]
restart = ['mkdir -p "$SLIPWAY_DEPLOY_TO/slots" && export SLIPWAY_SLOT=host SLIPWAY_PORT=18001 SLIPWAY_ADDRESS="$${{SLIPWAY_HOST%:*}}" && sh bin/stop && sh bin/start']
{gate}"#
    )
}

const GATE: &str = "[gate]\naccess_log = \"/srv/nginx/logs/gate.log\"\nwindow = \"3s\"\ninterval = \"500ms\"\nmin_requests = 40\nmax_error_rate = 0.05\nmax_consecutive_failures = 3\n";

#[test]
fn a_host_canary_answering_5xx_fails_on_the_access_log_and_one_as_good_passes() {
    let started = Instant::now();
    let mut t = Traffic::start(2);
    // Requests take 10-30 ms, as an app's do: a new instance's first second on a busy
    // machine then weighs little against them (1 ms requests made +500 % of it).
    t.extra = config("");
    t.app_file("DELAY_MS", "20");
    t.ok(&["deploy", "test"]);
    for i in 0..2 {
        let upstream = format!("{}:18001", t.fleet.host(i).address);
        t.install_site(i, &SITE.replace("UPSTREAM", &upstream));
    }
    let loads = [Load::start(&t.address(0), 3), Load::start(&t.address(1), 3)];

    // v2 answers 500 to a fifth of the requests: its host fails step 1, and is switched back.
    t.extra = config(GATE);
    t.write_app("v2", None);
    t.app_file("ERROR_RATE", "0.2");
    t.app_file("DELAY_MS", "20");
    let run = t.slipway(&["--json", "deploy", "test"]);
    let gates = gate_events(&run);
    let g = gates
        .last()
        .unwrap_or_else(|| panic!("no verdict: {}", run.all()));
    eprintln!("host canary, 5xx: {}", g["reason"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert_eq!(
        (
            g["verdict"].as_str(),
            g["step"].as_u64(),
            g["source"].as_str()
        ),
        (Some("fail"), Some(1), Some("access_log")),
        "{g}"
    );
    let new: Vec<&str> = g["new_hosts"]
        .as_array()
        .unwrap_or_else(|| panic!("{g}"))
        .iter()
        .filter_map(|h| h.as_str())
        .collect();
    let old: Vec<&str> = g["old_hosts"]
        .as_array()
        .unwrap_or_else(|| panic!("{g}"))
        .iter()
        .filter_map(|h| h.as_str())
        .collect();
    assert_eq!((new.len(), old.len()), (1, 1), "{g}");
    assert!(
        (0.08..0.4).contains(&g["canary"]["rate_5xx"].as_f64().unwrap()),
        "{g}"
    );
    assert_eq!(g["stable"]["rate_5xx"].as_f64(), Some(0.0), "{g}");
    assert!(g["stable"]["requests"].as_u64().unwrap() >= 40, "{g}");
    let message = result_message(&run);
    for needle in [
        "traffic gate failed at step 1: 5xx rate".to_string(),
        format!("new hosts ({}): ", new[0]),
        format!("old hosts ({}): ", old[0]),
        "Mann-Whitney".to_string(),
    ] {
        assert!(message.contains(&needle), "missing {needle:?} in {message}");
    }
    // Both hosts serve v1 again.
    for i in 0..2 {
        let (_, body) = crate::harness::get(&t.address(i), "/", &[]).unwrap_or_default();
        assert_ne!(body, "v2", "host {i} still serves the failed release");
    }
    let audit: Vec<_> = (0..2).flat_map(|i| t.audit(i)).collect();
    assert!(
        audit
            .iter()
            .any(|r| r["action"] == "gate" && r["result"] == "failed"),
        "{audit:?}"
    );

    // v3, as good: both steps pass (the second with no old host: the absolute thresholds).
    t.write_app("v3", None);
    t.app_file("DELAY_MS", "20");
    let run = t.slipway(&["--json", "deploy", "test"]);
    let mut sent = 0;
    for l in loads {
        sent += l.finish().0;
    }
    assert_eq!(run.code, 0, "{}", run.all());
    let gates = gate_events(&run);
    for g in &gates {
        eprintln!("host canary, as good, step {}: {}", g["step"], g["summary"]);
    }
    assert_eq!(gates.len(), 2, "{gates:?}");
    assert!(gates.iter().all(|g| g["verdict"] == "pass"), "{gates:?}");
    assert!(
        gates[1].get("stable").is_none_or(|s| s.is_null()),
        "{gates:?}"
    );
    for i in 0..2 {
        let (_, body) = crate::harness::get(&t.address(i), "/", &[]).unwrap();
        assert_eq!(body, "v3");
    }
    eprintln!("load {sent} requests; whole test {:?}", started.elapsed());
}
