//! What a release holds, entry by entry: the manifest written into every release as
//! `.slipway/manifest.jsonl`, its digest (recorded with the release), the checks a
//! manifest read back from a host must pass before an incremental upload trusts it,
//! and the lists hosts check the release's files with.

use serde::{Deserialize, Serialize};

use super::digest::{Digest, blake3_hex};
use super::error::ArchiveError;

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

/// The digest a release records for its manifest: blake3 of the manifest's text, as
/// written. A manifest read back from a host is checked against it byte for byte.
pub fn digest_of(json_lines: &str) -> String {
    blake3_hex(json_lines.as_bytes())
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

    /// Checks that no `[shared]` path lies under a symlink or a file of the release.
    /// The hosts replace each shared path of a new release by a link into `shared/`
    /// (removing what the release has there first); under a symlink such as
    /// `log -> /var/log`, `log/app` would be removed and linked outside the release.
    pub fn check_shared(&self, shared: &[String]) -> Result<(), ArchiveError> {
        let by_path: std::collections::BTreeMap<&str, &ManifestEntry> =
            self.entries.iter().map(|e| (e.path.as_str(), e)).collect();
        for s in shared {
            let s = s.trim_matches('/');
            for (i, _) in s.match_indices('/') {
                let parent = &s[..i];
                let Some(entry) = by_path.get(parent) else {
                    continue;
                };
                let (what, target) = match entry.kind {
                    EntryKind::Dir => continue,
                    EntryKind::File => ("file", String::new()),
                    EntryKind::Symlink => (
                        "symlink",
                        format!(" (-> {})", entry.target.as_deref().unwrap_or_default()),
                    ),
                };
                return Err(ArchiveError::SharedUnderNonDir {
                    shared: s.to_string(),
                    path: parent.to_string(),
                    what,
                    target,
                });
            }
        }
        Ok(())
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

/// `sha256sum -c` / `b2sum -l 256 -c` input for every file of the manifest. A name with
/// a backslash is written in coreutils' escaped form (a leading `\`, the backslash
/// doubled); a file named `-` at the top as `./-` (coreutils reads `-` as stdin).
pub fn check_list(manifest: &Manifest, digest: Digest) -> String {
    let mut s = String::new();
    for e in &manifest.entries {
        let hash = match digest {
            Digest::Sha256 => e.sha256.as_ref(),
            Digest::Blake2b => e.blake2b.as_ref(),
        };
        if let (EntryKind::File, Some(hash)) = (e.kind, hash) {
            if e.path == "-" {
                // The checkers read a file named `-` as their stdin: `./-` is the file.
                s.push_str(&format!("{hash}  ./-\n"));
            } else if e.path.contains('\\') {
                s.push_str(&format!("\\{hash}  {}\n", e.path.replace('\\', "\\\\")));
            } else {
                s.push_str(&format!("{hash}  {}\n", e.path));
            }
        }
    }
    s
}

/// The longest path a release may hold, in bytes. Hosts limit a whole path to 4,095
/// bytes (PATH_MAX); every command slipway runs there reaches a release's files by a
/// path relative to a release directory (`../ID.partial/` and the like, under 30 bytes),
/// so 4,000 leaves room on any host, whatever `deploy_to` is.
pub const MAX_PATH_BYTES: usize = 4000;

/// A manifest path: non-empty, relative, no `.`/`..`/empty segments, no control
/// characters (they would break the JSON-lines file's readers and remote shell
/// commands downstream), at most [`MAX_PATH_BYTES`].
pub(super) fn check_path(path: &str) -> Result<(), ArchiveError> {
    if path.len() > MAX_PATH_BYTES {
        return Err(ArchiveError::PathTooLong {
            path: path.to_string(),
            bytes: path.len(),
        });
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::build;
    use crate::archive::test_support::{dir, dir_source, file, sample_app};

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
    fn a_shared_path_under_a_symlink_or_a_file_of_the_release_is_refused() {
        let mut link = dir("log");
        link.kind = EntryKind::Symlink;
        link.target = Some("/var/log".into());
        let m = Manifest {
            entries: vec![dir("config"), file("config/app.yml", "1", 0o644), link],
        };
        assert!(
            m.check_shared(&["log".into(), "config/db.yml".into(), "tmp/pids".into()])
                .is_ok()
        );
        let err = m.check_shared(&["log/app".into()]).unwrap_err().to_string();
        assert_eq!(
            err,
            "source: [shared] path log/app lies under the symlink log of the source (-> /var/log): \
             linking it on the hosts would write through it (remove log from the source, or change [shared])"
        );
        let err = m
            .check_shared(&["config/app.yml/x".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("lies under the file config/app.yml of the source:"),
            "{err}"
        );
    }

    #[test]
    fn check_lists_escape_backslashes() {
        let m = Manifest {
            entries: vec![
                file("-", "0", 0o644),
                file("a b", "1", 0o644),
                file("x\\y", "2", 0o644),
                dir("d"),
                file("d/-", "3", 0o644),
            ],
        };
        assert_eq!(
            check_list(&m, Digest::Sha256),
            "s0  ./-\ns1  a b\n\\s2  x\\\\y\ns3  d/-\n"
        );
        assert_eq!(
            check_list(&m, Digest::Blake2b),
            "b0  ./-\nb1  a b\n\\b2  x\\\\y\nb3  d/-\n"
        );
    }
}
