//! Every way building the archive or reading a manifest back can fail, each with what
//! the user can do about it; and how an I/O error reads inside those messages.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("source: {} does not exist (check [source] path)", .path.display())]
    SourceMissing { path: PathBuf },
    #[error("source: {} is not a directory (check [source] path)", .path.display())]
    NotADirectory { path: PathBuf },
    #[error("source: cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    /// `path` is shown escaped (`caf\xe9.txt`): the manifest is JSON and carries names
    /// as UTF-8 text only.
    #[error(
        "source: path \"{path}\" is not valid UTF-8, which a release cannot carry (rename it, or add it to [source] exclude)"
    )]
    NonUtf8Path { path: String },
    #[error(
        "source: {path} is a {what}, which a release cannot carry (remove it, or add it to [source] exclude or .gitignore)"
    )]
    SpecialFile { path: String, what: &'static str },
    #[error(
        "source: path {path:?} contains a newline or control character (rename it, or add it to [source] exclude)"
    )]
    ControlCharInPath { path: String },
    #[error(
        "source: path {path} is {bytes} bytes long, more than the 4000 a release path may have (hosts limit a whole path to 4095 bytes); shorten it, or add it to [source] exclude"
    )]
    PathTooLong { path: String, bytes: usize },
    /// `target` is shown escaped, like a path that is not UTF-8.
    #[error(
        "source: symlink {path} has an unusable target \"{target}\": {reason} (change the link, or add it to [source] exclude)"
    )]
    BadSymlinkTarget {
        path: String,
        target: String,
        reason: String,
    },
    #[error(
        "source: [shared] path {shared} lies under the {what} {path} of the source{target}: linking it on the hosts would write through it (remove {path} from the source, or change [shared])"
    )]
    SharedUnderNonDir {
        shared: String,
        path: String,
        what: &'static str,
        /// ` (-> TARGET)` for a symlink, empty otherwise.
        target: String,
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

/// An io::Error as a lower-case phrase without the "(os error N)" suffix:
/// "permission denied", "no such file or directory". Errors from the directory
/// walk wrap the OS error with a long "IO error for operation on PATH" preamble
/// (the path is reported separately), so the OS error is dug out first.
pub(super) fn io_reason(e: &io::Error) -> String {
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
}
