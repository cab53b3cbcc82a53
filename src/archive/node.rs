//! One entry on its way from a source into the archive, and the checks that make a
//! walked path or a symlink's target fit for the manifest.
//!
//! Symlinks are archived as symlinks, never followed. Targets outside the tree
//! (`../shared/log`) and absolute targets (`/var/log/app`) are kept as they are:
//! pointing into shared or system paths is the normal shape of a release.

use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::error::ArchiveError;
use super::manifest::check_path;

/// One entry on its way into the archive.
pub(super) struct Node {
    pub(super) path: String,
    pub(super) body: Body,
}

pub(super) enum Body {
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

/// The relative path as a `/`-separated string, or why it cannot be one.
pub(super) fn utf8_path(rel: &Path) -> Result<String, ArchiveError> {
    let mut parts: Vec<&str> = Vec::new();
    for component in rel.components() {
        match component {
            Component::Normal(part) => match part.to_str() {
                Some(s) => parts.push(s),
                None => {
                    return Err(ArchiveError::NonUtf8Path {
                        path: escaped(rel.as_os_str().as_bytes()),
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

pub(super) fn symlink_target(path: &str, target: &Path) -> Result<String, ArchiveError> {
    let bad = |reason: &str| ArchiveError::BadSymlinkTarget {
        path: path.to_string(),
        target: escaped(target.as_os_str().as_bytes()),
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

/// A name as bytes, shown the way Rust shows a string (`\n`, `\"`, `\\`), with each byte
/// that is not part of valid UTF-8 as `\xNN`: what a user needs to find the file, when
/// the name cannot be printed as it is.
pub(super) fn escaped(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        out.extend(chunk.valid().chars().flat_map(char::escape_debug));
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escaped;

    #[test]
    fn names_that_cannot_be_printed_are_escaped() {
        assert_eq!(escaped(b"caf\xe9.txt"), r"caf\xe9.txt");
        assert_eq!(
            escaped(b"a\nb \"q\" \\ \xff\xfe"),
            r#"a\nb \"q\" \\ \xff\xfe"#
        );
        assert_eq!(
            escaped("d\u{e9}j\u{e0}/\u{1F600}".as_bytes()),
            "d\u{e9}j\u{e0}/\u{1F600}"
        );
    }
}
