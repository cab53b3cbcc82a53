//! `bench/soak`: deploy / rollback / rollout / abort cycles on N loopback sshd hosts and
//! a PostgreSQL server for a given time, with random faults at random moments, checking
//! the invariants after every cycle. Not a timed test: it prints what it saw.
//!
//! Faults: the deployer SIGKILLed, a host's sshd (and everything on it) killed, a host
//! stalled with SIGSTOP, a host's disk filled, the database server killed during a
//! migration. After each cycle the faults are undone (the host restarted, thawed, its
//! disk freed, the database started again), the operator's usual recovery runs (`check`
//! names a stale lock, `unlock`, `rollout abort` of a rollout left behind) and the
//! invariants are checked:
//!
//! - `current`: every host's `current` resolves to a complete release whose files match
//!   its checksums;
//! - `records`: every release directory holds its own record (no torn or foreign ones);
//! - `lock`: a lock left behind is named by `slipway check` (its holder), and the next
//!   command can take it over after `unlock`;
//! - `schema`: the database's applied migrations equal what the live release records,
//!   or `slipway db status` reports that they differ (a deployer killed between the
//!   migration and the switch cannot undo it; it must not go unnoticed);
//! - `audit`: no host's audit log lost a line, and every host's hash chain verifies
//!   (`log --verify`, against the heads the previous cycle saw);
//! - `bounded`: every command ended within 300 s, whatever the fault.
//!
//! `SOAK_SECONDS` (default 600), `SOAK_HOSTS` (default 8), `SOAK_SEED` (replay),
//! `SOAK_FAULT_RATE` (share of cycles with a fault, default 0.7), `SOAK_OPS` and
//! `SOAK_FAULTS` (comma-separated names, e.g. `RolloutAbort` and `KillDatabase`: only
//! those, to chase one kind of trouble). A violation prints the cycle command's last
//! output lines with it.

#[path = "../tests/support/db.rs"]
mod db_support;
#[path = "../tests/support/hosts.rs"]
mod hosts;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use db_support::{Listen, Postgres};
use hosts::Fleet;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DEPLOY_TO: &str = "/srv/app";
/// Each host's `/srv` is a tmpfs of this size, so that filling it is cheap and safe.
const HOST_DISK_MIB: u64 = 96;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Deploy,
    DeployMigration,
    Rollback,
    RolloutPromote,
    RolloutAbort,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    KillDeployer,
    KillHost,
    StallHost,
    FillDisk,
    KillDatabase,
}

const OPS: [Op; 5] = [
    Op::Deploy,
    Op::DeployMigration,
    Op::Rollback,
    Op::RolloutPromote,
    Op::RolloutAbort,
];
const FAULTS: [Fault; 5] = [
    Fault::KillDeployer,
    Fault::KillHost,
    Fault::StallHost,
    Fault::FillDisk,
    Fault::KillDatabase,
];
const INVARIANTS: [&str; 6] = ["current", "records", "lock", "schema", "audit", "bounded"];

