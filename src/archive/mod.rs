//! The release archive: built once per deploy, on this machine, from the
//! application source (a local directory or a ref of a local git repository).
//!
//! Both kinds of source go through the same path: collect the entries, check
//! them, sort them, and emit them through one deterministic tar writer while
//! hashing the files into the [`Manifest`]. So a directory and a git ref holding
//! the same tree give byte-identical archives and equal manifests (except for
//! empty directories, which git does not track).
//!
//! Decisions worth knowing:
//! - Modes are normalised the way git and tar's `HeaderMode::Deterministic` do:
//!   directories 0755, files 0755 if the owner may execute them (hooks such as
//!   `bin/build` must stay executable) and 0644 otherwise, symlinks 0777. Group
//!   and other write bits, setuid and sticky bits are not carried: they would make
//!   the archive depend on the builder's umask, and setuid bits have no place in
//!   a deploy. Owners are 0 and mtimes a fixed date.
//! - Special files (sockets, fifos, devices) are skipped and listed in
//!   [`Archive::skipped`] rather than refused: they are runtime artefacts (a dev
//!   server's socket in `tmp/`) that cannot be shipped, and a deploy should not
//!   fail because one exists at the moment it runs; listing them keeps it visible.
//! - Symlinks are archived as symlinks, never followed. Targets outside the tree
//!   (`../shared/log`) and absolute targets (`/var/log/app`) are kept as they are:
//!   pointing into shared or system paths is the normal shape of a release.
//! - A directory source honours what git would ignore: `.gitignore` and `.ignore`
//!   files in the tree and its parents, `.git/info/exclude` and the global
//!   excludes file, also outside a git repository. The archive then never holds
//!   what `git status` calls ignored (often secrets such as `.env`); the price is
//!   that two machines with different global excludes can build different
//!   archives, which the content-based revision makes visible.
//! - A git source is exactly what `git archive` emits for the commit (so
//!   `export-ignore` attributes apply, `.gitignore` does not, submodule contents
//!   are absent; `repo` may be a subdirectory of a work tree, and then only
//!   that subdirectory is archived, as `git archive` does). The ref is
//!   resolved to a commit first and the archive made from that sha, so a ref
//!   that moves in between cannot mix two commits.
//! - `exclude` patterns (gitignore syntax) apply to both kinds of source; a
//!   pattern that matches a directory drops everything under it.

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use serde::{Deserialize, Serialize};

pub mod delta;
pub mod spool;

use spool::{Spool, SpoolBuilder};

/// Where the application source comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A local directory; honours .gitignore/.ignore files (also outside a git
    /// repo), includes hidden files (e.g. .env.example), always skips `.git`.
    Dir { path: PathBuf, exclude: Vec<String> },
    /// A ref of the local git repository at `repo` (via `git archive`).
    Git {
        repo: PathBuf,
        reference: String,
        exclude: Vec<String>,
    },
}

/// A built release archive.
pub struct Archive {
    /// The tar stream: sorted paths, fixed owners, mtimes and normalised modes;
    /// spooled to a temporary file, never held whole in memory.
    pub tar: Spool,
    pub manifest: Manifest,
    /// The commit sha for a git source; `blake3:` and the first 16 hex digits of
    /// the manifest digest for a directory source.
    pub revision: String,
    /// Special files left out, as `path (kind)`, e.g. `tmp/dev.sock (socket)`.
    pub skipped: Vec<String>,
}

impl fmt::Debug for Archive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Archive")
            .field("tar", &format_args!("<{} bytes>", self.tar.len()))
            .field(
                "manifest",
                &format_args!("<{} entries>", self.manifest.entries.len()),
            )
            .field("revision", &self.revision)
            .field("skipped", &self.skipped)
            .finish()
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ManifestEntry {
    /// Relative, `/`-separated, no trailing slash.
    pub path: String,
    pub kind: EntryKind,
    pub mode: u32,
    /// The file's length; 0 for directories and symlinks.
    pub size: u64,
    /// The blake3 hex digest of a file's content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
    /// A symlink's target, as written in the link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The SHA-256 hex digest of a file's content: hosts verify a release with
    /// `sha256sum -c` (coreutils), as no blake3 tool can be assumed there. It travels
    /// in the release's `manifest.sha256` list, not in `manifest.jsonl` (which would
    /// carry every digest twice); older manifests that have it still parse.
    #[serde(default, skip_serializing)]
    pub sha256: Option<String>,
    /// The BLAKE2b-256 hex digest of a file's content: hosts whose coreutils have
    /// `b2sum` (8.26 and later) verify with it, about four times faster than
    /// `sha256sum`. Travels in `manifest.b2`, like `sha256` in its list.
    #[serde(default, skip_serializing)]
    pub blake2b: Option<String>,
}

/// What a release holds, entry by entry, sorted by path (byte order).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    pub entries: Vec<ManifestEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("source: {} does not exist (check [source] path)", .path.display())]
    SourceMissing { path: PathBuf },
    #[error("source: {} is not a directory (check [source] path)", .path.display())]
    NotADirectory { path: PathBuf },
    #[error("source: cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("source: path {path:?} is not valid UTF-8 (rename it, or add it to [source] exclude)")]
    NonUtf8Path { path: String },
    #[error(
        "source: path {path:?} contains a newline or control character (rename it, or add it to [source] exclude)"
    )]
    ControlCharInPath { path: String },
    #[error("source: symlink {path} has an unusable target {target:?}: {reason}")]
    BadSymlinkTarget {
        path: String,
        target: String,
        reason: String,
    },
    #[error(
        "source contains {name}, which slipway writes into each release; rename it or add it to [source] exclude"
    )]
    Reserved { name: String },
    #[error(
        "source: exclude pattern {pattern:?} is invalid: {reason} (fix it in [source] exclude)"
    )]
    BadExclude { pattern: String, reason: String },
    #[error(
        "source: {} holds no files once .gitignore and [source] exclude are applied (check [source] path and exclude)",
        .path.display()
    )]
    Empty { path: PathBuf },
    #[error("source: {} is not a git repository: {stderr}", .path.display())]
    NotAGitRepo { path: PathBuf, stderr: String },
    #[error("source: git ref {reference:?} does not name a commit in {}: {stderr}", .repo.display())]
    BadRef {
        repo: PathBuf,
        reference: String,
        stderr: String,
    },
    #[error("source: cannot run git in {}: {reason} (is git installed and on PATH?)", .repo.display())]
    GitSpawn { repo: PathBuf, reason: String },
    #[error("source: `git archive {commit}` failed in {}: {stderr}", .repo.display())]
    GitArchive {
        repo: PathBuf,
        commit: String,
        stderr: String,
    },
    #[error("source: cannot read the tar stream of `git archive {commit}`: {reason}")]
    GitTar { commit: String, reason: String },
    #[error("source: cannot add {path} to the archive: {reason}")]
    Tar { path: String, reason: String },
    #[error("manifest line {line}: {reason}")]
    Manifest { line: usize, reason: String },
}

