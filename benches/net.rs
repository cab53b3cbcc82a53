//! `bench/net`: deploys over a shaped link, the way a laptop or a small CI runner reaches
//! its hosts. `bench/net` (the script) makes two network namespaces joined by a veth
//! pair and runs this bench in the deployer's one; the hosts live in the other, where
//! they reach each other (and a git server) unshaped. The deployer → hosts direction is
//! shaped here with `tc qdisc ... tbf`, one rate at a time.
//!
//! For each rate, N and app it measures, with the same hosts and in the same run:
//! slipway (a cold deploy, then a second deploy of the next version), slipway with
//! `[upload] relay = true` (the same two deploys; the hosts fetch from one of them over
//! their own, unshaped network), the hand-written
//! `tar c | ssh host tar x` per host (every version is the whole tree again), and
//! Capistrano's git strategy (each host clones or fetches from a git daemon inside the
//! hosts' namespace; the deployer sends commands only). The figures are wall time and
//! the bytes that crossed the shaped link (the deployer veth's `tx_bytes`).
//!
//! Environment (set by bench/net): BENCH_NET_DEV (the shaped veth, in this namespace),
//! BENCH_NET_HOSTS_NS (the hosts' namespace, e.g. /run/netns/NAME), BENCH_NET_PREFIX
//! (e.g. 10.77.0), BENCH_NET_BIN_V1 / _V2 (the two builds of the big binary). Choices:
//! BENCH_HOSTS (1,4,16), BENCH_RATES (Mbit/s: 50,200), BENCH_RUNS (3), BENCH_APPS
//! (sample,binary), BENCH_TOOLS (tar,slipway,slipway-relay,cap,copy: one compressed copy
//! to one host, the floor the relay is judged against), BENCH_RELAY_FANOUT (the relay's
//! `relay_fanout` when not slipway's default), BENCH_SHOW (print each run's output: the
//! deploys' timed step lines).

#[path = "support/common.rs"]
mod common;
#[path = "../tests/support/hosts.rs"]
mod hosts;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{FILES, TOTAL_BYTES, change_files, generate_app, machine, median, parallel};
use hosts::Fleet;

/// The row of one compressed copy sent to one host (`copy`).
const ONE_COPY: &str = "one copy (tar \\| zstd \\| ssh cat, 1 host)";

/// Where the git daemon listens, in the hosts' namespace (hosts are .10 and up).
const GIT_HOST: u8 = 2;
const FIRST_HOST: u8 = 10;

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run this bench through bench/net, which makes the namespaces")
    })
}

fn sh(script: &str) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "`{script}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Bytes sent so far on the shaped link.
fn tx_bytes(dev: &str) -> u64 {
    let path = format!("/sys/class/net/{dev}/statistics/tx_bytes");
    fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {path}: {e}"))
        .trim()
        .parse()
        .expect("tx_bytes is a number")
}

fn shape(dev: &str, mbit: u32) {
    // A burst of 64 KiB and a queue of at most 50 ms: a plain uplink, no token savings.
    sh(&format!(
        "tc qdisc replace dev {dev} root tbf rate {mbit}mbit burst 64kb latency 50ms"
    ));
}

/// One version of an app: a directory slipway and tar read, and the git branch
/// Capistrano deploys.
struct Version {
    dir: PathBuf,
    branch: &'static str,
}

struct App {
    name: &'static str,
    describe: String,
    versions: [Version; 2],
    /// Bytes of the file that changes (the binary app), for the "% of the binary" figure.
    big_file: Option<u64>,
}

fn copy_tree(from: &Path, to: &Path) {
    sh(&format!(
        "rm -rf '{to}' && cp -a '{from}' '{to}'",
        from = from.display(),
        to = to.display()
    ));
}

fn sample_app(dir: &Path) -> App {
    let v1 = dir.join("sample-v1");
    fs::create_dir_all(&v1).expect("mkdir");
    generate_app(&v1);
    let v2 = dir.join("sample-v2");
    copy_tree(&v1, &v2);
    change_files(&v2, 0);
    App {
        name: "sample",
        describe: format!(
            "sample app: {FILES} files, {} MiB of incompressible data (benches/deploy.rs); v2 changes 20 files",
            TOTAL_BYTES / 1024 / 1024
        ),
        versions: [
            Version {
                dir: v1.join("app"),
                branch: "v1",
            },
            Version {
                dir: v2.join("app"),
                branch: "v2",
            },
        ],
        big_file: None,
    }
}

