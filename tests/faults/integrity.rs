//! Release integrity: a release modified on the host after upload is refused on
//! rollback, naming the file; `immutable = true` makes releases read-only.

use std::os::unix::fs::PermissionsExt;

use crate::scenario::Scenario;

#[test]
fn a_rollback_target_modified_on_a_host_is_refused_naming_the_file() {
    let s = Scenario::new().hosts(2).shared_dir("log");
    let v1 = s.deploy_ok();
    s.app_file("index.html", "v2");
    let v2 = s.deploy_ok();
    // Tampered on host 2: one byte changed.
    let file = s.app_path(1, &format!("releases/{v1}/index.html"));
    std::fs::write(&file, "<h1>v1</h1>\n<script>evil()</script>\n").expect("tamper");
    let run = s.rollback(&[]);
    assert_eq!(run.code, 1, "{}", run.all_output());
    let host = &s.fleet().host(1).address;
    assert!(
        run.stderr.contains(host)
            && run.stderr.contains("verify")
            && run.stderr.contains("index.html")
            && run.stderr.contains("does not match its manifest"),
        "names host, step and file: {}",
        run.stderr
    );
    s.assert_current_everywhere(&v2);
    s.assert_no_partial_and_no_lock();

    // Truncated: the same refusal.
    std::fs::write(&file, "").expect("truncate");
    let run = s.rollback(&[]);
    assert_eq!(run.code, 1, "{}", run.all_output());
    assert!(run.stderr.contains("index.html"), "{}", run.stderr);
    s.assert_current_everywhere(&v2);

    // Same size, one byte different (the modification time tells it changed): refused.
    std::fs::write(&file, "<h1>v2</h1>\n").expect("same-size edit");
    let run = s.rollback(&[]);
    assert_eq!(run.code, 1, "{}", run.all_output());
    assert!(run.stderr.contains("index.html"), "{}", run.stderr);
    s.assert_current_everywhere(&v2);

    // Put back as deployed (a new modification time, the deployed content): the rollback
    // goes through, and so do files the app wrote into its release that were never
    // shipped (the shared `log` link is not mistaken for a modified file either).
    std::fs::write(&file, "<h1>v1</h1>\n").expect("restore");
    let record = s.app_path(1, &format!("releases/{v1}/.slipway/stat"));
    let recorded = std::fs::read_to_string(&record).expect("the release records its files");
    assert!(recorded.contains(" index.html\n"), "{recorded}");
    std::fs::write(s.app_path(1, &format!("releases/{v1}/cache.bin")), "x").expect("cache");
    s.rollback(&[]).ok();
    s.assert_current_everywhere(&v1);
}

/// The steps of a `--json` run, in order (one entry per host and step).
fn steps(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "step" && v["status"] != "started")
        .map(|v| format!("{} {}", v["step"].as_str().unwrap_or("?"), v["status"]))
        .collect()
}

#[test]
fn a_rollback_checks_its_target_in_the_lock_round_trip() {
    let s = Scenario::new().hosts(2).shared_dir("log");
    let v1 = s.deploy_ok();
    s.app_file("index.html", "v2");
    let v2 = s.deploy_ok();
    // The likely target (the release before current) is checked by the lock script:
    // no separate verify step.
    let run = s.slipway(&["rollback", "test", "--json"]).ok();
    let done = steps(&run.stdout);
    assert!(
        done.iter().any(|x| x.starts_with("lock "))
            && !done.iter().any(|x| x.starts_with("verify ")),
        "{done:?}"
    );
    s.assert_current_everywhere(&v1);
    // So is a `--to` target; modified, it is refused, naming host and file.
    let file = s.app_path(0, &format!("releases/{v2}/index.html"));
    std::fs::write(&file, "changed after the deploy\n").expect("tamper");
    let run = s.slipway(&["rollback", "test", "--to", &v2, "--json"]);
    assert_eq!(run.code, 1, "{}", run.all_output());
    assert!(
        run.stderr.contains(&s.fleet().host(0).address)
            && run.stderr.contains("verify")
            && run.stderr.contains("index.html"),
        "{}",
        run.stderr
    );
    assert!(
        steps(&run.stdout).iter().any(|x| x == "verify \"failed\""),
        "the refusal is a failed verify step: {:?}",
        steps(&run.stdout)
    );
    s.assert_current_everywhere(&v1);
    s.assert_no_partial_and_no_lock();
}

