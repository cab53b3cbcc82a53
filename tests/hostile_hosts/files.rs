//! A host that simply holds crafted files: release records of the wrong shape, release
//! directories with hostile names or pointing at `/`, `current` outside `releases/`, a
//! lock owner, an audit log and a rollout state carrying escape sequences, check lists
//! naming `../../etc/passwd`.

use std::fs;
use std::os::unix::fs::symlink;

use super::{Bench, LIAR_HOST};

/// A release record as slipway writes it, with `fields` replacing or adding keys.
fn record(id: &str, fields: &[(&str, serde_json::Value)]) -> String {
    let mut v = serde_json::json!({
        "id": id, "app": "testapp", "stage": "test", "revision": "r1", "state": "ready",
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
        "deployed_by": "x@y", "manifest_digest": "d", "files": 1, "bytes": 1
    });
    for (k, value) in fields {
        v[*k] = value.clone();
    }
    v.to_string()
}

const OLD: &str = "20200101T000000Z";

#[test]
fn crafted_files_are_refused_or_ignored_and_shown_escaped() {
    let mut b = Bench::new(2);
    let liar = b.liar();
    let old_dir = b.liar_path(&format!("releases/{OLD}"));
    let plant = |text: &str| {
        fs::create_dir_all(old_dir.join(".slipway")).expect("mkdir");
        fs::write(old_dir.join(".slipway/release.json"), format!("{text}\n")).expect("write");
    };

    // 1-4. Release records of the wrong shape: incomplete, never a target. Extra fields
    //      are ignored (the record is otherwise sound).
    for (case, text, shown) in [
        (
            "record with wrong types",
            record(OLD, &[("files", "many".into()), ("state", 42.into())]),
            "incomplete",
        ),
        (
            "record with huge numbers",
            record(OLD, &[])
                .replace("\"files\":1", "\"files\":1e400")
                .replace("\"bytes\":1", "\"bytes\":184467440737095516160000"),
            "incomplete",
        ),
        (
            "record with missing fields",
            format!("{{\"id\":\"{OLD}\"}}"),
            "incomplete",
        ),
        (
            "record with extra fields",
            record(
                OLD,
                &[
                    ("exec", "$(reboot)".into()),
                    ("x", serde_json::json!({"y": [1]})),
                ],
            ),
            "ready",
        ),
        (
            "record whose id is ../../etc",
            record("../../etc", &[]),
            "incomplete",
        ),
    ] {
        plant(&text);
        b.run(case, &["releases", "test"])
            .expect(0)
            .says(&[&format!("{OLD}  {shown}")]);
    }

    // 5. A release record whose note and revision carry escape sequences, `\r`, a C1
    //    control and a bidi override, and whose schema lists crafted migration ids.
    plant(&record(
        OLD,
        &[
            (
                "note",
                "\u{1b}]52;c;cm0gLXJmIH4=\u{7}\r\u{9b}31mfine\u{202e}".into(),
            ),
            ("revision", "\u{1b}[2Jabc".into()),
            (
                "schema",
                serde_json::json!({"framework": "\u{1b}[31mrails", "applied": ["../../x", "\u{1b}[2J", "a\nb"], "applied_now": []}),
            ),
            (
                "migrations",
                serde_json::json!([{"version": -1, "description": "\u{1b}[2J../../etc", "checksum": "\r"}]),
            ),
        ],
    ));
    b.run(
        "escapes in a record's note, revision, schema (releases)",
        &["releases", "test"],
    )
    .expect(0)
    .says(&["\\x1b]52;c;", "\\x1b[2Jabc"]);
    let ran = b.run(
        "escapes in a record's note (--json releases)",
        &["--json", "releases", "test"],
    );
    let events = ran.expect(0).json_lines();
    let text = serde_json::to_string(&events).expect("events");
    // Shown as `\x1b[2Jabc`: JSON then escapes its backslash.
    assert!(text.contains(r"\\x1b[2Jabc"), "{text}");
    fs::remove_dir_all(&old_dir).expect("clean up");

    // 6. Release directories named with ESC/OSC, `\r`, and a newline that forges a probe
    //    line: shown escaped or not at all.
    let releases = b.liar_path("releases");
    let odd = [
        "\u{1b}]0;pwned\u{7}",
        "a\rb",
        "x\nrelease\t20200202T000000Z\t{}",
    ];
    for name in odd {
        fs::create_dir_all(releases.join(name)).expect("odd dir");
    }
    b.run(
        "release dirs named with ESC \\r \\n (releases)",
        &["releases", "test"],
    )
    .expect(0);
    b.run(
        "release dirs named with ESC \\r \\n (status)",
        &["status", "test"],
    )
    .expect(0);
    let before = b.honest();
    let rb = b.run(
        "release dirs named with ESC \\r \\n (rollback)",
        &["rollback", "test"],
    );
    rb.expect(0);
    let back = b.s.current(0).expect("host1 current");
    assert_ne!(Some(back.clone()), before.0[0].0, "host1 rolled back");
    assert_eq!(b.s.current(LIAR_HOST).as_deref(), Some(back.as_str()));
    for name in odd {
        assert!(releases.join(name).is_dir(), "{name:?} was touched");
        fs::remove_dir_all(releases.join(name)).expect("clean up");
    }
    b.s.app_file("index.html", "<h1>v3</h1>\n");
    b.run("forward again (deploy)", &["deploy", "test"])
        .expect(0);

    // 7. `releases/ID -> /`: not a release, never read through, never a target. The
    //    link takes the place of the rollback target, which the honest hosts have.
    let link_id = "20300101T000000Z";
    symlink("/", releases.join(link_id)).expect("symlink");
    b.run("releases/ID -> / (releases)", &["releases", "test"])
        .expect(0)
        .never_says(&[link_id]);
    fs::remove_file(releases.join(link_id)).expect("clean up");
    let live_id = b.s.current(0).expect("current");
    let target =
        b.s.releases(0)
            .into_iter()
            .filter(|r| r.as_str() < live_id.as_str() && b.s.state(0, r) == "ready")
            .max()
            .expect("a rollback target");
    let moved = releases.join(format!("{target}.moved"));
    fs::rename(releases.join(&target), &moved).expect("move the target aside");
    symlink("/", releases.join(&target)).expect("symlink");
    let before = b.honest();
    b.run(
        "releases/ID -> / (rollback --to)",
        &["rollback", "test", "--to", &target],
    )
    .fails()
    .blames(&liar)
    .says(&[&target, "not in releases/"]);
    b.assert_honest_unchanged(&before, "rollback to a linked release");
    assert!(
        fs::symlink_metadata(releases.join(&target))
            .expect("the link")
            .file_type()
            .is_symlink(),
        "the link is left alone"
    );
    fs::remove_file(releases.join(&target)).expect("clean up");
    fs::rename(&moved, releases.join(&target)).expect("move back");

    // 8-9. `current` outside releases/: `status` names it; a deploy puts the host right.
    let current = b.liar_path("current");
    let live = fs::read_link(&current).expect("current");
    for (case, target) in [
        ("current -> /etc (status)", "/etc".to_string()),
        (
            "current -> releases/ID/../../.. (status)",
            format!("{}/../../..", live.display()),
        ),
    ] {
        fs::remove_file(&current).expect("rm current");
        symlink(&target, &current).expect("symlink current");
        b.run(case, &["status", "test"])
            .expect(4)
            .says(&[&liar, "current points outside releases/"]);
    }
    let before = b.honest();
    b.s.app_file("index.html", "<h1>v4</h1>\n");
    b.run("current outside releases/ (deploy)", &["deploy", "test"])
        .expect(0);
    b.assert_honest_deployed(&before, "deploy over a stray current");
    assert!(
        fs::read_link(&current)
            .expect("current")
            .starts_with("releases/"),
        "the deploy put host2's current right"
    );

    // 10. A lock owner with escape sequences, `\r` and an OSC in every field.
    let lock = b.liar_path(".slipway/lock");
    fs::create_dir_all(&lock).expect("lock dir");
    fs::write(
        lock.join("owner.json"),
        "{\"user\":\"\\u001b]0;pwned\\u0007eve\",\"machine\":\"\\rfar\\u009b\",\"pid\":1,\"command\":\"deploy\\u001b[2J\\r\",\"since\":\"2026-01-01T00:00:00Z\",\"token\":\"t\"}\n",
    )
    .expect("owner");
    b.run("lock owner with escapes (status)", &["status", "test"])
        .expect(0)
        .says(&[&liar, "locked by", "\\x1b]0;pwned"]);
    let before = b.honest();
    b.run("lock owner with escapes (deploy)", &["deploy", "test"])
        .expect(3)
        .blames(&liar)
        .says(&["\\x1b]0;pwned"]);
    b.assert_honest_unchanged(&before, "escaped lock owner");
    let ran = b.run(
        "lock owner with escapes (--json status)",
        &["--json", "status", "test"],
    );
    ran.expect(0).json_lines();

    // 10b. A lock owner whose user is a megabyte long: named, cut short.
    fs::write(
        lock.join("owner.json"),
        format!(
            "{{\"user\":\"{}\",\"machine\":\"far\",\"pid\":1,\"command\":\"deploy\",\"since\":\"2026-01-01T00:00:00Z\",\"token\":\"t\"}}\n",
            "u".repeat(1 << 20)
        ),
    )
    .expect("owner");
    let ran = b.run("lock owner of 1 MiB (deploy)", &["deploy", "test"]);
    ran.expect(3).blames(&liar).says(&["characters left out"]);
    assert!(
        ran.stderr.len() < 64 << 10,
        "{} bytes on stderr",
        ran.stderr.len()
    );
    b.assert_honest_unchanged(&before, "long lock owner");

    // 11. A lock owner nested 10,000 deep: unreadable, held.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    fs::write(lock.join("owner.json"), format!("{deep}\n")).expect("owner");
    b.run(
        "lock owner nested 10,000 deep (deploy)",
        &["deploy", "test"],
    )
    .expect(3)
    .blames(&liar)
    .says(&["unreadable"]);
    b.assert_honest_unchanged(&before, "deep lock owner");
    b.run("break the lying host's lock (unlock)", &["unlock", "test"])
        .expect(0);
    assert!(!lock.exists());

    // 12. Audit log lines with escapes, `\r`, invalid UTF-8, 10,000-deep JSON, and a
    //     forged record of a deploy that never happened: `log` shows them escaped.
    let log = b.liar_path(".slipway/log.jsonl");
    let mut text = fs::read(&log).unwrap_or_default();
    text.extend_from_slice(b"{\"time\":\"2026-01-01T00:00:00Z\",\"action\":\"deploy\\u001b[2J\",\"actor\":\"\\u001b]0;x\\u0007\\r\",\"result\":\"ok\\u009b\"}\n");
    text.extend_from_slice(
        b"{\"time\":\"2026-01-01T00:00:01Z\",\"action\":\"\xff\xfe\"}\n\x1b[31m\r\n",
    );
    text.extend_from_slice(format!("{deep}\n").as_bytes());
    fs::write(&log, text).expect("log");
    b.run("audit log with escapes (log)", &["log", "test"])
        .expect(0)
        .says(&["\\x1b[2J"]);
    b.run(
        "audit log with escapes (--json log)",
        &["--json", "log", "test"],
    )
    .expect(0)
    .json_lines();

    // 12b. An audit log of 250,000 lines (30 MiB: a long life, or a junk writer): the
    //      newest 10,000 are read, saying so. A host that sends all of it anyway (its
    //      `tail` lies): the same 10,000 count; one that sends over 32 MiB: refused.
    let line = |n: usize| {
        format!(
            "{{\"time\":\"2026-01-01T00:00:00.{n:06}Z\",\"action\":\"deploy\",\"command\":\"c{n}\",\"result\":\"ok\"}}\n"
        )
    };
    let mut big = String::new();
    let mut n = 0;
    while big.len() < 30 << 20 {
        big.push_str(&line(n));
        n += 1;
    }
    fs::write(&log, &big).expect("big log");
    b.run("audit log of 30 MiB (log)", &["log", "test"])
        .expect(0)
        .says(&["newest 10000 audit records"])
        .within(std::time::Duration::from_secs(20));
    b.lie("cat-log");
    b.run("audit log of 30 MiB sent whole (log)", &["log", "test"])
        .expect(0)
        .within(std::time::Duration::from_secs(20));
    while big.len() <= 33 << 20 {
        big.push_str(&line(n));
        n += 1;
    }
    fs::write(&log, &big).expect("bigger log");
    b.run("audit log over 32 MiB sent whole (log)", &["log", "test"])
        .fails()
        .blames(&liar)
        .says(&["more than 32.0 MiB on stdout"]);
    b.lie("honest");
    fs::write(&log, "").expect("empty log");

    // 13-15. A rollout state naming `../../etc`, another app's, a missing release.
    let rollout = b.liar_path(".slipway/rollout.json");
    let names: Vec<String> =
        b.s.fleet()
            .hosts()
            .iter()
            .map(|h| format!("{}:{}", h.address, h.port))
            .collect();
    let state = |app: &str, desired: &str, stable: &str, updated: &str| {
        serde_json::json!({
            "app": app, "stage": "test", "desired": desired,
            "stable": names.iter().map(|n| (n.clone(), stable.into())).collect::<serde_json::Map<String, serde_json::Value>>(),
            "plan": {"strategy": "canary", "steps": [{"number": 1, "hosts": names, "total": 3}]},
            "completed": 0, "status": "paused", "reason": "\u{1b}[2J\r",
            "started_by": "eve", "started_at": updated, "updated_at": updated
        })
        .to_string()
            + "\n"
    };
    let now = chrono::Utc::now().to_rfc3339();
    fs::write(&rollout, state("testapp", "../../etc", "../../../", &now)).expect("rollout");
    b.run("rollout state at ../../etc (status)", &["status", "test"])
        .expect(0)
        .says(&[&liar, "ignoring .slipway/rollout.json"]);
    let before = b.honest();
    b.s.app_file("index.html", "<h1>v5</h1>\n");
    b.run("rollout state at ../../etc (deploy)", &["deploy", "test"])
        .expect(0);
    b.assert_honest_deployed(&before, "deploy past a crafted rollout state");

    fs::write(&rollout, state("otherapp", OLD, OLD, &now)).expect("rollout");
    b.run("rollout state of another app (status)", &["status", "test"])
        .expect(0)
        .says(&[&liar, "not \"testapp\"'s"]);

    fs::write(&rollout, state("testapp", OLD, OLD, "2099-01-01T00:00:00Z")).expect("rollout");
    b.run("rollout state dated 2099 (status)", &["status", "test"])
        .expect(0)
        .says(&[&liar, "dated in the future"]);

    fs::write(&rollout, state("testapp", "20261124T040512Z", OLD, &now)).expect("rollout");
    let before = b.honest();
    b.run(
        "rollout state at a missing release (rollout promote)",
        &["rollout", "promote", "test"],
    )
    .fails()
    .says(&["20261124T040512Z"]);
    b.assert_honest_unchanged(&before, "promote to a missing release");
    fs::remove_file(&rollout).expect("clean up");

    // 16-17. The current release's manifest and check list name `../../etc/passwd`:
    //        a deploy sends the whole release (the manifest is refused as a base); a
    //        rollback to it is refused by the check on that host.
    let live = fs::read_link(&current).expect("current");
    let release = b.liar_path(&live.display().to_string());
    let manifest = release.join(".slipway/manifest.jsonl");
    fs::set_permissions(
        release.join(".slipway"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .ok();
    let mut m = fs::read_to_string(&manifest).expect("manifest");
    m = format!(
        "{{\"path\":\"../../etc/passwd\",\"kind\":\"file\",\"size\":1,\"mode\":420,\"blake3\":\"{}\"}}\n{m}",
        "0".repeat(64)
    );
    fs::write(&manifest, &m).expect("manifest");
    let meta_path = release.join(".slipway/release.json");
    let mut meta: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&meta_path).expect("meta")).expect("meta json");
    meta["manifest_digest"] = slipway::archive::digest_of(&m).into();
    fs::write(&meta_path, format!("{meta}\n")).expect("meta");
    let sums = release.join(".slipway/manifest.sha256");
    let mut s = fs::read_to_string(&sums).expect("sha256 list");
    s.push_str(&format!("{}  ../../etc/passwd\n", "0".repeat(64)));
    fs::write(&sums, s).expect("sha256 list");
    let _ = fs::remove_file(release.join(".slipway/manifest.b2"));
    let _ = fs::remove_file(release.join(".slipway/stat"));
    let before = b.honest();
    b.s.app_file("index.html", "<h1>v6</h1>\n");
    b.run(
        "manifest lists ../../etc/passwd (deploy)",
        &["deploy", "test"],
    )
    .expect(0);
    b.assert_honest_deployed(&before, "deploy over a crafted manifest");
    let new = fs::read_link(&current).expect("current");
    assert!(!b.liar_path(&format!("{}/etc", new.display())).exists());
    let before = b.honest();
    b.run(
        "check list lists ../../etc/passwd (rollback)",
        &["rollback", "test"],
    )
    .fails()
    .blames(&liar)
    .says(&["../../etc/passwd"]);
    b.assert_honest_unchanged(&before, "rollback to a crafted check list");

    b.print_table("crafted files");
}
