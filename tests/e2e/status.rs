//! `slipway status` after every ending of a rollout: done, failed at a step, paused,
//! aborted. Each says how it ended; none is left saying `pending`.

use std::fs;

use crate::scenario::Scenario;

/// Three hosts, a canary of one host per step, gated by a command that fails when the
/// release has a `broken` file.
fn canary(pause: &str) -> Scenario {
    let mut s = Scenario::new().hosts(3);
    s.extra = format!(
        "\n[rollout]\nstrategy = \"canary\"\nsteps = [33, 66, 100]\n{pause}\n[health]\ncommand = \"test ! -f \\\"$SLIPWAY_RELEASE_PATH/broken\\\"\"\nwindow = \"600ms\"\ninterval = \"100ms\"\nmin_samples = 3\nmax_consecutive_failures = 2\n"
    );
    s
}

/// Each host's line of `status`, by host index.
fn host_lines(s: &Scenario, out: &str) -> Vec<String> {
    (0..3)
        .map(|i| {
            let address = s.fleet().host(i).address.clone();
            out.lines()
                .find(|l| l.starts_with(address.as_str()))
                .unwrap_or_else(|| panic!("no line for host {i} in:\n{out}"))
                .to_string()
        })
        .collect()
}

#[test]
fn status_says_how_a_rollout_ended_after_done_failed_paused_and_aborted() {
    let mut s = canary("");
    s.app_file("index.html", "v1\n");
    let v1 = s.deploy_ok();
    let out = s.slipway(&["status", "test"]).ok().stdout;
    assert!(
        out.contains(&format!(
            "last rollout: canary rollout of {v1}: done: 3 of 3 step(s)"
        )),
        "{out}"
    );
    assert!(!out.contains("pending"), "{out}");

    // Failed at its first step: the canary went back, the other steps never came.
    s.app_file("broken", "yes\n");
    s.deploy().expect_code(1);
    s.assert_current_everywhere(&v1);
    // The failed release stays on the hosts, recorded `failed`: the newest one.
    let v2 = s.releases(0).pop().expect("the failed release");
    assert_eq!(s.state(0, &v2), "failed");
    let out = s.slipway(&["status", "test"]).ok().stdout;
    assert!(
        out.contains(&format!(
            "last rollout: canary rollout of {v2}: failed at step 1/3: health gate failed at step 1"
        )),
        "{out}"
    );
    assert!(!out.contains("pending"), "{out}");
    let lines = host_lines(&s, &out);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("rollout: step 1/3 failed, switched back"))
            .count(),
        1,
        "{out}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.contains("not reached")).count(),
        2,
        "{out}"
    );
    let json = s.slipway(&["--json", "status", "test"]).ok().stdout;
    assert!(json.contains("failed at step 1/3"), "{json}");

    // Paused after its first step, then aborted.
    fs::remove_file(s.dir().join("app/broken")).unwrap();
    s.app_file("index.html", "v3\n");
    s.extra = canary("pause = \"manual\"").extra;
    let v3 = s.deploy().ok().release_id();
    let out = s.slipway(&["status", "test"]).ok().stdout;
    assert!(
        out.contains(&format!(
            "rollout in progress: canary rollout of {v3}: paused after step 1/3: manual pause"
        )),
        "{out}"
    );
    s.slipway(&["rollout", "abort", "test"]).ok();
    s.assert_current_everywhere(&v1);
    let out = s.slipway(&["status", "test"]).ok().stdout;
    assert!(
        out.contains(&format!(
            "last rollout: canary rollout of {v3}: aborted after step 1/3"
        )),
        "{out}"
    );
    assert!(!out.contains("pending"), "{out}");
    let lines = host_lines(&s, &out);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("rollout: step 1/3 switched back"))
            .count(),
        1,
        "{out}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.contains("not reached")).count(),
        2,
        "{out}"
    );
}

#[test]
fn rollout_pause_while_a_deploy_runs_is_told_by_status_and_on_record_in_the_chain() {
    let mut s = canary("");
    s.app_file("index.html", "v1\n");
    s.deploy_ok();
    // Gates of 2 s: time to pause while the first step is gated.
    s.extra = s.extra.replace("window = \"600ms\"", "window = \"2s\"");
    s.app_file("index.html", "v2\n");
    let deploy = s
        .command(&["deploy", "test"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn deploy");
    let state = s.app_path(0, ".slipway/rollout.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let text = fs::read_to_string(&state).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_default();
        if v["status"] == "running" && v["completed"] == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the rollout never ran: {text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let paused = s.slipway(&["rollout", "pause", "test"]).ok();
    assert!(paused.stdout.contains("paused"), "{}", paused.stdout);
    let run = deploy.wait_with_output().expect("the deploy ends");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let out = s.slipway(&["status", "test"]).ok().stdout;
    assert!(
        out.contains("rollout in progress: canary rollout of")
            && out.contains("paused after step 1/3: paused by")
            && out.contains("`slipway rollout pause`"),
        "{out}"
    );
    // The pause is on record on every host, and every chain is intact.
    for i in 0..3 {
        assert!(
            s.audit(i).iter().any(|r| r["action"] == "rollout-pause"),
            "host {i}: {:?}",
            s.audit(i)
        );
    }
    s.slipway(&["log", "--verify", "test"]).ok();
}
