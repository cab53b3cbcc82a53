//! A hostile-input corpus: malformed configurations and command lines. Each must exit 2
//! with a message naming the problem (the key, and its line where the file has one),
//! never panic, connect nowhere and touch nothing. Builds on tests/e2e/config_errors.rs
//! (which has ~25 more).

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

struct Case {
    /// Appended to a valid top level (`app`, `deploy_to`, `[source]`) unless `whole`.
    text: String,
    whole: bool,
    /// The stage table, appended last unless the case brings its own.
    with_stage: bool,
    needle: &'static str,
    line: usize,
}

fn case(text: &str, needle: &'static str, line: usize) -> Case {
    Case {
        text: text.into(),
        whole: false,
        with_stage: true,
        needle,
        line,
    }
}

fn own_stage(text: &str, needle: &'static str, line: usize) -> Case {
    Case {
        with_stage: false,
        ..case(text, needle, line)
    }
}

fn whole(text: &str, needle: &'static str, line: usize) -> Case {
    Case {
        whole: true,
        with_stage: true,
        ..case(text, needle, line)
    }
}

fn run(dir: &Path, text: &str, args: &[&str]) -> (i32, String) {
    let path = dir.join("deploy.toml");
    std::fs::write(&path, text).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_slipway"))
        .arg("-c")
        .arg(&path)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run slipway");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in walk(dir) {
        out.push(entry);
    }
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.display().to_string());
            if p.is_dir() && !p.is_symlink() {
                out.extend(walk(&p));
            }
        }
    }
    out
}

