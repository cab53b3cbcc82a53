//! Staged rollouts on real sshd hosts. Each host runs a small HTTP app (python3), started
//! by the restart hook from the release it restarts into and bound to the host's own
//! loopback address; a file in the release decides its answer (`status`: 200 or 500,
//! `delay`: seconds before answering, `flaky`: every Nth answer is a 500). The gate checks it from the deployer through an
//! ssh port forward.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::scenario::{Scenario, set_executable, signal, wait_for_stderr};

const APP_PORT: u16 = 18080;

const SERVE: &str = r#"import http.server, os, sys, time
addr, port = sys.argv[1], int(sys.argv[2])
status = int(open('status').read().strip()) if os.path.exists('status') else 200
delay = float(open('delay').read().strip()) if os.path.exists('delay') else 0.0
flaky = int(open('flaky').read().strip()) if os.path.exists('flaky') else 0
seen = [0]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        time.sleep(delay)
        seen[0] += 1
        code = 500 if flaky and seen[0] % flaky == 0 else status
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b'ok\n')
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer((addr, port), H).serve_forever()
"#;

const RESTART: &str = r#"#!/bin/sh
set -u
addr=${SLIPWAY_HOST%:*}
pidfile="$SLIPWAY_DEPLOY_TO/server.pid"
if [ -f "$pidfile" ]; then
  old=$(cat "$pidfile")
  kill "$old" 2>/dev/null || true
  i=0
  while kill -0 "$old" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
fi
nohup python3 bin/serve.py "$addr" 18080 </dev/null >/dev/null 2>&1 &
echo $! > "$pidfile"
i=0
until python3 -c "import socket,sys; socket.create_connection((sys.argv[1], 18080), 0.5).close()" "$addr" 2>/dev/null; do
  i=$((i+1)); [ $i -gt 100 ] && { echo "the app did not start" >&2; exit 1; }; sleep 0.05
done
echo "$(date +%s.%N) $addr $SLIPWAY_RELEASE_ID" >> "$RESTART_LOG"
"#;

/// A scenario whose app is the HTTP server above, with `[rollout]` and `[health]` as given.
fn app_scenario(hosts: usize, rollout: &str, health: &str) -> Scenario {
    let mut s = Scenario::new().hosts(hosts);
    s.app_file("bin/serve.py", SERVE);
    s.app_file("bin/restart", RESTART);
    set_executable(&s.dir().join("app/bin/restart"));
    s.app_file("status", "200\n");
    let log = s.dir().join("restarts.log");
    s = s.restart_hook(&format!("RESTART_LOG={} sh bin/restart", log.display()));
    s.extra = format!("\n[rollout]\n{rollout}\n\n[health]\n{health}\n");
    s
}

const HTTP_GATE: &str = r#"http = { port = 18080, path = "/healthz", expect = 200, address = "{host}" }
window = "3s"
interval = "200ms"
timeout = "2s"
min_samples = 4
max_consecutive_failures = 3
max_error_rate = 0.05"#;

/// (time, address, release) per restart, in order.
fn restarts(s: &Scenario) -> Vec<(f64, String, String)> {
    fs::read_to_string(s.dir().join("restarts.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut p = l.split_whitespace();
            (
                p.next().unwrap().parse().unwrap(),
                p.next().unwrap().to_string(),
                p.next().unwrap().to_string(),
            )
        })
        .collect()
}

/// Addresses of the hosts restarted into `release`, in order.
fn restarted_into(s: &Scenario, release: &str) -> Vec<String> {
    restarts(s)
        .into_iter()
        .filter(|(_, _, r)| r == release)
        .map(|(_, a, _)| a)
        .collect()
}

