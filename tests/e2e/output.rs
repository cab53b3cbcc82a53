//! What a deploy to 4 hosts looks like: live per-host lines under a terminal, plain
//! timestamped lines when piped, and `--json` events that follow docs/events.schema.json.

use std::process::Command;

use serde_json::Value;

use crate::scenario::{Run, Scenario};
use crate::schema::validate;

fn four_hosts() -> Scenario {
    Scenario::new()
        .hosts(4)
        .shared_dir("log")
        // Long enough to be drawn (10 frames a second): a real build takes longer.
        .build_hook("bin/build && sleep 0.5")
        .restart_hook("echo restarted >> log/restarts")
}

fn host_names(s: &Scenario) -> Vec<String> {
    s.fleet()
        .hosts()
        .iter()
        .map(|h| format!("{}:{}", h.address, h.port))
        .collect()
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Runs `cmd` under a pseudo-terminal (`script` from util-linux), 120 columns wide;
/// stdout and stderr both land in the transcript, as on a real terminal.
fn under_pty(cmd: &Command, colour: bool) -> Run {
    let mut line = String::from("stty cols 120 rows 40 2>/dev/null; exec");
    line.push(' ');
    line.push_str(&sh_quote(&cmd.get_program().to_string_lossy()));
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&sh_quote(&arg.to_string_lossy()));
    }
    let mut script = Command::new("script");
    script.args(["-qec", &line, "/dev/null"]);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => script.env(k, v),
            None => script.env_remove(k),
        };
    }
    script.env("TERM", "xterm-256color");
    if colour {
        script.env_remove("NO_COLOR");
    }
    let out = script.output().expect("run script(1): install util-linux");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The transcript without escape sequences (colours, cursor moves, line clears).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters final-letter.
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The live lines drawn for `host`: the text after each mention of it, to the end of its line.
fn live_lines<'a>(plain: &'a str, host: &str) -> Vec<&'a str> {
    plain
        .match_indices(host)
        .map(|(at, _)| {
            let rest = &plain[at + host.len()..];
            // Up to the next line's spinner (a braille character), or a screen width.
            let end = rest
                .char_indices()
                .take(160)
                .find(|(_, c)| ('\u{2800}'..='\u{28FF}').contains(c) || *c == '\n')
                .map(|(i, _)| i)
                .unwrap_or_else(|| rest.char_indices().nth(160).map_or(rest.len(), |(i, _)| i));
            &rest[..end]
        })
        .collect()
}

/// `build     7.0 KiB sent      1s`: step, bytes uploaded, elapsed time (a small
/// release, compressed, may be counted in bytes: `905 B sent`).
fn shows_step_bytes_and_elapsed(line: &str, step: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    words.first() == Some(&step)
        && (line.contains("KiB sent") || line.contains(" B sent"))
        && words.iter().any(|w| {
            w.len() > 1 && w.ends_with('s') && w[..w.len() - 1].chars().all(|c| c.is_ascii_digit())
        })
}

#[test]
fn a_terminal_shows_a_live_line_per_host_then_a_summary_table() {
    let s = four_hosts();
    let hosts = host_names(&s);
    for colour in [true, false] {
        let run = under_pty(&s.command(&["deploy", "test"]), colour);
        assert_eq!(run.code, 0, "{}", run.stdout);
        let t = &run.stdout;
        assert!(
            t.contains("\x1b[2K"),
            "live lines are redrawn in place:\n{t}"
        );
        assert_eq!(
            t.contains("\x1b[32m") || t.contains("\x1b[1m"),
            colour,
            "colour only without NO_COLOR"
        );
        let plain = strip_ansi(t);
        let frames: Vec<&str> = plain.split(['\r', '\n']).collect();
        for host in &hosts {
            // A live line names the host, its current step, the bytes uploaded and
            // the elapsed time.
            assert!(
                live_lines(&plain, host)
                    .iter()
                    .any(|l| shows_step_bytes_and_elapsed(l, "build")),
                "{host}: no live build line with the bytes uploaded in\n{t}"
            );
            // The summary table: one row per host.
            assert!(
                frames.iter().any(|f| f.starts_with(host.as_str())
                    && (f.contains("KiB") || f.contains(" B "))
                    && f.contains("ok")),
                "{host}: no summary row in\n{t}"
            );
        }
        assert!(
            frames
                .iter()
                .any(|f| f.trim_start().starts_with("HOST") && f.contains("UPLOADED")),
            "{t}"
        );
        assert!(t.contains(" is live"), "{t}");
    }
}

