//! Sources and manifests for the archive's unit tests.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use super::Archive;
use super::manifest::{EntryKind, ManifestEntry};
use super::source::Source;

pub(super) fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

pub(super) fn chmod(root: &Path, rel: &str, mode: u32) {
    fs::set_permissions(root.join(rel), fs::Permissions::from_mode(mode)).unwrap();
}

pub(super) fn dir_source(root: &Path, exclude: &[&str]) -> Source {
    Source::Dir {
        path: root.to_path_buf(),
        exclude: exclude.iter().map(|s| s.to_string()).collect(),
    }
}

pub(super) fn git_source(repo: &Path, reference: &str, exclude: &[&str]) -> Source {
    Source::Git {
        repo: repo.to_path_buf(),
        reference: reference.to_string(),
        exclude: exclude.iter().map(|s| s.to_string()).collect(),
    }
}

pub(super) fn paths(archive: &Archive) -> Vec<&str> {
    archive
        .manifest
        .entries
        .iter()
        .map(|e| e.path.as_str())
        .collect()
}

pub(super) fn find<'a>(archive: &'a Archive, path: &str) -> &'a ManifestEntry {
    archive
        .manifest
        .entries
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("{path} not in {:?}", paths(archive)))
}

/// Runs git hermetically: no user or system config, fixed identity and dates.
pub(super) fn git_cmd(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

pub(super) fn git_repo(root: &Path) {
    git_cmd(root, &["init", "-q"]);
}

pub(super) fn commit_all(root: &Path, message: &str) -> String {
    git_cmd(root, &["add", "-A"]);
    git_cmd(root, &["commit", "-q", "-m", message]);
    git_cmd(root, &["rev-parse", "HEAD"])
}

/// The usual small app: a hook, a hidden file, a symlink, an ignored dir.
pub(super) fn sample_app(root: &Path) {
    write(root, "src/main.rs", "fn main() {}\n");
    write(root, "bin/build", "#!/bin/sh\necho building\n");
    chmod(root, "bin/build", 0o755);
    write(root, ".env.example", "DATABASE_URL=\n");
    write(root, ".gitignore", "/target/\n*.tmp\n");
    write(root, "target/debug/app", "binary");
    write(root, "notes.tmp", "scratch");
    symlink("src/main.rs", root.join("main-link")).unwrap();
}

pub(super) fn file(path: &str, hash: &str, mode: u32) -> ManifestEntry {
    ManifestEntry {
        path: path.into(),
        kind: EntryKind::File,
        mode,
        size: 1,
        blake3: Some(hash.into()),
        target: None,
        sha256: Some(format!("s{hash}")),
        blake2b: Some(format!("b{hash}")),
    }
}

pub(super) fn dir(path: &str) -> ManifestEntry {
    ManifestEntry {
        path: path.into(),
        kind: EntryKind::Dir,
        mode: 0o755,
        size: 0,
        blake3: None,
        target: None,
        sha256: None,
        blake2b: None,
    }
}
