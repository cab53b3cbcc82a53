use std::fs;

use crate::scenario::Scenario;

#[test]
fn deploy_to_three_hosts_then_roll_back_and_roll_back_to_an_older_release() {
    let s = Scenario::new()
        .hosts(3)
        .shared_file("config/app.env")
        .shared_dir("log")
        .build_hook("bin/build")
        .restart_hook("echo \"$SLIPWAY_RELEASE_ID $SLIPWAY_STAGE $SLIPWAY_HOST $SLIPWAY_DEPLOY_TO $SLIPWAY_RELEASE_PATH\" >> log/restarts")
        .put_shared_file("config/app.env", "SECRET=1\n");

    let first = s.deploy_ok();
    s.assert_current_everywhere(&first);
    for i in 0..3 {
        let release = s.app_path(i, &format!("releases/{first}"));
        assert_eq!(
            fs::read_to_string(s.app_path(i, "current/index.html")).unwrap(),
            "<h1>v1</h1>\n"
        );
        // Shared links point into shared/ (absolute paths on the host: map them to read).
        let link = fs::read_link(release.join("config/app.env")).unwrap();
        assert_eq!(link.to_string_lossy(), "/srv/app/shared/config/app.env");
        assert_eq!(
            fs::read_to_string(s.host_path(i, &link.to_string_lossy())).unwrap(),
            "SECRET=1\n"
        );
        let link = fs::read_link(release.join("log")).unwrap();
        assert_eq!(link.to_string_lossy(), "/srv/app/shared/log");
        // The build hook ran in the new release with its environment.
        assert_eq!(
            fs::read_to_string(release.join("build.txt")).unwrap(),
            format!("built {first}\n")
        );
        // REVISION and release.json.
        let revision = fs::read_to_string(release.join("REVISION")).unwrap();
        assert!(revision.starts_with("blake3:"), "{revision}");
        let meta = s.meta(i, &first);
        assert_eq!(meta["id"], first.as_str());
        assert_eq!(meta["state"], "live");
        assert_eq!(meta["app"], "testapp");
        assert_eq!(meta["stage"], "test");
        assert_eq!(meta["revision"].as_str().unwrap(), revision.trim());
        // Restart hook ran in the live release, with every SLIPWAY_ variable.
        let restarts = fs::read_to_string(s.app_path(i, "shared/log/restarts")).unwrap();
        let host = &s.fleet().host(i);
        assert_eq!(
            restarts,
            format!(
                "{first} test {}:{} /srv/app /srv/app/releases/{first}\n",
                host.address, host.port
            )
        );
        // An audit line.
        let audit = s.audit(i);
        assert_eq!(audit.last().unwrap()["action"], "deploy");
        assert_eq!(audit.last().unwrap()["result"], "ok");
    }

    s.app_file("index.html", "<h1>v2</h1>\n");
    let second = s.deploy_ok();
    assert_ne!(first, second);
    s.assert_current_everywhere(&second);
    assert_eq!(s.state(0, &first), "ready");
    assert_eq!(
        fs::read_to_string(s.app_path(1, "current/index.html")).unwrap(),
        "<h1>v2</h1>\n"
    );

    let run = s.rollback(&["--reason", "bad release"]).ok();
    assert!(run.stdout.contains(&first), "{}", run.stdout);
    s.assert_current_everywhere(&first);
    for i in 0..3 {
        assert_eq!(s.state(i, &second), "rolled-back");
        assert_eq!(s.meta(i, &second)["note"], "bad release");
        assert_eq!(s.state(i, &first), "live");
        assert_eq!(
            fs::read_to_string(s.app_path(i, "current/index.html")).unwrap(),
            "<h1>v1</h1>\n"
        );
        let last = s.audit(i).pop().unwrap();
        assert_eq!(last["action"], "rollback");
        assert_eq!(last["reason"], "bad release");
        assert_eq!(last["from"], second.as_str());
        assert_eq!(last["to"], first.as_str());
    }

    // The audit log, merged from every host: each action once, with its hosts.
    let log = s.slipway(&["log", "test"]).ok();
    let lines: Vec<&str> = log.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", log.stdout);
    assert!(
        lines[0].contains("deploy")
            && lines[0].contains(&format!("-> {first}"))
            && lines[0].contains("3 host(s)"),
        "{}",
        log.stdout
    );
    assert!(
        lines[2].contains("rollback") && lines[2].contains("reason: bad release"),
        "{}",
        log.stdout
    );
    let log = s
        .slipway(&["log", "test", "--since", "2999-01-01T00:00:00Z"])
        .ok();
    assert!(log.stdout.contains("no audit entries"), "{}", log.stdout);

    // A new deploy, then --to an older release, then --to the newer one again (an
    // explicit --to may return to a rolled-back release; the plain rollback never does).
    s.app_file("index.html", "<h1>v3</h1>\n");
    let third = s.deploy_ok();
    s.assert_current_everywhere(&third);
    assert!(
        !s.releases(0).contains(&second),
        "the rolled-back release older than current was pruned"
    );
    s.rollback(&["--to", &first]).ok();
    s.assert_current_everywhere(&first);
    assert_eq!(s.state(0, &third), "rolled-back");
    s.rollback(&["--to", &third]).ok();
    s.assert_current_everywhere(&third);
    assert_eq!(s.state(2, &third), "live");
}

