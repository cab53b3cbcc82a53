//! The commands that need no host: init, recipes (and their dry-run plans on the local
//! transport), config, completions, man.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use slipway::recipe::RECIPES;

fn slipway(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_slipway"))
        .current_dir(dir)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("SLIPWAY_CONFIG")
        .output()
        .expect("run slipway")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[track_caller]
fn ok(out: Output) -> String {
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status.code()
    );
    stdout
}

fn touch(dir: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let p = dir.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
}

#[test]
fn init_detects_rails_node_and_rust_and_writes_a_config_that_checks() {
    let samples: [(&str, &[(&str, &str)]); 3] = [
        (
            "rails",
            &[
                ("Gemfile", "source 'https://rubygems.org'\ngem 'rails'\n"),
                ("config/application.rb", "module Shop; end\n"),
                ("package.json", "{}\n"),
            ],
        ),
        ("node", &[("package.json", "{\"name\": \"shop\"}\n")]),
        (
            "rust-binary",
            &[
                (
                    "Cargo.toml",
                    "[package]\nname = \"shop\"\nversion = \"0.1.0\"\n",
                ),
                ("src/main.rs", "fn main() {}\n"),
            ],
        ),
    ];
    for (recipe, files) in samples {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("shop");
        fs::create_dir_all(&project).unwrap();
        touch(&project, files);

        let said = ok(slipway(&project, &["init"]));
        assert!(said.contains(&format!("recipe {recipe}")), "{said}");
        let written = fs::read_to_string(project.join("deploy.toml")).unwrap();
        assert!(
            written.contains(&format!("recipe = \"{recipe}\"")),
            "{written}"
        );
        assert!(written.contains("app = \"shop\""), "{written}");

        for stage in ["production", "staging", "local"] {
            let checked = ok(slipway(&project, &["check", stage, "--config-only"]));
            assert!(
                checked.contains(&format!("recipe {recipe}")),
                "{stage}: {checked}"
            );
        }

        // Never overwritten without --force.
        fs::write(project.join("deploy.toml"), "# mine\n").unwrap();
        let again = slipway(&project, &["init"]);
        assert_eq!(again.status.code(), Some(2), "{:?}", text(&again));
        assert!(text(&again).1.contains("--force"), "{:?}", text(&again));
        assert_eq!(
            fs::read_to_string(project.join("deploy.toml")).unwrap(),
            "# mine\n"
        );
        ok(slipway(&project, &["init", "--force"]));
        assert!(
            fs::read_to_string(project.join("deploy.toml"))
                .unwrap()
                .contains(&format!("recipe = \"{recipe}\""))
        );
    }
}

#[test]
fn init_dry_run_prints_the_file_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    touch(dir.path(), &[("index.html", "<h1>hi</h1>\n")]);
    let out = ok(slipway(dir.path(), &["init", "--dry-run"]));
    assert!(out.contains("recipe = \"static-site\""), "{out}");
    assert!(!dir.path().join("deploy.toml").exists());
}

/// A config using `recipe`, with a `[database]` section (so that the recipe's migration
/// commands apply), deploying on this machine.
fn recipe_config(dir: &Path, recipe: &str, extra: &str) {
    let deploy_to = dir.join("srv");
    let has_database = slipway::recipe::find(recipe)
        .unwrap()
        .database_command("migrate_command")
        .is_some();
    touch(dir, &[("app/index.html", "hi\n")]);
    fs::write(
        dir.join("deploy.toml"),
        format!(
            "app = \"shop\"\ndeploy_to = \"{}\"\nrecipe = \"{recipe}\"\n[source]\npath = \"app\"\n{}{extra}\n[stages.local]\ntransport = \"local\"\n",
            deploy_to.display(),
            if has_database { "[database]\nrole = \"db\"\n" } else { "" },
        ),
    )
    .unwrap();
}