#[test]
fn a_host_without_b2sum_verifies_with_sha256sum() {
    let s = Scenario::new().hosts(2);
    // Host 2's b2sum is broken (in its own mount namespace only): the checks there fall
    // back to sha256sum, and still catch a modified file.
    s.fleet().ssh_ok(
        1,
        "mount --bind /bin/false \"$(command -v b2sum)\" && ! b2sum --version",
    );
    let v1 = s.deploy_ok();
    s.app_file("index.html", "v2");
    s.app_file("more.txt", "more");
    let v2 = s.deploy_ok();
    assert!(
        s.app_path(1, &format!("releases/{v2}/.slipway/manifest.b2"))
            .exists(),
        "the BLAKE2b list travels anyway"
    );
    let file = s.app_path(1, &format!("releases/{v1}/index.html"));
    std::fs::write(&file, "<h1>v9</h1>\n").expect("tamper");
    let run = s.rollback(&[]);
    assert_eq!(run.code, 1, "{}", run.all_output());
    assert!(
        run.stderr.contains(&s.fleet().host(1).address) && run.stderr.contains("index.html"),
        "{}",
        run.stderr
    );
    std::fs::write(&file, "<h1>v1</h1>\n").expect("restore");
    s.rollback(&[]).ok();
    s.assert_current_everywhere(&v1);
}

#[test]
fn a_previous_release_edited_to_the_same_size_is_never_linked_from() {
    let s = Scenario::new().hosts(2);
    s.app_file("assets/a.txt", "aaaa");
    let v1 = s.deploy_ok();
    // Host 2's copy of a file the next deploy would link changes, keeping its size.
    let file = s.app_path(1, &format!("releases/{v1}/assets/a.txt"));
    std::fs::write(&file, "bbbb").expect("same-size edit");
    redeploy_in_full(
        &s,
        "assets/a.txt: changed since the previous release was shipped",
    );
    for i in 0..s.host_count() {
        assert_eq!(
            std::fs::read_to_string(s.app_path(i, "current/assets/a.txt")).expect("read"),
            "aaaa",
            "host {i} has the file as shipped"
        );
    }
}

/// Changes `index.html` and deploys again, asserting that no host fell back to a full
/// upload; returns the new release.
fn redeploy_incrementally(s: &Scenario, before: &str) -> String {
    s.app_file("index.html", "changed");
    let run = s.slipway(&["deploy", "test"]).ok();
    assert!(
        !run.stderr.contains("sending the whole release"),
        "{}",
        run.stderr
    );
    let after = s.current(0).expect("a current release");
    assert_ne!(before, after);
    after
}

/// Changes `index.html` and deploys again, asserting that a host could not link from its
/// previous release, saying `why`, and got the whole release instead.
fn redeploy_in_full(s: &Scenario, why: &str) {
    s.app_file("index.html", "changed again");
    let run = s.slipway(&["deploy", "test"]).ok();
    assert!(
        run.stderr.contains(why) && run.stderr.contains("sending the whole release"),
        "{}",
        run.stderr
    );
}

/// Whether `path` is one file (a hard link) in releases `a` and `b` on host `i`.
fn linked(s: &Scenario, i: usize, path: &str, a: &str, b: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let inode = |id: &str| {
        std::fs::metadata(s.app_path(i, &format!("releases/{id}/{path}")))
            .expect("stat")
            .ino()
    };
    inode(a) == inode(b)
}

