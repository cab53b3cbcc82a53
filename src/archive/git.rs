//! A git source: exactly what `git archive` emits for the commit (so `export-ignore`
//! attributes apply, `.gitignore` does not, submodule contents are absent; `repo` may
//! be a subdirectory of a work tree, and then only that subdirectory is archived, as
//! `git archive` does). The ref is resolved to a commit first and the archive made
//! from that sha, so a ref that moves in between cannot mix two commits.

use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use ignore::gitignore::Gitignore;

use super::error::{ArchiveError, io_reason};
use super::node::{Body, Node, symlink_target, utf8_path};
use super::source::is_excluded;

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

pub(super) fn resolve_commit(repo: &Path, reference: &str) -> Result<String, ArchiveError> {
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

pub(super) fn read_git_archive(
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

#[cfg(test)]
mod tests {
    use std::fs;

    use crate::archive::build;
    use crate::archive::error::ArchiveError;
    use crate::archive::test_support::{
        commit_all, dir_source, find, git_cmd, git_repo, git_source, paths, sample_app, write,
    };

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
}
