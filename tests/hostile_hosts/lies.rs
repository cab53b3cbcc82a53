//! A host whose answers lie: crafted probe lines (release ids with `../`, `/`, escape
//! sequences, invalid UTF-8, JSON nested 10,000 deep), escape sequences in its errors,
//! a lock claimed for this very process, tools it does not have.

use std::fs;

use super::{Bench, LIAR_HOST};

#[test]
fn lying_answers_are_refused_or_ignored_and_shown_escaped() {
    let mut b = Bench::new(1);
    let liar = b.liar();
    let v1 = b.s.current(0).expect("v1 on host1");

    // 1. Escape sequences, `\r`, BEL, NUL and a C1 byte in a failing step's error.
    b.lie("esc-error");
    b.run("escape sequences in an error (status)", &["status", "test"])
        .fails()
        .blames(&liar)
        .says(&["\\x1b]0;pwned", "\\r"])
        .never_says(&["\nslipway: all good"]);

    // 2. The same with --json: valid JSON, the message escaped, not merely encoded.
    let ran = b.run(
        "escape sequences in an error (--json)",
        &["--json", "status", "test"],
    );
    ran.fails();
    let events = ran.json_lines();
    let all = serde_json::to_string(&events).expect("events");
    assert!(all.contains("\\\\x1b[2J"), "{all}");
    assert!(!all.contains("\\u001b"), "an ESC reached --json: {all}");

    // 3. Release ids with `../`, `/`, an absolute path, ESC/OSC and `\r`: not releases,
    //    never listed as such, never joined into a path.
    let record = |id: &str| {
        format!(
            "{{\"id\":\"{id}\",\"app\":\"testapp\",\"stage\":\"test\",\"revision\":\"r\",\"state\":\"ready\",\"created_at\":\"2026-01-01T00:00:00Z\",\"updated_at\":\"2026-01-01T00:00:00Z\",\"deployed_by\":\"x\",\"manifest_digest\":\"d\",\"files\":1,\"bytes\":1}}"
        )
    };
    let mut lines = Vec::new();
    for id in [
        "../../../etc",
        "20261124T040512Z/../../..",
        "/etc",
        "..",
        "\u{1b}]0;pwned\u{7}20261124T040512Z",
        "20261124T040512Z\r",
    ] {
        lines.extend_from_slice(format!("release\t{id}\t{}\n", record(id)).as_bytes());
    }
    b.extra_lines(&lines);
    let ran = b.run(
        "release ids with ../ / ESC \\r (releases)",
        &["releases", "test"],
    );
    ran.expect(0).never_says(&["../../../etc", "/etc  "]);
    let before = b.honest();
    b.s.app_file("index.html", "<h1>v2</h1>\n");
    b.run(
        "release ids with ../ / ESC \\r (deploy)",
        &["deploy", "test"],
    )
    .expect(0);
    b.assert_honest_deployed(&before, "crafted ids deploy");
    assert!(
        !b.s.fleet().host(LIAR_HOST).srv().join("etc").exists() && !b.liar_path("etc").exists(),
        "a crafted id became a directory on the lying host"
    );

    // 3b. A release id of the year 9999 on the lying host: the next release is still
    //     dated now on every host (not after it, where ids stop being timestamps).
    b.extra_lines(b"release\t99991231T235959Z\t\n");
    let before = b.honest();
    b.s.app_file("index.html", "<h1>v2.0</h1>\n");
    b.run("release id of the year 9999 (deploy)", &["deploy", "test"])
        .expect(0);
    b.assert_honest_deployed(&before, "year 9999");
    let year = chrono::Utc::now().format("%Y").to_string();
    assert!(
        b.s.current(0).is_some_and(|c| c.starts_with(&year)),
        "{:?}",
        b.s.current(0)
    );

    // 4. Invalid UTF-8 in release names, the lock owner and the rollout state.
    b.extra_lines(
        b"release\t\xff\xfe\x1b[31m\t{\"id\":\"\xff\"}\nlock\t{\"user\":\"\xff\xfe\",\"machine\":\"m\xc3\",\"pid\":1,\"command\":\"x\",\"since\":\"2026-01-01T00:00:00Z\",\"token\":\"t\"}\nrollout\t\xff{\n",
    );
    b.run("invalid UTF-8 (status)", &["status", "test"])
        .expect(0)
        .says(&[&liar, "locked by"]);
    let ran = b.run(
        "invalid UTF-8 (--json releases)",
        &["--json", "releases", "test"],
    );
    ran.expect(0);
    ran.json_lines();

    // 5. JSON nested 10,000 deep in a release record, the lock and the rollout state:
    //    unreadable records, no stack overflow.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    b.extra_lines(
        format!("release\t20200101T000000Z\t{deep}\nlock\t{deep}\nrollout\t{{\"app\":{deep}}}\n")
            .as_bytes(),
    );
    b.run("JSON nested 10,000 deep (status)", &["status", "test"])
        .expect(0)
        .says(&[&liar, "locked by"]);
    b.run("JSON nested 10,000 deep (releases)", &["releases", "test"])
        .expect(0)
        .says(&["20200101T000000Z  incomplete"]);
    // The lock script itself succeeded there (the lie is only appended): the junk is
    // ignored, the deploy goes on everywhere.
    let before = b.honest();
    b.s.app_file("index.html", "<h1>v2.1</h1>\n");
    b.run("JSON nested 10,000 deep (deploy)", &["deploy", "test"])
        .expect(0);
    b.assert_honest_deployed(&before, "deep JSON deploy");

    // 6. `current` pointing at another app's release, and at `../../`.
    for (case, link) in [
        (
            "current at another app's release (status)",
            "../../other/releases/20261124T040512Z",
        ),
        ("current at ../../ (status)", "../../"),
    ] {
        b.extra_lines(format!("current\t{link}\n").as_bytes());
        b.run(case, &["status", "test"])
            .expect(4)
            .says(&[&liar, "current points outside releases/"]);
    }

    // 7. A lock owner claiming to be this very process (same pid, same machine), with
    //    escape sequences in its command: held (never broken as stale, never taken for
    //    ours), exit 3 naming the host.
    b.lie("lock-me");
    let before = b.honest();
    b.run(
        "lock owner claiming this very process (deploy)",
        &["deploy", "test"],
    )
    .expect(3)
    .blames(&liar)
    .says(&["names this very process", "\\x1b[2J\\r"])
    .never_says(&["not-yours"]);
    b.assert_honest_unchanged(&before, "lock-me");
    let ran = b.run(
        "lock owner claiming this very process (rollback)",
        &["rollback", "test"],
    );
    ran.expect(3).blames(&liar);
    b.assert_honest_unchanged(&before, "lock-me rollback");

    // 8. A host saying it has tar when it has none: `check` believes the survey (it
    //    cannot know better), the deploy fails on that host naming it, before any switch.
    b.lie("no-tar");
    b.run("probe claims tools it lacks (check)", &["check", "test"])
        .expect(0);
    let before = b.honest();
    b.s.app_file("index.html", "<h1>v3</h1>\n");
    b.run("probe claims tools it lacks (deploy)", &["deploy", "test"])
        .fails()
        .blames(&liar)
        .says(&["upload failed", "claimed tar but has none"]);
    b.assert_honest_not_switched(&before, "no tar");

    // 9. A build hook whose output carries escape sequences (only host2 has the file
    //    it prints): shown escaped with -v; when it fails, its error too.
    b.lie("honest");
    let srv = b.s.fleet().host(LIAR_HOST).srv();
    fs::write(
        srv.join("hook-says"),
        "\u{1b}]0;pwned\u{7}\u{1b}[2J\rbuilt \u{9b}1m\u{202e}\n",
    )
    .expect("hook output");
    b.s.build_hooks.push(
        "cat /srv/hook-says 2>/dev/null; cat /srv/hook-says >&2 2>/dev/null; test ! -e /srv/hook-fails"
            .into(),
    );
    let before = b.honest();
    b.s.app_file("index.html", "<h1>v4</h1>\n");
    b.run(
        "hook output with escapes (deploy -v)",
        &["-v", "deploy", "test"],
    )
    .expect(0)
    .says(&["\\x1b]0;pwned\\x07\\x1b[2J\\rbuilt"]);
    b.assert_honest_deployed(&before, "hook output");
    fs::write(srv.join("hook-fails"), "").expect("hook fails");
    let before = b.honest();
    b.s.app_file("index.html", "<h1>v5</h1>\n");
    b.run("failing hook with escapes (deploy)", &["deploy", "test"])
        .fails()
        .blames(&liar)
        .says(&["build", "\\x1b]0;pwned"]);
    b.assert_honest_not_switched(&before, "failing hook");
    let ran = b.run(
        "failing hook with escapes (--json deploy)",
        &["--json", "deploy", "test"],
    );
    ran.fails();
    ran.json_lines();
    // A failing hook's error of 4 MiB on one line: the message that reaches the
    // terminal, the release records and every host's audit log stays short, and the
    // honest hosts are unlocked (a record too long for one shell argument would fail
    // there).
    fs::write(srv.join("hook-says"), "E".repeat(4 << 20)).expect("long hook output");
    let before = b.honest();
    let ran = b.run(
        "failing hook with a 4 MiB line (deploy)",
        &["deploy", "test"],
    );
    ran.fails().blames(&liar);
    assert!(
        ran.stderr.len() < 64 << 10,
        "{} bytes on stderr",
        ran.stderr.len()
    );
    b.assert_honest_not_switched(&before, "long hook error");
    for i in b.honest_hosts() {
        let log = fs::read_to_string(b.s.app_path(i, ".slipway/log.jsonl")).expect("log");
        let last = log.lines().last().expect("an audit record");
        assert!(
            last.len() < 16 << 10,
            "host{}: an audit record of {} bytes",
            i + 1,
            last.len()
        );
    }
    b.s.build_hooks.clear();

    assert_ne!(b.s.current(LIAR_HOST), None);
    assert_ne!(b.s.current(0).as_deref(), Some(v1.as_str()), "v2 is live");
    b.print_table("lying answers");
}
