//! `bench/run`: deploy, second deploy, rollback and status against N loopback sshd
//! hosts, with the baselines they are judged by, printed as a table of medians.
//!
//! The sample app is deterministic: 3,000 files, 40 MiB; the second version changes 20
//! files. Every slipway command runs with `persist = "0s"` (each pays its own ssh
//! handshakes, as the baselines do) except the "reuse" rows, which run right after
//! another command with connections kept open (`persist = "60s"`).

#[path = "support/common.rs"]
mod common;
#[path = "../tests/support/hosts.rs"]
mod hosts;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{CHANGED, FILES, TOTAL_BYTES, change_files, generate_app, machine, median, parallel};
use hosts::Fleet;

struct Measured {
    wall: Duration,
    peak_rss_kib: i64,
    stdout: String,
    stderr: String,
}

/// Runs a command, returning its wall time, peak RSS (from wait4) and stdout.
// The child is reaped by wait4 (for its rusage), not by `Child::wait`.
#[allow(clippy::zombie_processes)]
fn measure(cmd: &mut Command) -> Measured {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value to be filled in by wait4.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child, with valid pointers.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let wall = started.elapsed();
    let stdout = reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    assert!(
        pid > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "command failed: {cmd:?}\n{stdout}\n{stderr}"
    );
    Measured {
        wall,
        peak_rss_kib: usage.ru_maxrss,
        stdout,
        stderr,
    }
}

fn config(dir: &Path, fleet: &Fleet, persist: &str) -> PathBuf {
    let hosts: Vec<String> = fleet
        .hosts()
        .iter()
        .map(|h| format!("  {{ address = \"{}\", port = {} }},", h.address, h.port))
        .collect();
    let text = format!(
        "app = \"bench\"\ndeploy_to = \"/srv/app\"\nkeep_releases = 3\n[source]\npath = \"app\"\n[ssh]\nconfig_file = \"{}\"\npersist = \"{persist}\"\n[stages.bench]\nhosts = [\n{}\n]\n",
        fleet.ssh_config().display(),
        hosts.join("\n")
    );
    let path = dir.join(format!("deploy-{persist}.toml"));
    fs::write(&path, text).expect("config");
    path
}

fn slipway(config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_slipway"));
    cmd.arg("-c").arg(config).args(args).arg("--json");
    cmd
}

fn bytes_sent(stdout: &str) -> u64 {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "result")
        .and_then(|v| v["data"]["result"]["bytes_sent"].as_u64())
        .unwrap_or(0)
}

/// CPU seconds (user + system) that the hosts' sshd listeners have reaped from their
/// finished sessions: everything the deploy made the hosts do. Sessions end a moment
/// after the client does; wait until the count settles so that no work is counted
/// against the next operation.
fn host_cpu(fleet: &Fleet) -> f64 {
    let mut last = host_cpu_now(fleet);
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        let now = host_cpu_now(fleet);
        if now == last {
            break;
        }
        last = now;
    }
    last
}

fn host_cpu_now(fleet: &Fleet) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let configs: Vec<String> = fleet
        .hosts()
        .iter()
        .map(|h| h.sshd_config().display().to_string())
        .collect();
    let mut total = 0.0;
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if !cmdline.contains("[listener]") || !configs.iter().any(|c| cmdline.contains(c.as_str()))
        {
            continue;
        }
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        // After the command name: state is field 0; utime, stime, cutime, cstime are 11..=14.
        let sum: f64 = fields
            .iter()
            .skip(11)
            .take(4)
            .filter_map(|f| f.parse::<f64>().ok())
            .sum();
        total += sum / ticks;
    }
    total
}

/// With BENCH_TRACE set: the slowest host's time per step of a command, from its
/// `--json` events, to see where the time goes.
fn trace(label: &str, stdout: &str) {
    if std::env::var_os("BENCH_TRACE").is_none() {
        return;
    }
    let mut steps: Vec<(String, u64)> = Vec::new();
    for v in stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    {
        if v["event"] != "step" || v["status"] == "started" {
            continue;
        }
        let step = v["step"].as_str().unwrap_or("?").to_string();
        let ms = v["elapsed_ms"].as_u64().unwrap_or(0);
        match steps.iter_mut().find(|(s, _)| *s == step) {
            Some(entry) => entry.1 = entry.1.max(ms),
            None => steps.push((step, ms)),
        }
    }
    let line: Vec<String> = steps.iter().map(|(s, ms)| format!("{s} {ms}ms")).collect();
    eprintln!("trace {label}: {}", line.join(", "));
    // When each step first started, from the first event on: the gaps are the deployer's
    // own work between steps (planning, building payloads).
    let mut first: Option<chrono::DateTime<chrono::FixedOffset>> = None;
    let mut starts: Vec<String> = Vec::new();
    for v in stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    {
        let Some(t) = v["time"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        else {
            continue;
        };
        let t0 = *first.get_or_insert(t);
        let what = match (v["event"].as_str(), v["step"].as_str()) {
            (Some("step"), Some(step)) => format!("{step} {}", v["status"].as_str().unwrap_or("")),
            (Some(event), _) => event.to_string(),
            _ => continue,
        };
        if !starts.iter().any(|s| s.ends_with(&format!(" {what}"))) {
            starts.push(format!("+{}ms {what}", (t - t0).num_milliseconds()));
        }
    }
    eprintln!("timeline {label}: {}", starts.join(", "));
}

/// The length of the tar stream the baseline sends to each host.
fn tar_bytes(app: &Path) -> u64 {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("tar -c -C '{}' . | wc -c", app.display()))
        .output()
        .expect("tar | wc");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a byte count")
}

