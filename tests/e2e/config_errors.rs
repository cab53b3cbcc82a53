//! Malformed configurations exit 2 with a message naming the key and its line, and
//! connect nowhere.

use std::net::TcpListener;
use std::process::Command;

fn run(dir: &std::path::Path, text: &str, args: &[&str]) -> (i32, String) {
    let path = dir.join("deploy.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_slipway"))
        .arg("-c")
        .arg(&path)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn malformed_configs_exit_2_naming_key_and_line_without_connecting() {
    // A "host" that counts connections: none may arrive.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("app")).unwrap();
    std::fs::write(dir.path().join("app/index.html"), "x").unwrap();
    let stage = format!("[stages.prod]\nhosts = [{{ address = \"127.0.0.1\", port = {port} }}]\n");
    let good =
        format!("app = \"shop\"\ndeploy_to = \"/srv/shop\"\n[source]\npath = \"app\"\n{stage}");
    // Sanity: the good config is accepted.
    let (code, err) = run(dir.path(), &good, &["check", "prod", "--config-only"]);
    assert_eq!(code, 0, "{err}");

    // (config text, text the error must contain, the line it must name)
    let cases: Vec<(String, &str, usize)> = vec![
        ("app = \"shop\"\ndeploy_to = \"/srv/shop\"\n[stages.prod\n".into(), "", 3),
        ("app = \"shop\"\ndeploy_to = \"/srv/shop\"\ncolour = \"red\"\n".to_string() + &stage, "unknown field `colour`", 3),
        ("app = \"shop\"\ndeploy_to = \"/srv/shop\"\nkeep_releases = \"five\"\n".to_string() + &stage, "keep_releases", 3),
        ("app = \"shop\"\ndeploy_to = \"/srv/shop\"\nkeep_releases = 0\n".to_string() + &stage, "keep_releases", 3),
        ("app = \"shop\"\ndeploy_to = \"srv/shop\"\n".to_string() + &stage, "deploy_to", 2),
        ("app = \"shop\"\ndeploy_to = \"/srv/../etc\"\n".to_string() + &stage, "deploy_to", 2),
        ("app = \"shop\"\ndeploy_to = \"/\"\n".to_string() + &stage, "deploy_to", 2),
        ("deploy_to = \"/srv/shop\"\n".to_string() + &stage, "app", 0),
        ("app = \"shop\"\ndeploy_to = \"/srv/shop\"\n[shared]\nfiles = [\"../secrets\"]\n".to_string() + &stage, "shared.files[0]", 4),
        ("app = \"shop\"\ndeploy_to = \"/srv/shop\"\n[shared]\ndirs = [\"/var/log\"]\n".to_string() + &stage, "shared.dirs[0]", 4),
        ("app = \"shop\"\ndeploy_to = \"/srv/shop\"\n[stages.prod]\nhosts = []\n".into(), "stages.prod.hosts", 4),
        ("app = \"shop\"\ndeploy_to = \"/srv/shop\"\n".into(), "stages", 0),
        ("app = \"shop\"\ndeploy_to = \"/srv/shop\"\n[stages.prod]\nhosts = [{ address = \"a\" }, { address = \"a\" }]\n".to_string(), "listed twice", 4),
        ("app = \"shop\"\ndeploy_to = \"/srv/shop\"\n[stages.prod]\nhosts = [{ address = \"a\", port = 70000 }]\n".to_string(), "port", 4),
        ("app = \"shop\"\ndeploy_to = \"/srv/shop\"\n[stages.prod]\nhosts = [{ adress = \"a\" }]\n".to_string(), "unknown field `adress`", 4),
        ("app = \"shop\"\ndeploy_to = \"/srv/shop\"\n[ssh]\nknown_hosts = \"yolo\"\n".to_string() + &stage, "ssh.known_hosts", 4),
        ("app = \"shop\"\ndeploy_to = \"/srv/shop\"\n[ssh]\nidentity_file = \"/nonexistent/key\"\n".to_string() + &stage, "ssh.identity_file", 4),
        ("app = \"shop\"\ndeploy_to = \"/srv/shop\"\ntransport = \"ftp\"\n".to_string() + &stage, "transport", 3),
        ("app = \"sh op\"\ndeploy_to = \"/srv/shop\"\n".to_string() + &stage, "app", 1),
        ("app = \"shop\"\ndeploy_to = \"/srv/shop\"\n[hooks]\nbuild = \"bin/build\"\n".to_string() + &stage, "build", 4),
        ("app = \"shop\"\ndeploy_to = \"/srv/shop\"\n[hooks]\nbuild = [\"\"]\n".to_string() + &stage, "hooks.build[0]", 4),
        ("app = \"shop\"\ndeploy_to = \"/srv/shop\"\n[timeouts]\ncommand = \"soon\"\n".to_string() + &stage, "timeouts.command", 4),
        ("app = \"shop\"\ndeploy_to = \"/srv/shop\"\n[shared]\nfiles = [\"config\"]\ndirs = [\"config\"]\n".to_string() + &stage, "overlap", 5),
        ("app = \"shop\"\ndeploy_to = \"/srv/shop\"\n[stages.prod]\ntransport = \"local\"\nhosts = [{ address = \"a\" }]\n".into(), "stages.prod.hosts", 5),
        ("app = \"shop\"\ndeploy_to = \"/srv/shop\"\n[stages.\"pr od\"]\nhosts = [{ address = \"a\" }]\n".into(), "stage name", 3),
    ];
    assert!(cases.len() >= 15);
    for (text, needle, line) in &cases {
        let (code, err) = run(dir.path(), text, &["deploy", "prod"]);
        assert_eq!(code, 2, "config:\n{text}\nerror: {err}");
        assert!(
            err.contains(needle),
            "expected `{needle}` in: {err}\nconfig:\n{text}"
        );
        if *line > 0 {
            assert!(
                err.contains(&format!("deploy.toml:{line}:")),
                "expected line {line} in: {err}\nconfig:\n{text}"
            );
        }
    }
    // A webhook CA that is missing, or not a certificate: the key and the file are named.
    std::fs::write(
        dir.path().join("not-a-ca.pem"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("empty-ca.pem"), "").unwrap();
    for file in ["missing-ca.pem", "not-a-ca.pem", "empty-ca.pem"] {
        let text = format!(
            "app = \"shop\"\ndeploy_to = \"/srv/shop\"\n[rollout]\nevent = \"https://hooks.example.com/x\"\nevent_ca = \"{file}\"\n{stage}"
        );
        let (code, err) = run(dir.path(), &text, &["deploy", "prod"]);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains("rollout.event_ca")
                && err.contains(&dir.path().join(file).display().to_string())
                && err.contains("deploy.toml:5:"),
            "{err}"
        );
    }
    // A stage that is not in the file.
    let (code, err) = run(dir.path(), &good, &["deploy", "staging"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no stage `staging`") && err.contains("prod"),
        "{err}"
    );
    // Bad command lines.
    let (code, _) = run(dir.path(), &good, &["deploy"]);
    assert_eq!(code, 2);
    let (code, err) = run(dir.path(), &good, &["rollback", "prod", "--to", "../x"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a release id"), "{err}");
    let (code, _) = run(
        dir.path(),
        &good,
        &["--lock-wait", "forever", "deploy", "prod"],
    );
    assert_eq!(code, 2);
    let out = Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args(["-c", "/nonexistent/deploy.toml", "deploy", "prod"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read the configuration"), "{err}");

    assert!(
        listener.accept().is_err(),
        "slipway connected to a host despite a bad configuration"
    );
}