struct Soak {
    dir: tempfile::TempDir,
    fleet: Fleet,
    pg: Postgres,
    rng: StdRng,
    /// The next migration's number (the source carries 1..next).
    next_migration: u32,
    version: u64,
    /// Audit log lines per host after the last cycle.
    audit_lines: Vec<usize>,
    violations: BTreeMap<&'static str, Vec<String>>,
    faults: BTreeMap<Fault, usize>,
    ops: BTreeMap<Op, usize>,
    /// How the cycles' commands ended: exit code → count.
    exits: BTreeMap<i32, usize>,
    /// The last lines the current cycle's command printed (`--json`), for violations.
    said: String,
    /// Where the database faults landed.
    aimed: BTreeMap<&'static str, usize>,
    mounts: Vec<PathBuf>,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let seconds: u64 = env_or("SOAK_SECONDS", 600);
    let n: usize = env_or("SOAK_HOSTS", 8);
    let seed: u64 = env_or("SOAK_SEED", rand::random());
    let fault_rate: f64 = env_or("SOAK_FAULT_RATE", 0.7);
    let ops = chosen("SOAK_OPS", &OPS);
    let faults = chosen("SOAK_FAULTS", &FAULTS);
    println!("soak: {n} hosts, {seconds} s, seed {seed} (replay with SOAK_SEED={seed})");
    let mut soak = Soak::start(n, seed);
    soak.initial_deploy();
    soak.prove_the_checks_can_fail();
    let started = Instant::now();
    let mut cycles = 0usize;
    while started.elapsed() < Duration::from_secs(seconds) {
        cycles += 1;
        let op = ops[soak.rng.random_range(0..ops.len())];
        let fault = (soak.rng.random_bool(fault_rate))
            .then(|| faults[soak.rng.random_range(0..faults.len())]);
        soak.cycle(cycles, op, fault);
        if cycles % 10 == 0 {
            println!(
                "  {cycles} cycles, {:.0} s, violations so far: {}",
                started.elapsed().as_secs_f64(),
                soak.violations.values().map(|v| v.len()).sum::<usize>()
            );
        }
    }
    soak.report(cycles, started.elapsed(), seed);
    let total: usize = soak.violations.values().map(|v| v.len()).sum();
    drop(soak);
    if total > 0 {
        std::process::exit(1);
    }
}