/// A release holding one big binary (two real builds, see bench/net) and a few small files.
fn binary_app(dir: &Path) -> App {
    let bins = [required("BENCH_NET_BIN_V1"), required("BENCH_NET_BIN_V2")];
    let mut versions = Vec::new();
    for (i, bin) in bins.iter().enumerate() {
        let root = dir.join(format!("binary-v{}", i + 1)).join("app");
        fs::create_dir_all(root.join("bin")).expect("mkdir");
        fs::create_dir_all(root.join("config")).expect("mkdir");
        fs::copy(bin, root.join("bin/server")).expect("copy the binary");
        fs::write(
            root.join("config/app.toml"),
            "listen = \"127.0.0.1:8080\"\n",
        )
        .expect("write");
        fs::write(root.join("VERSION"), format!("{}\n", i + 1)).expect("write");
        versions.push(root);
    }
    let size = fs::metadata(&bins[0]).expect("stat the binary").len();
    let differ = {
        let a = fs::read(&bins[0]).expect("read");
        let b = fs::read(&bins[1]).expect("read");
        a.iter().zip(&b).filter(|(x, y)| x != y).count() + a.len().abs_diff(b.len())
    };
    let [v1, v2]: [PathBuf; 2] = versions.try_into().expect("two versions");
    App {
        name: "binary",
        describe: format!(
            "binary app: one {:.1} MB binary (two builds, see bench/net: {:.1} MB; {} bytes differ at the same offset), plus 2 small files",
            size as f64 / 1e6,
            fs::metadata(&bins[1]).expect("stat").len() as f64 / 1e6,
            differ
        ),
        versions: [
            Version {
                dir: v1,
                branch: "v1",
            },
            Version {
                dir: v2,
                branch: "v2",
            },
        ],
        big_file: Some(size),
    }
}

/// A bare repository with branches v1 and v2 (the app's two versions), for the git daemon.
fn git_repo(base: &Path, app: &App) {
    let work = base.join(format!("{}-work", app.name));
    let bare = base.join(format!("{}.git", app.name));
    let git = |args: &str| {
        sh(&format!(
            "cd '{}' && git -c user.name=bench -c user.email=bench@localhost {args} >/dev/null",
            work.display()
        ))
    };
    fs::create_dir_all(&work).expect("mkdir");
    git("init -q -b main .");
    for v in &app.versions {
        sh(&format!(
            "cd '{w}' && find . -mindepth 1 -maxdepth 1 ! -name .git -exec rm -rf {{}} + && cp -a '{d}/.' .",
            w = work.display(),
            d = v.dir.display()
        ));
        git("add -A");
        git(&format!("commit -q -m {}", v.branch));
        git(&format!("branch {}", v.branch));
    }
    sh(&format!(
        "git clone -q --bare '{}' '{}' && rm -rf '{}'",
        work.display(),
        bare.display(),
        work.display()
    ));
}

/// The git daemon, in a process group of its own: `git daemon` runs `git-daemon` as a
/// child, and both must go when the bench ends (or panics).
struct GitDaemon(Child);