/// Builds the release archive of `source`.
pub fn build(source: &Source) -> Result<Archive, ArchiveError> {
    match source {
        Source::Dir { path, exclude } => {
            let excluded = exclude_matcher(exclude)?;
            let root = source_dir(path)?;
            let (nodes, skipped) = walk_dir(&root, &excluded)?;
            let (tar, manifest) = assemble(nodes, path)?;
            let digest = manifest.digest();
            Ok(Archive {
                tar,
                revision: format!("blake3:{}", &digest[..16]),
                manifest,
                skipped,
            })
        }
        Source::Git {
            repo,
            reference,
            exclude,
        } => {
            let excluded = exclude_matcher(exclude)?;
            source_dir(repo)?;
            let commit = resolve_commit(repo, reference)?;
            let (nodes, skipped) = read_git_archive(repo, &commit, &excluded)?;
            let (tar, manifest) = assemble(nodes, repo)?;
            Ok(Archive {
                tar,
                manifest,
                revision: commit,
                skipped,
            })
        }
    }
}

/// The digest a release records for its manifest: blake3 of the manifest's text, as
/// written. A manifest read back from a host is checked against it byte for byte.
pub fn digest_of(json_lines: &str) -> String {
    blake3::hash(json_lines.as_bytes()).to_hex().to_string()
}

impl Manifest {
    /// The blake3 hex digest of [`Manifest::to_json_lines`] (see [`digest_of`]).
    pub fn digest(&self) -> String {
        digest_of(&self.to_json_lines())
    }

    /// One JSON object per entry and line, fields in declaration order, absent
    /// options left out: the canonical form the digest is taken over.
    pub fn to_json_lines(&self) -> String {
        let mut out = String::new();
        for entry in &self.entries {
            // Strings, integers and a unit enum: serde_json cannot fail on them.
            let line = serde_json::to_string(entry).expect("a manifest entry serialises to JSON");
            out.push_str(&line);
            out.push('\n');
        }
        out
    }

    /// Parses and checks what [`Manifest::to_json_lines`] wrote. A manifest read
    /// back from a host is not trusted: paths must be clean relative paths in
    /// strictly ascending order, and each kind must carry exactly its fields.
    pub fn from_json_lines(s: &str) -> Result<Manifest, ArchiveError> {
        let mut entries: Vec<ManifestEntry> = Vec::new();
        for (index, text) in s.lines().enumerate() {
            let line = index + 1;
            if text.trim().is_empty() {
                continue;
            }
            let bad = |reason: String| ArchiveError::Manifest { line, reason };
            let entry: ManifestEntry =
                serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
            check_path(&entry.path).map_err(|e| bad(e.to_string()))?;
            if let Some(previous) = entries.last()
                && previous.path.as_str() >= entry.path.as_str()
            {
                return Err(bad(format!(
                    "{:?} is out of order or repeated (after {:?})",
                    entry.path, previous.path
                )));
            }
            match entry.kind {
                EntryKind::File => match &entry.blake3 {
                    Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {}
                    _ => return Err(bad(format!("file {:?} lacks a blake3 digest", entry.path))),
                },
                EntryKind::Dir => {}
                EntryKind::Symlink => match &entry.target {
                    Some(t) if !t.is_empty() && !t.chars().any(char::is_control) => {}
                    _ => return Err(bad(format!("symlink {:?} lacks a target", entry.path))),
                },
            }
            if entry.kind != EntryKind::File && entry.blake3.is_some() {
                return Err(bad(format!(
                    "{:?} is not a file but has a digest",
                    entry.path
                )));
            }
            if entry.kind != EntryKind::Symlink && entry.target.is_some() {
                return Err(bad(format!(
                    "{:?} is not a symlink but has a target",
                    entry.path
                )));
            }
            entries.push(entry);
        }
        Ok(Manifest { entries })
    }

    pub fn file_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.kind == EntryKind::File)
            .count()
    }

    /// The summed size of the files.
    pub fn total_bytes(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.kind == EntryKind::File)
            .map(|e| e.size)
            .sum()
    }
}

/// The mtime of every entry: the one tar's `HeaderMode::Deterministic` uses
/// (not 0, which some tools mishandle).
const FIXED_MTIME: u64 = 1_153_704_088;

/// One entry on its way into the archive.
struct Node {
    path: String,
    body: Body,
}

enum Body {
    Dir,
    /// A file still on disk, read when it is written into the archive.
    Disk {
        file: PathBuf,
        executable: bool,
    },
    /// A file already in memory (from `git archive`).
    Bytes {
        data: Vec<u8>,
        executable: bool,
    },
    Symlink {
        target: String,
    },
}

fn exclude_matcher(patterns: &[String]) -> Result<Gitignore, ArchiveError> {
    // Paths are matched relative to the source root, so the matcher's root is
    // "." (which the crate never strips from candidate paths).
    let mut builder = GitignoreBuilder::new(".");
    for pattern in patterns {
        builder
            .add_line(None, pattern)
            .map_err(|e| ArchiveError::BadExclude {
                pattern: pattern.clone(),
                reason: e.to_string(),
            })?;
    }
    builder.build().map_err(|e| ArchiveError::BadExclude {
        pattern: patterns.join(", "),
        reason: e.to_string(),
    })
}

fn is_excluded(excluded: &Gitignore, rel: &Path, is_dir: bool) -> bool {
    excluded
        .matched_path_or_any_parents(rel, is_dir)
        .is_ignore()
}