/// The status code host i's app answers now.
fn answer(s: &Scenario, i: usize) -> u16 {
    let address = &s.fleet().host(i).address;
    let mut stream = TcpStream::connect((address.as_str(), APP_PORT)).expect("app listens");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn address(s: &Scenario, i: usize) -> String {
    s.fleet().host(i).address.clone()
}

/// Host names (address:port) of step `n` (1-based) in `rollout plan` output.
fn plan_step(s: &Scenario, n: usize) -> BTreeSet<String> {
    let out = s.slipway(&["rollout", "plan", "test"]).ok().stdout;
    let mut hosts = BTreeSet::new();
    let mut inside = false;
    for line in out.lines() {
        if line.trim_start().starts_with("step ") {
            inside = line.trim_start().starts_with(&format!("step {n}"));
            continue;
        }
        if inside && line.starts_with("    ") {
            hosts.insert(line.split_whitespace().next().unwrap().to_string());
        }
    }
    hosts
}

fn addresses_of(names: &BTreeSet<String>) -> BTreeSet<String> {
    names
        .iter()
        .map(|n| n.rsplit_once(':').map(|(a, _)| a).unwrap_or(n).to_string())
        .collect()
}

#[test]
fn canary_with_a_failing_gate_rolls_the_canaries_back_and_a_good_release_goes_step_by_step() {
    let s = app_scenario(8, "strategy = \"canary\"\nsteps = [25, 50, 100]", HTTP_GATE);
    // A good release goes through 2, 2 and 4 hosts, each step gated.
    let started = std::time::Instant::now();
    let v1 = s.deploy_ok();
    eprintln!(
        "measured: canary 2+2+4 hosts, 2 s gates: {:?}",
        started.elapsed()
    );
    s.assert_current_everywhere(&v1);
    let order = restarted_into(&s, &v1);
    assert_eq!(order.len(), 8);
    let step1 = addresses_of(&plan_step(&s, 1));
    let step2 = addresses_of(&plan_step(&s, 2));
    assert_eq!(step1.len(), 2);
    assert_eq!(order[..2].iter().cloned().collect::<BTreeSet<_>>(), step1);
    assert_eq!(order[2..4].iter().cloned().collect::<BTreeSet<_>>(), step2);

    // A bad release (answers 500): only the two canaries are ever switched.
    s.app_file("status", "500\n");
    let started = std::time::Instant::now();
    let run = s.deploy().expect_code(1);
    eprintln!(
        "measured: bad canary deploy, failed gate and rollback: {:?}",
        started.elapsed()
    );
    let out = run.all_output();
    assert!(out.contains("health gate failed at step 1"), "{out}");
    assert!(out.contains("consecutive failed checks"), "{out}");
    assert!(out.contains("status 500, expected 200"), "{out}");
    let ids: BTreeSet<String> = restarts(&s).into_iter().map(|(_, _, r)| r).collect();
    let v2 = ids
        .into_iter()
        .find(|r| r != &v1)
        .expect("v2 was restarted somewhere");
    let switched: BTreeSet<String> = restarted_into(&s, &v2).into_iter().collect();
    assert_eq!(switched, step1, "only the canaries ran v2");
    s.assert_current_everywhere(&v1);
    for i in 0..8 {
        assert_eq!(answer(&s, i), 200, "host {i} is healthy on v1 again");
        assert_eq!(s.state(i, &v2), "failed");
    }
    // The audit log says why, with the numbers.
    let last = s.audit(0).last().cloned().unwrap();
    assert_eq!(last["result"], "failed");
    let message = last["message"].as_str().unwrap();
    assert!(
        message.contains("3 consecutive failed checks (limit 3)"),
        "{message}"
    );
    // The rollout state records the failure; a new deploy is not refused.
    let status = s.slipway(&["rollout", "status", "test"]).ok().stdout;
    assert!(status.contains("failed"), "{status}");
    s.assert_no_partial_and_no_lock();
}

#[test]
fn a_slow_release_is_caught_by_p95() {
    let gate = r#"http = { port = 18080, path = "/", address = "{host}" }
window = "2s"
interval = "100ms"
timeout = "3s"
min_samples = 3
max_p95 = "300ms""#;
    let s = app_scenario(2, "strategy = \"canary\"\nsteps = [50, 100]", gate);
    let v1 = s.deploy_ok();
    s.app_file("delay", "0.8\n");
    let run = s.deploy().expect_code(1);
    let out = run.all_output();
    assert!(out.contains("p95 latency"), "{out}");
    assert!(out.contains("> 300ms"), "{out}");
    s.assert_current_everywhere(&v1);
}

#[test]
fn rolling_batches_of_two_go_in_order_and_a_bad_release_stops_at_the_first() {
    let s = app_scenario(6, "strategy = \"rolling\"\nbatch = 2", HTTP_GATE);
    let v1 = s.deploy_ok();
    let log = restarts(&s);
    let order: Vec<String> = log.iter().map(|(_, a, _)| a.clone()).collect();
    let expected: Vec<String> = (0..6).map(|i| address(&s, i)).collect();
    for b in 0..3 {
        let got: BTreeSet<_> = order[2 * b..2 * b + 2].iter().collect();
        let want: BTreeSet<_> = expected[2 * b..2 * b + 2].iter().collect();
        assert_eq!(got, want, "batch {b}");
    }
    // Each batch was gated (the gate takes its window, about 3 s) before the next.
    for b in 1..3 {
        let gap = log[2 * b].0 - log[2 * b - 1].0;
        assert!(
            gap >= 2.5,
            "batch {b} started {gap:.2}s after the previous one"
        );
    }
    s.assert_current_everywhere(&v1);

    s.app_file("status", "500\n");
    s.deploy().expect_code(1);
    let v2: Vec<String> = restarts(&s)
        .into_iter()
        .filter(|(_, _, r)| r != &v1)
        .map(|(_, a, _)| a)
        .collect();
    let got: BTreeSet<_> = v2.iter().cloned().collect();
    let want: BTreeSet<_> = expected[..2].iter().cloned().collect();
    assert_eq!(got, want, "only the first batch ran the bad release");
    s.assert_current_everywhere(&v1);
}

#[test]
fn a_manual_pause_is_promoted_by_a_second_invocation_or_aborted() {
    let s = app_scenario(
        4,
        "strategy = \"canary\"\nsteps = [25, 100]\npause = \"manual\"",
        HTTP_GATE,
    );
    let v1 = s.deploy_ok();
    // v1 itself paused after its first step: promote it to get a stable stage.
    s.slipway(&["rollout", "promote", "test"]).ok();
    s.assert_current_everywhere(&v1);

    s.app_file("index.html", "v2\n");
    let a = s.deploy().ok();
    assert!(a.stdout.contains("paused"), "{}", a.stdout);
    let v2 = a.release_id();
    let canaries: Vec<usize> = (0..4)
        .filter(|&i| s.current(i).as_deref() == Some(v2.as_str()))
        .collect();
    assert_eq!(canaries.len(), 1);
    // A deploy during the paused rollout is refused, naming it.
    let refused = s.deploy().expect_code(1);
    assert!(
        refused.stderr.contains("a rollout is in progress"),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains(&v2), "{}", refused.stderr);
    let status = s.slipway(&["rollout", "status", "test"]).ok().stdout;
    assert!(status.contains("paused"), "{status}");
    assert!(status.contains("1 of 2 step(s) done"), "{status}");
    // Process B promotes: every host ends on v2.
    let b = s.slipway(&["rollout", "promote", "test"]).ok();
    assert!(b.stdout.contains("done"), "{}", b.stdout);
    s.assert_current_everywhere(&v2);

    // v3 pauses at its canary; abort returns every host to v2.
    s.app_file("index.html", "v3\n");
    let v3 = s.deploy().ok().release_id();
    assert_ne!(v3, v2);
    let aborted = s.slipway(&["rollout", "abort", "test"]).ok();
    assert!(
        aborted.stdout.contains("switched back"),
        "{}",
        aborted.stdout
    );
    s.assert_current_everywhere(&v2);
    for i in 0..4 {
        assert_eq!(answer(&s, i), 200);
        assert_eq!(s.state(i, &v3), "rolled-back");
    }
    let last = s.audit(0).last().cloned().unwrap();
    assert_eq!(last["action"], "rollout-abort");
    // After an abort a new deploy goes ahead.
    s.app_file("index.html", "v4\n");
    s.deploy().ok();
}

#[test]
fn an_inconclusive_gate_pauses_and_says_why() {
    // Each check takes 0.5 s: a 1 s window can never collect 8 samples.
    let gate = r#"command = "sleep 0.5"
window = "1s"
interval = "100ms"
min_samples = 8"#;
    let s = app_scenario(2, "strategy = \"canary\"\nsteps = [50, 100]", gate);
    let run = s.deploy().ok();
    assert!(run.stdout.contains("paused"), "{}", run.stdout);
    assert!(
        run.all_output().contains("needed to judge"),
        "{}",
        run.all_output()
    );
    let status = s.slipway(&["rollout", "status", "test"]).ok().stdout;
    assert!(status.contains("inconclusive"), "{status}");
}

#[test]
fn a_killed_deployer_leaves_a_rollout_that_status_shows_and_resume_finishes() {
    let s = app_scenario(
        4,
        "strategy = \"canary\"\nsteps = [25, 100]\npause = \"60s\"",
        HTTP_GATE,
    );
    let mut child = s.spawn_with_fault(&["deploy", "test"], "");
    wait_for_stderr(&mut child, "pausing");
    signal(&child, "KILL");
    let _ = child.wait();
    let status = s.slipway(&["rollout", "status", "test"]).ok().stdout;
    assert!(status.contains("running"), "{status}");
    assert!(status.contains("1 of 2 step(s) done"), "{status}");
    // The lock of the dead deployer is taken over (same machine, process gone).
    let resumed = s.slipway(&["rollout", "resume", "test"]).ok();
    assert!(
        resumed.stderr.contains("that process is gone"),
        "{}",
        resumed.stderr
    );
    let id = s.current(0).unwrap();
    s.assert_current_everywhere(&id);
    s.assert_no_partial_and_no_lock();
}

#[test]
fn a_killed_deployer_can_be_aborted_back_to_the_stable_release() {
    let s = app_scenario(
        4,
        "strategy = \"canary\"\nsteps = [25, 100]\npause = \"60s\"",
        HTTP_GATE,
    );
    s.slipway(&["rollout", "plan", "test"]).ok();
    // A stable release first (the pause makes it slow: promote --full skips it).
    let mut first = s.spawn_with_fault(&["deploy", "test"], "");
    wait_for_stderr(&mut first, "pausing");
    signal(&first, "KILL");
    let _ = first.wait();
    // The dead run's lock: its process is gone, so promote takes it over, saying so.
    let run = s.slipway(&["rollout", "promote", "test", "--full"]).ok();
    assert!(
        run.stderr.contains("breaking the deploy lock"),
        "{}",
        run.stderr
    );
    let v1 = s.current(0).unwrap();
    s.assert_current_everywhere(&v1);

    s.app_file("index.html", "v2\n");
    let mut child = s.spawn_with_fault(&["deploy", "test"], "");
    wait_for_stderr(&mut child, "pausing");
    signal(&child, "KILL");
    let _ = child.wait();
    let on_v2 = (0..4)
        .filter(|&i| s.current(i).as_deref() != Some(v1.as_str()))
        .count();
    assert_eq!(on_v2, 1, "the canary is on v2");
    s.slipway(&["rollout", "abort", "test"]).ok();
    s.assert_current_everywhere(&v1);
    for i in 0..4 {
        assert_eq!(answer(&s, i), 200);
    }
}

#[test]
fn rollout_plan_is_the_same_every_run() {
    let s = app_scenario(
        10,
        "strategy = \"canary\"\nsteps = [10, 50, 100]",
        HTTP_GATE,
    );
    let a = s.slipway(&["rollout", "plan", "test"]).ok().stdout;
    let b = s.slipway(&["rollout", "plan", "test"]).ok().stdout;
    assert_eq!(a, b);
    assert!(a.contains("step 1 (10%): 1 new, 1 of 10"), "{a}");
    assert!(a.contains("step 2 (50%): 4 new, 5 of 10"), "{a}");
    assert!(a.contains("Worst case: promotion"), "{a}");
}

/// Restart hook that records how many hosts are restarting at the same moment: each
/// host creates a file in a shared directory, holds it for a while, and notes how many
/// files it sees.
fn counting_restart(dir: &std::path::Path) -> String {
    format!(
        "d={d}; mkdir -p \"$d/active\"; touch \"$d/active/$SLIPWAY_HOST\"; sleep 0.3; ls \"$d/active\" | wc -l >> \"$d/seen\"; echo \"$SLIPWAY_HOST\" >> \"$d/order\"; rm -f \"$d/active/$SLIPWAY_HOST\"",
        d = dir.display()
    )
}

fn max_seen(dir: &std::path::Path) -> usize {
    fs::read_to_string(dir.join("seen"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .max()
        .unwrap_or(0)
}

#[test]
fn thirty_two_hosts_all_at_once_and_rolling_respect_max_parallel() {
    let mut s = Scenario::new().hosts(32);
    let counts = s.dir().join("counts");
    s = s.restart_hook(&counting_restart(&counts));
    s.extra = "\n[rollout]\nstrategy = \"all-at-once\"\nmax_parallel = 5\n".into();
    let started = std::time::Instant::now();
    let v1 = s.deploy_ok();
    eprintln!(
        "measured: 32 hosts all-at-once, max_parallel 5: {:?}",
        started.elapsed()
    );
    s.assert_current_everywhere(&v1);
    let seen = max_seen(&counts);
    assert!(
        (2..=5).contains(&seen),
        "at most 5 restarts at once, saw {seen}"
    );
    fs::remove_dir_all(&counts).unwrap();

    s.extra = "\n[rollout]\nstrategy = \"rolling\"\nbatch = \"25%\"\nmax_parallel = 3\n".into();
    s.app_file("index.html", "v2\n");
    let started = std::time::Instant::now();
    let v2 = s.deploy_ok();
    eprintln!(
        "measured: 32 hosts rolling 25%, max_parallel 3: {:?}",
        started.elapsed()
    );
    s.assert_current_everywhere(&v2);
    let seen = max_seen(&counts);
    assert!(
        (2..=3).contains(&seen),
        "at most 3 restarts at once, saw {seen}"
    );
    // Batches of 8 in config order.
    let order = fs::read_to_string(counts.join("order")).unwrap();
    let order: Vec<&str> = order.lines().collect();
    assert_eq!(order.len(), 32);
    for b in 0..4 {
        let got: BTreeSet<String> = order[8 * b..8 * b + 8]
            .iter()
            .map(|h| h.to_string())
            .collect();
        let want: BTreeSet<String> = (8 * b..8 * b + 8)
            .map(|i| format!("{}:{}", s.fleet().host(i).address, s.fleet().host(i).port))
            .collect();
        assert_eq!(got, want, "batch {b}");
    }
}

#[test]
fn lifecycle_hooks_and_event_webhook() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = events.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut text = Vec::new();
            let mut buf = [0u8; 4096];
            stream
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            // Read the head and the body (Content-Length).
            loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => text.extend_from_slice(&buf[..n]),
                }
                let t = String::from_utf8_lossy(&text).to_string();
                if let Some((head, body)) = t.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if body.len() >= len {
                        break;
                    }
                }
            }
            let _ = stream.write_all(b"HTTP/1.0 204 No Content\r\n\r\n");
            let t = String::from_utf8_lossy(&text).to_string();
            if let Some((_, body)) = t.split_once("\r\n\r\n") {
                sink.lock().unwrap().push(body.to_string());
            }
        }
    });
    let marks = tempfile::tempdir().unwrap();
    let m = marks.path().display().to_string();
    let rollout = format!(
        "strategy = \"canary\"\nsteps = [50, 100]\npre_rollout = [\"echo $SLIPWAY_RELEASE_ID > {m}/pre\"]\nconfirm_promotion = [\"test -f {m}/allow\"]\npost_rollout = [\"echo $SLIPWAY_ROLLOUT_HOSTS > {m}/post\"]\non_rollback = [\"echo \\\"$SLIPWAY_ROLLOUT_REASON\\\" > {m}/rollback\"]\nevent = \"http://127.0.0.1:{port}/hook\""
    );
    let s = app_scenario(2, &rollout, HTTP_GATE);
    // confirm_promotion refuses: the rollout pauses after its first step.
    let run = s.deploy().ok();
    assert!(run.stdout.contains("not confirmed"), "{}", run.stdout);
    let v1 = run.release_id();
    assert_eq!(
        fs::read_to_string(marks.path().join("pre")).unwrap().trim(),
        v1
    );
    fs::write(marks.path().join("allow"), "").unwrap();
    s.slipway(&["rollout", "promote", "test"]).ok();
    s.assert_current_everywhere(&v1);
    let post = fs::read_to_string(marks.path().join("post")).unwrap();
    assert_eq!(post.split_whitespace().count(), 2, "{post}");
    // A bad release: on_rollback gets the reason.
    s.app_file("status", "500\n");
    s.deploy().expect_code(1);
    let why = fs::read_to_string(marks.path().join("rollback")).unwrap();
    assert!(why.contains("consecutive failed checks"), "{why}");
    std::thread::sleep(Duration::from_millis(200));
    let kinds: Vec<String> = events
        .lock()
        .unwrap()
        .iter()
        .map(|b| {
            serde_json::from_str::<serde_json::Value>(b).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for k in [
        "started",
        "switched",
        "gate-passed",
        "paused",
        "done",
        "rolled-back",
    ] {
        assert!(kinds.iter().any(|e| e == k), "no `{k}` event in {kinds:?}");
    }
}

/// An HTTPS endpoint on loopback with its own CA: `openssl` makes the CA and a server
/// certificate for 127.0.0.1, /usr/bin/python3 serves it. Each POST's body is appended
/// (one line) to `bodies`; the answer is 204. Stops when dropped.
struct TlsSink {
    child: std::process::Child,
    port: u16,
    ca: std::path::PathBuf,
    bodies: std::path::PathBuf,
}

const TLS_SINK: &str = r#"import http.server, ssl, sys
cert, key, bodies = sys.argv[1], sys.argv[2], sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get('Content-Length', '0')))
        with open(bodies, 'ab') as f:
            f.write(body.replace(b'\n', b' ') + b'\n')
        self.send_response(204)
        self.end_headers()
    def log_message(self, *a):
        pass
