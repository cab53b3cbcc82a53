//! Hostile hosts: one host of three answers with crafted output (or simply holds crafted
//! files), the other two are honest. For every lie, slipway must refuse it (or ignore
//! it, where that is the honest answer) naming the host and what was wrong; print no raw
//! control character on stdout or stderr; keep its memory bounded; end every step within
//! its timeout; and leave the honest hosts as they were (or correctly deployed).
//!
//! The lying host (host2) has an sshd `ForceCommand` (`/srv/.liar/run`, see [`LIAR`]):
//! it runs the real command, unless its mode file (`/srv/.liar/mode`) tells it to answer
//! a probe with 2 GiB, with output that never ends, with nothing ever (sleep, SIGSTOP),
//! with escape sequences, with extra crafted lines, or to claim the lock for this very
//! process. Cases that only need crafted files write them into host2's `/srv/app`.
//!
//! Needs root and sshd, like tests/e2e (run with `scripts/test`).

#[path = "../support/hosts.rs"]
mod hosts;
#[allow(dead_code)]
#[path = "../e2e/scenario.rs"]
mod scenario;

mod db;
mod files;
mod lies;
mod streams;

use std::fs;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use scenario::{Scenario, set_executable};

/// The lying host's index (host2).
pub const LIAR_HOST: usize = 1;

/// `[timeouts] command` in these tests: a stall must end within this plus a margin.
pub const TIMEOUT: Duration = Duration::from_secs(4);

/// The bound on the deployer's peak RSS asserted for every run, whatever a host sends
/// (slipway reads at most 32 MiB per stream of a remote command; README "Limits").
pub const RSS_BOUND_MIB: u64 = 128;

/// GNU time (Debian package `time`, installed by scripts/test).
const TIME: &str = "/usr/bin/time";

/// The lying host's login program: the real command, or a lie chosen by the mode file.
/// A probe (or the lock script, which carries the probe) is recognised by its
/// `readlink -- ` of `current`; the lock script by its `mkdir --` of the lock.
const LIAR: &str = r#"#!/bin/sh
c=$SSH_ORIGINAL_COMMAND
mode=$(cat /srv/.liar/mode 2>/dev/null)
case "$c" in *"readlink -- "*) probe=1 ;; *) probe=0 ;; esac
case "$c" in *'mkdir -- "$d/.slipway/lock"'*) lock=1 ;; *) lock=0 ;; esac
if [ "$probe" = 1 ]; then
  case "$mode" in
    flood) head -c 2147483648 /dev/zero | tr '\0' x; exit 0 ;;
    flood-stderr) head -c 2147483648 /dev/zero | tr '\0' x >&2; exit 1 ;;
    endless) yes 'release	junk	{}'; exit 0 ;;
    stall) exec sleep 600 ;;
    stop) kill -STOP $$; exit 0 ;;
    esc-error) printf '\033]0;pwned\007\033[2J\rslipway: all good \033[31m\233\n\000done' >&2; exit 1 ;;
    extra) sh -c "$c"; rc=$?; cat /srv/.liar/extra; exit $rc ;;
  esac
fi
if [ "$lock" = 1 ] && [ "$mode" = lock-me ]; then
  pid=$(printf '%s' "$c" | sed -n 's/.*"pid":\([0-9]*\).*/\1/p' | head -n 1)
  machine=$(printf '%s' "$c" | sed -n 's/.*"machine":"\([^"]*\)".*/\1/p' | head -n 1)
  user=$(printf '%s' "$c" | sed -n 's/.*"user":"\([^"]*\)".*/\1/p' | head -n 1)
  printf '{"user":"%s","machine":"%s","pid":%s,"command":"slipway deploy \\u001b[2J\\r","since":"2026-01-01T00:00:00Z","token":"not-yours"}\n' "$user" "$machine" "$pid"
  exit 75
fi
case "$mode:$c" in
  sqlite-junk:*_sqlx_migrations*-readonly*) printf '1|a\303\251|1|x\n'; exit 0 ;;
  sqlite-esc:*_sqlx_migrations*-readonly*)
    sh -c "$c" | sed 's/|\([^|]*\)$/|\x1b]0;pwned\x07\r\1\x9b/'; exit 0 ;;
  evil-tar:*base64*)
    cd /srv/.liar/evil/a/b/c && tar -cPf - migrations/../../../slipway-hostile-evil.sql /srv/.liar/slipway-hostile-abs.sql migrations/0002_more.down.sql | base64; exit 0 ;;
esac
if [ "$mode" = cat-log ]; then
  case "$c" in *log.jsonl*"tail -n "*) exec cat /srv/app/.slipway/log.jsonl ;; esac
