//! Every public script function, rendered with hostile-ish values and checked by `sh -n`
//! and shellcheck. A test reads this module's files and fails when a `pub fn` of theirs
//! is missing from [`all_for_check`]: a new script cannot go unchecked. (`pub(super)`
//! functions are fragments of the public scripts, checked inside them.)

use super::*;
use crate::config::{DbDriver, Framework, FrameworkMigrator};
use crate::db::framework::{Op, program};
use crate::layout::{Layout, ReleaseId};

/// shellcheck's findings that do not apply to these scripts, each with the reason.
const SHELLCHECK_EXCLUDED: &[(&str, &str)] = &[
    (
        "SC2016",
        "single quotes that keep `$` from expanding are the point: awk and perl programs, \
         and every value `quote` passes (a hook command, a path holding `$(..)`)",
    ),
    (
        "SC1003",
        "a backslash inside single quotes is literal, as meant: `quote` ends the quotes only \
         for a single quote; values and the adapter programs carry backslashes",
    ),
    (
        "SC2015",
        "`a && b || { report; exit 1; }` is meant: the handler runs when any step fails, \
         the last one included",
    ),
    (
        "SC2089",
        "quotes inside a quoted value (a shared path named `a \"b\"`) are data, not shell \
         quoting gone wrong",
    ),
    ("SC2090", "the same data, exported or expanded (SC2089)"),
];