fn strings(value: Option<&toml::Value>) -> Vec<String> {
    value
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_recipe_loads_and_its_dry_run_lists_its_hooks_and_migrations() {
    for recipe in RECIPES {
        let dir = tempfile::tempdir().unwrap();
        recipe_config(dir.path(), recipe.name, "");
        let table = recipe.table().unwrap();
        let hooks = table.get("hooks").and_then(|h| h.as_table()).cloned();
        let build = strings(hooks.as_ref().and_then(|h| h.get("build")));
        let restart = strings(hooks.as_ref().and_then(|h| h.get("restart")));

        let plan = ok(slipway(dir.path(), &["--dry-run", "deploy", "local"]));
        for hook in build.iter().chain(&restart) {
            assert!(
                plan.contains(hook.as_str()),
                "{}: {hook}\n{plan}",
                recipe.name
            );
        }
        match recipe.database_command("migrate_command") {
            Some(migrate) => assert!(
                plan.contains(&format!("migrate_command `{migrate}`")),
                "{}: {plan}",
                recipe.name
            ),
            None => assert!(!plan.contains("migrate"), "{}: {plan}", recipe.name),
        }
        assert!(
            !dir.path().join("srv/releases").exists(),
            "dry run changed nothing"
        );

        // `slipway config` shows the recipe's migration commands and hooks, merged.
        let shown = ok(slipway(dir.path(), &["config", "local"]));
        let view: toml::Table = shown.parse().expect("config prints TOML");
        for key in ["migrate_command", "rollback_command", "version_command"] {
            assert_eq!(
                view.get("database")
                    .and_then(|d| d.get(key))
                    .and_then(|v| v.as_str())
                    .map(str::to_string),
                recipe.database_command(key),
                "{}: {key}",
                recipe.name
            );
        }
        assert_eq!(
            strings(view.get("hooks").and_then(|h| h.get("build"))),
            build
        );
    }
}

#[test]
fn a_recipe_is_overridden_key_by_key_at_the_top_and_in_a_stage() {
    let dir = tempfile::tempdir().unwrap();
    recipe_config(
        dir.path(),
        "rails",
        // The rails recipe migrates in framework mode: command mode is the file's own choice.
        "[hooks]\nbuild = [\"make assets\"]\n[database]\nmigrate_command = \"bin/migrate-all\"\nversion_command = \"bin/schema-version\"\n",
    );
    // The [database] table appears twice now: fix the file to one.
    let text = fs::read_to_string(dir.path().join("deploy.toml"))
        .unwrap()
        .replacen("[database]\nrole = \"db\"\n", "", 1);
    fs::write(dir.path().join("deploy.toml"), &text).unwrap();
    let plan = ok(slipway(dir.path(), &["--dry-run", "deploy", "local"]));
    assert!(plan.contains("make assets"), "{plan}");
    assert!(
        !plan.contains("bundle install"),
        "the whole list is replaced: {plan}"
    );
    let restart = &strings(
        slipway::recipe::find("rails")
            .unwrap()
            .table()
            .unwrap()
            .get("hooks")
            .and_then(|h| h.get("restart")),
    )[0];
    assert!(
        plan.contains(restart.as_str()),
        "restart stays the recipe's: {plan}"
    );
    assert!(plan.contains("migrate_command `bin/migrate-all`"), "{plan}");

    // A stage overrides the top level, which overrides the recipe.
    let staged = format!(
        "{text}[stages.other]\ntransport = \"local\"\n[stages.other.hooks]\nrestart = [\"touch tmp/restart.txt\"]\n"
    );
    fs::write(dir.path().join("deploy.toml"), staged).unwrap();
    let plan = ok(slipway(dir.path(), &["--dry-run", "deploy", "other"]));
    assert!(plan.contains("touch tmp/restart.txt"), "{plan}");
    assert!(plan.contains("make assets"), "{plan}");
}

#[test]
fn an_unknown_recipe_is_a_config_error_naming_the_recipes() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("deploy.toml"),
        "app = \"x\"\ndeploy_to = \"/srv/x\"\nrecipe = \"rials\"\n[stages.local]\ntransport = \"local\"\n",
    )
    .unwrap();
    let out = slipway(dir.path(), &["check", "local", "--config-only"]);
    assert_eq!(out.status.code(), Some(2));
    let (_, stderr) = text(&out);
    assert!(stderr.contains("deploy.toml:3:1"), "{stderr}");
    assert!(stderr.contains("unknown recipe `rials`"), "{stderr}");
    assert!(stderr.contains("rails"), "{stderr}");
}

#[test]
fn recipes_are_listed_and_shown() {
    let dir = tempfile::tempdir().unwrap();
    let list = ok(slipway(dir.path(), &["recipes"]));
    for recipe in RECIPES {
        assert!(list.contains(recipe.name), "{list}");
    }
    let shown = ok(slipway(dir.path(), &["recipes", "show", "rails"]));
    assert_eq!(shown.trim_end(), RECIPES[0].text.trim_end());
    let missing = slipway(dir.path(), &["recipes", "show", "cobol"]);
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn variables_are_interpolated_and_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("deploy.toml"),
        "app = \"x\"\ndeploy_to = \"/srv/${APP_DIR}\"\n[hooks]\nrestart = [\"curl -H 'X-Token: ${DEPLOY_TOKEN}' https://hooks.example/${APP_DIR}\", \"echo $${literal} $HOME\"]\nbuild = [\"DATABASE_URL=postgres://app:hunter2@db/x bin/build\"]\n[stages.local]\ntransport = \"local\"\n",
    )
    .unwrap();
    let run = |envs: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_slipway"));
        cmd.current_dir(dir.path())
            .args(["config", "local"])
            .env_remove("APP_DIR")
            .env_remove("DEPLOY_TOKEN");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let missing = run(&[("APP_DIR", "shop")]);
    assert_eq!(missing.status.code(), Some(2));
    let (_, stderr) = text(&missing);
    assert!(stderr.contains("deploy.toml:4:"), "{stderr}");
    assert!(stderr.contains("hooks.restart[0]"), "{stderr}");
    assert!(stderr.contains("DEPLOY_TOKEN is not set"), "{stderr}");

    let shown = ok(run(&[("APP_DIR", "shop"), ("DEPLOY_TOKEN", "s3cr3t")]));
    assert!(shown.contains("deploy_to = \"/srv/shop\""), "{shown}");
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("X-Token: ********"), "{shown}");
    assert!(shown.contains("postgres://app:********@db/x"), "{shown}");
    assert!(shown.contains("echo ${literal} $HOME"), "{shown}");
}