server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

impl TlsSink {
    fn start(dir: &std::path::Path) -> TlsSink {
        let openssl = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl runs (scripts/test installs it)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=slipway test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        fs::write(
            dir.join("server.ext"),
            "subjectAltName = IP:127.0.0.1\nbasicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature\nextendedKeyUsage = serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ]);
        fs::write(dir.join("sink.py"), TLS_SINK).unwrap();
        let bodies = dir.join("bodies");
        let mut child = std::process::Command::new("/usr/bin/python3")
            .arg(dir.join("sink.py"))
            .arg(dir.join("server.pem"))
            .arg(dir.join("server.key"))
            .arg(&bodies)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("/usr/bin/python3 runs (Debian package python3)");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let port = line.trim().parse().expect("the sink prints its port");
        TlsSink {
            child,
            port,
            ca: dir.join("ca.pem"),
            bodies,
        }
    }

    /// The JSON bodies received so far, in order.
    fn received(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(&self.bodies)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON body"))
            .collect()
    }
}

impl Drop for TlsSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn https_event_webhook_with_its_own_ca_gets_every_transition_and_without_it_only_warnings() {
    let certs = tempfile::tempdir().unwrap();
    let sink = TlsSink::start(certs.path());
    let token = "Zq9tokenXk3";
    let url = format!("https://127.0.0.1:{}/hooks/{token}?key={token}", sink.port);
    let rollout = format!("strategy = \"canary\"\nsteps = [50, 100]\nevent = \"{url}\"");
    let mut s = app_scenario(2, &rollout, HTTP_GATE);
    // event_ca is relative to the config file.
    fs::copy(&sink.ca, s.dir().join("internal-ca.pem")).unwrap();
    let with_ca = format!("{rollout}\nevent_ca = \"internal-ca.pem\"");
    s.extra = format!("\n[rollout]\n{with_ca}\n\n[health]\n{HTTP_GATE}\n");

