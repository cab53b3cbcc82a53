//! The README's "Deploy your own app", step by step, as a new user would: init in a
//! project, point the generated file at a host, check, deploy, deploy again, roll back.

use std::fs;
use std::process::Command;

use crate::hosts::Fleet;
use crate::scenario::toml_string;

fn slipway(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_slipway"))
        .current_dir(dir)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("SLIPWAY_CONFIG")
        .env_remove("SLIPWAY_FAULT")
        .output()
        .expect("run slipway");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[track_caller]
fn ok(dir: &std::path::Path, args: &[&str]) -> String {
    let (code, stdout, stderr) = slipway(dir, args);
    assert_eq!(
        code, 0,
        "slipway {args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}

#[test]
fn init_configure_check_deploy_and_roll_back_as_the_readme_says() {
    let fleet = Fleet::start(1);
    let host = fleet.host(0);
    let project = tempfile::tempdir().unwrap();
    let site = project.path().join("site");
    fs::create_dir_all(site.join("public")).unwrap();
    fs::write(site.join("public/index.html"), "<h1>v1</h1>\n").unwrap();

    // 4. Configure: init, then edit deploy_to, [ssh] and the production hosts.
    let said = ok(&site, &["init"]);
    assert!(said.contains("recipe static-site"), "{said}");
    let generated = fs::read_to_string(site.join("deploy.toml")).unwrap();
    let edited = generated
        .replace(
            "user = \"deploy\"",
            &format!(
                "user = {}\nconfig_file = {}",
                toml_string(&fleet.user()),
                toml_string(&fleet.ssh_config().display().to_string())
            ),
        )
        .replace(
            "{ address = \"app1.example.com\", roles = [\"app\"] }",
            &format!(
                "{{ address = \"{}\", port = {}, roles = [\"app\"] }}",
                host.address, host.port
            ),
        );
    assert_ne!(
        edited, generated,
        "the generated file has the lines the README edits"
    );
    fs::write(site.join("deploy.toml"), &edited).unwrap();
    ok(&site, &["check", "production", "--config-only"]);
    let shown = ok(&site, &["config", "production"]);
    assert!(shown.contains(&host.address), "{shown}");
    let checked = ok(&site, &["check", "production"]);
    assert!(checked.contains("all checks passed"), "{checked}");

    // 5. Deploy (a dry run first), deploy again, roll back.
    let plan = ok(&site, &["--dry-run", "deploy", "production"]);
    assert!(plan.contains("Plan: deploy release"), "{plan}");
    let first = ok(&site, &["deploy", "production"]);
    fs::write(site.join("public/index.html"), "<h1>v2</h1>\n").unwrap();
    let second = ok(&site, &["deploy", "production"]);
    assert_ne!(first, second);
    let served = host.path("/srv/site/current/public/index.html");
    assert_eq!(fs::read_to_string(&served).unwrap(), "<h1>v2</h1>\n");
    ok(&site, &["releases", "production"]);
    let back = ok(
        &site,
        &["rollback", "production", "--reason", "trying it out"],
    );
    assert!(back.contains("rolled back"), "{back}");
    assert_eq!(fs::read_to_string(&served).unwrap(), "<h1>v1</h1>\n");
}
