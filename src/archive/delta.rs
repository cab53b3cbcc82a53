//! Incremental uploads: which files of a new release a host already has in its current
//! release (those are hard-linked on the host, one command for all of them), and the
//! tar stream of the rest.

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use super::assemble::append_symlink;
use super::manifest::{EntryKind, Manifest, ManifestEntry};
use super::spool::Spool;

// Reachable as `delta::Digest` and `delta::check_list` too, where they lived before.
pub use super::digest::Digest;
pub use super::manifest::check_list;

/// What to send to a host whose current release has the manifest `old`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Delta {
    /// Files identical in path, content and mode: hard-linked from the previous release.
    pub link: Vec<String>,
    /// Paths that travel in the tar stream: new and changed files, every directory and
    /// symlink (cheap, and they carry their own modes and targets).
    pub send: BTreeSet<String>,
}

/// Compares manifests. Paths under a shared file or dir are never linked: the release
/// replaces them with links into `shared/`, so the previous release's copy is not the
/// source file.
pub fn delta(new: &Manifest, old: &Manifest, shared: &[String]) -> Delta {
    let before: BTreeMap<&str, &ManifestEntry> =
        old.entries.iter().map(|e| (e.path.as_str(), e)).collect();
    let mut out = Delta::default();
    for e in &new.entries {
        let unchanged = e.kind == EntryKind::File
            && !is_shared(&e.path, shared)
            && before.get(e.path.as_str()).is_some_and(|o| {
                o.kind == EntryKind::File
                    && o.mode == e.mode
                    && o.blake3 == e.blake3
                    && o.size == e.size
            });
        if unchanged {
            out.link.push(e.path.clone());
        } else {
            out.send.insert(e.path.clone());
        }
    }
    out
}

fn is_shared(path: &str, shared: &[String]) -> bool {
    shared.iter().any(|s| {
        path == s
            || path
                .strip_prefix(s.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// The entries of `tar` whose paths are in `send`, spooled as a tar stream of their own
/// (slipway's own files are appended after its body).
pub fn filter_tar(tar: &Spool, send: &BTreeSet<String>) -> io::Result<Spool> {
    let mut archive = tar::Archive::new(tar.reader());
    let mut builder = Spool::builder()?;
    for entry in archive.entries_with_seek()? {
        let mut entry = entry?;
        let path = entry
            .path()?
            .to_string_lossy()
            .trim_end_matches('/')
            .to_string();
        if !send.contains(&path) {
            continue;
        }
        let mut header = entry.header().clone();
        match entry.header().entry_type() {
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                append_symlink(&mut builder, &mut header, &path, &target)?;
            }
            _ => builder.append_data(&mut header, &path, &mut entry)?,
        }
    }
    Spool::finish(builder)
}

/// `sha256sum -c` / `b2sum -c` input for the files of the manifest that travel in an
/// incremental upload (all but the linked ones).
pub fn check_list_sent(manifest: &Manifest, delta: &Delta, digest: Digest) -> String {
    let sent = Manifest {
        entries: manifest
            .entries
            .iter()
            .filter(|e| delta.send.contains(&e.path))
            .cloned()
            .collect(),
    };
    check_list(&sent, digest)
}

/// `size<TAB>path` for every linked file (paths never contain a tab: the archive refuses
/// control characters).
pub fn size_list_linked(manifest: &Manifest, delta: &Delta) -> String {
    let linked: BTreeSet<&str> = delta.link.iter().map(String::as_str).collect();
    let mut s = String::new();
    for e in manifest
        .entries
        .iter()
        .filter(|e| linked.contains(e.path.as_str()))
    {
        s.push_str(&format!("{}\t{}\n", e.size, e.path));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::test_support::{dir, file};
    use std::io::Read;

    #[test]
    fn unchanged_files_are_linked_the_rest_is_sent() {
        let old = Manifest {
            entries: vec![
                dir("a"),
                file("a/same", "1", 0o644),
                file("a/changed", "1", 0o644),
                file("a/mode", "1", 0o644),
                file("gone", "1", 0o644),
            ],
        };
        let new = Manifest {
            entries: vec![
                dir("a"),
                file("a/same", "1", 0o644),
                file("a/changed", "2", 0o644),
                file("a/mode", "1", 0o755),
                file("a/new", "1", 0o644),
            ],
        };
        let d = delta(&new, &old, &[]);
        assert_eq!(d.link, vec!["a/same"]);
        assert_eq!(
            d.send.iter().cloned().collect::<Vec<_>>(),
            vec!["a", "a/changed", "a/mode", "a/new"]
        );
        assert_eq!(size_list_linked(&new, &d), "1\ta/same\n");
    }

    #[test]
    fn files_under_shared_paths_are_never_linked() {
        let old = Manifest {
            entries: vec![
                file("log/.keep", "1", 0o644),
                file("logs", "1", 0o644),
                file(".env", "1", 0o644),
            ],
        };
        let d = delta(&old, &old, &["log".into(), ".env".into()]);
        assert_eq!(d.link, vec!["logs"]);
    }

    #[test]
    fn filter_tar_keeps_only_the_named_entries() {
        let mut b = Spool::builder().unwrap();
        for (p, data) in [("a", "1"), ("b", "22")] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, p, data.as_bytes()).unwrap();
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "l", "a").unwrap();
        let full = Spool::finish(b).unwrap();
        let send: BTreeSet<String> = ["b".to_string(), "l".to_string()].into();
        let out = filter_tar(&full, &send).unwrap();
        let mut names = Vec::new();
        for e in tar::Archive::new(out.reader()).entries().unwrap() {
            let mut e = e.unwrap();
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            names.push((e.path().unwrap().to_string_lossy().into_owned(), s));
        }
        assert_eq!(
            names,
            vec![
                ("b".to_string(), "22".to_string()),
                ("l".to_string(), String::new())
            ]
        );
    }
}