impl Soak {
    fn start(n: usize, seed: u64) -> Soak {
        let mut fleet = Fleet::start(n);
        // Each host's /srv on a tmpfs of its own: a full disk stays on that host.
        let mut mounts = Vec::new();
        for i in 0..n {
            let srv = fleet.host(i).path("/srv");
            fs::create_dir_all(&srv).expect("host srv");
            let ok = Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={HOST_DISK_MIB}m,mode=0755"),
                    "slipway-soak",
                ])
                .arg(&srv)
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "cannot mount a tmpfs on {} (run as root)",
                srv.display()
            );
            mounts.push(srv);
            // The host's mount namespace was made before the tmpfs: start it again.
            fleet.stop(i);
            fleet.start_host(i);
        }
        let pg = Postgres::start(Listen::Loopback);
        let dir = tempfile::Builder::new()
            .prefix("slipway-soak.")
            .tempdir()
            .expect("temp dir");
        let soak = Soak {
            dir,
            fleet,
            pg,
            rng: StdRng::seed_from_u64(seed),
            next_migration: 1,
            version: 0,
            audit_lines: vec![0; n],
            violations: INVARIANTS.iter().map(|i| (*i, Vec::new())).collect(),
            faults: BTreeMap::new(),
            ops: BTreeMap::new(),
            exits: BTreeMap::new(),
            said: String::new(),
            aimed: BTreeMap::new(),
            mounts,
        };
        soak.write_configs();
        soak
    }

    fn app(&self) -> PathBuf {
        self.dir.path().join("app")
    }

    fn config(&self, canary: bool) -> PathBuf {
        self.dir
            .path()
            .join(if canary { "canary.toml" } else { "plain.toml" })
    }

    /// Two configurations of the same app and stage: all at once, and a canary that
    /// pauses after each step.
    fn write_configs(&self) {
        let hosts: Vec<String> = self
            .fleet
            .hosts()
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let roles = if i == 0 {
                    "[\"app\", \"db\"]"
                } else {
                    "[\"app\"]"
                };
                format!(
                    "  {{ address = \"{}\", port = {}, roles = {roles} }},",
                    h.address, h.port
                )
            })
            .collect();
        for canary in [false, true] {
            let rollout = if canary {
                "[rollout]\nstrategy = \"canary\"\nsteps = [25, 50, 100]\npause = \"manual\"\n"
            } else {
                ""
            };
            let text = format!(
                "app = \"soak\"\ndeploy_to = \"{DEPLOY_TO}\"\nkeep_releases = 4\n\n[source]\npath = \"app\"\n\n[ssh]\nconfig_file = \"{}\"\npersist = \"0s\"\nconnect_timeout = \"5s\"\n\n[database]\ndriver = \"postgres\"\nurl_env = \"DATABASE_URL\"\nmigrations = \"migrations\"\n\n[timeouts]\ncommand = \"15s\"\nupload = \"60s\"\nhook = \"30s\"\n\n{rollout}\n[stages.soak]\nhosts = [\n{}\n]\n",
                self.fleet.ssh_config().display(),
                hosts.join("\n")
            );
            fs::write(self.config(canary), text).expect("config");
        }
        fs::create_dir_all(self.app().join("migrations")).expect("app dir");
    }

    /// A new version of the app: VERSION and a 2 MB payload change; with `migration`, one
    /// more migration (which takes a moment, so a fault can land in it).
    fn new_version(&mut self, migration: bool) {
        self.version += 1;
        let app = self.app();
        fs::write(app.join("VERSION"), format!("{}\n", self.version)).expect("VERSION");
        let payload: Vec<u8> = (0..2 * 1024 * 1024)
            .map(|_| b'a' + self.rng.random_range(0..26u8))
            .collect();
        fs::write(app.join("payload.txt"), payload).expect("payload");
        for i in 0..20 {
            fs::write(app.join(format!("static-{i}.txt")), format!("file {i}\n")).expect("file");
        }
        if migration {
            let v = self.next_migration;
            self.next_migration += 1;
            fs::write(
                app.join(format!("migrations/{v:04}_t{v}.up.sql")),
                format!("SELECT pg_sleep(0.5);\nCREATE TABLE t{v} (id integer PRIMARY KEY, note text);\nINSERT INTO t{v} VALUES (1, 'v{v}');\n"),
            )
            .expect("up");
            fs::write(
                app.join(format!("migrations/{v:04}_t{v}.down.sql")),
                format!("DROP TABLE t{v};\n"),
            )
            .expect("down");
        }
    }

    fn slipway(&self, canary: bool, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_slipway"));
        cmd.arg("-c").arg(self.config(canary)).args(args);
        cmd.env("DATABASE_URL", self.pg.url()).env("NO_COLOR", "1");
        cmd.current_dir(self.dir.path());
        cmd
    }

    fn run(&self, canary: bool, args: &[&str]) -> Output {
        self.slipway(canary, args)
            .stdin(Stdio::null())
            .output()
            .expect("run slipway")
    }

    fn initial_deploy(&mut self) {
        self.new_version(true);
        let out = self.run(false, &["deploy", "soak"]);
        assert!(
            out.status.success(),
            "the first deploy failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.new_version(false);
        let out = self.run(false, &["deploy", "soak"]);
        assert!(out.status.success(), "the second deploy failed");
        self.audit_lines = self.audit_counts();
    }

    /// Breaks what each file-based invariant looks at, on host1, and makes sure the check
    /// sees it, then puts it back: a check that cannot fail proves nothing.
    fn prove_the_checks_can_fail(&mut self) {
        let base = self.release_dir(0);
        let live = fs::read_link(base.join("current")).expect("current");
        let file = base.join(&live).join("VERSION");
        let kept = fs::read(&file).expect("VERSION");
        let mode = fs::metadata(&file).expect("VERSION").permissions();
        let _ = Command::new("chmod").arg("u+w").arg(&file).status();
        fs::write(&file, b"tampered\n").expect("tamper");
        let seen = self.check_current("self-check").len() == self.fleet.hosts().len()
            && self.violations["current"].len() == 1;
        fs::write(&file, kept).expect("restore");
        fs::set_permissions(&file, mode).expect("restore mode");
        assert!(seen, "the current check did not see a tampered file");
        let meta = base.join(&live).join(".slipway/release.json");
        let record = fs::read_to_string(&meta).expect("record");
        let other = record.replacen("\"id\":\"", "\"id\":\"1", 1);
        assert_ne!(other, record, "the record has no id field: {record}");
        let _ = Command::new("chmod").arg("u+w").arg(&meta).status();
        fs::write(&meta, other).expect("tamper");
        self.check_records("self-check");
        fs::write(&meta, record).expect("restore");
        assert_eq!(
            self.violations["records"].len(),
            1,
            "the records check did not see a foreign record"
        );
        let log = base.join(".slipway/log.jsonl");
        let text = fs::read_to_string(&log).expect("audit log");
        self.audit_lines = self.audit_counts();
        fs::write(
            &log,
            text.lines().skip(1).collect::<Vec<_>>().join("\n") + "\n",
        )
        .expect("tamper");
        self.check(0, Op::Deploy, None, 0);
        fs::write(&log, &text).expect("restore");
        self.audit_lines = self.audit_counts();
        assert!(
            !self.violations["audit"].is_empty(),
            "the audit check did not see a lost line"
        );
        let _ = fs::remove_file(self.dir.path().join("heads.json"));
        for list in self.violations.values_mut() {
            list.clear();
        }
        println!("self-check: the current, records and audit checks each caught a planted fault");
    }

    /// One cycle: the operation, maybe a fault during it, the faults undone, the usual
    /// recovery, then the invariants.
    fn cycle(&mut self, n: usize, op: Op, fault: Option<Fault>) {
        *self.ops.entry(op).or_default() += 1;
        let (canary, args): (bool, Vec<&str>) = match op {
            Op::Deploy => {
                self.new_version(false);
                (false, vec!["deploy", "soak"])
            }
            Op::DeployMigration => {
                self.new_version(true);
                (false, vec!["deploy", "soak"])
            }
            Op::Rollback => (false, vec!["rollback", "soak"]),
            Op::RolloutPromote | Op::RolloutAbort => {
                let migrate = self.rng.random_bool(0.5);
                self.new_version(migrate);
                (true, vec!["deploy", "soak"])
            }
        };
        let victim = self.rng.random_range(0..self.fleet.hosts().len());
        // Where in the command the fault lands: a delay after it started.
        let delay = Duration::from_millis(self.rng.random_range(0..2500));
        if fault == Some(Fault::FillDisk) {
            self.fill_disk(victim);
        }
        let mut child = self
            .slipway(canary, &args)
            .arg("--json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn slipway");
        let lines = lines_of(&mut child);
        let mut stalled = false;
        let code = match fault {
            None | Some(Fault::FillDisk) => wait_bounded(&mut child, Duration::from_secs(300)),
            Some(f) => {
                let migrating = f == Fault::KillDatabase;
                // The database fault aims at the migration step when there is one.
                if migrating {
                    // Aim at the migration itself: the database is running its first
                    // statement (`pg_sleep`), then a random moment within or just past it
                    // (before or after its commit). Without a migration in this version
                    // it lands when the command ends: the database gone between commands.
                    if self.wait_for_migration(&mut child, Duration::from_secs(60)) {
                        *self.aimed.entry("in a migration").or_default() += 1;
                    } else {
                        *self.aimed.entry("between commands").or_default() += 1;
                    }
                    std::thread::sleep(Duration::from_millis(self.rng.random_range(0..700)));
                } else {
                    std::thread::sleep(delay);
                }
                match f {
                    Fault::KillDeployer => {
                        let _ = child.kill();
                    }
                    Fault::KillHost => self.fleet.stop(victim),
                    Fault::StallHost => {
                        self.fleet.freeze(victim);
                        stalled = true;
                    }
                    Fault::KillDatabase => self.pg.kill(),
                    Fault::FillDisk => {}
                }
                if stalled {
                    // A stall of a few seconds, then the host comes back (mid-command,
                    // or the command gives up on it first).
                    std::thread::sleep(Duration::from_millis(self.rng.random_range(500..6000)));
                    self.fleet.thaw(victim);
                }
                wait_bounded(&mut child, Duration::from_secs(300))
            }
        };
        if let Some(f) = fault {
            *self.faults.entry(f).or_default() += 1;
        }
        let said: Vec<String> = lines.try_iter().collect();
        self.said = said[said.len().saturating_sub(2)..].join(" | ");
        *self.exits.entry(code).or_default() += 1;
        if code == -2 {
            self.violation(
                "bounded",
                format!(
                    "cycle {n} ({op:?}, fault {fault:?}): slipway was still running after 300 s"
                ),
            );
        }
        // Undo the fault.
        match fault {
            Some(Fault::KillHost) => self.fleet.start_host(victim),
            Some(Fault::KillDatabase) => self.pg.server_start(),
            Some(Fault::FillDisk) => self.free_disk(victim),
            _ => {}
        }
        // The second half of a rollout cycle: promote or abort what the deploy started.
        if matches!(op, Op::RolloutPromote | Op::RolloutAbort) && code == 0 {
            let verb = if op == Op::RolloutPromote {
                vec!["rollout", "promote", "soak", "--full"]
            } else {
                vec!["rollout", "abort", "soak"]
            };
            let _ = self.run(true, &verb);
        }
        self.recover(n);
        self.check(n, op, fault, code);
    }

    /// What an operator does after a command that failed or died: a stale lock is named
    /// by `check` (checked as the `lock` invariant), then broken; a rollout left in
    /// progress is aborted.
    fn recover(&mut self, n: usize) {
        if self.any_lock() {
            let check = self.run(false, &["check", "soak"]);
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&check.stdout),
                String::from_utf8_lossy(&check.stderr)
            );
            if check.status.success() || !text.contains("the deploy lock is held by") {
                self.violation(
                    "lock",
                    format!(
                        "cycle {n}: a lock is left and `check` does not name it: {}",
                        tail(&text)
                    ),
                );
            }
            let _ = self.run(false, &["unlock", "soak"]);
        }
        let status = self.run(true, &["rollout", "status", "soak", "--json"]);
        let text = String::from_utf8_lossy(&status.stdout);
        if text.contains("\"paused\"") || text.contains("\"running\"") {
            let _ = self.run(true, &["rollout", "abort", "soak"]);
        }
        if self.any_lock() {
            let _ = self.run(false, &["unlock", "soak"]);
        }
    }

    fn check(&mut self, n: usize, op: Op, fault: Option<Fault>, code: i32) {
        let label = format!("cycle {n} ({op:?}, fault {fault:?}, exit {code})");
        let live = self.check_current(&label);
        self.check_records(&label);
        self.check_schema(&label, live.first().and_then(|l| l.clone()));
        let counts = self.audit_counts();
        for (i, (before, now)) in self.audit_lines.clone().iter().zip(&counts).enumerate() {
            if now < before {
                self.violation(
                    "audit",
                    format!(
                        "{label}: host{} audit log went from {before} to {now} lines",
                        i + 1
                    ),
                );
            }
        }
        self.audit_lines = counts;
        self.verify_chains(&label);
        // Hosts that disagree are healed by the next deploy; the invariants above are
        // about each host on its own, so a fleet left split is fine to go on from.
    }

    fn release_dir(&self, i: usize) -> PathBuf {
        self.fleet.host(i).path(DEPLOY_TO)
    }

    /// Every host's `current` resolves to a complete release whose files match its
    /// checksums. Returns each host's live release id.
    fn check_current(&mut self, label: &str) -> Vec<Option<String>> {
        let mut live = Vec::new();
        for i in 0..self.fleet.hosts().len() {
            let base = self.release_dir(i);
            let current = base.join("current");
            let Ok(target) = fs::read_link(&current) else {
                self.violation("current", format!("{label}: host{} has no current", i + 1));
                live.push(None);
                continue;
            };
            let target = target.to_string_lossy().to_string();
            let Some(id) = target.strip_prefix("releases/").map(str::to_string) else {
                self.violation(
                    "current",
                    format!("{label}: host{} current -> {target}", i + 1),
                );
                live.push(None);
                continue;
            };
            let release = base.join("releases").join(&id);
            let meta = read_json(&release.join(".slipway/release.json"));
            let state = meta
                .as_ref()
                .and_then(|m| m["state"].as_str().map(str::to_string))
                .unwrap_or_default();
            if !matches!(state.as_str(), "live" | "ready") {
                self.violation(
                    "current",
                    format!(
                        "{label}: host{} current release {id} is in state {state:?}",
                        i + 1
                    ),
                );
            }
            let verified = Command::new("b2sum")
                .args(["--quiet", "--strict", "-c", ".slipway/manifest.b2"])
                .current_dir(&release)
                .output()
                .is_ok_and(|o| o.status.success());
            if !verified {
                self.violation(
                    "current",
                    format!(
                        "{label}: host{} current release {id} does not match its checksums",
                        i + 1
                    ),
                );
            }
            live.push(Some(id));
        }
        live
    }

    /// Every release directory holds its own record.
    fn check_records(&mut self, label: &str) {
        for i in 0..self.fleet.hosts().len() {
            let releases = self.release_dir(i).join("releases");
            let Ok(entries) = fs::read_dir(&releases) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if name.ends_with(".partial") {
                    continue;
                }
                let meta = read_json(&entry.path().join(".slipway/release.json"));
                let id = meta
                    .as_ref()
                    .and_then(|m| m["id"].as_str().map(str::to_string));
                if id.as_deref() != Some(name.as_str()) {
                    self.violation(
                        "records",
                        format!(
                            "{label}: host{} releases/{name} has record id {id:?}",
                            i + 1
                        ),
                    );
                }
            }
        }
    }

    /// The applied migrations equal the live release's record (host1 is the db host),
    /// or `db status` says they differ.
    fn check_schema(&mut self, label: &str, live: Option<String>) {
        let Some(live) = live else {
            return;
        };
        let meta = read_json(
            &self
                .release_dir(0)
                .join("releases")
                .join(&live)
                .join(".slipway/release.json"),
        );
        let recorded: Vec<i64> = meta
            .as_ref()
            .and_then(|m| m["migrations"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|m| m["version"].as_i64())
            .collect();
        let applied: Vec<i64> = self
            .pg
            .sql("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        if recorded == applied {
            return;
        }
        let status = self.run(false, &["db", "status", "soak"]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&status.stdout),
            String::from_utf8_lossy(&status.stderr)
        );
        if status.status.success() {
            self.violation(
                "schema",
                format!(
                    "{label}: applied {}, live release {live} records {}, and `db status` exits 0: {}",
                    runs(&applied),
                    runs(&recorded),
                    tail(&text)
                ),
            );
        }
    }

    /// Every host's audit log chain holds (`log --verify`), and still holds the heads the
    /// previous cycle saw (`--against`): no line changed, removed, reordered or cut off.
    fn verify_chains(&mut self, label: &str) {
        let heads = self.dir.path().join("heads.json");
        let mut args = vec!["--json", "log", "--verify", "soak"];
        let against = heads.display().to_string();
        if heads.exists() {
            args.extend(["--against", against.as_str()]);
        }
        let out = self.run(false, &args);
        if out.status.success() {
            let _ = fs::write(&heads, &out.stdout);
        } else {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            self.violation(
                "audit",
                format!(
                    "{label}: `log --verify` exits {:?}: {}",
                    out.status.code(),
                    tail(&text)
                ),
            );
            // Judge the next cycle against what is there now, not against this break again.
            let _ = fs::remove_file(&heads);
        }
    }

    /// Waits until the database runs a migration's first statement (true), or the
    /// command ended or `limit` passed (false).
    fn wait_for_migration(&self, child: &mut Child, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return false;
            }
            let running = self.pg.sql(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%' AND pid <> pg_backend_pid()",
            );
            if running.trim().parse::<u32>().unwrap_or(0) > 0 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn any_lock(&self) -> bool {
        (0..self.fleet.hosts().len()).any(|i| self.release_dir(i).join(".slipway/lock").exists())
    }

    fn audit_counts(&self) -> Vec<usize> {
        (0..self.fleet.hosts().len())
            .map(|i| {
                fs::read_to_string(self.release_dir(i).join(".slipway/log.jsonl"))
                    .map(|t| t.lines().count())
                    .unwrap_or(0)
            })
            .collect()
    }

    /// Fills host `i`'s disk, leaving a few KiB.
    fn fill_disk(&self, i: usize) {
        let filler = self.fleet.host(i).path("/srv/filler");
        let _ = Command::new("fallocate")
            .args(["-l", &format!("{}M", HOST_DISK_MIB)])
            .arg(&filler)
            .stderr(Stdio::null())
            .status();
        // fallocate fails outright when the size does not fit: fill what is left.
        if !filler.exists() || fs::metadata(&filler).map(|m| m.len()).unwrap_or(0) == 0 {
            let _ = Command::new("dd")
                .args(["if=/dev/zero", "bs=1M"])
                .arg(format!("of={}", filler.display()))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    fn free_disk(&self, i: usize) {
        let _ = fs::remove_file(self.fleet.host(i).path("/srv/filler"));
    }

    fn violation(&mut self, invariant: &'static str, what: String) {
        println!("  VIOLATION {invariant}: {what}");
        if !self.said.is_empty() {
            println!("    the cycle's command said: {}", clip(&self.said, 1500));
        }
        self.violations.entry(invariant).or_default().push(what);
    }

    fn report(&self, cycles: usize, elapsed: Duration, seed: u64) {
        println!();
        println!("soak report (seed {seed})");
        println!("  machine: {}", machine());
        println!("  hosts: {}", self.fleet.hosts().len());
        println!("  duration: {:.0} s", elapsed.as_secs_f64());
        println!("  cycles: {cycles}");
        for (op, count) in &self.ops {
            println!("    {op:?}: {count}");
        }
        let faults: usize = self.faults.values().sum();
        println!("  faults injected: {faults}");
        for (fault, count) in &self.faults {
            println!("    {fault:?}: {count}");
        }
        for (at, count) in &self.aimed {
            println!("      database killed {at}: {count}");
        }
        println!("  command exits:");
        for (code, count) in &self.exits {
            println!("    {code}: {count}");
        }
        println!("  invariant violations:");
        for invariant in INVARIANTS {
            let list = &self.violations[invariant];
            println!("    {invariant}: {}", list.len());
        }
    }
}

impl Drop for Soak {
    fn drop(&mut self) {
        for i in 0..self.fleet.hosts().len() {
            self.fleet.thaw(i);
            self.fleet.stop(i);
        }
        for m in &self.mounts {
            let _ = Command::new("umount").arg(m).status();
        }
    }
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
}

/// `names` from the variable (`Debug` names, comma-separated), or all of `all`.
fn chosen<T: Copy + std::fmt::Debug>(var: &str, all: &[T]) -> Vec<T> {
    let Ok(list) = std::env::var(var) else {
        return all.to_vec();
    };
    let picked: Vec<T> = all
        .iter()
        .copied()
        .filter(|x| list.split(',').any(|n| n.trim() == format!("{x:?}")))
        .collect();
    assert!(!picked.is_empty(), "{var}={list} names none of {all:?}");
    picked
}

fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// Migration versions as runs: `1-438, 440`.
fn runs(versions: &[i64]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < versions.len() {
        let start = versions[i];
        let mut end = start;
        while i + 1 < versions.len() && versions[i + 1] == end + 1 {
            i += 1;
            end = versions[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    format!("[{}]", parts.join(", "))
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}

/// The child's stdout lines, as they come.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    rx
}

/// Waits for the child; past `limit` it counts as hung (exit -2) and is killed.
fn wait_bounded(child: &mut Child, limit: Duration) -> i32 {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.code().unwrap_or(-9),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return -2;
            }
        }
    }
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let os = fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_default();
    format!("{cpus} cores, {os}")
}