#[test]
fn completions_generate_and_the_man_page_lists_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let script = ok(slipway(dir.path(), &["completions", shell]));
        assert!(script.contains("rollback"), "{shell}");
        assert!(script.len() > 1000, "{shell}: {} bytes", script.len());
    }
    let bash = ok(slipway(dir.path(), &["completions", "bash"]));
    let checked = Command::new("bash")
        .arg("-n")
        .stdin(std::process::Stdio::piped())
        .arg("/dev/stdin")
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(bash.as_bytes())?;
            c.wait()
        })
        .unwrap();
    assert!(checked.success(), "bash -n accepts the completion script");

    let man = ok(slipway(dir.path(), &["man"]));
    assert!(man.contains(".TH slipway 1"), "roff");
    assert!(
        man.contains(".SS \"slipway recipes show NAME\""),
        "nested subcommands too"
    );
    use clap::CommandFactory;
    let cli = slipway::cli::Cli::command();
    let names: Vec<String> = cli
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .filter(|n| n != "help")
        .collect();
    assert!(names.len() >= 11, "{names:?}");
    for name in &names {
        assert!(
            man.contains(&format!(".SS \"slipway {}", name.replace('-', "\\-"))),
            "the man page lists `{name}`"
        );
    }
}

/// Splits a shell command line on blanks, keeping "double-quoted words" whole.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

#[test]
fn the_examples_load_and_their_ci_jobs_run_real_slipway_commands() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (config, stage) in [
        ("examples/systemd/deploy.toml", "production"),
        ("examples/hello/deploy.toml", "demo"),
    ] {
        ok(slipway(
            root,
            &["-c", config, "check", stage, "--config-only"],
        ));
    }
    use clap::Parser;
    let mut seen = 0;
    for file in [
        "examples/ci/github-actions.yml",
        "examples/ci/gitlab-ci.yml",
    ] {
        let text = fs::read_to_string(root.join(file)).unwrap();
        for line in text.lines() {
            let Some(at) = line.find("slipway ") else {
                continue;
            };
            let command = line[at..].split(['|', '#']).next().unwrap_or_default();
            let args = words(command);
            if args.get(1).is_none_or(|a| a.starts_with('(')) || line.trim_start().starts_with('#')
            {
                continue;
            }
            if let Err(e) = slipway::cli::Cli::try_parse_from(&args) {
                panic!("{file}: `{command}` is not a slipway command line: {e}");
            }
            seen += 1;
        }
    }
    assert!(seen >= 6, "{seen} slipway commands in the CI examples");
}

/// A source file slipway cannot read stops the deploy before any host is touched, and
/// the error names the file. Run as an unprivileged user: root reads any file (as root,
/// the test runs slipway as `nobody` through `runuser`).
#[test]
fn an_unreadable_source_file_is_named_and_stops_the_deploy() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    touch(
        dir.path(),
        &[
            (
                "deploy.toml",
                "app = \"shop\"\ndeploy_to = \"/tmp/slipway-unreadable-never-created\"\n[source]\npath = \"app\"\n[stages.local]\ntransport = \"local\"\n",
            ),
            ("app/src/x.rs", "x"),
            ("app/README", "readable"),
        ],
    );
    for d in ["app", "app/src"] {
        fs::set_permissions(dir.path().join(d), fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::set_permissions(
        dir.path().join("app/src/x.rs"),
        fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    let root = unsafe { libc::geteuid() } == 0;
    let mut cmd = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"])
            .arg(env!("CARGO_BIN_EXE_slipway"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_slipway"))
    };
    let out = cmd
        .current_dir(dir.path())
        .args(["-c", "deploy.toml", "deploy", "local"])
        .env("NO_COLOR", "1")
        .env("HOME", dir.path())
        .output()
        .expect("run slipway (as root this needs runuser, from util-linux)");
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("source: cannot read src/x.rs: permission denied"),
        "{stderr}"
    );
    assert!(!Path::new("/tmp/slipway-unreadable-never-created").exists());
}
