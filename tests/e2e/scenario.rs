//! A test reads like what a user does and what the hosts must look like afterwards:
//! `Scenario::new().hosts(3).deploy_ok()` then `s.assert_current_everywhere(&id)`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use super::hosts::Fleet;

/// Where the application lives on every test host (each host has its own /srv).
pub const DEPLOY_TO: &str = "/srv/app";

pub struct Scenario {
    pub fleet: Option<Fleet>,
    pub dir: tempfile::TempDir,
    pub keep_releases: usize,
    pub shared_files: Vec<String>,
    pub shared_dirs: Vec<String>,
    pub build_hooks: Vec<String>,
    pub restart_hooks: Vec<String>,
    pub deploy_to: String,
    /// Raw TOML appended to the generated top level.
    pub extra: String,
    /// Raw TOML added to host i's inline table (e.g. `pool = "blue"`).
    pub host_extra: Vec<String>,
}

/// What one run of the slipway binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Panics with everything the run printed unless it exited with `code`.
    pub fn expect_code(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "expected exit {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn ok(self) -> Run {
        self.expect_code(0)
    }

    /// The release id a successful deploy reports (`... : ID is live`).
    pub fn release_id(&self) -> String {
        let line = self
            .stdout
            .lines()
            .find(|l| l.contains(" is live"))
            .unwrap_or_else(|| panic!("no release in: {}", self.stdout));
        let before = line.split(" is live").next().unwrap_or_default();
        before.rsplit(' ').next().unwrap_or_default().to_string()
    }

    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl Scenario {
    pub fn new() -> Scenario {
        let dir = tempfile::tempdir().expect("tempdir");
        let app = dir.path().join("app");
        fs::create_dir_all(app.join("bin")).expect("app dir");
        fs::write(app.join("index.html"), "<h1>v1</h1>\n").expect("write");
        fs::write(
            app.join("bin/build"),
            "#!/bin/sh\necho \"built $SLIPWAY_RELEASE_ID\" > build.txt\n",
        )
        .expect("write");
        set_executable(&app.join("bin/build"));
        Scenario {
            fleet: None,
            dir,
            keep_releases: 5,
            shared_files: vec![],
            shared_dirs: vec![],
            build_hooks: vec![],
            restart_hooks: vec![],
            deploy_to: DEPLOY_TO.into(),
            extra: String::new(),
            host_extra: Vec::new(),
        }
    }

    /// Starts `n` sshd hosts.
    pub fn hosts(mut self, n: usize) -> Scenario {
        self.fleet = Some(Fleet::start(n));
        self
    }

    pub fn keep_releases(mut self, n: usize) -> Scenario {
        self.keep_releases = n;
        self
    }

    pub fn shared_file(mut self, path: &str) -> Scenario {
        self.shared_files.push(path.into());
        self
    }

    pub fn shared_dir(mut self, path: &str) -> Scenario {
        self.shared_dirs.push(path.into());
        self
    }

    pub fn build_hook(mut self, command: &str) -> Scenario {
        self.build_hooks.push(command.into());
        self
    }

    pub fn restart_hook(mut self, command: &str) -> Scenario {
        self.restart_hooks.push(command.into());
        self
    }

    pub fn deploy_to(mut self, path: &str) -> Scenario {
        self.deploy_to = path.into();
        self
    }

    pub fn fleet(&self) -> &Fleet {
        self.fleet.as_ref().expect("call .hosts(n) first")
    }

    pub fn fleet_mut(&mut self) -> &mut Fleet {
        self.fleet.as_mut().expect("call .hosts(n) first")
    }

    pub fn host_count(&self) -> usize {
        self.fleet().hosts().len()
    }

    /// Writes a file into every host's `shared/` directory.
    pub fn put_shared_file(self, path: &str, content: &str) -> Scenario {
        for h in self.fleet().hosts() {
            let p = h.path(&format!("{}/shared/{path}", self.deploy_to));
            fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            fs::write(p, content).expect("write shared file");
        }
        self
    }

    /// Changes a file of the application source (so the next release differs).
    pub fn app_file(&self, path: &str, content: &str) {
        let p = self.dir.path().join("app").join(path);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, content).expect("write app file");
    }

    fn toml_list(items: &[String]) -> String {
        let quoted: Vec<String> = items.iter().map(|i| toml_string(i)).collect();
        format!("[{}]", quoted.join(", "))
    }

    /// The deploy.toml this scenario describes.
    pub fn config_text(&self) -> String {
        let fleet = self.fleet();
        let hosts: Vec<String> = fleet
            .hosts()
            .iter()
            .enumerate()
            .map(|(i, h)| {
                format!(
                    "  {{ address = \"{}\", port = {}, roles = [\"app\", \"db\"]{} }},",
                    h.address,
                    h.port,
                    self.host_extra
                        .get(i)
                        .map(|e| format!(", {e}"))
                        .unwrap_or_default()
                )
            })
            .collect();
        format!(
            "app = \"testapp\"\ndeploy_to = {}\nkeep_releases = {}\n{}\n[source]\npath = \"app\"\n\n[ssh]\nconfig_file = {}\nconnect_timeout = \"5s\"\n\n[shared]\nfiles = {}\ndirs = {}\n\n[hooks]\nbuild = {}\nrestart = {}\n\n[stages.test]\nhosts = [\n{}\n]\n",
            toml_string(&self.deploy_to),
            self.keep_releases,
            self.extra,
            toml_string(&fleet.ssh_config().display().to_string()),
            Self::toml_list(&self.shared_files),
            Self::toml_list(&self.shared_dirs),
            Self::toml_list(&self.build_hooks),
            Self::toml_list(&self.restart_hooks),
            hosts.join("\n"),
        )
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("deploy.toml")
    }

    /// Writes deploy.toml atomically: a slipway started a moment ago may be reading it.
    fn write_config(&self) {
        let tmp = self
            .dir
            .path()
            .join(format!("deploy.toml.{}", std::process::id()));
        fs::write(&tmp, self.config_text()).expect("write deploy.toml");
        fs::rename(&tmp, self.config_path()).expect("rename deploy.toml");
    }

    /// A `slipway` command with this scenario's config, ready to run.
    pub fn command(&self, args: &[&str]) -> Command {
        self.write_config();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_slipway"));
        cmd.arg("-c")
            .arg(self.config_path())
            .args(args)
            .env_remove("SLIPWAY_FAULT")
            .env("NO_COLOR", "1");
        cmd
    }

    pub fn slipway(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("run slipway"))
    }

    /// Starts slipway in the background with a fault point set (e.g. pause after upload).
    pub fn spawn_with_fault(&self, args: &[&str], fault: &str) -> Child {
        self.command(args)
            .env("SLIPWAY_FAULT", crate::hosts::fault(fault))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn slipway")
    }

    pub fn deploy(&self) -> Run {
        self.slipway(&["deploy", "test"])
    }

    pub fn deploy_ok(&self) -> String {
        self.deploy().ok().release_id()
    }

    pub fn rollback(&self, extra: &[&str]) -> Run {
        let mut args = vec!["rollback", "test"];
        args.extend_from_slice(extra);
        self.slipway(&args)
    }

    /// A path on host `i`, as this machine sees it.
    pub fn host_path(&self, i: usize, remote: &str) -> PathBuf {
        self.fleet().host(i).path(remote)
    }

    pub fn app_path(&self, i: usize, rest: &str) -> PathBuf {
        self.host_path(i, &format!("{}/{rest}", self.deploy_to))
    }

    /// The release `current` points at on host `i`.
    pub fn current(&self, i: usize) -> Option<String> {
        let link = fs::read_link(self.app_path(i, "current")).ok()?;
        Some(
            link.to_string_lossy()
                .trim_start_matches("releases/")
                .to_string(),
        )
    }

    pub fn assert_current_everywhere(&self, id: &str) {
        for i in 0..self.host_count() {
            assert_eq!(self.current(i).as_deref(), Some(id), "host {i} current");
        }
    }

    /// Release directory names on host `i`, sorted.
    pub fn releases(&self, i: usize) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.app_path(i, "releases"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    pub fn assert_no_partial_and_no_lock(&self) {
        for i in 0..self.host_count() {
            let partial: Vec<String> = self
                .releases(i)
                .into_iter()
                .filter(|r| r.ends_with(".partial"))
                .collect();
            assert!(
                partial.is_empty(),
                "host {i} has partial releases: {partial:?}"
            );
            assert!(
                !self.app_path(i, ".slipway/lock").exists(),
                "host {i} is still locked"
            );
        }
    }

    /// The release record of `id` on host `i`.
    pub fn meta(&self, i: usize, id: &str) -> serde_json::Value {
        let text =
            fs::read_to_string(self.app_path(i, &format!("releases/{id}/.slipway/release.json")))
                .expect("release.json");
        serde_json::from_str(&text).expect("release.json parses")
    }

    pub fn state(&self, i: usize, id: &str) -> String {
        self.meta(i, id)["state"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Lines of the audit log on host `i`.
    pub fn audit(&self, i: usize) -> Vec<serde_json::Value> {
        fs::read_to_string(self.app_path(i, ".slipway/log.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .collect()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A TOML basic string.
pub fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub fn set_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut perm = fs::metadata(path).expect("stat").permissions();
    perm.set_mode(0o755);
    fs::set_permissions(path, perm).expect("chmod");
}

/// Waits until a child's stderr shows `needle` (a fault point reached), returning what it read.
pub fn wait_for_stderr(child: &mut Child, needle: &str) -> String {
    use std::io::Read;
    let mut err = child.stderr.take().expect("piped stderr");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        match err.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                seen.extend_from_slice(&buf[..n]);
                if String::from_utf8_lossy(&seen).contains(needle) {
                    // Keep draining in the background so the child never blocks on a full pipe.
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut err, &mut std::io::sink());
                    });
                    return String::from_utf8_lossy(&seen).into_owned();
                }
            }
            Err(_) => break,
        }
    }
    panic!(
        "`{needle}` never appeared on stderr; saw:\n{}",
        String::from_utf8_lossy(&seen)
    );
}

/// Sends a signal to a child process.
pub fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
}