#[test]
fn retention_keeps_exactly_keep_releases() {
    let s = Scenario::new().hosts(2).keep_releases(3);
    let mut ids = Vec::new();
    for n in 0..5 {
        s.app_file("index.html", &format!("<h1>{n}</h1>\n"));
        ids.push(s.deploy_ok());
    }
    for i in 0..2 {
        assert_eq!(s.releases(i), ids[2..].to_vec(), "host {i}");
    }
    s.assert_current_everywhere(&ids[4]);
}

#[test]
fn dry_run_prints_the_plan_and_touches_nothing() {
    let s = Scenario::new().hosts(2).build_hook("bin/build");
    let first = s.deploy_ok();
    let before: Vec<Vec<String>> = (0..2).map(|i| s.releases(i)).collect();
    let audit_before = s.audit(0).len();
    let run = s.slipway(&["--dry-run", "deploy", "test"]).ok();
    assert!(
        run.stdout.contains("Plan: deploy release"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("bin/build"), "{}", run.stdout);
    assert!(
        run.stdout.contains(&first),
        "plan names the current release: {}",
        run.stdout
    );
    let after: Vec<Vec<String>> = (0..2).map(|i| s.releases(i)).collect();
    assert_eq!(before, after);
    assert_eq!(s.audit(0).len(), audit_before);
    assert!(!s.app_path(0, ".slipway/lock").exists());

    let run = s.slipway(&["--dry-run", "rollback", "test"]);
    // Only one release: nothing to roll back to, and it says so.
    assert_eq!(run.code, 1, "{}", run.all_output());
    assert!(
        run.stderr.contains("no complete, good release"),
        "{}",
        run.stderr
    );
}

#[test]
fn releases_status_and_check_change_nothing_and_report() {
    let s = Scenario::new()
        .hosts(2)
        .shared_file(".env")
        .put_shared_file(".env", "A=1\n");
    let id = s.deploy_ok();
    let run = s.slipway(&["releases", "test"]).ok();
    assert!(
        run.stdout.contains(&id) && run.stdout.contains("live") && run.stdout.contains("current"),
        "{}",
        run.stdout
    );
    let run = s.slipway(&["status", "test", "--json"]).ok();
    let last = run.stdout.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(v["event"], "result");
    assert_eq!(v["data"]["result"]["hosts"][0]["current"], id.as_str());
    let run = s.slipway(&["check", "test"]).ok();
    assert!(run.stdout.contains("all checks passed"), "{}", run.stdout);
    // A missing shared file fails the check, naming host and path.
    fs::remove_file(s.app_path(1, "shared/.env")).unwrap();
    let run = s.slipway(&["check", "test"]);
    assert_eq!(run.code, 1);
    let host = s.fleet().host(1);
    assert!(
        run.stdout
            .contains(&format!("{}:{}", host.address, host.port))
            && run
                .stdout
                .contains("shared file .env is missing in /srv/app/shared"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_second_deploy_sends_only_changed_files_and_links_the_rest() {
    // 1,000 files of 16 KiB; then 20 of them change (and one is added). Compression is
    // off: these files compress a thousandfold, and the byte counts here measure what
    // linking saves (tests/e2e/compress.rs has the compressed uploads).
    let mut s = Scenario::new().hosts(2);
    s.extra = "\n[upload]\ncompress = \"off\"\n".into();
    let content =
        |n: usize, round: usize| -> String { format!("{n:04}-{round}-").repeat(16 * 1024 / 7) };
    for n in 0..1000 {
        s.app_file(&format!("assets/file{n:03}.txt"), &content(n, 0));
    }
    let cold = s.slipway(&["deploy", "test", "--json"]).ok();
    let result = |run: &crate::scenario::Run| -> serde_json::Value {
        serde_json::from_str::<serde_json::Value>(run.stdout.lines().last().unwrap()).unwrap()["data"]["result"].clone()
    };
    let cold = result(&cold);
    for n in (0..1000).step_by(50) {
        s.app_file(&format!("assets/file{n:03}.txt"), &content(n, 1));
    }
    s.app_file("assets/file007.txt", "changed");
    s.app_file("assets/new.txt", "new");
    let warm = s.slipway(&["deploy", "test", "--json"]).ok();
    let warm = result(&warm);
    let (cold_bytes, warm_bytes) = (
        cold["bytes_sent"].as_u64().unwrap(),
        warm["bytes_sent"].as_u64().unwrap(),
    );
    println!(
        "incremental: cold deploy sent {cold_bytes} bytes, second deploy {warm_bytes} bytes, linked {}",
        warm["linked"]
    );
    assert!(
        warm_bytes * 20 <= cold_bytes,
        "a 20-file change sent {warm_bytes} of {cold_bytes} bytes (more than 5 %)"
    );
    // Every file of the new release verifies against both digest lists, on every host.
    crate::trees::assert_verifies(&s, 0);
    crate::trees::assert_verifies(&s, 1);
    let (first, second) = (
        cold["release"].as_str().unwrap().to_string(),
        warm["release"].as_str().unwrap().to_string(),
    );
    use std::os::unix::fs::MetadataExt;
    for i in 0..2 {
        let old =
            fs::metadata(s.app_path(i, &format!("releases/{first}/assets/file001.txt"))).unwrap();
        let new =
            fs::metadata(s.app_path(i, &format!("releases/{second}/assets/file001.txt"))).unwrap();
        assert_eq!(
            old.ino(),
            new.ino(),
            "unchanged file is a hard link on host {i}"
        );
        assert_eq!(
            fs::read_to_string(s.app_path(i, "current/assets/file007.txt")).unwrap(),
            "changed"
        );
        assert_eq!(
            fs::read_to_string(s.app_path(i, "current/assets/new.txt")).unwrap(),
            "new"
        );
        assert_eq!(
            fs::read_to_string(s.app_path(i, &format!("releases/{first}/assets/file007.txt")))
                .unwrap(),
            content(7, 0)
        );
    }

    // A redeploy of the same tree sends nothing but slipway's own files.
    let same = s.slipway(&["deploy", "test", "--json"]).ok();
    assert!(
        !same.stderr.contains("sending the whole release"),
        "{}",
        same.stderr
    );
    let same_bytes = result(&same)["bytes_sent"].as_u64().unwrap();
    assert!(
        same_bytes * 5 < cold_bytes,
        "an unchanged redeploy sent {same_bytes} of {cold_bytes} bytes"
    );

    // A previous release whose file no longer matches its manifest cannot serve as a
    // base: that host gets the whole release, and the result is verified all the same.
    fs::write(
        s.app_path(1, &format!("releases/{second}/assets/file002.txt")),
        "tampered",
    )
    .unwrap();
    s.app_file("index.html", "v3");
    let run = s.slipway(&["deploy", "test"]).ok();
    assert!(
        run.stderr.contains("sending the whole release"),
        "{}",
        run.stderr
    );
    assert_eq!(
        fs::read_to_string(s.app_path(1, "current/assets/file002.txt")).unwrap(),
        content(2, 0)
    );
    crate::trees::assert_verifies(&s, 0);
    crate::trees::assert_verifies(&s, 1);
}

#[test]
fn a_command_right_after_another_reuses_its_connections_and_replaces_dead_ones() {
    let s = Scenario::new().hosts(2);
    s.deploy_ok();
    let connects = |run: &crate::scenario::Run| -> Vec<String> {
        run.stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["step"] == "connect" && v["status"] == "ok")
            .map(|v| v["message"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let run = s.slipway(&["status", "test", "--json"]).ok();
    assert_eq!(
        connects(&run),
        vec!["reused an open connection"; 2],
        "{}",
        run.stdout
    );
    // Kill every master of this fleet's hosts: the next command reconnects without an error.
    for h in s.fleet().hosts() {
        let _ = std::process::Command::new("pkill")
            .args([
                "-f",
                &format!("ControlPersist.* {}$", h.address.replace('.', "[.]")),
            ])
            .status();
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let run = s.slipway(&["status", "test", "--json"]).ok();
    assert_eq!(connects(&run), vec!["new connection"; 2], "{}", run.stdout);
    // persist = "0s" turns reuse off.
    let s = crate::scenario::Scenario {
        extra: String::new(),
        ..s
    };
    let text = s.config_text().replace(
        "connect_timeout = \"5s\"",
        "connect_timeout = \"5s\"\npersist = \"0s\"",
    );
    fs::write(s.dir().join("nopersist.toml"), &text).unwrap();
    for _ in 0..2 {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_slipway"))
            .arg("-c")
            .arg(s.dir().join("nopersist.toml"))
            .args(["status", "test", "--json"])
            .output()
            .unwrap();
        let run = crate::scenario::Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::new(),
        };
        assert_eq!(connects(&run), vec!["new connection"; 2], "{}", run.stdout);
    }
}

#[test]
fn a_release_whose_manifest_carries_every_digest_still_serves_as_a_base() {
    use std::os::unix::fs::MetadataExt;
    // Manifests once carried sha256 and blake2b for every file. A release deployed then
    // is still linked from: its record holds the digest of the bytes it has.
    let s = Scenario::new().hosts(1);
    s.app_file("assets/a.txt", "aaaa");
    let v1 = s.deploy_ok();
    let dir = s.app_path(0, &format!("releases/{v1}/.slipway"));
    let manifest = fs::read_to_string(dir.join("manifest.jsonl")).unwrap();
    let older: String = manifest
        .lines()
        .map(|line| match line.strip_suffix('}') {
            Some(open) if line.contains(r#""kind":"file""#) => format!(
                "{open},\"sha256\":\"{}\",\"blake2b\":\"{}\"}}\n",
                "0".repeat(64),
                "1".repeat(64)
            ),
            _ => format!("{line}\n"),
        })
        .collect();
    assert_ne!(older, manifest);
    fs::write(dir.join("manifest.jsonl"), &older).unwrap();
    let mut record: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("release.json")).unwrap()).unwrap();
    record["manifest_digest"] = blake3::hash(older.as_bytes()).to_hex().as_str().into();
    fs::write(dir.join("release.json"), format!("{record}\n")).unwrap();

    s.app_file("index.html", "v2");
    let run = s.slipway(&["deploy", "test", "--json"]).ok();
    let result: serde_json::Value =
        serde_json::from_str(run.stdout.lines().last().unwrap()).unwrap();
    assert!(
        result["data"]["result"]["linked"].as_u64().unwrap() > 0,
        "{}",
        run.stdout
    );
    let v2 = result["data"]["result"]["release"].as_str().unwrap();
    let inode = |id: &str| {
        fs::metadata(s.app_path(0, &format!("releases/{id}/assets/a.txt")))
            .unwrap()
            .ino()
    };
    assert_eq!(inode(&v1), inode(v2));
}

/// A release of a single file (one prebuilt binary: the usual Go or Rust deploy) deploys
/// and verifies on a host that checks with several processes: the check lists are never
/// split into more parts than there are files (an empty part failed `b2sum -c`).
#[test]
fn a_release_of_one_file_deploys() {
    let s = Scenario::new().hosts(2);
    let app = s.dir().join("app");
    fs::remove_dir_all(&app).unwrap();
    fs::create_dir_all(app.join("bin")).unwrap();
    fs::write(app.join("bin/app"), b"\x7fELF not really, but bytes\n").unwrap();
    let id = s.deploy_ok();
    s.assert_current_everywhere(&id);
    for i in 0..2 {
        assert_eq!(
            fs::read(s.app_path(i, "current/bin/app")).unwrap(),
            b"\x7fELF not really, but bytes\n"
        );
    }
    // And again, incrementally, with the one file changed.
    fs::write(app.join("bin/app"), b"v2\n").unwrap();
    let id2 = s.deploy_ok();
    s.assert_current_everywhere(&id2);
    assert_eq!(fs::read(s.app_path(0, "current/bin/app")).unwrap(), b"v2\n");
}
