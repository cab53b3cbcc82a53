//! Automatic rollback: a new slot that fails its gate gets no user after one reload, its
//! instance stops, `--json` and the audit log say why, and the deploy's migrations are
//! undone. A deployer SIGKILLed in the middle of a step leaves a split that
//! `rollout status` shows and that `resume` and `abort` both bring to a consistent end.

use std::collections::BTreeSet;
use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::harness::{SITE, Traffic, app_config, get};

fn versions(t: &Traffic) -> Vec<i64> {
    let db = t.fleet.host(0).path("/srv/app/shared/db/app.sqlite3");
    let out = std::process::Command::new("sqlite3")
        .arg("-batch")
        .arg(&db)
        .arg("SELECT version FROM _sqlx_migrations ORDER BY version")
        .output()
        .expect("sqlite3 is not installed (Debian/Ubuntu: apt-get install sqlite3, or run scripts/test)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn migration(t: &Traffic, name: &str, up: &str, down: &str) {
    let dir = t.app_dir().join("migrations");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(format!("{name}.up.sql")), up).unwrap();
    fs::write(dir.join(format!("{name}.down.sql")), down).unwrap();
}

fn slots_of(t: &Traffic, keys: usize) -> BTreeSet<String> {
    let addr = t.address(0);
    (0..keys)
        .map(|i| {
            let cookie = format!("uid=k{i}");
            get(&addr, "/slot", &[("Cookie", &cookie)])
                .map(|r| r.1)
                .unwrap_or_else(|e| panic!("GET /slot: {e}"))
        })
        .collect()
}

#[test]
fn a_new_slot_failing_its_gate_gets_no_user_stops_and_undoes_its_migrations() {
    let mut t = Traffic::start(1);
    t.extra = format!(
        "{}\n[database]\ndriver = \"sqlite\"\npath = \"db/app.sqlite3\"\n",
        app_config("0s")
    );
    fs::create_dir_all(t.fleet.host(0).path("/srv/app/shared/db")).unwrap();
    migration(
        &t,
        "0001_users",
        "CREATE TABLE users (id INTEGER PRIMARY KEY);\n",
        "DROP TABLE users;\n",
    );
    t.ok(&["deploy", "test"]);
    t.install_site(0, SITE);
    assert_eq!(versions(&t), vec![1]);

    // v2 migrates, starts, answers its first health check, then fails the gate.
    t.write_app("v2", Some(1));
    migration(
        &t,
        "0001_users",
        "CREATE TABLE users (id INTEGER PRIMARY KEY);\n",
        "DROP TABLE users;\n",
    );
    migration(
        &t,
        "0002_tags",
        "CREATE TABLE tags (id INTEGER PRIMARY KEY);\n",
        "DROP TABLE tags;\n",
    );
    let run = t.slipway(&["--json", "deploy", "test"]);
    assert_eq!(run.code, 1, "{}", run.all());
    let events: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../docs/events.schema.json")).unwrap();
    for e in &events {
        let problems = crate::schema::validate(&schema, e);
        assert!(
            problems.is_empty(),
            "{e} does not follow docs/events.schema.json: {problems:?}"
        );
    }
    let result = events.last().expect("a result event");
    let message = result["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("every user is back on the stable slot"),
        "{message}"
    );
    assert!(
        message.contains("health gate failed at step 1"),
        "{message}"
    );
    assert!(
        message.contains("undoing the migrations this deploy had applied"),
        "the result names the schema undo: {message}"
    );
    let traffic: Vec<&str> = events
        .iter()
        .filter_map(|e| e["message"].as_str())
        .filter(|m| m.starts_with("traffic on "))
        .collect();
    assert_eq!(
        traffic.len(),
        2,
        "one move to 10 %, one move back: {traffic:?}"
    );
    assert!(
        traffic[0].contains("slot b (canary") && traffic[0].contains(" 10%"),
        "{traffic:?}"
    );
    assert!(traffic[1].contains("all users on slot a"), "{traffic:?}");

    // One reload later nobody is on slot b; its instance is stopped.
    assert_eq!(t.header_value(0, "canary").as_deref(), Some("-"));
    assert_eq!(slots_of(&t, 500), BTreeSet::from(["a".to_string()]));
    assert_eq!(
        get(&t.address(0), "/", &[("X-Slipway-Slot", "canary")]).map(|r| r.1),
        Ok("v1".into())
    );
    assert!(
        !t.slot_running(0, "b"),
        "the failed slot's instance is stopped"
    );
    assert!(t.slot_running(0, "a"));
    assert_eq!(versions(&t), vec![1], "the deploy's migrations were undone");

    // The audit log: both traffic changes, and the deploy that was reverted, with why.
    let audit = t.audit(0);
    let moves: Vec<&serde_json::Value> =
        audit.iter().filter(|r| r["action"] == "traffic").collect();
    assert!(moves.len() >= 3, "first deploy, 10 %, back: {audit:?}");
    assert!(
        moves[moves.len() - 1]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("all users on slot a")
    );
    let deploy = audit
        .iter()
        .rev()
        .find(|r| r["action"] == "deploy")
        .expect("a deploy record");
    assert_eq!(deploy["result"], "failed", "{deploy}");
    assert!(
        deploy["message"]
            .as_str()
            .unwrap_or_default()
            .contains("health gate failed"),
        "{deploy}"
    );
}