    let v1 = s.deploy_ok();
    let got = sink.received();
    let kinds: Vec<&str> = got.iter().map(|b| b["event"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "started",
            "switched",
            "gate-passed",
            "switched",
            "gate-passed",
            "done"
        ],
        "{got:?}"
    );
    for b in &got {
        assert_eq!(b["app"], "testapp", "{b}");
        assert_eq!(b["stage"], "test", "{b}");
        assert_eq!(b["release"], v1.as_str(), "{b}");
        assert_eq!(b["strategy"], "canary", "{b}");
        assert_eq!(b["steps"], 2, "{b}");
    }
    assert_eq!(got[1]["step"], 1);
    assert_eq!(got[3]["step"], 2);
    assert_eq!(got[5]["completed"], 2, "{}", got[5]);

    // A failing release: rolled back, and the webhook hears it with the reason.
    s.app_file("status", "500\n");
    let failed = s.deploy().expect_code(1);
    let got = sink.received();
    let last = got.last().unwrap();
    assert_eq!(last["event"], "rolled-back", "{got:?}");
    assert_ne!(last["release"], v1.as_str(), "{last}");
    assert!(
        last["reason"]
            .as_str()
            .is_some_and(|r| r.contains("consecutive failed checks")),
        "{last}"
    );
    assert!(got[6..].iter().any(|b| b["event"] == "started"), "{got:?}");
    assert!(
        !failed.all_output().contains("webhook"),
        "no webhook warning: {}",
        failed.all_output()
    );
    s.assert_current_everywhere(&v1);

