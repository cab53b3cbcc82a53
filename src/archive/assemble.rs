//! The deterministic tar writer: every entry of the source, sorted by path, written
//! into the spooled tar stream while the files are hashed into the [`Manifest`].
//!
//! Modes are normalised the way git and tar's `HeaderMode::Deterministic` do:
//! directories 0755, files 0755 if the owner may execute them (hooks such as
//! `bin/build` must stay executable) and 0644 otherwise, symlinks 0777. Group and
//! other write bits, setuid and sticky bits are not carried: they would make the
//! archive depend on the builder's umask, and setuid bits have no place in a deploy.
//! Owners are 0 and mtimes a fixed date.

use std::fs;
use std::io::{self, Read};
use std::path::Path;

use super::digest::FileDigests;
use super::error::{ArchiveError, io_reason};
use super::manifest::{EntryKind, Manifest, ManifestEntry};
use super::node::{Body, Node};
use super::spool::{Spool, SpoolBuilder};

/// The mtime of every entry: the one tar's `HeaderMode::Deterministic` uses
/// (not 0, which some tools mishandle).
const FIXED_MTIME: u64 = 1_153_704_088;

/// Sorts and checks the entries, then writes the tar and the manifest in one
/// pass, so every file is read and hashed exactly once.
pub(super) fn assemble(
    mut nodes: Vec<Node>,
    source: &Path,
) -> Result<(Spool, Manifest), ArchiveError> {
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
            Body::Disk { file, executable } => disk_entry(&mut builder, &path, &file, executable)?,
            Body::Bytes { data, executable } => {
                let size = data.len() as u64;
                file_entry(&mut builder, &path, &data[..], size, executable)?
            }
            Body::Symlink { target } => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                append_symlink(&mut builder, &mut h, &path, target.as_bytes()).map_err(tar_err)?;
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

/// A file on disk, streamed into the archive (never held whole in memory). A file
/// that changes size while it is read is refused: the archive would not be what the
/// manifest says.
fn disk_entry(
    builder: &mut SpoolBuilder,
    path: &str,
    file: &Path,
    executable: bool,
) -> Result<ManifestEntry, ArchiveError> {
    let read_err = |e: io::Error| ArchiveError::Read {
        path: path.to_string(),
        reason: io_reason(&e),
    };
    let mut handle = fs::File::open(file).map_err(read_err)?;
    let size = handle.metadata().map_err(read_err)?.len();
    let entry = file_entry(builder, path, (&mut handle).take(size), size, executable)?;
    let mut more = [0u8; 1];
    if handle.read(&mut more).map_err(read_err)? != 0 {
        return Err(changed(path, size));
    }
    Ok(entry)
}

fn changed(path: &str, size: u64) -> ArchiveError {
    ArchiveError::Read {
        path: path.to_string(),
        reason: format!(
            "it changed while being archived (it had {size} bytes when the archive began \
             writing it); deploy again once it stops changing, or add it to [source] exclude"
        ),
    }
}

/// Writes `size` bytes of `data` as one file, hashing them on the way.
fn file_entry(
    builder: &mut SpoolBuilder,
    path: &str,
    data: impl Read,
    size: u64,
    executable: bool,
) -> Result<ManifestEntry, ArchiveError> {
    let mode = if executable { 0o755 } else { 0o644 };
    let mut h = header(tar::EntryType::Regular, mode, size);
    let mut reader = Hashing {
        inner: data,
        digests: FileDigests::new(),
        count: 0,
        failed: None,
    };
    let written = builder.append_data(&mut h, path, &mut reader);
    if let Some(e) = reader.failed.take() {
        return Err(ArchiveError::Read {
            path: path.to_string(),
            reason: io_reason(&e),
        });
    }
    written.map_err(|e| ArchiveError::Tar {
        path: path.to_string(),
        reason: e.to_string(),
    })?;
    if reader.count != size {
        return Err(changed(path, size));
    }
    let (blake3, sha256, blake2b) = reader.digests.finish();
    let mut e = entry(
        path.to_string(),
        EntryKind::File,
        mode,
        size,
        Some(blake3),
        None,
    );
    e.sha256 = Some(sha256);
    e.blake2b = Some(blake2b);
    Ok(e)
}

/// Hashes and counts what passes through; keeps a read error apart from a write error
/// (the first names the source file, the second the archive).
struct Hashing<R> {
    inner: R,
    digests: FileDigests,
    count: u64,
    failed: Option<io::Error>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.digests.update(&buf[..n]);
                self.count += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.failed = Some(e);
                Err(copy)
            }
        }
    }
}

/// Appends a symlink whose target is written byte for byte. The tar crate's
/// `append_link` normalises a target as a path (`/` became `//`, `a/./b` became `a/b`,
/// `dir//x/` became `dir/x/`), and a symlink must arrive pointing exactly where it did;
/// a target longer than the header's 100 bytes goes in a GNU long-link entry first, as
/// GNU tar writes it.
pub(super) fn append_symlink<W: io::Write>(
    builder: &mut tar::Builder<W>,
    h: &mut tar::Header,
    path: &str,
    target: &[u8],
) -> io::Result<()> {
    const FIELD: usize = 100;
    if target.len() > FIELD {
        let mut long = tar::Header::new_gnu();
        let name = b"././@LongLink";
        if let Some(gnu) = long.as_gnu_mut() {
            gnu.name[..name.len()].copy_from_slice(name);
        }
        long.set_entry_type(tar::EntryType::GNULongLink);
        long.set_mode(0o644);
        long.set_uid(0);
        long.set_gid(0);
        long.set_mtime(0);
        // With its terminating NUL, as GNU tar writes it.
        long.set_size(target.len() as u64 + 1);
        long.set_cksum();
        builder.append(&long, target.chain(&[0u8][..]))?;
    }
    h.set_link_name_literal(&target[..target.len().min(FIELD)])?;
    builder.append_data(h, path, io::empty())
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

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::fs::symlink;

    use crate::archive::build;
    use crate::archive::error::ArchiveError;
    use crate::archive::test_support::{chmod, dir_source, find, paths, sample_app, write};

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
    fn unpacking_the_tar_reproduces_the_files() {
        let dir = tempfile::tempdir().unwrap();
        sample_app(dir.path());
        let long = "d".repeat(120);
        write(dir.path(), &format!("{long}/{long}.txt"), "long path");
        symlink("t".repeat(150), dir.path().join("long-target")).unwrap();
        // Targets the tar crate would normalise as paths: they arrive as written.
        for (name, target) in [
            ("root", "/".to_string()),
            ("dots", "a/./b/../c".to_string()),
            ("slashes", "dir//x/".to_string()),
            ("long-slashes", format!("{}//end/", "s/".repeat(80))),
        ] {
            symlink(&target, dir.path().join(name)).unwrap();
        }
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
        for name in ["root", "dots", "slashes", "long-slashes", "long-target"] {
            let entry = find(&archive, name);
            assert_eq!(
                fs::read_link(out.path().join(name)).unwrap().to_str(),
                entry.target.as_deref(),
                "{name}"
            );
        }
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
}