/// Checks that `path` is a directory and returns it in canonical form (so the
/// walk's paths strip cleanly and a symlinked source dir is followed once).
fn source_dir(path: &Path) -> Result<PathBuf, ArchiveError> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(ArchiveError::NotADirectory {
                path: path.to_path_buf(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ArchiveError::SourceMissing {
                path: path.to_path_buf(),
            });
        }
        Err(e) => {
            return Err(ArchiveError::Read {
                path: path.display().to_string(),
                reason: io_reason(&e),
            });
        }
    }
    fs::canonicalize(path).map_err(|e| ArchiveError::Read {
        path: path.display().to_string(),
        reason: io_reason(&e),
    })
}

fn walk_dir(root: &Path, excluded: &Gitignore) -> Result<(Vec<Node>, Vec<String>), ArchiveError> {
    let filter_root = root.to_path_buf();
    let filter_excluded = excluded.clone();
    let walker = ignore::WalkBuilder::new(root)
        .hidden(false)
        .require_git(false)
        .follow_links(false)
        .filter_entry(move |entry| {
            if entry.file_name() == ".git" {
                return false;
            }
            match entry.path().strip_prefix(&filter_root) {
                Ok(rel) if !rel.as_os_str().is_empty() => {
                    let is_dir = entry.file_type().is_some_and(|t| t.is_dir());
                    !is_excluded(&filter_excluded, rel, is_dir)
                }
                _ => true,
            }
        })
        .build();

    let mut nodes = Vec::new();
    let mut skipped = Vec::new();
    for entry in walker {
        let entry = entry.map_err(|e| walk_error(root, &e))?;
        // A directory's unparsable .gitignore or .ignore comes with its entry.
        if let Some(e) = entry.error() {
            return Err(walk_error(root, e));
        }
        if entry.depth() == 0 {
            continue;
        }
        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let path = utf8_path(rel)?;
        let meta = entry.metadata().map_err(|e| walk_error(root, &e))?;
        let kind = meta.file_type();
        let body = if kind.is_dir() {
            Body::Dir
        } else if kind.is_file() {
            Body::Disk {
                file: entry.path().to_path_buf(),
                executable: meta.mode() & 0o100 != 0,
            }
        } else if kind.is_symlink() {
            let target = fs::read_link(entry.path()).map_err(|e| ArchiveError::Read {
                path: path.clone(),
                reason: io_reason(&e),
            })?;
            Body::Symlink {
                target: symlink_target(&path, &target)?,
            }
        } else {
            let what = if kind.is_socket() {
                "socket"
            } else if kind.is_fifo() {
                "fifo"
            } else if kind.is_block_device() {
                "block device"
            } else if kind.is_char_device() {
                "character device"
            } else {
                "special file"
            };
            skipped.push(format!("{path} ({what})"));
            continue;
        };
        nodes.push(Node { path, body });
    }
    Ok((nodes, skipped))
}

/// Turns a walk error into the path it concerns (relative when under the
/// source) and the reason. An unparsable .gitignore line lands here too: the
/// build stops rather than ship what the user meant to ignore.
fn walk_error(root: &Path, err: &ignore::Error) -> ArchiveError {
    fn find_path(err: &ignore::Error) -> Option<&Path> {
        match err {
            ignore::Error::WithPath { path, .. } => Some(path),
            ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
                find_path(err)
            }
            ignore::Error::Partial(errs) => errs.iter().find_map(find_path),
            ignore::Error::Loop { child, .. } => Some(child),
            _ => None,
        }
    }
    fn reason(err: &ignore::Error) -> String {
        match err {
            ignore::Error::WithPath { err, .. } | ignore::Error::WithDepth { err, .. } => {
                reason(err)
            }
            ignore::Error::WithLineNumber { line, err } => format!("line {line}: {}", reason(err)),
            ignore::Error::Partial(errs) => errs.iter().map(reason).collect::<Vec<_>>().join("; "),
            ignore::Error::Io(e) => io_reason(e),
            other => other.to_string(),
        }
    }
    let path = match find_path(err) {
        Some(p) => p
            .strip_prefix(root)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned(),
        None => root.display().to_string(),
    };
    ArchiveError::Read {
        path,
        reason: reason(err),
    }
}

/// The relative path as a `/`-separated string, or why it cannot be one.
fn utf8_path(rel: &Path) -> Result<String, ArchiveError> {
    let mut parts: Vec<&str> = Vec::new();
    for component in rel.components() {
        match component {
            Component::Normal(part) => match part.to_str() {
                Some(s) => parts.push(s),
                None => {
                    return Err(ArchiveError::NonUtf8Path {
                        path: rel.to_string_lossy().into_owned(),
                    });
                }
            },
            Component::CurDir => {}
            _ => {
                return Err(ArchiveError::Tar {
                    path: rel.to_string_lossy().into_owned(),
                    reason: "not a plain relative path".to_string(),
                });
            }
        }
    }
    let path = parts.join("/");
    check_path(&path)?;
    Ok(path)
}

/// A manifest path: non-empty, relative, no `.`/`..`/empty segments, no control
/// characters (they would break the JSON-lines file's readers and remote shell
/// commands downstream).
fn check_path(path: &str) -> Result<(), ArchiveError> {
    if path.chars().any(char::is_control) {
        return Err(ArchiveError::ControlCharInPath {
            path: path.to_string(),
        });
    }
    if path.is_empty()
        || path
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(ArchiveError::Tar {
            path: path.to_string(),
            reason: "not a plain relative path".to_string(),
        });
    }
    Ok(())
}

fn symlink_target(path: &str, target: &Path) -> Result<String, ArchiveError> {
    let bad = |reason: &str| ArchiveError::BadSymlinkTarget {
        path: path.to_string(),
        target: target.to_string_lossy().into_owned(),
        reason: reason.to_string(),
    };
    let Some(text) = target.to_str() else {
        return Err(bad("not valid UTF-8"));
    };
    if text.is_empty() {
        return Err(bad("empty"));
    }
    if text.chars().any(char::is_control) {
        return Err(bad("contains a newline or control character"));
    }
    Ok(text.to_string())
}