#[test]
fn piped_output_is_plain_timestamped_lines_and_stdout_is_only_the_result() {
    let s = four_hosts();
    let run = s.deploy().ok();
    assert_eq!(run.stdout.lines().count(), 1, "{}", run.stdout);
    assert!(run.stdout.contains(" is live"));
    assert!(
        !run.stderr.contains('\x1b'),
        "no escape codes: {:?}",
        run.stderr
    );
    for line in run.stderr.lines().filter(|l| !l.trim().is_empty()) {
        let stamp = line.split(']').next().unwrap_or_default();
        assert!(
            stamp.starts_with('[')
                && stamp.ends_with('s')
                && stamp[1..stamp.len() - 1].trim().parse::<f64>().is_ok(),
            "not a timestamped line: {line}"
        );
    }
    for host in host_names(&s) {
        for step in ["upload ok", "build ok", "switch ok", "restart ok"] {
            assert!(
                run.stderr.contains(&format!("{host} {step}")),
                "{host} {step}:\n{}",
                run.stderr
            );
        }
    }
    // -q: nothing but the result.
    let quiet = s.slipway(&["-q", "deploy", "test"]).ok();
    assert_eq!(quiet.stderr.trim(), "", "{}", quiet.stderr);
    assert!(quiet.stdout.contains(" is live"));
}

fn parse_events(run: &Run) -> Vec<Value> {
    let schema: Value =
        serde_json::from_str(include_str!("../../docs/events.schema.json")).expect("schema");
    run.stdout
        .lines()
        .map(|line| {
            let event: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            let errors = validate(&schema, &event);
            assert!(errors.is_empty(), "{line}\n{}", errors.join("\n"));
            event
        })
        .collect()
}

#[test]
fn json_events_follow_the_schema_one_per_step_per_host_and_end_with_the_result() {
    let s = four_hosts();
    let run = s.slipway(&["--json", "deploy", "test"]).ok();
    let events = parse_events(&run);
    let last = events.last().expect("events");
    assert_eq!(last["event"], "result");
    assert_eq!(last["data"]["exit_class"], "ok");
    assert_eq!(events.iter().filter(|e| e["event"] == "result").count(), 1);
    for host in host_names(&s) {
        for step in ["connect", "lock", "upload", "build", "switch", "restart"] {
            let n = events
                .iter()
                .filter(|e| e["event"] == "step" && e["host"] == host.as_str() && e["step"] == step)
                .count();
            assert_eq!(n, 1, "{host} {step}: {n} events\n{}", run.stdout);
        }
        let upload = events
            .iter()
            .find(|e| e["host"] == host.as_str() && e["step"] == "upload")
            .expect("upload event");
        assert!(
            upload["data"]["bytes"].as_u64().unwrap_or(0) > 0,
            "{upload}"
        );
    }

    // A failure: the failed step, then the result with its exit class.
    let failing = s
        .command(&["--json", "deploy", "test"])
        .env(
            "SLIPWAY_FAULT",
            crate::hosts::fault("deploy.after-upload:fail"),
        )
        .output()
        .expect("run");
    let run = Run {
        code: failing.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&failing.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&failing.stderr).into_owned(),
    };
    assert_eq!(run.code, 1, "{}", run.stderr);
    let events = parse_events(&run);
    let last = events.last().expect("events");
    assert_eq!(last["event"], "result");
    assert_eq!(last["status"], "failed");
    assert_eq!(last["data"]["exit_class"], "failed");

    // --dry-run --json: a plan event, then the result.
    let plan = s.slipway(&["--json", "--dry-run", "deploy", "test"]).ok();
    let events = parse_events(&plan);
    assert!(
        events.iter().any(|e| e["event"] == "plan"),
        "{}",
        plan.stdout
    );
}
