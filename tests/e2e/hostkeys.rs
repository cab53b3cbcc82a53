use crate::scenario::Scenario;

#[test]
fn an_unknown_host_key_is_refused_with_how_to_trust_it() {
    let s = Scenario::new().hosts(2);
    s.fleet().forget_host_key(1);
    let run = s.deploy();
    assert_eq!(run.code, 1, "{}", run.all_output());
    let host = s.fleet().host(1);
    assert!(
        run.stderr
            .contains(&format!("{}:{}", host.address, host.port)),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("host key is not known"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(&format!("ssh-keyscan -p {} {}", host.port, host.address)),
        "says how to trust it: {}",
        run.stderr
    );
    // Nothing happened on any host.
    for i in 0..2 {
        assert!(!s.app_path(i, "releases").exists(), "host {i} was touched");
    }
    // `check` reports the same.
    let run = s.slipway(&["check", "test"]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("host key is not known"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_changed_host_key_is_refused_loudly_even_with_accept_new() {
    let mut s = Scenario::new().hosts(1);
    s.deploy_ok();
    s.fleet_mut().change_host_key(0);
    let s = Scenario {
        extra: String::new(),
        ..s
    };
    let text = s.config_text().replace(
        "connect_timeout = \"5s\"",
        "connect_timeout = \"5s\"\nknown_hosts = \"accept-new\"",
    );
    std::fs::write(s.dir().join("accept-new.toml"), text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_slipway"))
        .arg("-c")
        .arg(s.dir().join("accept-new.toml"))
        .args(["deploy", "test"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("HOST KEY HAS CHANGED") && stderr.contains("ssh-keygen -R"),
        "{stderr}"
    );
}

#[test]
fn accept_new_trusts_an_unknown_key_on_first_contact() {
    let s = Scenario::new().hosts(1);
    s.fleet().forget_host_key(0);
    let text = s.config_text().replace(
        "connect_timeout = \"5s\"",
        "connect_timeout = \"5s\"\nknown_hosts = \"accept-new\"",
    );
    std::fs::write(s.dir().join("accept-new.toml"), text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_slipway"))
        .arg("-c")
        .arg(s.dir().join("accept-new.toml"))
        .args(["deploy", "test"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let known = std::fs::read_to_string(s.fleet().known_hosts()).unwrap();
    assert!(
        known.contains(&s.fleet().host(0).address),
        "the key was recorded: {known}"
    );
}