fi
if [ "$mode" = no-tar ]; then PATH=/srv/.liar/bin:$PATH; export PATH; fi
exec sh -c "$c"
"#;

/// Three hosts, host2 lying on demand, v1 deployed everywhere.
pub struct Bench {
    pub s: Scenario,
    pub table: Vec<Row>,
    /// The lying host's index.
    pub liar: usize,
}

/// One case's outcome, for the table each test prints.
pub struct Row {
    pub case: String,
    pub code: i32,
    pub seconds: f64,
    pub rss_mib: f64,
}

/// What one run of slipway did, as raw bytes, with its peak RSS and duration.
pub struct Ran {
    pub case: String,
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub rss_kib: u64,
    pub elapsed: Duration,
}

/// Where every honest host stands: `current`, its release directories, its audit log.
#[derive(Debug, PartialEq)]
pub struct Honest(Vec<(Option<String>, Vec<String>, String)>);

impl Bench {
    pub fn new(versions: usize) -> Bench {
        Bench::with(LIAR_HOST, "", |_, _| {}, versions)
    }

    /// `liar` lies; `config` is added to deploy.toml's top level, `app` prepares the
    /// application before each of the `versions` setup deploys (told the version).
    pub fn with(
        liar_host: usize,
        config: &str,
        app: impl Fn(&Scenario, usize),
        versions: usize,
    ) -> Bench {
        let mut s = Scenario::new().hosts(3);
        s.extra = format!("[timeouts]\ncommand = \"{}s\"\n{config}", TIMEOUT.as_secs());
        let liar = s.fleet().host(liar_host).srv().join(".liar");
        fs::create_dir_all(liar.join("bin")).expect("liar dir");
        fs::write(liar.join("run"), LIAR).expect("write liar");
        set_executable(&liar.join("run"));
        fs::write(
            liar.join("bin/tar"),
            "#!/bin/sh\necho 'tar: this host claimed tar but has none' >&2\nexit 127\n",
        )
        .expect("write tar shim");
        set_executable(&liar.join("bin/tar"));
        fs::write(liar.join("mode"), "honest").expect("write mode");
        let config = s.fleet().host(liar_host).sshd_config().to_path_buf();
        let mut text = fs::read_to_string(&config).expect("sshd_config");
        text.push_str("ForceCommand /srv/.liar/run\n");
        fs::write(&config, text).expect("write sshd_config");
        s.fleet_mut().stop(liar_host);
        s.fleet_mut().start_host(liar_host);
        let mut bench = Bench {
            s,
            table: Vec::new(),
            liar: liar_host,
        };
        for v in 1..=versions {
            bench.s.app_file("index.html", &format!("<h1>v{v}</h1>\n"));
            app(&bench.s, v);
            let ran = bench.run(&format!("setup: deploy v{v}"), &["deploy", "test"]);
            ran.expect(0);
        }
        bench
    }

    /// The lying host's mode (`honest`, `flood`, `stall`, ...).
    pub fn lie(&self, mode: &str) {
        fs::write(self.liar_dir().join("mode"), mode).expect("write mode");
    }

    /// Lines the probe of the lying host prints after its real output (mode `extra`).
    pub fn extra_lines(&self, bytes: &[u8]) {
        fs::write(self.liar_dir().join("extra"), bytes).expect("write extra");
        self.lie("extra");
    }

    /// Every host but the liar.
    pub fn honest_hosts(&self) -> Vec<usize> {
        (0..3).filter(|&i| i != self.liar).collect()
    }

    /// The lying host's name in slipway's messages.
    pub fn liar(&self) -> String {
        let h = self.s.fleet().host(self.liar);
        format!("{}:{}", h.address, h.port)
    }

    fn liar_dir(&self) -> PathBuf {
        self.s.fleet().host(self.liar).srv().join(".liar")
    }

    /// `rest` under `deploy_to` on the lying host, as this machine sees it.
    pub fn liar_path(&self, rest: &str) -> PathBuf {
        self.s.app_path(self.liar, rest)
    }

    pub fn honest(&self) -> Honest {
        Honest(
            self.honest_hosts()
                .into_iter()
                .map(|i| {
                    (
                        self.s.current(i),
                        self.s.releases(i),
                        fs::read_to_string(self.s.app_path(i, ".slipway/log.jsonl"))
                            .unwrap_or_default(),
                    )
                })
                .collect(),
        )
    }

    /// The honest hosts' `current`, each a release other than `before`'s, no lock left.
    pub fn assert_honest_deployed(&self, before: &Honest, case: &str) {
        for (n, i) in self.honest_hosts().into_iter().enumerate() {
            let now = self.s.current(i);
            assert!(
                now.is_some() && now != before.0[n].0,
                "{case}: host{} was not deployed ({now:?})",
                i + 1
            );
            assert!(
                !self.s.app_path(i, ".slipway/lock").exists(),
                "{case}: host{} is still locked",
                i + 1
            );
        }
    }