/// Sorts and checks the entries, then writes the tar and the manifest in one
/// pass, so every file is read and hashed exactly once.
fn assemble(mut nodes: Vec<Node>, source: &Path) -> Result<(Spool, Manifest), ArchiveError> {
    nodes.sort_by(|a, b| a.path.cmp(&b.path));
    if let Some(pair) = nodes.windows(2).find(|w| w[0].path == w[1].path) {
        return Err(ArchiveError::Tar {
            path: pair[0].path.clone(),
            reason: "appears twice in the source".to_string(),
        });
    }
    for node in &nodes {
        if node.path == "REVISION" {
            return Err(ArchiveError::Reserved {
                name: "REVISION".to_string(),
            });
        }
        if node.path == ".slipway" || node.path.starts_with(".slipway/") {
            return Err(ArchiveError::Reserved {
                name: ".slipway/".to_string(),
            });
        }
    }
    if nodes.iter().all(|n| matches!(n.body, Body::Dir)) {
        return Err(ArchiveError::Empty {
            path: source.to_path_buf(),
        });
    }

    let mut builder = Spool::builder().map_err(|e| ArchiveError::Tar {
        path: "(the temporary file the archive is written to)".to_string(),
        reason: e.to_string(),
    })?;
    // Headers are made by `header` below, not from file metadata, so these two
    // only guard against a later change that appends paths directly.
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(false);

    let mut entries = Vec::with_capacity(nodes.len());
    for node in nodes {
        let path = node.path;
        let tar_err = |e: io::Error| ArchiveError::Tar {
            path: path.clone(),
            reason: e.to_string(),
        };
        let entry = match node.body {
            Body::Dir => {
                let mut h = header(tar::EntryType::Directory, 0o755, 0);
                builder
                    .append_data(&mut h, format!("{path}/"), io::empty())
                    .map_err(tar_err)?;
                entry(path.clone(), EntryKind::Dir, 0o755, 0, None, None)
            }
            Body::Disk { file, executable } => {
                let data = fs::read(&file).map_err(|e| ArchiveError::Read {
                    path: path.clone(),
                    reason: io_reason(&e),
                })?;
                file_entry(&mut builder, &path, &data, executable).map_err(tar_err)?
            }
            Body::Bytes { data, executable } => {
                file_entry(&mut builder, &path, &data, executable).map_err(tar_err)?
            }
            Body::Symlink { target } => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                builder
                    .append_link(&mut h, &path, &target)
                    .map_err(tar_err)?;
                entry(
                    path.clone(),
                    EntryKind::Symlink,
                    0o777,
                    0,
                    None,
                    Some(target),
                )
            }
        };
        entries.push(entry);
    }
    let tar = Spool::finish(builder).map_err(|e| ArchiveError::Tar {
        path: "(end of archive)".to_string(),
        reason: e.to_string(),
    })?;
    Ok((tar, Manifest { entries }))
}

fn file_entry(
    builder: &mut SpoolBuilder,
    path: &str,
    data: &[u8],
    executable: bool,
) -> io::Result<ManifestEntry> {
    let mode = if executable { 0o755 } else { 0o644 };
    let size = data.len() as u64;
    let mut h = header(tar::EntryType::Regular, mode, size);
    builder.append_data(&mut h, path, data)?;
    let digest = blake3::hash(data).to_hex().to_string();
    let mut e = entry(
        path.to_string(),
        EntryKind::File,
        mode,
        size,
        Some(digest),
        None,
    );
    e.sha256 = Some(sha256_hex(data));
    e.blake2b = Some(blake2b_hex(data));
    Ok(e)
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(data);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn blake2b_hex(data: &[u8]) -> String {
    use blake2::Digest;
    let digest = blake2::Blake2b::<blake2::digest::consts::U32>::digest(data);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn entry(
    path: String,
    kind: EntryKind,
    mode: u32,
    size: u64,
    blake3: Option<String>,
    target: Option<String>,
) -> ManifestEntry {
    ManifestEntry {
        path,
        kind,
        mode,
        size,
        blake3,
        target,
        sha256: None,
        blake2b: None,
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(FIXED_MTIME);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// Runs git in `repo`, returning stdout, or stderr (trimmed) when it fails.
fn git(repo: &Path, args: &[&str]) -> Result<Result<Vec<u8>, String>, ArchiveError> {
    let output = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        // Set when slipway runs from a git hook; they would override `-C`.
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .output()
        .map_err(|e| ArchiveError::GitSpawn {
            repo: repo.to_path_buf(),
            reason: io_reason(&e),
        })?;
    if output.status.success() {
        Ok(Ok(output.stdout))
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        Ok(Err(if stderr.is_empty() {
            format!("git exited with {}", output.status)
        } else {
            stderr
        }))
    }
}

fn resolve_commit(repo: &Path, reference: &str) -> Result<String, ArchiveError> {
    let bad_ref = |stderr: String| ArchiveError::BadRef {
        repo: repo.to_path_buf(),
        reference: reference.to_string(),
        stderr,
    };
    // A leading '-' would be read as an option by git.
    if reference.is_empty() || reference.starts_with('-') || reference.chars().any(char::is_control)
    {
        return Err(bad_ref(
            "a ref must be non-empty, must not start with '-' and must not contain control characters"
                .to_string(),
        ));
    }
    if let Err(stderr) = git(repo, &["rev-parse", "--git-dir"])? {
        return Err(ArchiveError::NotAGitRepo {
            path: repo.to_path_buf(),
            stderr,
        });
    }
    let spec = format!("{reference}^{{commit}}");
    let stdout = git(repo, &["rev-parse", "--verify", &spec])?.map_err(bad_ref)?;
    let sha = String::from_utf8_lossy(&stdout).trim().to_string();
    if sha.is_empty() || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad_ref(format!("git printed {sha:?} instead of a sha")));
    }
    Ok(sha)
}

fn read_git_archive(
    repo: &Path,
    commit: &str,
    excluded: &Gitignore,
) -> Result<(Vec<Node>, Vec<String>), ArchiveError> {
    let stream = git(repo, &["archive", "--format=tar", commit])?.map_err(|stderr| {
        ArchiveError::GitArchive {
            repo: repo.to_path_buf(),
            commit: commit.to_string(),
            stderr,
        }
    })?;
    let tar_err = |e: io::Error| ArchiveError::GitTar {
        commit: commit.to_string(),
        reason: e.to_string(),
    };
    let mut nodes = Vec::new();
    let mut skipped = Vec::new();
    let mut archive = tar::Archive::new(&stream[..]);
    for item in archive.entries().map_err(tar_err)? {
        let mut item = item.map_err(tar_err)?;
        let kind = item.header().entry_type();
        // git writes the commit id into a pax global header; it is not a file.
        if kind == tar::EntryType::XGlobalHeader {
            continue;
        }
        // Rebuilt from its components: git writes directories as "docs/", and
        // the matcher would not see "docs/" as the directory "docs".
        let raw_path: PathBuf = item
            .path()
            .map_err(tar_err)?
            .components()
            .filter(|c| *c != Component::CurDir)
            .collect();
        if raw_path.as_os_str().is_empty() {
            continue;
        }
        // git never writes these; checked before matching, which needs a
        // relative path.
        if !raw_path
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(ArchiveError::Tar {
                path: raw_path.to_string_lossy().into_owned(),
                reason: "not a plain relative path".to_string(),
            });
        }
        let is_dir = kind == tar::EntryType::Directory;
        if is_excluded(excluded, &raw_path, is_dir) {
            continue;
        }
        let path = utf8_path(&raw_path)?;
        let body = match kind {
            tar::EntryType::Directory => Body::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mode = item.header().mode().map_err(tar_err)?;
                let mut data = Vec::with_capacity(item.size() as usize);
                item.read_to_end(&mut data).map_err(tar_err)?;
                Body::Bytes {
                    data,
                    executable: mode & 0o100 != 0,
                }
            }
            tar::EntryType::Symlink => {
                let target = item.link_name().map_err(tar_err)?.ok_or_else(|| {
                    ArchiveError::BadSymlinkTarget {
                        path: path.clone(),
                        target: String::new(),
                        reason: "empty".to_string(),
                    }
                })?;
                Body::Symlink {
                    target: symlink_target(&path, &target)?,
                }
            }
            other => {
                skipped.push(format!("{path} (tar entry type {:?})", other));
                continue;
            }
        };
        nodes.push(Node { path, body });
    }
    Ok((nodes, skipped))
}