#[derive(Default)]
struct Row {
    wall: Vec<f64>,
    bytes: Vec<f64>,
    rss: Vec<f64>,
    cpu: Vec<f64>,
}

impl Row {
    fn add(&mut self, wall: Duration, bytes: u64, rss_kib: i64, cpu: f64) {
        self.wall.push(wall.as_secs_f64());
        self.bytes.push(bytes as f64);
        self.rss.push(rss_kib as f64 / 1024.0);
        self.cpu.push(cpu);
    }
}

fn main() {
    let hosts: Vec<usize> = std::env::var("BENCH_HOSTS")
        .unwrap_or_else(|_| "1,4,16,64".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3)
        .max(1);
    let dir = tempfile::tempdir().expect("tempdir");
    generate_app(dir.path());
    let app = dir.path().join("app");
    println!("machine: {}", machine());
    println!(
        "sample app: {FILES} files, {} MiB; second version changes {CHANGED} files; {runs} runs per cell (medians)",
        TOTAL_BYTES / 1024 / 1024
    );
    println!();
    println!(
        "| N | operation | wall (s) | ratio | bytes sent | slipway peak RSS (MiB) | host CPU (s) |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut medians = std::collections::BTreeMap::new();
    for &n in &hosts {
        let fleet = Fleet::start(n);
        let cold_cfg = config(dir.path(), &fleet, "0s");
        let warm_cfg = config(dir.path(), &fleet, "60s");
        let mut rows: Vec<(&str, Row)> = [
            "floor: parallel ssh true",
            "baseline: tar c \\| ssh tar x",
            "cold deploy",
            "second deploy",
            "rollback",
            "status",
            "status, reused connections",
            "rollback, reused connections",
        ]
        .into_iter()
        .map(|name| (name, Row::default()))
        .collect();
        for run in 0..runs {
            let cpu0 = host_cpu(&fleet);
            let floor = parallel(&fleet, |i| {
                let mut c = fleet.ssh_command(i);
                c.arg("true");
                c
            });
            let cpu1 = host_cpu(&fleet);
            rows[0].1.add(floor, 0, 0, cpu1 - cpu0);
            let baseline = parallel(&fleet, |i| {
                let h = fleet.host(i);
                let mut c = Command::new("sh");
                c.arg("-c").arg(format!(
                    "tar -c -C '{}' . | ssh -F '{}' -p {} {} 'rm -rf /srv/base && mkdir -p /srv/base && tar -x -C /srv/base'",
                    app.display(),
                    fleet.ssh_config().display(),
                    h.port,
                    h.address
                ));
                c
            });
            let cpu2 = host_cpu(&fleet);
            rows[1]
                .1
                .add(baseline, tar_bytes(&app) * n as u64, 0, cpu2 - cpu1);
            // A fresh start for the cold deploy.
            for h in fleet.hosts() {
                let _ = fs::remove_dir_all(h.path("/srv/app"));
            }
            let cold = measure(&mut slipway(&cold_cfg, &["deploy", "bench"]));
            let cpu3 = host_cpu(&fleet);
            rows[2].1.add(
                cold.wall,
                bytes_sent(&cold.stdout),
                cold.peak_rss_kib,
                cpu3 - cpu2,
            );
            change_files(dir.path(), run as u64);
            let second = measure(&mut slipway(&cold_cfg, &["deploy", "bench"]));
            let cpu4 = host_cpu(&fleet);
            trace("cold deploy", &cold.stdout);
            trace("second deploy", &second.stdout);
            if std::env::var_os("BENCH_TRACE").is_some() {
                for line in second
                    .stderr
                    .lines()
                    .filter(|l| l.contains("warning") || l.contains("FAILED"))
                {
                    eprintln!("second deploy: {line}");
                }
            }
            rows[3].1.add(
                second.wall,
                bytes_sent(&second.stdout),
                second.peak_rss_kib,
                cpu4 - cpu3,
            );
            let rollback = measure(&mut slipway(&cold_cfg, &["rollback", "bench"]));
            let cpu5 = host_cpu(&fleet);
            rows[4]
                .1
                .add(rollback.wall, 0, rollback.peak_rss_kib, cpu5 - cpu4);
            let status = measure(&mut slipway(&cold_cfg, &["status", "bench"]));
            let cpu6 = host_cpu(&fleet);
            rows[5]
                .1
                .add(status.wall, 0, status.peak_rss_kib, cpu6 - cpu5);
            // Connections kept open by a previous command.
            measure(&mut slipway(&warm_cfg, &["status", "bench"]));
            let reused = measure(&mut slipway(&warm_cfg, &["status", "bench"]));
            rows[6].1.add(reused.wall, 0, reused.peak_rss_kib, 0.0);
            let back = measure(&mut slipway(
                &warm_cfg,
                &["rollback", "bench", "--to", &latest(&fleet)],
            ));
            trace("rollback, reused", &back.stdout);
            rows[7].1.add(back.wall, 0, back.peak_rss_kib, 0.0);
        }
        let floor = median(rows[0].1.wall.clone());
        let baseline = median(rows[1].1.wall.clone());
        let cold = median(rows[2].1.wall.clone());
        let cold_bytes = median(rows[2].1.bytes.clone());
        for (name, row) in &rows {
            let wall = median(row.wall.clone());
            medians.insert((n, name.to_string()), wall);
            let ratio = match *name {
                "cold deploy" => format!("{:.2} × baseline", wall / baseline),
                "second deploy" => format!(
                    "{:.2} × cold; bytes {:.1} % of cold",
                    wall / cold,
                    100.0 * median(row.bytes.clone()) / cold_bytes
                ),
                "rollback" | "status" => format!("{:.2} × floor", wall / floor),
                _ => String::new(),
            };
            let bytes = median(row.bytes.clone());
            let rss = median(row.rss.clone());
            println!(
                "| {n} | {name} | {wall:.3} | {ratio} | {} | {} | {:.2} |",
                if bytes > 0.0 {
                    format!("{:.0}", bytes)
                } else {
                    "-".into()
                },
                if rss > 0.0 {
                    format!("{rss:.1}")
                } else {
                    "-".into()
                },
                median(row.cpu.clone())
            );
            if *name == "second deploy" {
                medians.insert((n, "bytes %".into()), 100.0 * bytes / cold_bytes);
            }
            if *name == "cold deploy" {
                medians.insert((n, "rss".into()), rss);
            }
        }
    }
    targets(&medians);
}

/// The targets, checked against this run's medians (those whose host counts ran).
fn targets(m: &std::collections::BTreeMap<(usize, String), f64>) {
    let get = |n: usize, op: &str| m.get(&(n, op.to_string())).copied();
    let mut lines = Vec::new();
    let mut check = |what: String, value: Option<f64>, limit: f64, unit: &str| {
        if let Some(v) = value {
            let verdict = if v <= limit { "met" } else { "MISSED" };
            lines.push(format!(
                "{what}: {v:.2}{unit} (target ≤ {limit}{unit}) {verdict}"
            ));
        }
    };
    let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
    for n in [1, 16] {
        check(
            format!("N = {n}: cold deploy / baseline"),
            ratio(
                get(n, "cold deploy"),
                get(n, "baseline: tar c \\| ssh tar x"),
            ),
            1.15,
            " ×",
        );
    }
    check(
        "N = 16: second deploy bytes".into(),
        get(16, "bytes %"),
        5.0,
        " %",
    );
    check(
        "N = 16: second deploy / cold deploy".into(),
        ratio(get(16, "second deploy"), get(16, "cold deploy")),
        0.35,
        " ×",
    );
    for op in ["rollback", "status"] {
        check(
            format!("N = 16: {op} / floor"),
            ratio(get(16, op), get(16, "floor: parallel ssh true")),
            1.5,
            " ×",
        );
    }
    for op in ["status, reused connections", "rollback, reused connections"] {
        check(format!("N = 16: {op}"), get(16, op), 0.3, " s");
    }
    check("N = 16: peak RSS".into(), get(16, "rss"), 40.0, " MiB");
    for op in ["cold deploy", "second deploy", "rollback", "status"] {
        check(
            format!("16 -> 64 hosts: {op} grows"),
            ratio(get(64, op), get(16, op)),
            4.0,
            " ×",
        );
    }
    if !lines.is_empty() {
        println!();
        for line in lines {
            println!("{line}");
        }
    }
}

/// The newest release on host 0 (to roll forward to it with --to).
fn latest(fleet: &Fleet) -> String {
    let mut names: Vec<String> = fs::read_dir(fleet.host(0).path("/srv/app/releases"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names.pop().unwrap_or_default()
}
