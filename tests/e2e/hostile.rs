use std::fs;
use std::path::Path;

use crate::scenario::{Scenario, toml_string};

/// Values that a shell would run if they were pasted into a command unquoted.
const HOSTILE: [&str; 6] = [
    "$(touch {m})",
    "`touch {m}`",
    "x; touch {m}",
    "it's \"q\" $(touch {m})",
    "a b|touch {m}",
    "x&&touch {m}",
];

fn marker(dir: &Path, n: usize) -> String {
    dir.join(format!("injected-{n}")).display().to_string()
}

#[test]
fn hostile_deploy_to_shared_paths_and_hook_environment_are_quoted() {
    let base = Scenario::new().hosts(1);
    let markers_dir = base.dir().to_path_buf();
    let mut s = base;
    for (n, pattern) in HOSTILE.iter().enumerate() {
        let m = marker(&markers_dir, n);
        let value = pattern.replace("{m}", &m);
        // deploy_to, a shared file and a shared dir all carry the hostile value.
        s = Scenario {
            deploy_to: format!("/srv/{value}"),
            shared_files: vec![format!("cfg/{value}")],
            shared_dirs: vec![format!("dir {value}")],
            ..s
        };
        s = Scenario {
            restart_hooks: vec![
                "printf '%s' \"$SLIPWAY_DEPLOY_TO\" > \"$SLIPWAY_RELEASE_PATH/../../seen\"".into(),
            ],
            ..s
        };
        let shared = s.host_path(0, &format!("{}/shared/cfg/{value}", s.deploy_to));
        fs::create_dir_all(shared.parent().unwrap()).unwrap();
        fs::write(&shared, "ok").unwrap();
        let run = s.deploy();
        assert_eq!(run.code, 0, "value {value:?}: {}", run.all_output());
        let id = run.release_id();
        // Everything landed at the literal path.
        let release = s.host_path(0, &format!("{}/releases/{id}", s.deploy_to));
        let link = fs::read_link(release.join(format!("cfg/{value}"))).unwrap();
        assert_eq!(
            link.to_string_lossy(),
            format!("{}/shared/cfg/{value}", s.deploy_to)
        );
        assert_eq!(
            fs::read_to_string(s.host_path(0, &link.to_string_lossy())).unwrap(),
            "ok"
        );
        let link = fs::read_link(release.join(format!("dir {value}"))).unwrap();
        assert!(s.host_path(0, &link.to_string_lossy()).is_dir());
        let seen = fs::read_to_string(s.host_path(0, &format!("{}/seen", s.deploy_to))).unwrap();
        assert_eq!(
            seen,
            format!("/srv/{value}"),
            "the hook saw the literal value"
        );
        s.rollback(&["--to", &id]).expect_code(1); // already current: refused, but quoted all the same
        assert!(
            !Path::new(&m).exists(),
            "value {value:?} ran an injected command"
        );
    }
}

#[test]
fn hostile_values_that_cannot_be_quoted_safely_are_rejected_at_load() {
    let s = Scenario::new().hosts(1);
    let m = marker(s.dir(), 99);
    let cases = [
        ("deploy_to", format!("/srv/a\ntouch {m}")),
        ("deploy_to", "relative/$(touch x)".to_string()),
        ("app", format!("$(touch {m})")),
        ("keep_releases", "\"$(touch x)\"".to_string()),
    ];
    for (key, value) in cases {
        let text = s.config_text();
        let line = if key == "keep_releases" {
            format!("{key} = {value}")
        } else {
            format!("{key} = {}", toml_string(&value))
        };
        let patched: String = text
            .lines()
            .map(|l| {
                if l.starts_with(&format!("{key} =")) {
                    line.clone()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let path = s.dir().join("hostile.toml");
        fs::write(&path, patched).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_slipway"))
            .arg("-c")
            .arg(&path)
            .args(["deploy", "test"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key} = {value:?}: {stderr}");
        assert!(stderr.contains(key), "{stderr}");
        assert!(!Path::new(&m).exists());
    }
    // The host was never touched.
    assert!(!s.host_path(0, "/srv/app").exists());
}

#[test]
fn a_hostile_host_address_cannot_become_an_ssh_option() {
    let s = Scenario::new().hosts(1);
    let m = marker(s.dir(), 77);
    let text = s.config_text().replace(
        &format!("address = \"{}\"", s.fleet().host(0).address),
        &format!("address = \"-oProxyCommand=touch {m}\""),
    );
    let path = s.dir().join("hostile-host.toml");
    fs::write(&path, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_slipway"))
        .arg("-c")
        .arg(&path)
        .args(["deploy", "test"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("address"));
    assert!(!Path::new(&m).exists());
}