    // Without event_ca the endpoint's certificate is not trusted: a warning per event,
    // nothing received, and the deploy goes on as if there were no webhook.
    s.app_file("status", "200\n");
    s.extra = format!("\n[rollout]\n{rollout}\n\n[health]\n{HTTP_GATE}\n");
    let before = sink.received().len();
    let run = s.slipway(&["deploy", "test", "--json"]).ok();
    let v3 = s.current(0).expect("a current release");
    assert_ne!(v3, v1, "the third deploy went live");
    s.assert_current_everywhere(&v3);
    assert_eq!(
        sink.received().len(),
        before,
        "an untrusted endpoint got a POST"
    );
    let out = run.all_output();
    assert!(
        out.contains("webhook https://127.0.0.1:") && out.contains("UnknownIssuer"),
        "{out}"
    );
    assert!(
        out.contains("event_ca"),
        "the warning says how to fix it: {out}"
    );
    for i in 0..2 {
        let audit = fs::read_to_string(s.app_path(i, ".slipway/log.jsonl")).unwrap();
        assert!(
            !audit.contains(token),
            "host {i}'s audit log shows the token"
        );
    }
    assert!(!out.contains(token), "the token is shown: {out}");
}

#[test]
fn a_redirected_chunked_health_answer_is_followed_and_judged() {
    // /healthz redirects to /ready/, which answers chunked with the status in `status`.
    const REDIRECTING: &str = r#"import http.server, os, sys
addr, port = sys.argv[1], int(sys.argv[2])
status = int(open('status').read().strip()) if os.path.exists('status') else 200
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def do_GET(self):
        if self.path == '/healthz':
            self.send_response(302)
            self.send_header('Location', '/ready/')
            self.send_header('Content-Length', '0')
            self.end_headers()
        elif self.path == '/ready/':
            self.send_response(status)
            self.send_header('Transfer-Encoding', 'chunked')
            self.end_headers()
            for part in (b'all ', b'good\n'):
                self.wfile.write(b'%x\r\n%s\r\n' % (len(part), part))
            self.wfile.write(b'0\r\n\r\n')
        else:
            self.send_response(404)
            self.send_header('Content-Length', '0')
            self.end_headers()
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer((addr, port), H).serve_forever()
"#;
    let s = app_scenario(1, "strategy = \"all-at-once\"", HTTP_GATE);
    s.app_file("bin/serve.py", REDIRECTING);
    // Followed: the final 200 passes the gate (a 302 would not: expect = 200).
    let v1 = s.deploy_ok();
    s.assert_current_everywhere(&v1);
    // Judged on the final answer: a 500 behind the redirect fails the gate.
    s.app_file("status", "500\n");
    let run = s.deploy().expect_code(1);
    assert!(
        run.all_output().contains("status 500"),
        "{}",
        run.all_output()
    );
    s.assert_current_everywhere(&v1);
}

#[test]
fn blue_green_moves_traffic_after_the_gate_never_on_a_failed_one_and_back_on_rollback() {
    let marks = tempfile::tempdir().unwrap();
    let log = marks.path().join("traffic");
    let rollout = format!(
        "strategy = \"blue-green\"\ntraffic = [\"echo $SLIPWAY_POOL >> {}\"]",
        log.display()
    );
    let mut s = app_scenario(4, &rollout, HTTP_GATE);
    s.host_extra = vec![
        "pool = \"blue\"".into(),
        "pool = \"blue\"".into(),
        "pool = \"green\"".into(),
        "pool = \"green\"".into(),
    ];
    let traffic = || -> Vec<String> {
        fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    };
    // The first deploy goes to blue, then traffic moves to blue.
    let v1 = s.deploy_ok();
    assert_eq!(s.current(0).as_deref(), Some(v1.as_str()));
    assert_eq!(s.current(1).as_deref(), Some(v1.as_str()));
    assert_eq!(s.current(2), None);
    assert_eq!(traffic(), ["blue"]);
    // The next one goes to green; blue stays on v1, ready.
    s.app_file("index.html", "v2\n");
    let v2 = s.deploy_ok();
    assert_eq!(s.current(2).as_deref(), Some(v2.as_str()));
    assert_eq!(s.current(3).as_deref(), Some(v2.as_str()));
    assert_eq!(s.current(0).as_deref(), Some(v1.as_str()));
    assert_eq!(traffic(), ["blue", "green"]);
    // A bad release goes to blue (idle), fails its gate: traffic never moves, blue is back on v1.
    s.app_file("status", "500\n");
    s.deploy().expect_code(1);
    assert_eq!(traffic(), ["blue", "green"]);
    assert_eq!(s.current(0).as_deref(), Some(v1.as_str()));
    assert_eq!(s.current(1).as_deref(), Some(v1.as_str()));
    assert_eq!(s.current(2).as_deref(), Some(v2.as_str()));
    // Rollback: the traffic hook moves traffic back to the old pool; no host is switched.
    let run = s.rollback(&["--reason", "v2 is broken"]).ok();
    assert!(
        run.stdout.contains("traffic moved back to the blue pool"),
        "{}",
        run.stdout
    );
    assert_eq!(traffic(), ["blue", "green", "blue"]);
    assert_eq!(s.current(2).as_deref(), Some(v2.as_str()));
    assert_eq!(s.state(2, &v2), "rolled-back");
    for i in 0..2 {
        assert_eq!(answer(&s, i), 200);
    }
}

#[test]
fn status_shows_each_host_in_a_paused_rollout_without_calling_it_diverged() {
    let s = app_scenario(
        2,
        "strategy = \"canary\"\nsteps = [50, 100]\npause = \"manual\"",
        HTTP_GATE,
    );
    let v1 = s.deploy().ok().release_id();
    let out = s.slipway(&["status", "test"]).ok().stdout;
    eprintln!("{out}");
    assert!(out.contains("rollout in progress"), "{out}");
    assert!(out.contains("step 1/2 done"), "{out}");
    assert!(out.contains("step 2/2 pending"), "{out}");
    assert!(out.contains("gate: healthy"), "{out}");
    let json = s.slipway(&["--json", "status", "test"]).ok().stdout;
    assert!(json.contains("\"rollout_step\""), "{json}");
    s.slipway(&["rollout", "promote", "test"]).ok();
    s.assert_current_everywhere(&v1);
    let out = s.slipway(&["status", "test"]).ok().stdout;
    assert!(!out.contains("rollout in progress"), "{out}");
}

#[test]
fn ctrl_c_during_a_pause_leaves_the_rollout_paused() {
    let s = app_scenario(
        2,
        "strategy = \"canary\"\nsteps = [50, 100]\npause = \"60s\"",
        HTTP_GATE,
    );
    let mut child = s.spawn_with_fault(&["deploy", "test"], "");
    wait_for_stderr(&mut child, "pausing");
    signal(&child, "INT");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("SIGINT received during the pause"),
        "{stdout}"
    );
    let status = s.slipway(&["rollout", "status", "test"]).ok().stdout;
    assert!(status.contains("paused"), "{status}");
    s.slipway(&["rollout", "resume", "test"]).ok();
    let id = s.current(0).unwrap();
    s.assert_current_everywhere(&id);
    s.assert_no_partial_and_no_lock();
}

