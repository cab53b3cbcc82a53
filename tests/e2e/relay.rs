//! `[upload] relay = true`: the release crosses the deployer's link once per group; the
//! other hosts fetch it from the group's relay over their own network, through a one-time
//! sshd, and check it against the deployer's digest and manifest. A relay that dies
//! mid-stream or cannot be reached costs a direct upload, never a partial release; no
//! key and no relay server outlives the deploy.

use std::fs;
use std::time::{Duration, Instant};

use crate::scenario::{Run, Scenario};
use crate::trees::{assert_same_tree, noise, result, shadow_commands};

/// `n` hosts deploying to `deploy_to` (each test its own: the relay servers it looks for
/// are named by it) with the relay on, `fanout` at once, and a 3 MiB app.
fn relayed(n: usize, deploy_to: &str, fanout: usize) -> Scenario {
    let mut s = Scenario::new().hosts(n).deploy_to(deploy_to);
    s.extra = format!("\n[upload]\nrelay = true\nrelay_fanout = {fanout}\n");
    fs::create_dir_all(s.dir().join("app/assets")).unwrap();
    for k in 0..24 {
        fs::write(
            s.dir().join(format!("app/assets/blob{k:02}.bin")),
            noise(k + 1, 128 * 1024),
        )
        .unwrap();
    }
    s.app_file("config/app.toml", "name = \"relayed\"\n");
    s
}

/// How slipway names host `i` in messages and `--json`.
fn name(s: &Scenario, i: usize) -> String {
    let h = s.fleet().host(i);
    format!("{}:{}", h.address, h.port)
}

/// Host `i` runs `wrappers` (name, script) in place of those commands.
fn wrap_commands(s: &Scenario, i: usize, wrappers: &[(&str, &str)]) {
    let names: Vec<&str> = wrappers.iter().map(|(c, _)| *c).collect();
    shadow_commands(s, i, &names.join("-"), |_| false, wrappers);
}

/// Host `i` runs `wrapper` in place of `command`.
fn wrap_command(s: &Scenario, i: usize, command: &str, wrapper: &str) {
    wrap_commands(s, i, &[(command, wrapper)]);
}

