//! `slipway drill STAGE`: refuses without `drill = true`; passes on 3 hosts (with a
//! SQLite database whose schema moves with the code); a failing restart of the old
//! release fails the drill with exit 1.

use crate::scenario::Scenario;

#[test]
fn drill_refuses_a_stage_not_marked_for_drills_touching_nothing() {
    let s = Scenario::new().hosts(1);
    let run = s.slipway(&["drill", "test"]);
    assert_eq!(run.code, 2, "{}", run.all_output());
    assert!(run.stderr.contains("drill = true"), "{}", run.stderr);
    assert!(s.releases(0).is_empty(), "nothing was deployed");
}

fn with_sqlite(s: &mut Scenario) {
    s.extra = "drill = true\n[database]\ndriver = \"sqlite\"\npath = \"db/app.sqlite3\"\nmigrations = \"migrations\"\nrole = \"db\"\n".into();
    s.app_file(
        "migrations/0001_items.up.sql",
        "CREATE TABLE items (id INTEGER PRIMARY KEY);\n",
    );
    s.app_file("migrations/0001_items.down.sql", "DROP TABLE items;\n");
}

#[test]
fn drill_on_three_hosts_with_a_database_passes_and_reports_the_time_to_recover() {
    let mut s = Scenario::new().hosts(3).shared_dir("db");
    with_sqlite(&mut s);
    let v1 = s.deploy_ok();
    s.app_file(
        "migrations/0002_price.up.sql",
        "ALTER TABLE items ADD COLUMN price INTEGER;\n",
    );
    s.app_file(
        "migrations/0002_price.down.sql",
        "ALTER TABLE items DROP COLUMN price;\n",
    );
    let v2 = s.deploy_ok();
    let run = s.slipway(&["--json", "drill", "test"]);
    assert_eq!(run.code, 0, "{}", run.all_output());
    let result: serde_json::Value = run
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "result")
        .expect("a result event");
    let report = &result["data"]["result"];
    assert_eq!(report["passed"], true, "{report}");
    let recover = report["time_to_recover_ms"]
        .as_u64()
        .expect("time to recover");
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["step"].as_str())
        .collect();
    assert!(
        steps.contains(&"rollback") && steps.contains(&"verify") && steps.contains(&"roll-forward"),
        "{steps:?}"
    );
    let text = report.to_string();
    assert!(
        text.contains("schema version 1 (release records 1)"),
        "{text}"
    );
    println!("drill on 3 hosts with SQLite: time to recover {recover} ms; {report}");
    // The stage is where it was: every host on v2 (or a redeploy of it), v1 still a target.
    let now = s.current(0).expect("current");
    s.assert_current_everywhere(&now);
    assert!(now >= v2);
    assert_ne!(
        s.state(0, &v1),
        "rolled-back",
        "the drill left v1 a rollback target"
    );
    for i in 0..s.host_count() {
        let drills: Vec<serde_json::Value> = s
            .audit(i)
            .into_iter()
            .filter(|r| r["action"] == "drill")
            .collect();
        assert_eq!(drills.len(), 1, "host {i}: one drill record");
        assert_eq!(drills[0]["result"], "ok");
        assert!(
            drills[0]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("time to recover")
        );
    }
    // Human output: the table.
    let run = s.slipway(&["drill", "test"]);
    assert_eq!(run.code, 0, "{}", run.all_output());
    assert!(
        run.stdout.contains("time to recover") && run.stdout.contains("drill passed"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_drill_whose_old_release_fails_to_restart_fails_with_exit_1() {
    let mut s = Scenario::new().hosts(2).shared_dir("flags");
    s.extra = "drill = true\n".into();
    // The restart hook fails for any release listed in shared/flags/bad.
    let s = Scenario {
        restart_hooks: vec!["! grep -qx \"$SLIPWAY_RELEASE_ID\" flags/bad 2>/dev/null".into()],
        ..s
    };
    let v1 = s.deploy_ok();
    s.app_file("index.html", "v2");
    let v2 = s.deploy_ok();
    for i in 0..s.host_count() {
        std::fs::write(s.app_path(i, "shared/flags/bad"), format!("{v1}\n")).expect("flag");
    }
    let run = s.slipway(&["drill", "test"]);
    assert_eq!(run.code, 1, "{}", run.all_output());
    assert!(
        run.all_output().contains("drill FAILED"),
        "{}",
        run.all_output()
    );
    // Rolled forward again: every host back on v2.
    s.assert_current_everywhere(&v2);
}

/// With `[health]`, a drill checks the old release's health after the rollback: healthy,
/// the drill passes; an old release that fails its check fails the drill with exit 1, and
/// the stage is rolled forward all the same.
#[test]
fn a_drill_checks_the_old_releases_health_and_fails_when_it_is_unhealthy() {
    let mut s = Scenario::new().hosts(2);
    s.extra = "drill = true\n[health]\ncommand = \"test ! -f \\\"$SLIPWAY_RELEASE_PATH/broken\\\"\"\nwindow = \"1s\"\ninterval = \"100ms\"\nmin_samples = 3\n".into();
    let v1 = s.deploy_ok();
    s.app_file("index.html", "v2\n");
    let v2 = s.deploy_ok();

    let run = s.slipway(&["drill", "test"]);
    assert_eq!(run.code, 0, "{}", run.all_output());
    assert!(
        run.stdout.contains("healthy on 2 host(s)"),
        "{}",
        run.stdout
    );
    s.assert_current_everywhere(&v2);

    // The old release breaks on one host: the drill's rollback lands on an unhealthy release.
    std::fs::write(s.app_path(1, &format!("releases/{v1}/broken")), "").unwrap();
    let run = s.slipway(&["drill", "test"]);
    assert_eq!(run.code, 1, "{}", run.all_output());
    assert!(run.stdout.contains("health"), "{}", run.stdout);
    s.assert_current_everywhere(&v2);
}
