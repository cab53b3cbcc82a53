//! Safe permissions on the lock, the audit log and their directory; a planted database
//! password never appears in any output, log or file on the hosts.

use std::os::unix::fs::PermissionsExt;

use crate::scenario::{Scenario, wait_for_stderr};
use crate::{Stderr, kill9};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn lock_and_audit_files_are_private_to_the_deploy_user() {
    let s = Scenario::new().hosts(2);
    s.deploy_ok();
    s.app_file("index.html", "v2");
    let mut child = s.spawn_with_fault(&["deploy", "test"], "deploy.after-upload:pause");
    wait_for_stderr(&mut child, "fault point deploy.after-upload: paused");
    for i in 0..s.host_count() {
        assert_eq!(mode(&s.app_path(i, ".slipway")), 0o700, "host {i} .slipway");
        assert_eq!(
            mode(&s.app_path(i, ".slipway/lock")),
            0o700,
            "host {i} lock"
        );
        assert_eq!(
            mode(&s.app_path(i, ".slipway/lock/owner.json")),
            0o600,
            "host {i} lock record"
        );
        assert_eq!(
            mode(&s.app_path(i, ".slipway/log.jsonl")),
            0o600,
            "host {i} audit log"
        );
    }
    kill9(&mut child);
    s.slipway(&["unlock", "test"]).ok();
}

const SECRET: &str = "PLANTED-s3cret-pw";

fn files_containing(dir: &std::path::Path, needle: &[u8], out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_symlink() {
            continue;
        }
        if p.is_dir() {
            files_containing(&p, needle, out);
        } else if let Ok(bytes) = std::fs::read(&p)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            out.push(p.display().to_string());
        }
    }
}

#[test]
fn a_planted_database_password_appears_in_no_output_log_or_host_file() {
    let mut s = Scenario::new().hosts(2);
    s.app_file("migrations/0001_init.up.sql", "create table t (x int);\n");
    s.app_file("migrations/0001_init.down.sql", "drop table t;\n");
    s.extra =
        "[database]\ndriver = \"postgres\"\nurl_env = \"SLIPWAY_TEST_DB_URL\"\nrole = \"db\"\n"
            .into();
    // Port 9 (discard): nothing listens, the connection fails, and error paths are
    // exactly where a URL tends to leak.
    let url = format!("postgres://app:{SECRET}@127.0.0.1:9/shop?password={SECRET}");
    let mut everything = String::new();
    let commands: &[&[&str]] = &[
        &["deploy", "test"],
        &["--json", "deploy", "test"],
        &["-v", "deploy", "test"],
        &["--dry-run", "deploy", "test"],
        &["check", "test"],
        &["status", "test"],
        &["releases", "test"],
        &["-v", "rollback", "test", "--reason", "check the secret"],
        &["db", "status", "test"],
        &["--json", "db", "status", "test"],
        &["log", "test"],
        &["--json", "log", "test"],
    ];
    for args in commands {
        let mut cmd = s.command(args);
        cmd.env("SLIPWAY_TEST_DB_URL", &url)
            .env("PGPASSWORD", SECRET)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("spawn");
        let err = Stderr::collect(&mut child);
        let run = err.finish(child);
        everything.push_str(&format!(
            "$ slipway {}\n{}\n",
            args.join(" "),
            run.all_output()
        ));
    }
    // The commands ran and said something (the database is unreachable: they fail).
    assert!(
        everything.contains("127.0.0.1:9") || everything.contains("database"),
        "{everything}"
    );
    assert!(
        !everything.contains(SECRET),
        "the password leaked into the output:\n{everything}"
    );
    let mut leaked = Vec::new();
    for i in 0..s.host_count() {
        files_containing(&s.fleet().host(i).srv(), SECRET.as_bytes(), &mut leaked);
    }
    files_containing(s.dir(), SECRET.as_bytes(), &mut leaked);
    assert!(leaked.is_empty(), "the password is in: {leaked:?}");
}
