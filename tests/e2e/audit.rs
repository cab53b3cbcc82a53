//! The audit log's hash chain on real hosts: an intact log verifies, and a line edited,
//! removed or reordered on one host is found and named (`slipway log --verify`).

use std::fs;

use super::scenario::{Run, Scenario};

/// The `result` event of a `--json` run.
fn result(run: &Run) -> serde_json::Value {
    run.stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "result")
        .unwrap_or_else(|| panic!("no result event in: {}", run.stdout))
}

fn log_lines(s: &Scenario, i: usize) -> Vec<String> {
    fs::read_to_string(s.app_path(i, ".slipway/log.jsonl"))
        .expect("the audit log")
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_log(s: &Scenario, i: usize, lines: &[String]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    fs::write(s.app_path(i, ".slipway/log.jsonl"), text).expect("rewrite the audit log");
}

#[test]
fn log_verify_finds_an_edited_a_removed_and_a_reordered_line_each_on_its_host() {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let s = Scenario::new().hosts(3);
    // Host 0's log began before slipway chained it: an older line, kept and counted.
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(s.app_path(0, ".slipway"))
        .unwrap();
    write_log(
        &s,
        0,
        &[r#"{"time":"2026-01-01T00:00:00Z","action":"deploy","stage":"test","actor":{"user":"old","machine":"m"},"command":"slipway deploy test","result":"ok","duration_ms":1}"#.into()],
    );
    fs::set_permissions(
        s.app_path(0, ".slipway/log.jsonl"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    s.app_file("index.html", "v1\n");
    s.deploy_ok();
    s.app_file("index.html", "v2\n");
    s.deploy_ok();
    s.rollback(&[]).ok();
    s.slipway(&["unlock", "test"]).ok();
    for i in 0..3 {
        let lines = log_lines(&s, i);
        let chained = lines.iter().filter(|l| l.starts_with("{\"seq\":")).count();
        assert_eq!(chained, 4, "host {i}: {lines:#?}");
    }

    // Intact: every host ok, with its head.
    let run = s.slipway(&["log", "--verify", "test"]).ok();
    assert_eq!(run.stdout.matches(" ok: ").count(), 3, "{}", run.stdout);
    assert_eq!(
        run.stdout.matches("head: entry 4").count(),
        3,
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("1 older line(s) before it"),
        "{}",
        run.stdout
    );
    let intact = result(&s.slipway(&["--json", "log", "--verify", "test"]).ok());
    let hosts = intact["data"]["result"]["hosts"]
        .as_array()
        .expect("hosts")
        .clone();
    assert_eq!(hosts.len(), 3);
    assert!(
        hosts
            .iter()
            .all(|h| h["ok"] == true && h["broken"].is_null())
    );
    assert_eq!(hosts[0]["chain_from"], 2);
    assert_eq!(hosts[0]["unchained"], 1);
    let names: Vec<String> = hosts
        .iter()
        .map(|h| h["host"].as_str().unwrap().to_string())
        .collect();
    let heads: Vec<String> = hosts
        .iter()
        .map(|h| h["head"]["hash"].as_str().unwrap().to_string())
        .collect();
    // The head is the SHA-256 of the last line: what a later check compares.
    let last = log_lines(&s, 1).pop().unwrap();
    let sha = std::process::Command::new("sh")
        .arg("-c")
        .arg("printf '%s' \"$1\" | sha256sum")
        .arg("sh")
        .arg(&last)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&sha.stdout).starts_with(&heads[1]));

    // Host 0: the second deploy's line (line 3: after the older line and the first
    // deploy) edited. Host 1: its second line removed. Host 2: lines 2 and 3 swapped.
    let mut lines = log_lines(&s, 0);
    assert!(lines[2].contains("\"result\":\"ok\""));
    lines[2] = lines[2].replace("\"result\":\"ok\"", "\"result\":\"failed\"");
    write_log(&s, 0, &lines);
    let mut lines = log_lines(&s, 1);
    lines.remove(1);
    write_log(&s, 1, &lines);
    let mut lines = log_lines(&s, 2);
    lines.swap(1, 2);
    write_log(&s, 2, &lines);

    let run = s.slipway(&["log", "--verify", "test"]).expect_code(4);
    let said = run.all_output();
    for (name, line, what) in [
        (&names[0], 3, "changed"),
        (&names[1], 2, "removed"),
        (&names[2], 2, "reordered"),
    ] {
        let report = said
            .lines()
            .find(|l| l.starts_with(name.as_str()) && l.contains("BROKEN"))
            .unwrap_or_else(|| panic!("{name} not named as broken:\n{said}"));
        assert!(
            report.contains(&format!("BROKEN at line {line}:"))
                && report.ends_with(&format!("({what})")),
            "{name}: expected line {line} {what}: {report}"
        );
    }
    let broken = result(
        &s.slipway(&["--json", "log", "--verify", "test"])
            .expect_code(4),
    );
    assert_eq!(broken["data"]["exit_class"], "diverged", "{broken}");
    let hosts = broken["data"]["result"]["report"]["hosts"]
        .as_array()
        .expect("the per-host report")
        .clone();
    let found: Vec<(u64, &str)> = hosts
        .iter()
        .map(|h| {
            (
                h["broken"]["line"].as_u64().unwrap_or(0),
                h["broken"]["kind"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        found,
        vec![(3, "changed"), (2, "removed"), (2, "reordered")]
    );

    // The merged log says where hosts disagree: the second deploy is recorded as it was
    // on host 2 only (removed on host 1, edited on host 0), and the edited record on
    // host 0 only.
    let merged = s.slipway(&["log", "test"]).ok();
    assert!(
        merged.stdout.contains(&format!(
            "MISSING on {}, {} (recorded on {})",
            names[0], names[1], names[2]
        )) && merged.stdout.contains(&format!(
            "MISSING on {}, {} (recorded on {})",
            names[1], names[2], names[0]
        )) && merged
            .stdout
            .contains("hosts disagree: 2 entries are missing"),
        "{}",
        merged.stdout
    );
}

#[test]
fn appends_without_the_deploy_lock_keep_the_chain_while_a_run_holds_it() {
    // `unlock` writes its record without taking the lock, while a deploy may be writing
    // its own: both chain, in some order, on every host.
    let s = Scenario::new().hosts(2);
    s.app_file("index.html", "v1\n");
    s.deploy_ok();
    let children: Vec<_> = (0..4)
        .map(|_| {
            s.command(&["unlock", "test"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn unlock")
        })
        .collect();
    // The deploy may lose its lock to an unlock (that is what unlock does), so its exit
    // is not the point here: every host's chain is.
    s.app_file("index.html", "v2\n");
    s.deploy();
    for mut c in children {
        c.wait().expect("unlock ran");
    }
    let run = s.slipway(&["log", "--verify", "test"]).ok();
    assert_eq!(run.stdout.matches(" ok: ").count(), 2, "{}", run.stdout);
    for i in 0..2 {
        assert!(
            log_lines(&s, i).len() >= 6,
            "host {i}: {:#?}",
            log_lines(&s, i)
        );
    }
}

#[test]
fn heads_saved_earlier_catch_a_cut_log_and_a_log_rewritten_with_a_new_chain() {
    let s = Scenario::new().hosts(2);
    s.app_file("index.html", "v1\n");
    s.deploy_ok();
    s.app_file("index.html", "v2\n");
    s.deploy_ok();
    let saved = s.slipway(&["--json", "log", "--verify", "test"]).ok();
    let heads = s.dir().join("heads.json");
    fs::write(&heads, &saved.stdout).unwrap();
    let against = heads.to_str().unwrap();
    // Later entries are fine.
    s.rollback(&[]).ok();
    let run = s
        .slipway(&["log", "--verify", "test", "--against", against])
        .ok();
    assert!(
        run.stdout.contains("still holds the head saved earlier"),
        "{}",
        run.stdout
    );

    // Host 0: cut back to its first entry. Host 1: its first record edited and the whole
    // chain recomputed, as someone with write access to the host could.
    let mut lines = log_lines(&s, 0);
    lines.truncate(1);
    write_log(&s, 0, &lines);
    let mut rechained: Vec<String> = Vec::new();
    for (i, line) in log_lines(&s, 1).iter().enumerate() {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        if i == 0 {
            v["actor"]["user"] = "someone-else".into();
        }
        let prev = rechained
            .last()
            .map(|p| slipway::audit_chain::sha256_hex(p.as_bytes()))
            .unwrap_or_else(|| slipway::audit_chain::GENESIS.to_string());
        let fields = v.as_object_mut().unwrap();
        fields.remove("seq");
        fields.remove("prev");
        let body = serde_json::to_string(&v).unwrap();
        let body = body.strip_prefix('{').unwrap();
        rechained.push(format!("{{\"seq\":{},\"prev\":\"{prev}\",{body}", i + 1));
    }
    write_log(&s, 1, &rechained);
    // Both chains are intact on their own...
    s.slipway(&["log", "--verify", "test"]).ok();
    // ...but not the logs that were saved.
    let run = s
        .slipway(&["log", "--verify", "test", "--against", against])
        .expect_code(4);
    let said = run.all_output();
    let names: Vec<String> = (0..2).map(|i| s.fleet().host(i).address.clone()).collect();
    let line_of = |name: &str| {
        said.lines()
            .find(|l| l.starts_with(name) && l.contains("BROKEN"))
            .unwrap_or_else(|| panic!("{name} not named:\n{said}"))
            .to_string()
    };
    assert!(
        line_of(&names[0]).contains("is no longer in the log: it was cut or rewritten"),
        "{said}"
    );
    assert!(
        line_of(&names[1]).contains("BROKEN at line 2:")
            && line_of(&names[1]).contains("the log was rewritten up to it"),
        "{said}"
    );
    // A file that is not such an output is a usage error.
    let wrong = s.dir().join("deploy.toml");
    s.slipway(&[
        "log",
        "--verify",
        "test",
        "--against",
        wrong.to_str().unwrap(),
    ])
    .expect_code(2);
}