#[test]
fn a_rollout_in_progress_keeps_its_frozen_plan_when_the_config_changes() {
    let mut s = app_scenario(
        4,
        "strategy = \"canary\"\nsteps = [50, 100]\npause = \"manual\"",
        HTTP_GATE,
    );
    let v1 = s.deploy().ok().release_id();
    let first: BTreeSet<String> = restarted_into(&s, &v1).into_iter().collect();
    assert_eq!(first.len(), 2);
    // The config now says rolling, one host at a time: the paused rollout goes on as planned.
    s.extra = format!("\n[rollout]\nstrategy = \"rolling\"\nbatch = 1\n\n[health]\n{HTTP_GATE}\n");
    s.slipway(&["rollout", "promote", "test"]).ok();
    s.assert_current_everywhere(&v1);
    let status = s.slipway(&["rollout", "status", "test"]).ok().stdout;
    assert!(status.contains("canary rollout"), "{status}");
    assert!(status.contains("2 of 2 step(s) done"), "{status}");
}

#[test]
fn a_flaky_release_fails_on_its_error_rate_with_the_numbers_in_the_audit_log() {
    let s = app_scenario(4, "strategy = \"canary\"\nsteps = [25, 100]", HTTP_GATE);
    let v1 = s.deploy_ok();
    // Every 4th answer fails: never 3 in a row, but 25% is above 5%.
    s.app_file("flaky", "4\n");
    s.deploy().expect_code(1);
    s.assert_current_everywhere(&v1);
    let last = s.audit(0).last().cloned().unwrap();
    let message = last["message"].as_str().unwrap();
    eprintln!("audit message: {message}");
    assert!(
        message.contains("error rate 2") && message.contains("> 5% over "),
        "{message}"
    );
}