/// An io::Error as a lower-case phrase without the "(os error N)" suffix:
/// "permission denied", "no such file or directory". Errors from the directory
/// walk wrap the OS error with a long "IO error for operation on PATH" preamble
/// (the path is reported separately), so the OS error is dug out first.
fn io_reason(e: &io::Error) -> String {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cause {
        if let Some(code) = err
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
        {
            return plain(&io::Error::from_raw_os_error(code).to_string());
        }
        cause = match err.downcast_ref::<io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as _),
            None => err.source(),
        };
    }
    plain(&e.to_string())
}

fn plain(text: &str) -> String {
    let text = match text.find(" (os error ") {
        Some(i) => &text[..i],
        None => text,
    };
    let mut chars = text.chars();
    match (chars.next(), chars.clone().next()) {
        // "Permission denied" reads as a phrase; "IO error" keeps its capitals.
        (Some(first), Some(second)) if !second.is_uppercase() => {
            first.to_lowercase().chain(chars).collect()
        }
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn write(root: &Path, rel: &str, content: &str) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    fn chmod(root: &Path, rel: &str, mode: u32) {
        fs::set_permissions(root.join(rel), fs::Permissions::from_mode(mode)).unwrap();
    }

    fn dir_source(root: &Path, exclude: &[&str]) -> Source {
        Source::Dir {
            path: root.to_path_buf(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn git_source(repo: &Path, reference: &str, exclude: &[&str]) -> Source {
        Source::Git {
            repo: repo.to_path_buf(),
            reference: reference.to_string(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn paths(archive: &Archive) -> Vec<&str> {
        archive
            .manifest
            .entries
            .iter()
            .map(|e| e.path.as_str())
            .collect()
    }

    fn find<'a>(archive: &'a Archive, path: &str) -> &'a ManifestEntry {
        archive
            .manifest
            .entries
            .iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("{path} not in {:?}", paths(archive)))
    }

    /// Runs git hermetically: no user or system config, fixed identity and dates.
    fn git_cmd(dir: &Path, args: &[&str]) -> String {
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

    fn git_repo(root: &Path) {
        git_cmd(root, &["init", "-q"]);
    }

    fn commit_all(root: &Path, message: &str) -> String {
        git_cmd(root, &["add", "-A"]);
        git_cmd(root, &["commit", "-q", "-m", message]);
        git_cmd(root, &["rev-parse", "HEAD"])
    }

    /// The usual small app: a hook, a hidden file, a symlink, an ignored dir.
    fn sample_app(root: &Path) {
        write(root, "src/main.rs", "fn main() {}\n");
        write(root, "bin/build", "#!/bin/sh\necho building\n");
        chmod(root, "bin/build", 0o755);
        write(root, ".env.example", "DATABASE_URL=\n");
        write(root, ".gitignore", "/target/\n*.tmp\n");
        write(root, "target/debug/app", "binary");
        write(root, "notes.tmp", "scratch");
        symlink("src/main.rs", root.join("main-link")).unwrap();
    }

    #[test]
    fn gitignore_is_honoured_outside_a_git_repo() {
        let dir = tempfile::tempdir().unwrap();
        sample_app(dir.path());
        write(dir.path(), "docs/.ignore", "draft.md\n");
        write(dir.path(), "docs/draft.md", "wip");
        write(dir.path(), "docs/index.md", "hello");
        let archive = build(&dir_source(dir.path(), &[])).unwrap();
        let p = paths(&archive);
        assert!(!p.iter().any(|p| p.starts_with("target")), "{p:?}");
        assert!(!p.contains(&"notes.tmp"));
        assert!(!p.contains(&"docs/draft.md"));
        assert!(p.contains(&"docs/index.md"));
        assert!(p.contains(&".gitignore"));
    }

    #[test]
    fn exclude_patterns_drop_dirs_globs_and_anchored_paths() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "app.rs", "x");
        write(root, "build/out/deep/file.bin", "x");
        write(root, "log/today.log", "x");
        write(root, "sub/other.log", "x");
        write(root, "secret.txt", "x");
        write(root, "sub/secret.txt", "kept: the pattern is anchored");
        let archive = build(&dir_source(root, &["build/", "*.log", "/secret.txt"])).unwrap();
        assert_eq!(
            paths(&archive),
            ["app.rs", "log", "sub", "sub/secret.txt"],
            "excluded dirs vanish with their content; emptied dirs stay"
        );
    }

    #[test]
    fn a_negated_exclude_keeps_a_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.log", "x");
        write(dir.path(), "keep.log", "x");
        let archive = build(&dir_source(dir.path(), &["*.log", "!keep.log"])).unwrap();
        assert_eq!(paths(&archive), ["keep.log"]);
    }

    #[test]
    fn an_invalid_exclude_pattern_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a", "x");
        let err = build(&dir_source(dir.path(), &["src/[z-a].rs"])).unwrap_err();
        assert!(matches!(err, ArchiveError::BadExclude { .. }), "{err}");
        assert!(err.to_string().contains("src/[z-a].rs"), "{err}");
    }

    #[test]
    fn hidden_files_are_kept_and_dot_git_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        sample_app(dir.path());
        git_repo(dir.path());
        write(
            dir.path(),
            "vendor/lib/.git",
            "gitdir: ../../.git/modules/lib\n",
        );
        write(dir.path(), "vendor/lib/lib.rs", "x");
        let archive = build(&dir_source(dir.path(), &[])).unwrap();
        let p = paths(&archive);
        assert!(p.contains(&".env.example"), "{p:?}");
        assert!(p.contains(&"vendor/lib/lib.rs"), "{p:?}");
        assert!(
            !p.iter()
                .any(|p| p == &".git" || p.starts_with(".git/") || p.ends_with("/.git")),
            "{p:?}"
        );
    }

    #[test]
    fn the_executable_bit_survives_and_other_modes_are_normalised() {
        let dir = tempfile::tempdir().unwrap();
        sample_app(dir.path());
        write(dir.path(), "group-writable", "x");
        chmod(dir.path(), "group-writable", 0o664);
        write(dir.path(), "owner-exec-only", "x");
        chmod(dir.path(), "owner-exec-only", 0o700);
        let archive = build(&dir_source(dir.path(), &[])).unwrap();
        assert_eq!(find(&archive, "bin/build").mode, 0o755);
        assert_eq!(find(&archive, "src/main.rs").mode, 0o644);
        assert_eq!(find(&archive, "group-writable").mode, 0o644);
        assert_eq!(find(&archive, "owner-exec-only").mode, 0o755);
        assert_eq!(find(&archive, "bin").mode, 0o755);

        let out = tempfile::tempdir().unwrap();
        tar::Archive::new(archive.tar.reader())
            .unpack(out.path())
            .unwrap();
        let mode = fs::metadata(out.path().join("bin/build"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "bin/build unpacked as {mode:o}");
    }

    #[test]
    fn symlinks_stay_symlinks_even_when_they_leave_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        sample_app(dir.path());
        symlink("../shared/log", dir.path().join("log")).unwrap();
        symlink("/etc/hostname", dir.path().join("hostname")).unwrap();
        symlink("src", dir.path().join("code")).unwrap();
        let archive = build(&dir_source(dir.path(), &[])).unwrap();
        for (path, target) in [
            ("main-link", "src/main.rs"),
            ("log", "../shared/log"),
            ("hostname", "/etc/hostname"),
            ("code", "src"),
        ] {
            let e = find(&archive, path);
            assert_eq!(e.kind, EntryKind::Symlink, "{path}");
            assert_eq!(e.target.as_deref(), Some(target), "{path}");
            assert_eq!(e.blake3, None);
        }
        assert!(
            !paths(&archive).contains(&"code/main.rs"),
            "a symlinked dir is not followed"
        );

        let out = tempfile::tempdir().unwrap();
        tar::Archive::new(archive.tar.reader())
            .unpack(out.path())
            .unwrap();
        assert_eq!(
            fs::read_link(out.path().join("log")).unwrap(),
            Path::new("../shared/log")
        );
        assert_eq!(
            fs::read_link(out.path().join("main-link")).unwrap(),
            Path::new("src/main.rs")
        );
    }

    #[test]
    fn building_twice_gives_identical_bytes_whatever_the_mtimes() {
        let dir = tempfile::tempdir().unwrap();
        sample_app(dir.path());
        let first = build(&dir_source(dir.path(), &[])).unwrap();
        // Rewrite a file with the same content: new mtime, same archive.
        std::thread::sleep(std::time::Duration::from_millis(20));
        write(dir.path(), "src/main.rs", "fn main() {}\n");
        let second = build(&dir_source(dir.path(), &[])).unwrap();
        assert!(
            first.tar.to_vec().unwrap() == second.tar.to_vec().unwrap(),
            "tar streams differ"
        );
        assert_eq!(first.manifest, second.manifest);
        assert_eq!(first.manifest.digest(), second.manifest.digest());
        assert_eq!(first.revision, second.revision);
        assert!(first.revision.starts_with("blake3:"));
        assert_eq!(first.revision.len(), "blake3:".len() + 16);
        assert_eq!(
            first.revision,
            format!("blake3:{}", &first.manifest.digest()[..16])
        );
    }

    #[test]
    fn the_same_tree_elsewhere_gives_the_same_archive() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        sample_app(a.path());
        sample_app(b.path());
        let one = build(&dir_source(a.path(), &[])).unwrap();
        let two = build(&dir_source(b.path(), &[])).unwrap();
        assert!(one.tar.to_vec().unwrap() == two.tar.to_vec().unwrap());
        assert_eq!(one.revision, two.revision);
    }

    #[test]
    fn changing_one_file_changes_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        sample_app(dir.path());
        let before = build(&dir_source(dir.path(), &[])).unwrap();
        write(dir.path(), "src/main.rs", "fn main() { println!(); }\n");
        let after = build(&dir_source(dir.path(), &[])).unwrap();
        assert_ne!(before.manifest.digest(), after.manifest.digest());
        assert_ne!(before.revision, after.revision);
        chmod(dir.path(), "src/main.rs", 0o755);
        let exec = build(&dir_source(dir.path(), &[])).unwrap();
        assert_ne!(
            after.manifest.digest(),
            exec.manifest.digest(),
            "a mode change is a change"
        );
    }

    #[test]
    fn the_manifest_round_trips_through_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        sample_app(dir.path());
        let archive = build(&dir_source(dir.path(), &[])).unwrap();
        let text = archive.manifest.to_json_lines();
        assert_eq!(text.lines().count(), archive.manifest.entries.len());
        assert!(
            text.contains(r#"{"path":"bin/build","kind":"file","mode":493,"size":24,"blake3":""#),
            "{text}"
        );
        assert!(
            text.contains(r#"{"path":"main-link","kind":"symlink","mode":511,"size":0,"target":"src/main.rs"}"#),
            "{text}"
        );
        assert!(text.contains(r#"{"path":"src","kind":"dir","mode":493,"size":0}"#));
        // The host-check digests travel in their own lists, not in the manifest.
        assert!(
            !text.contains("sha256") && !text.contains("blake2b"),
            "{text}"
        );
        let back = Manifest::from_json_lines(&text).unwrap();
        let mut shipped = archive.manifest.clone();
        for e in &mut shipped.entries {
            e.sha256 = None;
            e.blake2b = None;
        }
        assert_eq!(back, shipped);
        assert_eq!(back.digest(), archive.manifest.digest());
        // A manifest written when it carried them still parses.
        let older = text.replacen(
            r#""kind":"file","mode":493,"size":24,"#,
            r#""kind":"file","mode":493,"size":24,"sha256":"00","#,
            1,
        );
        assert_eq!(
            Manifest::from_json_lines(&older).unwrap().entries.len(),
            back.entries.len()
        );
        assert_eq!(back.file_count(), 4); // .env.example .gitignore bin/build src/main.rs
        assert_eq!(
            back.total_bytes(),
            [
                "DATABASE_URL=\n",
                "/target/\n*.tmp\n",
                "#!/bin/sh\necho building\n",
                "fn main() {}\n"
            ]
            .iter()
            .map(|s| s.len() as u64)
            .sum::<u64>()
        );
    }

    #[test]
    fn a_corrupt_or_hostile_manifest_is_refused() {
        let hash = "a".repeat(64);
        let ok = format!(r#"{{"path":"a","kind":"file","mode":420,"size":1,"blake3":"{hash}"}}"#);
        assert!(Manifest::from_json_lines(&ok).is_ok());
        for (text, expect) in [
            ("not json".to_string(), "line 1"),
            (format!("{ok}\n{ok}"), "line 2: \"a\" is out of order"),
            (ok.replace("\"a\"", "\"../etc\""), "../etc"),
            (ok.replace("\"a\"", "\"/etc\""), "/etc"),
            (ok.replace("\"a\"", "\"a\\nb\""), "control character"),
            (
                ok.replace(&format!(",\"blake3\":\"{hash}\""), ""),
                "lacks a blake3",
            ),
            (
                r#"{"path":"l","kind":"symlink","mode":511,"size":0}"#.to_string(),
                "lacks a target",
            ),
            (ok.replace("file", "fifo"), "unknown variant"),
        ] {
            let err = Manifest::from_json_lines(&text).unwrap_err().to_string();
            assert!(err.contains(expect), "{text}: {err}");
        }
    }

    #[test]
    fn unpacking_the_tar_reproduces_the_files() {
        let dir = tempfile::tempdir().unwrap();
        sample_app(dir.path());
        let long = "d".repeat(120);
        write(dir.path(), &format!("{long}/{long}.txt"), "long path");
        symlink("t".repeat(150), dir.path().join("long-target")).unwrap();
        fs::create_dir(dir.path().join("empty")).unwrap();
        let archive = build(&dir_source(dir.path(), &[])).unwrap();

        let out = tempfile::tempdir().unwrap();
        tar::Archive::new(archive.tar.reader())
            .unpack(out.path())
            .unwrap();
        let rebuilt = build(&dir_source(out.path(), &[])).unwrap();
        // The copy has no target/ and notes.tmp, so .gitignore changes nothing.
        assert_eq!(rebuilt.manifest, archive.manifest);
        assert!(rebuilt.tar.to_vec().unwrap() == archive.tar.to_vec().unwrap());
        assert_eq!(
            fs::read_to_string(out.path().join(format!("{long}/{long}.txt"))).unwrap(),
            "long path"
        );
        assert!(out.path().join("empty").is_dir());
    }

    #[test]
    fn git_source_archives_the_commit_not_the_dirty_work_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        sample_app(root);
        git_repo(root);
        let sha = commit_all(root, "first");
        write(root, "src/main.rs", "uncommitted edit\n");
        write(root, "untracked.rs", "x");

        let archive = build(&git_source(root, "HEAD", &[])).unwrap();
        assert_eq!(archive.revision, sha);
        let out = tempfile::tempdir().unwrap();
        tar::Archive::new(archive.tar.reader())
            .unpack(out.path())
            .unwrap();
        assert_eq!(
            fs::read_to_string(out.path().join("src/main.rs")).unwrap(),
            "fn main() {}\n"
        );
        assert!(!out.path().join("untracked.rs").exists());
        assert!(
            !out.path().join("target").exists(),
            "ignored, never committed"
        );
        assert_eq!(find(&archive, "bin/build").mode, 0o755);
        assert_eq!(
            find(&archive, "main-link").target.as_deref(),
            Some("src/main.rs")
        );

        // By branch name and by sha, too.
        let branch = git_cmd(root, &["rev-parse", "--abbrev-ref", "HEAD"]);
        assert_eq!(
            build(&git_source(root, &branch, &[])).unwrap().revision,
            sha
        );
        assert_eq!(
            build(&git_source(root, &sha[..10], &[])).unwrap().revision,
            sha
        );
    }

    #[test]
    fn git_and_dir_sources_of_the_same_tree_give_the_same_archive() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        sample_app(root);
        fs::remove_dir_all(root.join("target")).unwrap();
        fs::remove_file(root.join("notes.tmp")).unwrap();
        git_repo(root);
        commit_all(root, "first");
        let exclude = ["*.example"];
        let from_dir = build(&dir_source(root, &exclude)).unwrap();
        let from_git = build(&git_source(root, "HEAD", &exclude)).unwrap();
        assert_eq!(from_git.manifest, from_dir.manifest);
        assert!(from_git.tar.to_vec().unwrap() == from_dir.tar.to_vec().unwrap());
        assert!(!paths(&from_git).contains(&".env.example"));
    }

    #[test]
    fn a_git_source_in_a_subdirectory_archives_that_subdirectory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "README.md", "monorepo");
        write(root, "services/api/main.rs", "api");
        git_repo(root);
        let sha = commit_all(root, "first");
        let api = root.join("services/api");
        let from_git = build(&git_source(&api, "HEAD", &[])).unwrap();
        assert_eq!(paths(&from_git), ["main.rs"]);
        assert_eq!(from_git.revision, sha);
        let from_dir = build(&dir_source(&api, &[])).unwrap();
        assert!(from_git.tar.to_vec().unwrap() == from_dir.tar.to_vec().unwrap());
    }

    #[test]
    fn git_source_applies_excludes_to_whole_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "app.rs", "x");
        write(root, "docs/a/b.md", "x");
        write(root, "secret.txt", "x");
        git_repo(root);
        commit_all(root, "first");
        let archive = build(&git_source(root, "HEAD", &["docs/", "/secret.txt"])).unwrap();
        assert_eq!(paths(&archive), ["app.rs"]);
    }

    #[test]
    fn a_bad_ref_is_refused_with_gits_message() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a", "x");
        git_repo(dir.path());
        commit_all(dir.path(), "first");
        let err = build(&git_source(dir.path(), "no-such-branch", &[])).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ArchiveError::BadRef { .. }), "{text}");
        assert!(text.contains("\"no-such-branch\""), "{text}");
        assert!(text.contains("fatal:"), "git's stderr is included: {text}");

        let err = build(&git_source(dir.path(), "--output=/tmp/x", &[])).unwrap_err();
        assert!(matches!(err, ArchiveError::BadRef { .. }), "{err}");
    }

    #[test]
    fn a_directory_that_is_not_a_repo_is_refused_for_a_git_source() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a", "x");
        let err = build(&git_source(dir.path(), "HEAD", &[])).unwrap_err();
        assert!(matches!(err, ArchiveError::NotAGitRepo { .. }), "{err}");
        assert!(err.to_string().contains("is not a git repository"), "{err}");
    }

    #[test]
    fn a_missing_or_non_directory_source_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = build(&dir_source(&missing, &[])).unwrap_err();
        assert!(matches!(err, ArchiveError::SourceMissing { .. }), "{err}");
        assert!(
            err.to_string()
                .ends_with("nope does not exist (check [source] path)")
        );

        write(dir.path(), "file", "x");
        let err = build(&dir_source(&dir.path().join("file"), &[])).unwrap_err();
        assert!(matches!(err, ArchiveError::NotADirectory { .. }), "{err}");
        let err = build(&git_source(&missing, "HEAD", &[])).unwrap_err();
        assert!(matches!(err, ArchiveError::SourceMissing { .. }), "{err}");
    }

    #[test]
    fn reserved_names_are_refused_unless_excluded() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "app.rs", "x");
        write(dir.path(), ".slipway/release.json", "{}");
        let err = build(&dir_source(dir.path(), &[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "source contains .slipway/, which slipway writes into each release; \
             rename it or add it to [source] exclude"
        );
        assert!(build(&dir_source(dir.path(), &[".slipway/"])).is_ok());

        write(dir.path(), "REVISION", "abc");
        let err = build(&dir_source(dir.path(), &[".slipway/"])).unwrap_err();
        assert!(
            err.to_string().starts_with("source contains REVISION,"),
            "{err}"
        );
        // Only at the top: a nested one is the app's own business.
        fs::remove_file(dir.path().join("REVISION")).unwrap();
        write(dir.path(), "sub/REVISION", "abc");
        write(dir.path(), "sub/.slipway/x", "abc");
        fs::remove_dir_all(dir.path().join(".slipway")).unwrap();
        let archive = build(&dir_source(dir.path(), &[])).unwrap();
        assert!(paths(&archive).contains(&"sub/.slipway/x"));
        assert!(paths(&archive).contains(&"sub/REVISION"));
    }

    #[test]
    fn an_empty_source_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        write(dir.path(), "x.log", "x");
        let err = build(&dir_source(dir.path(), &["*.log"])).unwrap_err();
        assert!(matches!(err, ArchiveError::Empty { .. }), "{err}");
        assert!(err.to_string().contains("holds no files"), "{err}");
    }

    #[test]
    fn special_files_are_skipped_and_listed() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "app.rs", "x");
        fs::create_dir(dir.path().join("tmp")).unwrap();
        let _listener =
            std::os::unix::net::UnixListener::bind(dir.path().join("tmp/dev.sock")).unwrap();
        let archive = build(&dir_source(dir.path(), &[])).unwrap();
        assert_eq!(archive.skipped, ["tmp/dev.sock (socket)"]);
        assert_eq!(paths(&archive), ["app.rs", "tmp"]);
    }

    #[test]
    fn control_characters_and_non_utf8_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "app.rs", "x");
        write(dir.path(), "bad\nname", "x");
        let err = build(&dir_source(dir.path(), &[])).unwrap_err();
        assert!(
            matches!(err, ArchiveError::ControlCharInPath { .. }),
            "{err}"
        );
        assert!(err.to_string().contains(r#""bad\nname""#), "{err}");
        fs::remove_file(dir.path().join("bad\nname")).unwrap();

        let name = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
        fs::write(dir.path().join(name), "x").unwrap();
        let err = build(&dir_source(dir.path(), &[])).unwrap_err();
        assert!(matches!(err, ArchiveError::NonUtf8Path { .. }), "{err}");
        assert!(err.to_string().contains("caf\u{fffd}.txt"), "{err}");
        // ... and can be excluded.
        assert!(build(&dir_source(dir.path(), &["caf*.txt"])).is_ok());
    }

    #[test]
    fn an_unreadable_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "src/x.rs", "x");
        chmod(dir.path(), "src/x.rs", 0o000);
        if fs::read(dir.path().join("src/x.rs")).is_ok() {
            eprintln!("skipped: running as root, permissions are not enforced");
            return;
        }
        let err = build(&dir_source(dir.path(), &[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "source: cannot read src/x.rs: permission denied"
        );
    }

    #[test]
    fn io_errors_read_as_plain_phrases() {
        assert_eq!(
            io_reason(&io::Error::from_raw_os_error(13)),
            "permission denied"
        );
        assert_eq!(
            io_reason(&io::Error::from_raw_os_error(2)),
            "no such file or directory"
        );
        let wrapped = io::Error::new(
            io::ErrorKind::PermissionDenied,
            io::Error::from_raw_os_error(13),
        );
        assert_eq!(io_reason(&wrapped), "permission denied");
        assert_eq!(
            io_reason(&io::Error::other("IO error here")),
            "IO error here"
        );
    }

    #[test]
    fn a_broken_gitignore_line_stops_the_build() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "app.rs", "x");
        write(dir.path(), ".gitignore", "ok.txt\nsecret[z-a].txt\n");
        let err = build(&dir_source(dir.path(), &[])).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("source: cannot read "), "{text}");
        assert!(text.contains(".gitignore"), "{text}");
        assert!(text.contains("line 2"), "{text}");
    }
}
