//! A directory source: the walk that collects its entries.
//!
//! The walk honours what git would ignore: `.gitignore` and `.ignore` files in the
//! tree and its parents, `.git/info/exclude` and the global excludes file, also
//! outside a git repository. The archive then never holds what `git status` calls
//! ignored (often secrets such as `.env`); the price is that two machines with
//! different global excludes can build different archives, which the content-based
//! revision makes visible.
//!
//! Special files (sockets, fifos, devices) are refused, naming them: a release cannot
//! carry them, and leaving one out silently would ship a release that differs from its
//! source. A runtime artefact (a dev server's socket in `tmp/`) is excluded once, in
//! `.gitignore` or `[source] exclude`.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use ignore::gitignore::Gitignore;

use super::error::{ArchiveError, io_reason};
use super::node::{Body, Node, symlink_target, utf8_path};
use super::source::is_excluded;

pub(super) fn walk_dir(root: &Path, excluded: &Gitignore) -> Result<Vec<Node>, ArchiveError> {
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
            return Err(ArchiveError::SpecialFile { path, what });
        };
        nodes.push(Node { path, body });
    }
    Ok(nodes)
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

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::symlink;
    use std::path::Path;

    use crate::archive::build;
    use crate::archive::error::ArchiveError;
    use crate::archive::manifest::EntryKind;
    use crate::archive::test_support::{dir_source, find, git_repo, paths, sample_app, write};

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
    fn special_files_are_refused_naming_them_unless_excluded() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "app.rs", "x");
        fs::create_dir(dir.path().join("tmp")).unwrap();
        let _listener =
            std::os::unix::net::UnixListener::bind(dir.path().join("tmp/dev.sock")).unwrap();
        let err = build(&dir_source(dir.path(), &[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "source: tmp/dev.sock is a socket, which a release cannot carry \
             (remove it, or add it to [source] exclude or .gitignore)"
        );
        let archive = build(&dir_source(dir.path(), &["*.sock"])).unwrap();
        assert_eq!(paths(&archive), ["app.rs", "tmp"]);

        let fifo = dir.path().join("tmp/queue");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let err = build(&dir_source(dir.path(), &["*.sock"])).unwrap_err();
        assert!(
            matches!(err, ArchiveError::SpecialFile { what: "fifo", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("tmp/queue is a fifo"), "{err}");
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
        assert!(
            err.to_string().contains(r#"path "caf\xe9.txt" is not"#),
            "{err}"
        );
        // ... and can be excluded.
        assert!(build(&dir_source(dir.path(), &["caf*.txt"])).is_ok());
    }

    #[test]
    fn paths_up_to_4000_bytes_are_carried_and_longer_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        // 15 names of 250 bytes and one of 235: 4,000 bytes with the slashes.
        let parent = vec!["d".repeat(250); 15].join("/");
        let fits = format!("{parent}/{}", "f".repeat(235));
        assert_eq!(fits.len(), 4000);
        write(dir.path(), &fits, "deep");
        let archive = build(&dir_source(dir.path(), &[])).unwrap();
        assert!(paths(&archive).contains(&fits.as_str()));

        let long = format!("{parent}/{}", "g".repeat(236));
        write(dir.path(), &long, "deeper");
        let err = build(&dir_source(dir.path(), &[])).unwrap_err();
        assert!(
            matches!(err, ArchiveError::PathTooLong { bytes: 4001, .. }),
            "{err}"
        );
        assert!(err.to_string().contains(&long), "{err}");
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