#[test]
fn an_aborted_rollout_is_retried_from_its_first_step_and_rollback_points_to_abort() {
    let s = app_scenario(
        3,
        "strategy = \"canary\"\nsteps = [34, 100]\npause = \"manual\"",
        HTTP_GATE,
    );
    let v1 = s.deploy().ok().release_id();
    s.slipway(&["rollout", "promote", "test"]).ok();
    s.app_file("index.html", "v2\n");
    let v2 = s.deploy().ok().release_id();
    // A rollback during the rollout is refused: abort is the way back.
    let refused = s.rollback(&[]).expect_code(1);
    assert!(
        refused.stderr.contains("slipway rollout abort test"),
        "{}",
        refused.stderr
    );
    s.slipway(&["rollout", "abort", "test"]).ok();
    s.assert_current_everywhere(&v1);
    // Retry: the same release, from the first step (the same canary), paused again.
    let retried = s.slipway(&["rollout", "retry", "test"]).ok();
    assert!(retried.stdout.contains("paused"), "{}", retried.stdout);
    let on_v2 = (0..3)
        .filter(|&i| s.current(i).as_deref() == Some(v2.as_str()))
        .count();
    assert_eq!(on_v2, 2, "34% of 3 hosts");
    s.slipway(&["rollout", "promote", "test"]).ok();
    s.assert_current_everywhere(&v2);
    for i in 0..3 {
        assert_eq!(s.state(i, &v2), "live");
    }
}

