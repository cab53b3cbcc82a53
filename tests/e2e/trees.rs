//! What the upload tests share: the result of a `--json` deploy, deterministic
//! incompressible bytes, a host's commands replaced or hidden for one test, and the
//! check that a host's live release is the source tree byte for byte.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use crate::scenario::{Run, Scenario, set_executable};

/// The `result` of a `--json` run (its last line).
pub fn result(run: &Run) -> serde_json::Value {
    let last = run.stdout.lines().last().expect("a --json result line");
    serde_json::from_str::<serde_json::Value>(last).expect("json")["data"]["result"].clone()
}

/// Deterministic incompressible bytes.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 32) as u8
        })
        .collect()
}

/// Host `i`'s login shell (bash reads ~/.bashrc for every ssh command, a relay's
/// one-time sshd's too; the host's home is its own) puts first on PATH a directory
/// holding every command of the system's but those `hidden` says, with each of
/// `wrappers` (name, script) in place of the system's.
pub fn shadow_commands(
    s: &Scenario,
    i: usize,
    tag: &str,
    hidden: impl Fn(&str) -> bool,
    wrappers: &[(&str, &str)],
) {
    let bin = s.dir().join(format!("path-{i}-{tag}"));
    fs::create_dir_all(&bin).unwrap();
    for dir in ["/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let text = name.to_string_lossy();
            if hidden(&text) || wrappers.iter().any(|(c, _)| *c == text) || bin.join(&name).exists()
            {
                continue;
            }
            symlink(entry.path(), bin.join(&name)).unwrap();
        }
    }
    for (command, wrapper) in wrappers {
        fs::write(bin.join(command), wrapper).unwrap();
        set_executable(&bin.join(command));
    }
    let home = s.fleet().host(i).home();
    fs::write(
        home.join(".bashrc"),
        format!("PATH={}\nexport PATH\n", bin.display()),
    )
    .unwrap();
    for (command, _) in wrappers {
        let seen = s.fleet().ssh_ok(i, &format!("command -v {command}"));
        assert_eq!(
            Path::new(seen.trim()),
            bin.join(command),
            "host {i} does not run the wrapped {command}"
        );
    }
}

/// Every file of the source tree is in host `i`'s current release, byte for byte, and
/// the release checks against its manifest's digest lists.
pub fn assert_same_tree(s: &Scenario, i: usize) {
    fn walk(root: &Path, rel: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in fs::read_dir(root.join(rel)).unwrap().flatten() {
            let rel = rel.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                walk(root, &rel, out);
            } else {
                out.push(rel);
            }
        }
    }
    let app = s.dir().join("app");
    let mut files = Vec::new();
    walk(&app, Path::new(""), &mut files);
    assert!(files.len() > 10);
    for rel in &files {
        let here = fs::read(app.join(rel)).unwrap();
        let there = fs::read(s.app_path(i, &format!("current/{}", rel.display())))
            .unwrap_or_else(|e| panic!("host {i}: {}: {e}", rel.display()));
        assert!(here == there, "host {i}: {} differs", rel.display());
    }
    assert_verifies(s, i);
}

/// Host `i`'s live release checks against both of its manifest's digest lists.
pub fn assert_verifies(s: &Scenario, i: usize) {
    let current = s.app_path(i, "current");
    for (tool, list) in [
        ("sha256sum", ".slipway/manifest.sha256"),
        ("b2sum", ".slipway/manifest.b2"),
    ] {
        let out = std::process::Command::new(tool)
            .args(["--quiet", "--strict", "-c", list])
            .current_dir(&current)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "host {i}, {tool}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