#[test]
fn a_shipped_file_that_the_build_rewrote_is_sent_again_not_linked() {
    // The build fills a placeholder in a shipped file in place of the same length: the
    // previous release's copy is the built one, not what the manifest describes.
    let s = Scenario::new()
        .hosts(2)
        .build_hook("sed -i \"s/XXXXXXXXXXXXXXXX/$SLIPWAY_RELEASE_ID/\" version.txt");
    s.app_file("version.txt", "release XXXXXXXXXXXXXXXX\n");
    let v1 = s.deploy_ok();
    let v2 = redeploy_incrementally(&s, &v1);
    for i in 0..s.host_count() {
        assert_eq!(
            std::fs::read_to_string(s.app_path(i, "current/version.txt")).expect("read"),
            format!("release {v2}\n"),
            "host {i} built its own copy"
        );
        assert!(
            linked(&s, i, "bin/build", &v1, &v2),
            "host {i} still links the rest"
        );
    }
}

#[test]
fn a_host_without_perl_links_unchanged_files_with_cp() {
    let s = Scenario::new().hosts(2);
    // On host 2 (in its own mount namespace only) perl is "not found" (exit status 127).
    s.fleet().ssh_ok(
        1,
        "f=$(mktemp) && printf '#!/bin/sh\\nexit 127\\n' > \"$f\" && chmod 755 \"$f\" && mount --bind \"$f\" \"$(command -v perl)\" && { perl -e 1; [ $? -eq 127 ]; }",
    );
    s.app_file("assets/a.txt", "aaaa");
    let v1 = s.deploy_ok();
    let v2 = redeploy_incrementally(&s, &v1);
    for i in 0..s.host_count() {
        assert!(
            linked(&s, i, "assets/a.txt", &v1, &v2),
            "host {i} linked the unchanged file"
        );
        let out = std::process::Command::new("b2sum")
            .args(["--quiet", "--strict", "-c", ".slipway/manifest.b2"])
            .current_dir(s.app_path(i, "current"))
            .output()
            .expect("b2sum");
        assert!(
            out.status.success(),
            "host {i}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // Without perl the linked files are checked by size after cp (the check that names
    // them "linked files"): a shorter file is refused.
    std::fs::write(s.app_path(1, &format!("releases/{v2}/assets/a.txt")), "a").expect("edit");
    redeploy_in_full(
        &s,
        "the linked files do not match the manifest: assets/a.txt: 1 bytes",
    );
    assert_eq!(
        std::fs::read_to_string(s.app_path(1, "current/assets/a.txt")).expect("read"),
        "aaaa"
    );
}

fn write_bits(path: &std::path::Path) -> u32 {
    std::fs::symlink_metadata(path)
        .expect("stat")
        .permissions()
        .mode()
        & 0o222
}

#[test]
fn immutable_releases_are_read_only_and_still_pruned() {
    let mut s = Scenario::new()
        .hosts(2)
        .keep_releases(1)
        .shared_dir("log")
        .build_hook("bin/build");
    s.extra = "immutable = true\n".into();
    let v1 = s.deploy_ok();
    for i in 0..s.host_count() {
        let r = s.app_path(i, &format!("releases/{v1}"));
        assert_eq!(write_bits(&r), 0, "the release dir is read-only");
        assert_eq!(write_bits(&r.join("index.html")), 0, "files are read-only");
        assert_eq!(write_bits(&r.join("build.txt")), 0, "built files too");
        assert_eq!(write_bits(&r.join("bin")), 0, "subdirectories too");
        assert_ne!(
            write_bits(&s.app_path(i, "shared/log")),
            0,
            "shared dirs stay writable"
        );
        assert_ne!(
            write_bits(&r.join(".slipway")),
            0,
            "the record can change state"
        );
    }
    s.app_file("index.html", "v2");
    let v2 = s.deploy_ok();
    s.app_file("index.html", "v3");
    let v3 = s.deploy_ok();
    // keep_releases = 1: v3 live, v2 kept as the rollback target, v1 pruned.
    for i in 0..s.host_count() {
        assert_eq!(s.releases(i), vec![v2.clone(), v3.clone()], "host {i}");
    }
    s.rollback(&[]).ok();
    s.assert_current_everywhere(&v2);
}
