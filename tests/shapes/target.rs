//! One deploy target: a `local` directory on this machine, or one sshd test host; the
//! source directory deployed to it; and a snapshot of everything under its `deploy_to`,
//! to show that a refused deploy changed nothing there.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::hosts::Fleet;

/// Where the application lives on the ssh test host.
const SSH_DEPLOY_TO: &str = "/srv/app";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Local,
    Ssh,
}

pub struct Target {
    pub via: Via,
    dir: tempfile::TempDir,
    fleet: Option<Fleet>,
    keep_releases: usize,
    /// `deploy_to` as slipway sees it (on the host).
    deploy_to: String,
}

/// What one run of the slipway binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The release id a successful deploy reports (`... : ID is live`).
    pub fn release_id(&self) -> Option<String> {
        let line = self.stdout.lines().find(|l| l.contains(" is live"))?;
        let before = line.split(" is live").next()?;
        Some(before.rsplit(' ').next()?.to_string())
    }

    pub fn describe(&self) -> String {
        format!(
            "exit {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Target {
    /// A `local` stage whose `deploy_to` is a short directory in a new temp dir.
    pub fn local(keep_releases: usize) -> Target {
        let dir = short_tempdir();
        let deploy_to = dir.path().join("h/app").display().to_string();
        let t = Target {
            via: Via::Local,
            dir,
            fleet: None,
            keep_releases,
            deploy_to,
        };
        t.reset_source();
        t
    }

    /// A `local` stage whose `deploy_to` is `pad` bytes longer than usual (a release's
    /// deepest path plus `deploy_to` then exceed PATH_MAX).
    pub fn local_padded(keep_releases: usize, pad: usize) -> Target {
        let mut t = Target::local(keep_releases);
        let padding = vec!["p".repeat(50); pad.div_ceil(51)].join("/");
        t.deploy_to = t
            .dir
            .path()
            .join("h")
            .join(padding)
            .join("app")
            .display()
            .to_string();
        t
    }

    /// Deploys the source directory of `other` (a symlink to it), not one of its own.
    pub fn use_source_of(&self, other: &Target) {
        let source = self.source();
        fs::remove_dir_all(&source).expect("remove the source dir");
        std::os::unix::fs::symlink(other.source(), &source).expect("link the source dir");
    }

    /// An ssh stage on one new sshd test host, `deploy_to = "/srv/app"`.
    pub fn ssh(keep_releases: usize) -> Target {
        let t = Target {
            via: Via::Ssh,
            dir: short_tempdir(),
            fleet: Some(Fleet::start(1)),
            keep_releases,
            deploy_to: SSH_DEPLOY_TO.to_string(),
        };
        t.reset_source();
        t
    }

    /// The source directory (`[source] path`), on this machine.
    pub fn source(&self) -> PathBuf {
        self.dir.path().join("s")
    }

    /// Empties the source directory.
    pub fn reset_source(&self) {
        let source = self.source();
        if source.exists() {
            fs::remove_dir_all(&source).expect("remove the previous source");
        }
        fs::create_dir_all(&source).expect("create the source dir");
    }

    pub fn deploy_to(&self) -> &str {
        &self.deploy_to
    }

    /// A path under `deploy_to` on the host, as this machine sees it (the ssh host's
    /// `/srv` is a directory here, bind-mounted on `/srv` in its mount namespace).
    pub fn on_host(&self, rest: &str) -> PathBuf {
        let remote = format!("{}/{rest}", self.deploy_to);
        match &self.fleet {
            Some(fleet) => fleet.host(0).path(&remote),
            None => PathBuf::from(remote),
        }
    }

    /// The release `current` points at, as this machine sees it.
    pub fn current_release(&self) -> Option<PathBuf> {
        let link = fs::read_link(self.on_host("current")).ok()?;
        Some(self.on_host(&link.to_string_lossy()))
    }

    fn config_text(&self, extra: &str) -> String {
        let stage = match &self.fleet {
            None => "[stages.t]\ntransport = \"local\"\n".to_string(),
            Some(fleet) => {
                let h = fleet.host(0);
                format!(
                    "[ssh]\nconfig_file = \"{}\"\nconnect_timeout = \"10s\"\n\n[stages.t]\nhosts = [{{ address = \"{}\", port = {}, roles = [\"app\"] }}]\n",
                    fleet.ssh_config().display(),
                    h.address,
                    h.port
                )
            }
        };
        format!(
            "app = \"shapes\"\ndeploy_to = \"{}\"\nkeep_releases = {}\n{extra}\n[source]\npath = \"s\"\n\n{stage}",
            self.deploy_to, self.keep_releases
        )
    }

    /// Runs `slipway deploy t`, killed (and failed) after `limit`.
    pub fn deploy_within(&self, limit: Duration) -> Run {
        self.slipway_within(&["deploy", "t"], "", limit)
    }

    pub fn deploy(&self) -> Run {
        self.deploy_within(Duration::from_secs(120))
    }

    /// Runs slipway with `extra` TOML added to the top level of the config.
    pub fn slipway_within(&self, args: &[&str], extra: &str, limit: Duration) -> Run {
        self.slipway_with_env(args, extra, &[], limit)
    }

    /// Runs slipway with `extra` TOML in the config and `env` set (the `local`
    /// transport's scripts inherit it).
    pub fn slipway_with_env(
        &self,
        args: &[&str],
        extra: &str,
        env: &[(&str, String)],
        limit: Duration,
    ) -> Run {
        let config = self.dir.path().join("deploy.toml");
        fs::write(&config, self.config_text(extra)).expect("write deploy.toml");
        let child = Command::new(env!("CARGO_BIN_EXE_slipway"))
            .arg("-c")
            .arg(&config)
            .args(args)
            .env_remove("SLIPWAY_FAULT")
            .env("NO_COLOR", "1")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run slipway");
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let output = match rx.recv_timeout(limit) {
            Ok(output) => output.expect("wait for slipway"),
            Err(_) => {
                // Only the child this call started, by its pid.
                let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
                panic!("slipway {args:?} did not finish within {limit:?}");
            }
        };
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs `command` with `sh` on the host (through ssh for the ssh target) and returns
    /// its stdout; panics unless it succeeds.
    pub fn on_host_sh(&self, command: &str) -> String {
        match &self.fleet {
            Some(fleet) => fleet.ssh_ok(0, command),
            None => {
                let out = Command::new("sh")
                    .arg("-c")
                    .arg(command)
                    .output()
                    .expect("run sh");
                assert!(
                    out.status.success(),
                    "`{command}` failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).into_owned()
            }
        }
    }

    /// Everything under `deploy_to` on the host: path → kind, mode, size, mtime, inode,
    /// link target, and the content of small files.
    pub fn snapshot(&self) -> Snapshot {
        let root = self.on_host("");
        let mut entries = BTreeMap::new();
        if root.exists() {
            walk(&root, &root, &mut entries);
        }
        Snapshot(entries)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot(BTreeMap<Vec<u8>, String>);

impl Snapshot {
    /// The entries that differ between two snapshots, for a failure message.
    pub fn differences(&self, after: &Snapshot) -> Vec<String> {
        let mut out = Vec::new();
        for (path, was) in &self.0 {
            match after.0.get(path) {
                None => out.push(format!("removed {}", String::from_utf8_lossy(path))),
                Some(now) if now != was => out.push(format!(
                    "changed {}: {was} -> {now}",
                    String::from_utf8_lossy(path)
                )),
                _ => {}
            }
        }
        for path in after.0.keys().filter(|p| !self.0.contains_key(*p)) {
            out.push(format!("added {}", String::from_utf8_lossy(path)));
        }
        out
    }
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<Vec<u8>, String>) {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    names.sort();
    for path in names {
        let meta = fs::symlink_metadata(&path).expect("lstat");
        let rel = path
            .strip_prefix(root)
            .expect("under root")
            .as_os_str()
            .as_bytes()
            .to_vec();
        let mut text = format!(
            "mode {:o} size {} mtime {}.{} ino {}",
            meta.mode(),
            meta.size(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ino()
        );
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).expect("readlink");
            text.push_str(&format!(" -> {}", target.display()));
        } else if meta.is_file() && meta.size() <= 4096 {
            let data = fs::read(&path).expect("read");
            text.push_str(&format!(" {:?}", String::from_utf8_lossy(&data)));
        }
        out.insert(rel, text);
        if meta.is_dir() {
            walk(root, &path, out);
        }
    }
}

/// A temp dir with a short path: a release's deepest path plus the host's `deploy_to`
/// must stay under PATH_MAX (4096) as this machine sees it.
fn short_tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("shp.")
        .tempdir_in("/tmp")
        .expect("temp dir");
    assert!(
        dir.path().as_os_str().len() < 24,
        "{}",
        dir.path().display()
    );
    dir
}