#[test]
fn a_deployer_killed_mid_step_leaves_a_split_that_resume_and_abort_finish() {
    let mut t = Traffic::start(1);
    t.extra = app_config("manual");
    t.ok(&["deploy", "test"]);
    t.install_site(0, SITE);

    t.write_app("v2", None);
    let mut child = t
        .command(&["deploy", "test"])
        .env(
            "SLIPWAY_FAULT",
            crate::hosts::fault("traffic.after-step:pause"),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn slipway");
    // Wait until the step's traffic is in force, then kill -9 the deployer.
    let started = Instant::now();
    while t.header_value(0, "percent").as_deref() != Some("10") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the first step never applied"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    child.kill().expect("SIGKILL the deployer");
    child.wait().unwrap();

    let status = t.ok(&["rollout", "status", "test"]);
    assert!(
        status.stdout.contains("slot a (stable")
            && status.stdout.contains("slot b (canary")
            && status.stdout.contains(" 10%"),
        "rollout status shows the split in force:\n{}",
        status.all()
    );
    assert!(status.stdout.contains("running"), "{}", status.all());

    // resume: the step is gated again, then the next pause; the proxy says what the state says.
    let resumed = t.ok(&["rollout", "resume", "test"]);
    assert!(resumed.stdout.contains("paused"), "{}", resumed.all());
    let state: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(t.fleet.host(0).path("/srv/app/.slipway/rollout.json")).unwrap(),
    )
    .unwrap();
    let recorded = state["traffic"]["percent"]
        .as_f64()
        .expect("percent recorded");
    assert_eq!(
        t.header_value(0, "percent")
            .and_then(|p| p.parse::<f64>().ok()),
        Some(recorded),
        "the include and the rollout state agree: {state}"
    );
    assert!(t.slot_running(0, "b"));

    // abort: everyone on slot a, b stopped, the include says so.
    t.ok(&["rollout", "abort", "test"]);
    assert_eq!(t.header_value(0, "canary").as_deref(), Some("-"));
    assert_eq!(t.header_value(0, "stable").as_deref(), Some("a"));
    assert_eq!(slots_of(&t, 300), BTreeSet::from(["a".to_string()]));
    assert!(!t.slot_running(0, "b"));
    let status = t.ok(&["rollout", "status", "test"]);
    assert!(status.stdout.contains("aborted"), "{}", status.all());
    assert!(
        status.stdout.contains("all users on slot a"),
        "{}",
        status.all()
    );
    let status = t.ok(&["status", "test"]);
    assert!(
        status.stdout.contains("traffic: all users on slot a"),
        "{}",
        status.all()
    );

    // retry: the same release again from its first step (slots chosen from the
    // proxies again), then through every step and promotion.
    let retried = t.ok(&["rollout", "retry", "test"]);
    assert!(retried.stdout.contains("paused"), "{}", retried.all());
    assert_eq!(t.header_value(0, "canary").as_deref(), Some("b"));
    assert_eq!(t.header_value(0, "percent").as_deref(), Some("10"));
    t.ok(&["rollout", "promote", "test", "--full"]);
    assert_eq!(t.header_value(0, "stable").as_deref(), Some("b"));
    assert_eq!(slots_of(&t, 300), BTreeSet::from(["b".to_string()]));
    assert_eq!(get(&t.address(0), "/", &[]).map(|r| r.1), Ok("v2".into()));
    assert!(!t.slot_running(0, "a"));
}

#[test]
fn a_deployer_killed_after_promotion_is_finished_by_resume_not_undone_by_abort() {
    let mut t = Traffic::start(1);
    t.extra = app_config("0s");
    t.ok(&["deploy", "test"]);
    t.install_site(0, SITE);

    t.write_app("v2", None);
    let mut child = t
        .command(&["deploy", "test"])
        .env(
            "SLIPWAY_FAULT",
            crate::hosts::fault("traffic.after-promote:pause"),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn slipway");
    let state = t.fleet.host(0).path("/srv/app/.slipway/rollout.json");
    let started = Instant::now();
    // The first deploy's state was promoted too (and done): wait for this one's.
    let promoted_now = || {
        let text = fs::read_to_string(&state).unwrap_or_default();
        text.contains("\"promoted\":true") && text.contains("\"status\":\"running\"")
    };
    while !promoted_now() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never promoted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    child.kill().expect("SIGKILL the deployer");
    child.wait().unwrap();
    // Everyone is on v2 already; the old slot still runs (not retired).
    assert_eq!(t.header_value(0, "stable").as_deref(), Some("b"));
    assert!(t.slot_running(0, "a"));

    let abort = t.slipway(&["rollout", "abort", "test"]);
    assert_eq!(abort.code, 1, "{}", abort.all());
    assert!(abort.all().contains("was promoted"), "{}", abort.all());
    assert_eq!(
        t.header_value(0, "stable").as_deref(),
        Some("b"),
        "abort moved nobody"
    );

    let resumed = t.ok(&["rollout", "resume", "test"]);
    assert!(resumed.stdout.contains("done"), "{}", resumed.all());
    assert!(!t.slot_running(0, "a"), "resume retired the old slot");
    assert_eq!(slots_of(&t, 200), BTreeSet::from(["b".to_string()]));
    assert_eq!(get(&t.address(0), "/", &[]).map(|r| r.1), Ok("v2".into()));
}