#[test]
fn fifty_hostile_configs_and_command_lines_exit_2_naming_the_problem() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("app")).expect("mkdir");
    std::fs::write(dir.path().join("app/index.html"), "x").expect("write");
    // deploy_to is a local path: a case that touched anything would create it.
    let deploy_to = dir.path().join("target-root");
    let top = format!("app = \"shop\"\ndeploy_to = \"{}\"\n", deploy_to.display());
    let top_lines = top.lines().count();
    let source = "[source]\npath = \"app\"\n";
    let stage = format!(
        "[stages.prod]\nhosts = [{{ address = \"127.0.0.1\", port = {port}, roles = [\"app\", \"db\"] }}]\n"
    );
    let (code, err) = run(
        dir.path(),
        &format!("{top}{source}{stage}"),
        &["check", "prod", "--config-only"],
    );
    assert_eq!(code, 0, "the base config is valid: {err}");
    let before = listing(dir.path());
    // Lines are counted from the first line after the valid top level (1 = that line).
    let n = top_lines;
    let cases: Vec<Case> = vec![
        // Bad TOML.
        whole("app = \"shop\n", "", 1),
        whole("app = \n", "", 1),
        whole("app = \"shop\"\n[source\n", "", 2),
        whole("app = \"a\"\napp = \"b\"\n", "duplicate key", 2),
        whole("app = \"shop\"\n[ssh]\n[ssh]\n", "duplicate key", 3),
        whole("app = \"sh\0op\"\n", "", 1),
        whole("\u{feff}\u{202e}app = \"shop\"\n", "", 1),
        whole("app = 'shop'''\n", "", 1),
        whole("= \"x\"\n", "", 1),
        // Wrong types.
        whole("app = 5\ndeploy_to = \"/srv/shop\"\n", "app", 1),
        case("keep_releases = 1.5\n", "keep_releases", n + 1),
        case("keep_releases = true\n", "keep_releases", n + 1),
        case("link_unchanged = \"yes\"\n", "link_unchanged", n + 1),
        case("immutable = \"yes\"\n", "immutable", n + 1),
        case("[ssh]\nport = \"22\"\n", "ssh.port", n + 2),
        whole(
            "app = \"shop\"\ndeploy_to = \"/srv/shop\"\n[source]\nexclude = \"target/\"\n",
            "source.exclude",
            4,
        ),
        case("[hooks]\nrestart = [5]\n", "restart", n + 2),
        case("[timeouts]\nhook = 30\n", "timeouts.hook", n + 2),
        own_stage("[stages.prod]\nhosts = \"127.0.0.1\"\n", "hosts", n + 4),
        own_stage(
            "[stages.prod]\nhosts = [{ address = \"a\", roles = \"app\" }]\n",
            "roles",
            n + 4,
        ),
        // Unknown keys.
        case("colour = \"red\"\n", "colour", n + 1),
        case("[hooks]\nbefore_build = [\"x\"]\n", "before_build", n + 2),
        case("[timeouts]\nforever = \"1s\"\n", "forever", n + 2),
        case("[ssh]\npassword = \"hunter2\"\n", "password", n + 2),
        // Huge and out-of-range values.
        case("keep_releases = -1\n", "keep_releases", n + 1),
        case("keep_releases = 1001\n", "keep_releases", n + 1),
        case("keep_releases = 99999999999999999999\n", "", n + 1),
        case("[ssh]\nport = 0\n", "ssh.port", n + 2),
        case("[ssh]\nport = 65536\n", "ssh.port", n + 2),
        case(
            "[ssh]\nconnect_timeout = \"-5s\"\n",
            "ssh.connect_timeout",
            n + 2,
        ),
        case("[ssh]\npersist = \"forever\"\n", "ssh.persist", n + 2),
        case(
            "[timeouts]\nupload = \"99999999999999999999h\"\n",
            "timeouts.upload",
            n + 2,
        ),
        whole(
            &format!(
                "app = \"{}\"\ndeploy_to = \"/srv/shop\"\n",
                "a".repeat(100_000)
            ),
            "app",
            1,
        ),
        // Paths: `..`, absolute where relative is needed, NUL and control characters.
        whole("app = \"../x\"\ndeploy_to = \"/srv/shop\"\n", "app", 1),
        whole("app = \"a/b\"\ndeploy_to = \"/srv/shop\"\n", "app", 1),
        whole("app = \"\"\ndeploy_to = \"/srv/shop\"\n", "app", 1),
        whole(
            "app = \"sh\\u0000op\"\ndeploy_to = \"/srv/shop\"\n",
            "app",
            1,
        ),
        whole(
            "app = \"shop\"\ndeploy_to = \"/srv/\\u0000x\"\n",
            "deploy_to",
            2,
        ),
        whole(
            "app = \"shop\"\ndeploy_to = \"/srv/a\\nb\"\n",
            "deploy_to",
            2,
        ),
        whole("app = \"shop\"\ndeploy_to = \"\"\n", "deploy_to", 2),
        whole("app = \"shop\"\ndeploy_to = \"srv\"\n", "deploy_to", 2),
        whole(
            "app = \"shop\"\ndeploy_to = \"/srv/shop/../../etc\"\n",
            "deploy_to",
            2,
        ),
        case(
            "[shared]\nfiles = [\"/etc/passwd\"]\n",
            "shared.files[0]",
            n + 2,
        ),
        case(
            "[shared]\nfiles = [\"a/../../b\"]\n",
            "shared.files[0]",
            n + 2,
        ),
        case("[shared]\nfiles = [\"\"]\n", "shared.files[0]", n + 2),
        case(
            "[shared]\nfiles = [\"a\\u0000b\"]\n",
            "shared.files[0]",
            n + 2,
        ),
        case("[shared]\ndirs = [\"..\"]\n", "shared.dirs[0]", n + 2),
        case("[shared]\ndirs = [\"log\\n\"]\n", "shared.dirs[0]", n + 2),
        // Hosts and stages.
        own_stage(
            "[stages.prod]\nhosts = [{ address = \"-oProxyCommand=touch /tmp/pwned\" }]\n",
            "address",
            n + 4,
        ),
        own_stage(
            "[stages.prod]\nhosts = [{ address = \"\" }]\n",
            "address",
            n + 4,
        ),
        own_stage(
            "[stages.prod]\nhosts = [{ address = \"a b\" }]\n",
            "address",
            n + 4,
        ),
        own_stage(
            "[stages.prod]\nhosts = [{ address = \"a\\u0000\" }]\n",
            "address",
            n + 4,
        ),
        own_stage(
            "[stages.prod]\nhosts = [{ address = \"a\" }, { address = \"b\" }, { address = \"a\" }]\n",
            "listed twice",
            n + 4,
        ),
        own_stage("[stages.prod]\n", "hosts", 0),
        own_stage(
            "[stages.prod]\nkeep_releases = 0\nhosts = [{ address = \"a\" }]\n",
            "keep_releases",
            n + 4,
        ),
        own_stage(
            "[stages.prod]\nhosts = [{ address = \"a\" }]\n[stages.prod.stages.x]\nhosts = []\n",
            "stages",
            0,
        ),
        own_stage(
            "[stages.\"\"]\nhosts = [{ address = \"a\" }]\n",
            "stage name",
            n + 3,
        ),
        own_stage(
            "[stages.\"../prod\"]\nhosts = [{ address = \"a\" }]\n",
            "stage name",
            n + 3,
        ),
        // Database.
        case(
            "[database]\ndriver = \"oracle\"\n",
            "database.driver",
            n + 2,
        ),
        case("[database]\nurl_env = \"DATABASE_URL\"\n", "driver", 0),
        case("[database]\ndriver = \"sqlite\"\n", "path", 0),
        case(
            "[database]\ndriver = \"postgres\"\nmigrations = \"../m\"\n",
            "database.migrations",
            n + 3,
        ),
        case(
            "[database]\ndriver = \"postgres\"\nmigrations = \"/abs\"\n",
            "database.migrations",
            n + 3,
        ),
        case(
            "[database]\ndriver = \"postgres\"\nrole = \"nope\"\n",
            "role",
            0,
        ),
        // Percentages over 100 (the rollout section).
        case(
            "[rollout]\nstrategy = \"canary\"\nsteps = [10, 150]\n",
            "rollout",
            0,
        ),
        // [gate]: a threshold that is no number of its kind, and a gate with no log.
        case(
            "[rollout]\nstrategy = \"canary\"\n[traffic]\nslots = { a = 8001, b = 8002 }\n[gate]\nalpha = 2.0\n",
            "gate.alpha",
            n + 6,
        ),
        case("[gate]\nwindow = \"1m\"\n", "add [traffic]", n + 1),
        // [traffic]: values that would change the meaning of nginx's configuration.
        case(
            "[traffic]\ninclude = \"/etc/nginx/x.conf; include /etc/passwd\"\n",
            "traffic.include",
            n + 2,
        ),
        case(
            "[traffic]\naccess_log = \"/var/log/x.log }\"\n",
            "traffic.access_log",
            n + 2,
        ),
        case("[traffic]\nkey = \"cookie:a$b\"\n", "traffic.key", n + 2),
        case("[traffic]\nkey = \"header:\"\n", "traffic.key", n + 2),
        case("[traffic]\npin = \"query:x\"\n", "traffic.pin", n + 2),
        case("[traffic]\nsalt = \"a'b\"\n", "traffic.salt", n + 2),
        case(
            "[traffic]\nslots = { a = \"unix:relative.sock\", b = 2 }\n",
            "traffic.slots.a",
            n + 2,
        ),
        case(
            "[traffic]\nslots = { a = 0, b = 2 }\n",
            "traffic.slots.a",
            n + 2,
        ),
        case(
            "[traffic]\naddress = \"-oProxy\"\n",
            "traffic.address",
            n + 2,
        ),
        case("[traffic]\nproxy = \"caddy\"\n", "traffic.proxy", n + 2),
        case("[traffic]\nreload = \"\"\n", "traffic.reload", n + 2),
        case("[traffic]\nstop = [\"x\"]\n", "traffic.stop", n + 2),
    ];
    assert!(cases.len() >= 50, "{} cases", cases.len());
    let mut failures = Vec::new();
    for (k, c) in cases.iter().enumerate() {
        let text = if c.whole {
            format!("{}{stage}", c.text)
        } else if c.with_stage {
            format!("{top}{}{source}{stage}", c.text)
        } else {
            format!("{top}{source}{}", c.text)
        };
        let (code, err) = run(dir.path(), &text, &["deploy", "prod"]);
        let problem = if err.contains("panicked") {
            Some("panicked")
        } else if code != 2 {
            Some("exit code")
        } else if !err.contains(c.needle) {
            Some("message does not name the problem")
        } else if c.line > 0 && !err.contains(&format!("deploy.toml:{}:", c.line)) {
            Some("message does not name the line")
        } else {
            None
        };
        if let Some(p) = problem {
            failures.push(format!(
                "case {k} ({p}): exit {code}\nconfig:\n{}\nstderr: {err}",
                text.escape_debug()
                    .to_string()
                    .chars()
                    .take(400)
                    .collect::<String>()
            ));
        }
    }

    // Hostile command lines, against the valid config.
    let good = format!("{top}{source}{stage}");
    let huge = "x".repeat(100_000);
    let lines: Vec<(Vec<&str>, &str)> = vec![
        (vec!["rollback", "prod", "--to", "../x"], "not a release id"),
        (vec!["rollback", "prod", "--to", ""], "release id"),
        (
            vec!["rollback", "prod", "--to", "20261124T040512Z/../../etc"],
            "release id",
        ),
        (
            vec!["rollback", "prod", "--to", "20261324T040512Z"],
            "release id",
        ),
        (vec!["rollback", "prod", "--to", &huge], "release id"),
        (vec!["deploy", "../prod"], "no stage"),
        (vec!["deploy", "prod", "extra"], "unexpected argument"),
        (vec!["deploy"], "STAGE"),
        (vec!["frobnicate", "prod"], "unrecognized subcommand"),
        (
            vec!["--lock-wait", "forever", "deploy", "prod"],
            "lock-wait",
        ),
        (vec!["--lock-wait", "-1s", "deploy", "prod"], "-1"),
        (vec!["log", "prod", "--since", "yesterday"], "--since"),
        (
            vec!["db", "restore", "prod", "../../etc/passwd", "--yes"],
            "database",
        ),
        (
            vec!["rollback", "prod", "--force-schema", "--skip-schema"],
            "cannot be used with",
        ),
    ];
    for (args, needle) in &lines {
        let (code, err) = run(dir.path(), &good, args);
        if err.contains("panicked") || code != 2 || !err.contains(needle) {
            failures.push(format!(
                "command line {:?}: exit {code}, expected `{needle}`: {err}",
                args.iter()
                    .map(|a| if a.len() > 40 { "<huge>" } else { a })
                    .collect::<Vec<_>>()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} hostile inputs misbehaved:\n{}",
        failures.len(),
        cases.len() + lines.len(),
        failures.join("\n\n")
    );
    std::fs::write(dir.path().join("deploy.toml"), &good).expect("write");
    assert_eq!(listing(dir.path()), before, "a hostile input touched files");
    assert!(!deploy_to.exists(), "a hostile input created deploy_to");
    assert!(
        listener.accept().is_err(),
        "slipway connected to a host despite a bad input"
    );
    println!(
        "{} configs and {} command lines refused with exit 2",
        cases.len(),
        lines.len()
    );
}