/// Every public script function's output, named by the function (a name appears once
/// per variant rendered). Values carry spaces, both quotes, `$()`, backquotes and
/// non-ASCII text, as paths, names and commands from a config or a user may.
pub fn all_for_check() -> Vec<(&'static str, String)> {
    let layout = Layout::new("/srv/it's $(touch /tmp/x) `id` \"q\" ünï");
    let id = ReleaseId::parse("20261124T040512Z").unwrap();
    let prev = ReleaseId::parse("20261123T040512Z").unwrap();
    let files = vec![
        "config/db 'x' \"y\" $(z).yml".to_string(),
        "ファイル/ünï côde".to_string(),
    ];
    let dirs = vec!["log".to_string(), "tmp/a b;$(c)".to_string()];
    let env = HookEnv {
        release: &id,
        release_path: "/srv/a b/it's",
        deploy_to: "/srv/$(x) `y`",
        stage: "prod 'eu'",
        host: "h\"1\"",
    };
    let json = "{\"reason\":\"it's $(x) `y` \\\"z\\\" ü\"}";
    let hooks_run = vec![
        "echo 'hi' && false".to_string(),
        "make \"$X\" $(y)".to_string(),
    ];
    let ready = format!(
        "{}{}{}",
        write_meta(&layout, &id, json),
        record_stat(&layout, &id),
        make_read_only(&layout, &id)
    );
    let mut all: Vec<(&'static str, String)> = vec![
        ("probe", probe(&layout)),
        ("check", check(&layout, &files, &dirs)),
        ("check", check(&layout, &[], &[])),
        ("lock", lock(&layout, json, "")),
        ("unlock", unlock(&layout, "abc'$(x)")),
        ("break_lock", break_lock(&layout)),
        ("finish", finish(&layout, json, "abc")),
        ("upload", upload(&layout, &id, None, Encoding::Raw)),
        ("upload", upload(&layout, &id, Some(&prev), Encoding::Zstd)),
        ("upload", upload(&layout, &id, None, Encoding::Gzip)),
        (
            "receive",
            receive(&layout, &id, None, Encoding::Raw, &[], &[], "").whole(),
        ),
        (
            "whole",
            receive(
                &layout,
                &id,
                Some(&prev),
                Encoding::Zstd,
                &files,
                &dirs,
                &ready,
            )
            .whole(),
        ),
        ("finalize", finalize(&layout, &id, &files, &dirs)),
        (
            "relay_open",
            relay_open(
                &layout,
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO' $(x)",
                1800,
                4,
            ),
        ),
        (
            "relay_keep",
            relay_keep(
                &layout,
                &receive(&layout, &id, None, Encoding::Zstd, &files, &dirs, &ready).whole(),
            ),
        ),
        (
            "receive",
            receive(&layout, &id, None, Encoding::Raw, &files, &dirs, &ready).head,
        ),
        (
            "relay_fetch",
            relay_fetch(
                &layout,
                &Endpoint {
                    address: "10.0.0.1".into(),
                    port: 41000,
                    user: "deploy'$(x)".into(),
                    host_key: "ssh-ed25519 AAAA' `id`".into(),
                },
                "0123abcd'$(x)",
                &receive(
                    &layout,
                    &id,
                    Some(&prev),
                    Encoding::Raw,
                    &files,
                    &dirs,
                    &ready,
                ),
            ),
        ),
        ("relay_stop", relay_stop(&layout)),
        ("read_manifest", read_manifest(&layout, &id)),
        ("remove_partial", remove_partial(&layout, &id)),
        ("record_stat", record_stat(&layout, &id)),
        ("record_shipped", record_shipped(&layout, &id)),
        ("make_read_only", make_read_only(&layout, &id)),
        ("verify_release", verify_release(&layout, &id, &files)),
        ("verify_release", verify_release(&layout, &id, &[])),
        // As a rollback runs it: inside the lock script, after the probe.
        (
            "verify_likely_target",
            lock(&layout, json, &verify_likely_target(None, &dirs)),
        ),
        (
            "verify_likely_target",
            lock(&layout, json, &verify_likely_target(Some(&id), &[])),
        ),
        ("hooks", hooks("build", &env, &hooks_run, &ready)),
        ("hooks", hooks("restart 'x'", &env, &[], "")),
        ("in_release", in_release(&env, "bin/check --it's $(x)")),
        ("write_meta", write_meta(&layout, &id, json)),
        (
            "write_meta_if_present",
            write_meta_if_present(&layout, &id, json),
        ),
        (
            "switch",
            switch(
                &layout,
                Some(&id),
                "n1'$(x)",
                &[(id.clone(), json.into()), (prev.clone(), "{}".into())],
            ),
        ),
        ("switch", switch(&layout, None, "n1", &[])),
        (
            "switch_link",
            switch_link(
                &layout,
                crate::layout::Link::Slot("b"),
                Some(&id),
                "n1'$(x)",
                &[(id.clone(), json.into())],
            ),
        ),
        (
            "install_include",
            install_include(
                "/etc/nginx/it's $(x).conf",
                "# it's\nupstream a { server 127.0.0.1:1; }\n$(x) `y`\n",
                "nginx -t -p '/srv/a b'",
                "nginx -s reload; echo \"$X\"",
                "/run/it's.pid",
            ),
        ),
        (
            "slot_commands",
            slot_commands(
                "start",
                &layout,
                &env,
                "a",
                "unix:/run/it's.sock",
                "{host}",
                &hooks_run,
            ),
        ),
        (
            "slot_commands",
            slot_commands("stop", &layout, &env, "b", "8002", "127.0.0.1", &hooks_run),
        ),
        (
            "drain",
            drain("/run/it's $(x).pid", Some(("::1", 8001)), 30),
        ),
        ("drain", drain("/run/nginx.pid", None, 0)),
        (
            "read_traffic",
            read_traffic(&layout, "/etc/nginx/it's.conf"),
        ),
        (
            "read_access_log",
            read_access_log("/var/log/nginx/it's $(x).log", 1_048_576, 8_388_608),
        ),
        (
            "proxy_check",
            proxy_check("nginx", "nginx-light", "/etc/nginx/it's.conf", "nginx -t"),
        ),
        (
            "remove_releases",
            remove_releases(&layout, &[id.clone(), prev.clone()]),
        ),
        ("remove_new_release", remove_new_release(&layout, &id)),
        ("discard_release", discard_release(&layout, &id, json)),
        (
            "archive_and_remove",
            archive_and_remove(&layout, &[id.clone(), prev.clone()], 3),
        ),
        ("restore_release", restore_release(&layout, &id)),
        ("audit", audit(&layout, json)),
        ("read_audit", read_audit(&layout, Some(10_000))),
        ("read_audit", read_audit(&layout, None)),
        ("write_rollout", write_rollout(&layout, json)),
        ("read_rollout", read_rollout(&layout)),
        ("sqlite", sqlite(&layout, "db/a'b $(c).sqlite3")),
        (
            "sqlite_applied",
            sqlite_applied(&layout, "db/a b.sqlite3", "SELECT 'x' || \"y\""),
        ),
        (
            "fetch_migrations",
            fetch_migrations(&layout, &id, "db/mig rate's"),
        ),
        ("db_tools", db_tools(&["sqlite3", "pg_dump", "it's $(x)"])),
        ("list_snapshots", list_snapshots(&layout)),
        (
            "remove_snapshots",
            remove_snapshots(&layout, &["x-postgres.dump".into(), "a b'c.dump".into()]),
        ),
        (
            "db_command",
            db_command(&env, "bin/migrate --to {version} 'it''s' $(x)", Some(3)),
        ),
        ("db_command", db_command(&env, "bin/migrate", None)),
    ];
    for driver in [DbDriver::Postgres, DbDriver::Mysql, DbDriver::Sqlite] {
        let sqlite_path = Some("db/x\"y' $(z).db");
        all.push((
            "snapshot",
            snapshot(&layout, driver, "x-y.dump", sqlite_path),
        ));
        all.push(("restore", restore(&layout, driver, "x-y.dump", sqlite_path)));
    }
    for framework in Framework::ALL {
        let migrator = FrameworkMigrator {
            framework,
            runtime: ".venv/bin/python -X utf8".into(),
        };
        for op in [Op::Inspect, Op::Migrate, Op::Unapply] {
            let ids = ["a.0002_x".to_string(), "b.$(touch x) 'y'".to_string()];
            // As framework mode runs it: the command of a script in the release.
            let command = adapter(&migrator, program(framework), op, &ids);
            all.push(("adapter", in_release(&env, &command)));
            all.push(("adapter", command));
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::io::Write;
    use std::process::{Command, Stdio};

    /// Runs `program` with `args`, `input` on stdin.
    fn run(program: &str, args: &[&str], input: &str) -> std::io::Result<std::process::Output> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(input.as_bytes())?;
        child.wait_with_output()
    }

    #[test]
    fn scripts_parse_as_posix_shell() {
        let mut failed = Vec::new();
        for (name, script) in all_for_check() {
            // `sh -n` parses without running: every script must be valid POSIX shell.
            let out = run("sh", &["-n"], &script).unwrap();
            if !out.status.success() {
                failed.push(format!(
                    "{name}: {}\n{script}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        assert!(failed.is_empty(), "{}", failed.join("\n\n"));
    }

    #[test]
    fn scripts_pass_shellcheck() {
        let excluded = SHELLCHECK_EXCLUDED
            .iter()
            .map(|(code, _)| *code)
            .collect::<Vec<_>>()
            .join(",");
        let mut args = vec!["-s", "sh", "-f", "gcc"];
        if !excluded.is_empty() {
            args.extend(["-e", &excluded]);
        }
        args.push("-");
        let mut failed = Vec::new();
        for (name, script) in all_for_check() {
            let out = match run("shellcheck", &args, &script) {
                Ok(out) => out,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                    "shellcheck is not installed, and every remote script must pass it: install it (Debian/Ubuntu: apt-get install shellcheck; scripts/test installs it)"
                ),
                Err(e) => panic!("running shellcheck failed: {e}"),
            };
            if !out.status.success() {
                let numbered: String = script
                    .lines()
                    .enumerate()
                    .map(|(i, l)| format!("{:4} {l}\n", i + 1))
                    .collect();
                failed.push(format!(
                    "{name}:\n{}{}\n{numbered}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        assert!(failed.is_empty(), "{}", failed.join("\n\n"));
    }

    /// The `pub fn` names in `src/script/*.rs` (this registry's own file aside).
    fn public_functions() -> BTreeSet<String> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/script");
        let mut names = BTreeSet::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "rs") || path.ends_with("check.rs") {
                continue;
            }
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                let line = line.trim_start();
                let rest = [
                    "pub fn ",
                    "pub(crate) fn ",
                    "pub const fn ",
                    "pub async fn ",
                ]
                .iter()
                .find_map(|p| line.strip_prefix(p));
                if let Some(rest) = rest {
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    names.insert(name);
                }
            }
        }
        names
    }

    #[test]
    fn every_public_script_is_checked() {
        let public = public_functions();
        assert!(
            public.contains("probe") && public.contains("snapshot"),
            "{public:?}"
        );
        let checked: BTreeSet<String> = all_for_check()
            .into_iter()
            .map(|(name, _)| name.to_string())
            .collect();
        let unchecked: Vec<_> = public.difference(&checked).collect();
        assert!(
            unchecked.is_empty(),
            "public script functions missing from script::all_for_check (add them there, rendered with hostile values): {unchecked:?}"
        );
        let stale: Vec<_> = checked.difference(&public).collect();
        assert!(
            stale.is_empty(),
            "script::all_for_check names functions that are not public in src/script/: {stale:?}"
        );
    }
}