    pub fn assert_honest_unchanged(&self, before: &Honest, case: &str) {
        let now = self.honest();
        // A refused run appends its own audit record: the releases and `current` must
        // not have moved; the log may only have grown by whole lines.
        for ((b, a), i) in before.0.iter().zip(&now.0).zip(self.honest_hosts()) {
            let host = format!("host{}", i + 1);
            assert_eq!(b.0, a.0, "{case}: {host}'s current moved");
            assert_eq!(b.1, a.1, "{case}: {host}'s releases changed");
            assert!(
                a.2.starts_with(&b.2),
                "{case}: {host}'s audit log was rewritten"
            );
        }
        for i in self.honest_hosts() {
            assert!(
                !self.s.app_path(i, ".slipway/lock").exists(),
                "{case}: host{} is still locked",
                i + 1
            );
        }
    }

    /// After a deploy that failed on the lying host past the upload: the honest hosts'
    /// `current` has not moved, the release they received is recorded `failed` (kept for
    /// inspection, as after any failed deploy), no partial upload and no lock is left.
    pub fn assert_honest_not_switched(&self, before: &Honest, case: &str) {
        let now = self.honest();
        for ((b, a), i) in before.0.iter().zip(&now.0).zip(self.honest_hosts()) {
            assert_eq!(b.0, a.0, "{case}: host{}'s current moved", i + 1);
            for r in a.1.iter().filter(|r| !b.1.contains(r)) {
                assert!(!r.ends_with(".partial"), "{case}: host{} kept {r}", i + 1);
                assert_eq!(self.s.state(i, r), "failed", "{case}: host{}'s {r}", i + 1);
            }
            assert!(
                !self.s.app_path(i, ".slipway/lock").exists(),
                "{case}: host{} is still locked",
                i + 1
            );
        }
    }

    /// Runs slipway with this bench's config, measuring its peak RSS; every run is
    /// checked for raw control characters and the memory bound.
    pub fn run(&mut self, case: &str, args: &[&str]) -> Ran {
        // GNU time reports its child's peak RSS. Measured there, not by our own wait4:
        // a child forked from this (large, multi-threaded) test process starts with our
        // RSS as its high-water mark, and keeps it across exec.
        assert!(
            std::path::Path::new(TIME).exists(),
            "{TIME} is missing: install it with `apt-get install time` (or run scripts/test)"
        );
        let slipway = self.s.command(args);
        let rss_file = self.s.dir().join("rss");
        let _ = fs::remove_file(&rss_file);
        let mut cmd = std::process::Command::new(TIME);
        cmd.arg("-f")
            .arg("%M")
            .arg("-o")
            .arg(&rss_file)
            .arg(slipway.get_program())
            .args(slipway.get_args());
        for (k, v) in slipway.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let started = Instant::now();
        let mut child = cmd.spawn().expect("spawn slipway under /usr/bin/time");
        let pid = child.id() as libc::pid_t;
        let mut out = child.stdout.take().expect("stdout");
        let mut err = child.stderr.take().expect("stderr");
        let out_reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = out.read_to_end(&mut v);
            v
        });
        let err_reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = err.read_to_end(&mut v);
            v
        });
        // Polling, so that a run that never ends fails the test instead of hanging it.
        let deadline = started + Duration::from_secs(90);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for slipway") {
                break status;
            }
            if Instant::now() > deadline {
                // SAFETY: killing our own child's process group (time and slipway).
                unsafe { libc::kill(-pid, libc::SIGKILL) };
                panic!("{case}: slipway {args:?} did not end within 90 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let elapsed = started.elapsed();
        // GNU time exits with its child's status.
        let code = status.code().unwrap_or(-1);
        let rss = fs::read_to_string(&rss_file).unwrap_or_default();
        let rss_kib: u64 = rss
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("{case}: no peak RSS from {TIME}: {rss:?}"));
        let ran = Ran {
            case: case.to_string(),
            code,
            stdout: out_reader.join().expect("stdout reader"),
            stderr: err_reader.join().expect("stderr reader"),
            rss_kib,
            elapsed,
        };
        self.table.push(Row {
            case: case.to_string(),
            code,
            seconds: elapsed.as_secs_f64(),
            rss_mib: ran.rss_kib as f64 / 1024.0,
        });
        if std::env::var_os("HOSTILE_DUMP").is_some() {
            eprintln!("--- {case}: {args:?}\n{}", ran.dump());
        }
        ran.assert_clean();
        assert!(
            ran.rss_kib < RSS_BOUND_MIB * 1024,
            "{case}: slipway's peak RSS was {} KiB, over the bound of {RSS_BOUND_MIB} MiB",
            ran.rss_kib
        );
        ran
    }

    /// Prints the table of cases (code, seconds, peak RSS).
    pub fn print_table(&self, title: &str) {
        let mut text = format!(
            "\n{title}\n{:<66} {:>4} {:>7} {:>8}\n",
            "case", "exit", "seconds", "RSS MiB"
        );
        for r in &self.table {
            text.push_str(&format!(
                "{:<66} {:>4} {:>7.2} {:>8.1}\n",
                r.case, r.code, r.seconds, r.rss_mib
            ));
        }
        let max = self.table.iter().map(|r| r.rss_mib).fold(0.0, f64::max);
        text.push_str(&format!("peak RSS of any run: {max:.1} MiB\n"));
        println!("{text}");
    }
}