#[test]
fn json_events_of_a_gated_canary_match_the_schema() {
    let s = app_scenario(
        2,
        "strategy = \"canary\"\nsteps = [50, 100]\npre_rollout = [\"true\"]",
        HTTP_GATE,
    );
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../docs/events.schema.json")).unwrap();
    let run = s.slipway(&["--json", "deploy", "test"]).ok();
    let mut steps = BTreeSet::new();
    for line in run.stdout.lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        let errors = crate::schema::validate(&schema, &event);
        assert!(errors.is_empty(), "{line}: {errors:?}");
        if let Some(step) = event["step"].as_str() {
            steps.insert(step.to_string());
        }
    }
    for step in [
        "read-rollout",
        "write-rollout",
        "gate",
        "pre_rollout",
        "switch",
        "restart",
    ] {
        assert!(steps.contains(step), "no `{step}` event in {steps:?}");
    }
}

/// The one switch-back and its restart policy, whoever calls it: a deploy whose gate
/// fails and a `rollout abort` of a paused canary both put the canary back on the old
/// release and restart that release there exactly once, at once; the other host, never
/// switched, is never restarted.
#[test]
fn every_switch_back_restarts_the_old_release_where_the_new_one_ran() {
    let s = app_scenario(
        2,
        "strategy = \"canary\"\nsteps = [50, 100]\npause = \"manual\"",
        HTTP_GATE,
    );
    let v1 = s.deploy_ok();
    s.slipway(&["rollout", "promote", "test"]).ok();
    s.assert_current_everywhere(&v1);
    let canary: BTreeSet<String> = addresses_of(&plan_step(&s, 1));
    let before = restarts(&s).len();

    // Caller 1: the deploy itself, when its gate fails.
    s.app_file("status", "500\n");
    s.deploy().expect_code(1);
    s.assert_current_everywhere(&v1);
    let after_gate: Vec<(f64, String, String)> = restarts(&s)[before..].to_vec();

    // Caller 2: `rollout abort` of a paused canary, from another invocation.
    s.app_file("status", "200\n");
    let paused = s.deploy().ok();
    assert!(paused.stdout.contains("paused"), "{}", paused.all_output());
    let mark = restarts(&s).len() - 1;
    s.slipway(&["rollout", "abort", "test"]).ok();
    s.assert_current_everywhere(&v1);
    let after_abort: Vec<(f64, String, String)> = restarts(&s)[mark..].to_vec();

    for (caller, seen) in [
        ("failed gate", &after_gate),
        ("rollout abort", &after_abort),
    ] {
        let hosts: BTreeSet<String> = seen.iter().map(|(_, a, _)| a.clone()).collect();
        assert_eq!(
            hosts, canary,
            "{caller}: only the canary ever restarted: {seen:?}"
        );
        assert_eq!(
            seen.len(),
            2,
            "{caller}: into the new release, then back: {seen:?}"
        );
        assert_ne!(seen[0].2, v1, "{caller}: first the new release ran there");
        assert_eq!(
            seen[1].2, v1,
            "{caller}: then the old release, once: {seen:?}"
        );
    }
    for i in 0..2 {
        assert_eq!(answer(&s, i), 200, "host {i} serves the old release");
    }
}