/// No relay directory, fetched copy or key on any host, and no relay server running.
fn assert_no_relay_left(s: &Scenario) {
    for i in 0..s.host_count() {
        if let Ok(entries) = fs::read_dir(s.app_path(i, ".slipway")) {
            let left: Vec<String> = entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("relay"))
                .collect();
            assert!(left.is_empty(), "host {i} keeps {left:?} in .slipway");
        }
        let host = s.fleet().host(i);
        for dir in [host.srv(), host.home()] {
            let out = std::process::Command::new("grep")
                .args(["-rl", "PRIVATE KEY"])
                .arg(&dir)
                .output()
                .unwrap();
            assert_eq!(
                out.status.code(),
                Some(1),
                "host {i}: a private key is left in {}: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
    // The servers are stopped before slipway exits; give sshd a moment to go.
    let config = format!("{}/.slipway/relay/sshd_config", s.deploy_to);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let running: Vec<String> = fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains(&config))
            .collect();
        if running.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "relay servers still run: {running:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The relay's serving command (`tail -f` of its kept stream, `"$@"`) replaced on host 0
/// by the shell fragment `serve`; every other `tail` runs as it is.
fn relay_serves(s: &Scenario, serve: &str) {
    wrap_command(
        s,
        0,
        "tail",
        &format!(
            "#!/bin/sh\nfor last; do :; done\nif [ \"${{last%/.slipway/relay/stream}}\" != \"$last\" ]; then\n{serve}\nfi\nexec /usr/bin/tail \"$@\"\n"
        ),
    );
}

/// A deploy whose relay (host 0) failed its group: every other host got the release
/// directly from the deployer, with a warning naming it and saying `says`; every tree
/// is the source's, and nothing is left behind.
fn assert_group_went_direct(s: &Scenario, run: &Run, says: &str) {
    let cold = result(run);
    let up = uploads(&cold);
    let payload = up[0]["bytes_sent"].as_u64().unwrap();
    for (i, u) in up.iter().enumerate().skip(1) {
        assert_eq!(u["relayed"], 0, "host {i}: {cold}");
        assert_eq!(u["bytes_sent"].as_u64(), Some(payload), "host {i}: {cold}");
        let warning = run
            .stdout
            .lines()
            .find(|l| {
                l.contains(&name(s, i))
                    && l.contains(says)
                    && l.contains("sending the release directly")
            })
            .unwrap_or_else(|| panic!("no warning for host {i}: {}", run.all_output()));
        println!("{warning}");
        // Only what went wrong is named: what tar made of other bytes is not the story.
        assert!(!warning.contains("tar:"), "{warning}");
    }
    for i in 0..s.host_count() {
        assert_same_tree(s, i);
    }
    s.assert_no_partial_and_no_lock();
    assert_no_relay_left(s);
}

fn uploads(result: &serde_json::Value) -> Vec<serde_json::Value> {
    result["uploads"]
        .as_array()
        .expect("per-host uploads in the result")
        .clone()
}

#[test]
fn relayed_uploads_arrive_byte_for_byte_and_cross_the_deployers_link_once() {
    let s = relayed(4, "/srv/relay-ok", 2);
    // The relay's serving command (`tail -f` of the kept stream) notes how many serve at
    // once (each holds on 1 s) and how much of the stream the relay had kept when each
    // fetch began; the relay's tee keeps the first MiB, then waits 3 s for the rest.
    let serving = s.dir().join("serving");
    let log = s.dir().join("serving.log");
    let kept = s.dir().join("kept.log");
    let tail = format!(
        "#!/bin/sh
for last; do :; done
if [ \"${{last%/.slipway/relay/stream}}\" != \"$last\" ]; then
  wc -c < \"$last\" >> {kept}
  mkdir -p {dir}
  : > {dir}/$$
  ls {dir} | wc -l >> {log}
  sleep 1
  /usr/bin/tail \"$@\"
  rc=$?
  rm -f {dir}/$$
  exit $rc
fi
exec /usr/bin/tail \"$@\"
",
        dir = serving.display(),
        log = log.display(),
        kept = kept.display(),
    );
    let tee = "#!/bin/sh\ncase \"$*\" in\n  */.slipway/relay/stream) { dd bs=1048576 count=1 iflag=fullblock 2>/dev/null; sleep 3; cat; } | /usr/bin/tee \"$@\" ;;\n  *) exec /usr/bin/tee \"$@\" ;;\nesac\n";
    wrap_commands(&s, 0, &[("tail", &tail), ("tee", tee)]);
    let plan = s.slipway(&["deploy", "test", "--dry-run"]).ok();
    assert!(
        plan.stdout.contains("[upload] relay") && plan.stdout.contains("at most 2 at once"),
        "{}",
        plan.all_output()
    );
    let run = s.slipway(&["deploy", "test", "--json"]).ok();
    // Three hosts served, never more than relay_fanout = 2 at once.
    let counts: Vec<usize> = fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    println!("hosts served at once, as each fetch began: {counts:?}");
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.iter().all(|&n| (1..=2).contains(&n)), "{counts:?}");
    // The first fetches began while the relay was still receiving: 1 MiB of the stream
    // kept, not all of it (the relay does not finish before its group starts).
    let kept: Vec<u64> = fs::read_to_string(&kept)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    println!("bytes of the stream kept as each fetch began: {kept:?}");
    assert!(kept.iter().any(|&k| k <= 1 << 20), "{kept:?}");
    let cold = result(&run);
    let up = uploads(&cold);
    for (i, u) in up.iter().enumerate() {
        println!(
            "host {i}: {} bytes sent, {} relayed from {}",
            u["bytes_sent"], u["relayed"], u["relay"]
        );
    }
    // The relay got the stream from the deployer ...
    let payload = up[0]["bytes_sent"].as_u64().unwrap();
    assert!(payload > 3 << 20, "{cold}");
    assert_eq!(up[0]["relayed"], 0, "{cold}");
    assert!(up[0]["relay"].is_null(), "{cold}");
    // ... the others the same bytes from it, and from the deployer only a key.
    for (i, u) in up.iter().enumerate().skip(1) {
        assert_eq!(u["relayed"].as_u64(), Some(payload), "host {i}: {cold}");
        assert_eq!(u["relay"].as_str(), Some(name(&s, 0).as_str()), "{cold}");
        assert!(u["bytes_sent"].as_u64().unwrap() < 1024, "host {i}: {cold}");
        assert_eq!(u["bytes_raw"], up[0]["bytes_raw"], "host {i}");
    }
    assert_eq!(cold["bytes_relayed"].as_u64(), Some(3 * payload), "{cold}");
    assert!(
        cold["bytes_sent"].as_u64().unwrap() < payload + 4096,
        "{cold}"
    );
    let id = cold["release"].as_str().unwrap().to_string();
    s.assert_current_everywhere(&id);
    for i in 0..4 {
        assert_same_tree(&s, i);
    }
    s.assert_no_partial_and_no_lock();
    assert_no_relay_left(&s);

    // A second deploy sends the few changed files: below the relay's threshold, directly.
    s.app_file("config/app.toml", "name = \"second\"\n");
    let run = s.slipway(&["deploy", "test"]).ok();
    assert!(
        !run.stdout.contains("relayed between hosts"),
        "{}",
        run.all_output()
    );
    for i in 0..4 {
        assert_same_tree(&s, i);
    }
    assert_no_relay_left(&s);
}

#[test]
fn a_relay_killed_mid_stream_leaves_no_partial_release_and_its_group_gets_the_release_directly() {
    let s = relayed(3, "/srv/relay-killed", 2);
    // The relay's serving command sends 1 MiB, then its sshd session is SIGKILLed.
    relay_serves(
        &s,
        "  /usr/bin/tail \"$@\" | head -c 1048576\n  kill -KILL \"$PPID\"\n  exit 1",
    );
    let run = s.slipway(&["deploy", "test", "--json"]).ok();
    assert_group_went_direct(&s, &run, "cannot fetch the release from the relay");
}

#[test]
fn a_relay_serving_other_bytes_has_them_extracted_nowhere_and_its_group_gets_the_release_directly()
{
    let s = relayed(3, "/srv/relay-tampered", 2);
    // The relay serves the stream with one file's content changed, at the same length.
    relay_serves(
        &s,
        "  /usr/bin/tail \"$@\" | LC_ALL=C sed 's/name = \"relayed\"/name = \"TAMPERED\"/'\n  exit 0",
    );
    let run = s.slipway(&["deploy", "test", "--json"]).ok();
    assert_group_went_direct(&s, &run, "is not the deployer's");
    for i in 0..3 {
        let config = fs::read_to_string(s.app_path(i, "current/config/app.toml")).unwrap();
        assert!(!config.contains("TAMPERED"), "host {i}: {config}");
    }
}

#[test]
fn a_host_that_cannot_reach_its_relay_gets_the_release_directly() {
    let s = relayed(3, "/srv/relay-unreachable", 2);
    // Host 1's ssh goes to 127.0.0.1 instead, where nothing listens on the relay's port.
    wrap_command(
        &s,
        1,
        "ssh",
        "#!/bin/sh\nexec /usr/bin/ssh -o HostName=127.0.0.1 \"$@\"\n",
    );
    let run = s.slipway(&["deploy", "test", "--json"]).ok();
    let cold = result(&run);
    let up = uploads(&cold);
    let payload = up[0]["bytes_sent"].as_u64().unwrap();
    assert_eq!(up[1]["relayed"], 0, "{cold}");
    assert_eq!(up[1]["bytes_sent"].as_u64(), Some(payload), "{cold}");
    assert_eq!(up[2]["relayed"].as_u64(), Some(payload), "{cold}");
    let warning = run
        .stdout
        .lines()
        .find(|l| l.contains("cannot fetch the release from the relay"))
        .unwrap_or_else(|| panic!("no warning: {}", run.all_output()));
    assert!(warning.contains(&name(&s, 1)), "{warning}");
    for i in 0..3 {
        assert_same_tree(&s, i);
    }
    s.assert_no_partial_and_no_lock();
    assert_no_relay_left(&s);
}

#[test]
fn a_failed_relayed_deploy_leaves_no_key_no_server_and_no_partial_release() {
    let mut s = relayed(3, "/srv/relay-failed", 2).shared_file("config/secret.yml");
    // Host 2 lacks the shared file: it fetches the release, then its upload step fails.
    for i in 0..2 {
        let p = s.app_path(i, "shared/config/secret.yml");
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, "x: 1\n").unwrap();
    }
    let run = s.slipway(&["deploy", "test"]);
    assert_ne!(run.code, 0, "{}", run.all_output());
    assert!(
        run.stderr.contains(&name(&s, 2)) && run.stderr.contains("secret.yml"),
        "{}",
        run.all_output()
    );
    for i in 0..3 {
        assert_eq!(s.current(i), None, "host {i} switched");
    }
    s.assert_no_partial_and_no_lock();
    assert_no_relay_left(&s);

    // A fan-out out of range is refused, naming the key, before any host is touched.
    s.extra = "\n[upload]\nrelay = true\nrelay_fanout = 0\n".into();
    let bad = s.slipway(&["deploy", "test"]);
    assert_eq!(bad.code, 2, "{}", bad.all_output());
    assert!(
        bad.stderr.contains("upload.relay_fanout") && bad.stderr.contains("between 1 and 64"),
        "{}",
        bad.stderr
    );
}