impl Drop for GitDaemon {
    fn drop(&mut self) {
        // SAFETY: signalling the process group this bench created.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

fn start_git_daemon(base: &Path, netns: &str, address: &str) -> GitDaemon {
    use std::os::unix::process::CommandExt;
    let child = Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .args(["git", "daemon", "--reuseaddr", "--export-all"])
        .arg(format!("--base-path={}", base.display()))
        .arg(format!("--listen={address}"))
        .arg(base)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start git daemon");
    let child = GitDaemon(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect((address, 9418)).is_err() {
        assert!(
            Instant::now() < deadline,
            "git daemon on {address} did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn slipway_config(dir: &Path, fleet: &Fleet, source: &Path, tag: &str, relay: bool) -> PathBuf {
    let hosts: Vec<String> = fleet
        .hosts()
        .iter()
        .map(|h| format!("  {{ address = \"{}\", port = {} }},", h.address, h.port))
        .collect();
    // BENCH_RELAY_FANOUT: the relay's fan-out, when not slipway's default.
    let fanout = std::env::var("BENCH_RELAY_FANOUT")
        .ok()
        .map(|n| format!("relay_fanout = {n}\n"))
        .unwrap_or_default();
    let text = format!(
        "app = \"bench\"\ndeploy_to = \"/srv/app\"\nkeep_releases = 3\n[source]\npath = \"{}\"\n[ssh]\nconfig_file = \"{}\"\npersist = \"0s\"\n[upload]\nrelay = {relay}\n{fanout}[stages.bench]\nhosts = [\n{}\n]\n",
        source.display(),
        fleet.ssh_config().display(),
        hosts.join("\n")
    );
    let path = dir.join(format!(
        "deploy-{tag}{}.toml",
        if relay { "-relay" } else { "" }
    ));
    fs::write(&path, text).expect("config");
    path
}

/// A Capistrano project deploying `repo` with the git strategy to the fleet.
fn cap_project(dir: &Path, fleet: &Fleet, repo: &str, tag: &str) -> PathBuf {
    let root = dir.join(format!("cap-{tag}"));
    fs::create_dir_all(root.join("config/deploy")).expect("mkdir");
    fs::write(
        root.join("Capfile"),
        "require \"capistrano/setup\"\nrequire \"capistrano/deploy\"\nrequire \"capistrano/scm/git\"\ninstall_plugin Capistrano::SCM::Git\n",
    )
    .expect("Capfile");
    fs::write(
        root.join("config/deploy.rb"),
        format!(
            "set :application, \"bench\"\nset :repo_url, \"{repo}\"\nset :branch, ENV.fetch(\"REV\")\nset :deploy_to, \"/srv/cap\"\nset :keep_releases, 3\nset :log_level, :warn\nset :format, :dot\nset :pty, false\n\
             set :ssh_options, {{ keys: [\"{key}\"], keys_only: true, config: false, user: \"{user}\", auth_methods: [\"publickey\"], user_known_hosts_file: \"{kh}\", verify_host_key: :always }}\n",
            key = fleet.identity().display(),
            user = fleet.user(),
            kh = fleet.known_hosts().display(),
        ),
    )
    .expect("deploy.rb");
    let servers: Vec<String> = fleet
        .hosts()
        .iter()
        .map(|h| {
            format!(
                "server \"{}\", port: {}, roles: %w[app]\n",
                h.address, h.port
            )
        })
        .collect();
    fs::write(root.join("config/deploy/bench.rb"), servers.concat()).expect("stage");
    root
}

fn run_timed(cmd: &mut Command, what: &str) -> Duration {
    let started = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let wall = started.elapsed();
    if std::env::var_os("BENCH_SHOW").is_some() {
        eprintln!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    wall
}

fn clear(fleet: &Fleet, remote: &str) {
    for h in fleet.hosts() {
        let _ = fs::remove_dir_all(h.path(remote));
    }
}

/// What one cell measured: wall seconds and bytes on the shaped link, per run.
#[derive(Default)]
struct Cell {
    wall: Vec<f64>,
    bytes: Vec<f64>,
}

type Key = (u32, usize, &'static str, &'static str, &'static str);

fn main() {
    let dev = required("BENCH_NET_DEV");
    let hosts_ns = required("BENCH_NET_HOSTS_NS");
    let prefix = required("BENCH_NET_PREFIX");
    let counts: Vec<usize> = env_list("BENCH_HOSTS", "1,4,16")
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    let rates: Vec<u32> = env_list("BENCH_RATES", "50,200")
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3)
        .max(1);
    let apps_wanted = env_list("BENCH_APPS", "sample,binary");
    let tools = env_list("BENCH_TOOLS", "tar,slipway,slipway-relay,cap,copy");
    assert!(
        counts.iter().all(|&n| (1..=200).contains(&n)),
        "BENCH_HOSTS: 1 to 200 hosts"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let mut apps = Vec::new();
    if apps_wanted.iter().any(|a| a == "sample") {
        apps.push(sample_app(dir.path()));
    }
    if apps_wanted.iter().any(|a| a == "binary") {
        apps.push(binary_app(dir.path()));
    }
    let git_base = dir.path().join("git");
    fs::create_dir_all(&git_base).expect("mkdir");
    let git_address = format!("{prefix}.{GIT_HOST}");
    let mut daemon = None;
    if tools.iter().any(|t| t == "cap") {
        for app in &apps {
            git_repo(&git_base, app);
        }
        daemon = Some(start_git_daemon(&git_base, &hosts_ns, &git_address));
    }

    println!("machine: {}", machine());
    for app in &apps {
        println!("{}", app.describe);
    }
    println!(
        "link: deployer → hosts shaped by tc tbf on {dev}; hosts ↔ hosts and hosts ↔ git unshaped; {runs} runs per cell (medians)"
    );
    println!();
    println!("| Mbit/s | N | app | tool | deploy | wall (s) | bytes on the link | per host |");
    println!("|---|---|---|---|---|---|---|---|");

    let mut cells: BTreeMap<Key, Cell> = BTreeMap::new();
    for &rate in &rates {
        shape(&dev, rate);
        for &n in &counts {
            let addresses: Vec<String> = (0..n)
                .map(|i| format!("{prefix}.{}", FIRST_HOST as usize + i))
                .collect();
            let fleet = Fleet::start_in_netns(Path::new(&hosts_ns), &addresses);
            for app in &apps {
                let tag = format!("{}-{n}-{rate}", app.name);
                let configs = |relay: bool| {
                    [
                        slipway_config(
                            dir.path(),
                            &fleet,
                            &app.versions[0].dir,
                            &format!("{tag}-1"),
                            relay,
                        ),
                        slipway_config(
                            dir.path(),
                            &fleet,
                            &app.versions[1].dir,
                            &format!("{tag}-2"),
                            relay,
                        ),
                    ]
                };
                let cap = cap_project(
                    dir.path(),
                    &fleet,
                    &format!("git://{git_address}/{}.git", app.name),
                    &tag,
                );
                for _run in 0..runs {
                    let mut record =
                        |tool: &'static str, phase: &'static str, wall: Duration, bytes: u64| {
                            let cell = cells.entry((rate, n, app.name, tool, phase)).or_default();
                            cell.wall.push(wall.as_secs_f64());
                            cell.bytes.push(bytes as f64);
                        };
                    for tool in &tools {
                        match tool.as_str() {
                            "tar" => {
                                clear(&fleet, "/srv/base");
                                for (phase, v) in
                                    [("cold", &app.versions[0]), ("second", &app.versions[1])]
                                {
                                    let before = tx_bytes(&dev);
                                    let wall = parallel(&fleet, |i| {
                                        let h = fleet.host(i);
                                        let mut c = Command::new("sh");
                                        c.arg("-c").arg(format!(
                                            "tar -c -C '{}' . | ssh -F '{}' -p {} {} 'rm -rf /srv/base && mkdir -p /srv/base && tar -x -C /srv/base'",
                                            v.dir.display(),
                                            fleet.ssh_config().display(),
                                            h.port,
                                            h.address
                                        ));
                                        c
                                    });
                                    record(
                                        "tar c \\| ssh tar x",
                                        phase,
                                        wall,
                                        tx_bytes(&dev) - before,
                                    );
                                }
                            }
                            "copy" => {
                                // The floor the relay is judged against: one compressed
                                // copy of the release over the link, to one host, and
                                // nothing done with it there.
                                let h = fleet.host(0);
                                let before = tx_bytes(&dev);
                                let wall = run_timed(
                                    Command::new("sh").arg("-c").arg(format!(
                                        "tar -c -C '{}' . | zstd -3 -q | ssh -F '{}' -p {} {} 'cat > /dev/null'",
                                        app.versions[0].dir.display(),
                                        fleet.ssh_config().display(),
                                        h.port,
                                        h.address
                                    )),
                                    "one copy",
                                );
                                record(ONE_COPY, "cold", wall, tx_bytes(&dev) - before);
                            }
                            "slipway" | "slipway-relay" => {
                                let relay = tool == "slipway-relay";
                                let label = if relay { "slipway (relay)" } else { "slipway" };
                                let configs = configs(relay);
                                clear(&fleet, "/srv/app");
                                for (phase, config) in
                                    [("cold", &configs[0]), ("second", &configs[1])]
                                {
                                    let before = tx_bytes(&dev);
                                    let wall = run_timed(
                                        Command::new(env!("CARGO_BIN_EXE_slipway"))
                                            .arg("-c")
                                            .arg(config)
                                            .args(["deploy", "bench"]),
                                        "slipway deploy",
                                    );
                                    record(label, phase, wall, tx_bytes(&dev) - before);
                                }
                            }
                            "cap" => {
                                clear(&fleet, "/srv/cap");
                                for (phase, v) in
                                    [("cold", &app.versions[0]), ("second", &app.versions[1])]
                                {
                                    let before = tx_bytes(&dev);
                                    let wall = run_timed(
                                        Command::new("cap")
                                            .args(["bench", "deploy"])
                                            .current_dir(&cap)
                                            .env("REV", v.branch),
                                        "cap deploy",
                                    );
                                    record(
                                        "capistrano (git)",
                                        phase,
                                        wall,
                                        tx_bytes(&dev) - before,
                                    );
                                }
                            }
                            other => {
                                panic!(
                                    "BENCH_TOOLS: unknown tool {other:?} (tar, slipway, slipway-relay, cap, copy)"
                                )
                            }
                        }
                    }
                }
                for ((r, cn, a, tool, phase), cell) in cells.range((rate, n, app.name, "", "")..) {
                    if (*r, *cn, *a) != (rate, n, app.name) {
                        break;
                    }
                    let bytes = median(cell.bytes.clone());
                    // One copy goes to one host, whatever N.
                    let per_host = if *tool == ONE_COPY {
                        bytes
                    } else {
                        bytes / n as f64
                    };
                    let share = app
                        .big_file
                        .map(|size| {
                            format!(" ({:.1} % of the binary)", 100.0 * per_host / size as f64)
                        })
                        .unwrap_or_default();
                    println!(
                        "| {r} | {cn} | {a} | {tool} | {phase} | {:.2} | {bytes:.0} | {per_host:.0}{share} |",
                        median(cell.wall.clone())
                    );
                }
            }
        }
    }
    targets(&cells);
    drop(daemon);
}

/// The targets, checked against this run's medians (where their cells ran).
fn targets(cells: &BTreeMap<Key, Cell>) {
    let wall = |key: Key| cells.get(&key).map(|c| median(c.wall.clone()));
    println!();
    let plain = (50, 16, "sample", "slipway", "cold");
    let relayed = (50, 16, "sample", "slipway (relay)", "cold");
    // The target needs each byte over the link once: the relay's row when it ran.
    let cold = if cells.contains_key(&relayed) {
        relayed
    } else {
        plain
    };
    let who = cold.3;
    if let (Some(s), Some(t)) = (
        wall(cold),
        wall((50, 16, "sample", "tar c \\| ssh tar x", "cold")),
    ) {
        let verdict = if s <= 0.35 * t { "met" } else { "MISSED" };
        println!(
            "cold deploy, sample app, 16 hosts, 50 Mbit/s: {who} {s:.1} s = {:.2} × tar|ssh ({t:.1} s) (target ≤ 0.35 ×) {verdict}",
            s / t
        );
    }
    if let (Some(s), Some(c)) = (
        wall(cold),
        wall((50, 16, "sample", "capistrano (git)", "cold")),
    ) {
        let verdict = if s < c { "met" } else { "MISSED" };
        println!(
            "cold deploy, sample app, 16 hosts, 50 Mbit/s: {who} {s:.1} s against Capistrano (git) {c:.1} s (target: faster) {verdict}"
        );
    }
    if let (Some(r), Some(c)) = (
        wall((50, 16, "sample", "slipway (relay)", "cold")),
        wall((50, 16, "sample", ONE_COPY, "cold")),
    ) {
        let verdict = if r <= 1.3 * c { "met" } else { "MISSED" };
        println!(
            "cold deploy with the relay, sample app, 16 hosts, 50 Mbit/s: {r:.1} s = {:.2} × one compressed copy ({c:.1} s) (target ≤ 1.3 ×) {verdict}",
            r / c
        );
    }
    if let Some(cell) = cells.get(&(50, 4, "binary", "slipway", "second")) {
        let per_host = median(cell.bytes.clone()) / 4.0;
        let size = std::env::var("BENCH_NET_BIN_V1")
            .ok()
            .and_then(|p| fs::metadata(p).ok())
            .map_or(1, |m| m.len());
        let share = 100.0 * per_host / size as f64;
        let verdict = if share <= 25.0 { "met" } else { "MISSED" };
        println!(
            "second deploy, binary app, 4 hosts, 50 Mbit/s: {per_host:.0} bytes per host = {share:.1} % of the binary (target ≤ 25 %) {verdict}"
        );
    }
}
