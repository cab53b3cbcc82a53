//! Where the application source comes from, and what both kinds of source share: the
//! source directory must exist, and the `exclude` patterns (gitignore syntax) apply to
//! both; a pattern that matches a directory drops everything under it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use super::error::{ArchiveError, io_reason};

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

pub(super) fn exclude_matcher(patterns: &[String]) -> Result<Gitignore, ArchiveError> {
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

pub(super) fn is_excluded(excluded: &Gitignore, rel: &Path, is_dir: bool) -> bool {
    excluded
        .matched_path_or_any_parents(rel, is_dir)
        .is_ignore()
}

/// Checks that `path` is a directory and returns it in canonical form (so the
/// walk's paths strip cleanly and a symlinked source dir is followed once).
pub(super) fn source_dir(path: &Path) -> Result<PathBuf, ArchiveError> {
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

#[cfg(test)]
mod tests {
    use crate::archive::build;
    use crate::archive::error::ArchiveError;
    use crate::archive::test_support::{dir_source, git_source, paths, write};

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
}