impl Ran {
    pub fn text(&self) -> String {
        format!(
            "{}\n{}",
            String::from_utf8_lossy(&self.stdout),
            String::from_utf8_lossy(&self.stderr)
        )
    }

    /// What the run printed, escaped, the middle of long output left out.
    fn dump(&self) -> String {
        let show = |bytes: &[u8]| {
            let text = String::from_utf8_lossy(bytes).escape_debug().to_string();
            let chars: Vec<char> = text.chars().collect();
            if chars.len() <= 6000 {
                return text;
            }
            let head: String = chars[..3000].iter().collect();
            let tail: String = chars[chars.len() - 3000..].iter().collect();
            format!(
                "{head}\n[... {} characters ...]\n{tail}",
                chars.len() - 6000
            )
        };
        format!(
            "exit {}\nstdout:\n{}\nstderr:\n{}",
            self.code,
            show(&self.stdout),
            show(&self.stderr)
        )
    }

    /// No raw control character: no ESC, no `\r`, no C0 but `\n` and `\t`, no DEL, no
    /// C1 (U+0080..U+009F, which some terminals obey as CSI/OSC).
    fn assert_clean(&self) {
        for (name, bytes) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            if let Some(pos) = bytes
                .iter()
                .position(|&b| (b < 0x20 && b != b'\n' && b != b'\t') || b == 0x7f)
            {
                panic!(
                    "{}: raw control byte {:#04x} on {name} at {pos}\n{}",
                    self.case,
                    bytes[pos],
                    self.dump()
                );
            }
            let text = String::from_utf8_lossy(bytes);
            if let Some(c) = text.chars().find(|c| ('\u{80}'..='\u{9f}').contains(c)) {
                panic!(
                    "{}: raw C1 control {:?} on {name}\n{}",
                    self.case,
                    c,
                    self.dump()
                );
            }
        }
    }

    pub fn expect(&self, code: i32) -> &Ran {
        assert_eq!(
            self.code,
            code,
            "{}: expected exit {code}\n{}",
            self.case,
            self.dump()
        );
        self
    }

    pub fn fails(&self) -> &Ran {
        assert!(
            self.code > 0,
            "{}: expected a failure\n{}",
            self.case,
            self.dump()
        );
        self
    }

    /// Everything printed contains every one of `needles`.
    pub fn says(&self, needles: &[&str]) -> &Ran {
        let text = self.text();
        for n in needles {
            assert!(
                text.contains(n),
                "{}: expected {n:?} in the output\n{}",
                self.case,
                self.dump()
            );
        }
        self
    }

    /// The error slipway ends with names `host` first (`slipway: error: HOST: ...`).
    pub fn blames(&self, host: &str) -> &Ran {
        let line = format!("slipway: error: {host}: ");
        let stderr = String::from_utf8_lossy(&self.stderr);
        assert!(
            stderr.contains(&line),
            "{}: the error does not name {host} first\n{}",
            self.case,
            self.dump()
        );
        self
    }

    pub fn never_says(&self, needles: &[&str]) -> &Ran {
        let text = self.text();
        for n in needles {
            assert!(
                !text.contains(n),
                "{}: {n:?} must not be in the output\n{}",
                self.case,
                self.dump()
            );
        }
        self
    }

    /// Every stdout line is a JSON object (`--json`).
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        String::from_utf8_lossy(&self.stdout)
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!(
                        "{}: not a JSON line ({e}): {l:?}\n{}",
                        self.case,
                        self.dump()
                    )
                })
            })
            .collect()
    }

    pub fn within(&self, bound: Duration) -> &Ran {
        assert!(
            self.elapsed < bound,
            "{}: took {:?}, over {bound:?}\n{}",
            self.case,
            self.elapsed,
            self.dump()
        );
        self
    }
}
