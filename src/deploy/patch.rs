//! Binary deltas for changed large files: a release whose one big file changes a little
//! each time (a Go or Rust binary) sends, to a host that has the previous release, a
//! zstd delta against that host's copy (`zstd --patch-from`) instead of the whole file.
//!
//! The deployer needs the previous version of the file, and has it only if it kept it:
//! every deploy stores its files of at least [`MIN_SIZE`] in a local cache by content
//! digest ([`BlobCache`], `$XDG_CACHE_HOME/slipway/blobs`, else `~/.cache/...`), and the
//! next deploy finds the base by the digest the host's previous manifest gives for the
//! same path. A cache entry is checked against its digest before use. The host checks
//! the patched file like every sent file (its digests in the check lists), and the zstd
//! frame carries a checksum: a base that differs on the host makes the upload fail with
//! "not verified", and the deploy sends that host the whole release, as for any
//! previous release that cannot serve as a base.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::archive::{EntryKind, Manifest, Spool};

/// Files smaller than this are sent whole (compressed with the rest of the stream).
pub const MIN_SIZE: u64 = 1 << 20;

/// A delta must be at most this share of the file to be sent instead of it.
const WORTH: f64 = 0.5;

/// Cache entries unused for this long are removed.
const KEEP_UNUSED: Duration = Duration::from_secs(30 * 24 * 3600);

const LEVEL: i32 = 3;

/// One changed file sent as a delta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patch {
    pub path: String,
    pub mode: u32,
    /// The zstd frame that turns the host's previous copy into the new file.
    pub delta: Vec<u8>,
    /// The new file's size.
    pub size: u64,
}

/// Candidates for a delta: files of `new` being sent (`send`), large enough, whose path
/// was a file with other content in `old`. Returns (path, old digest) pairs.
pub fn candidates(
    new: &Manifest,
    old: &Manifest,
    send: &std::collections::BTreeSet<String>,
) -> Vec<(String, String)> {
    let before: BTreeMap<&str, &crate::archive::ManifestEntry> =
        old.entries.iter().map(|e| (e.path.as_str(), e)).collect();
    new.entries
        .iter()
        .filter(|e| e.kind == EntryKind::File && e.size >= MIN_SIZE && send.contains(&e.path))
        .filter_map(|e| {
            let o = before.get(e.path.as_str())?;
            let digest = o.blake3.clone()?;
            (o.kind == EntryKind::File && o.blake3 != e.blake3).then(|| (e.path.clone(), digest))
        })
        .collect()
}

/// The zstd frame that rebuilds `new` from `base` (`zstd -d --patch-from=BASE`).
pub fn delta(base: &[u8], new: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut z = zstd::stream::write::Encoder::with_ref_prefix(&mut out, LEVEL, base)?;
    // The window must span the base and the new file for matches far back in the base.
    let span = (base.len() + new.len()).max(1) as u64;
    let log = (64 - span.leading_zeros()).clamp(20, 31);
    z.window_log(log)?;
    z.long_distance_matching(true)?;
    z.include_checksum(true)?;
    z.write_all(new)?;
    z.finish()?;
    Ok(out)
}

/// Whether a delta of `delta_len` bytes is worth sending for a file of `size`.
pub fn pays(delta_len: usize, size: u64) -> bool {
    (delta_len as f64) <= WORTH * size as f64
}

/// Reads the files `paths` from a release's tar stream.
pub fn read_files(
    tar: &Spool,
    paths: &std::collections::BTreeSet<String>,
) -> io::Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut archive = tar::Archive::new(tar.reader());
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        if entry.header().entry_type() == tar::EntryType::Regular && paths.contains(&path) {
            let mut data = Vec::new();
            entry.read_to_end(&mut data)?;
            out.insert(path, data);
        }
    }
    Ok(out)
}

/// Large files of past deploys, by blake3 digest, on the deployer.
pub struct BlobCache {
    dir: PathBuf,
}

impl BlobCache {
    /// The cache under `$SLIPWAY_CACHE_DIR`, `$XDG_CACHE_HOME/slipway` or
    /// `~/.cache/slipway`; `None` (no deltas) if none can be made.
    pub fn open() -> Option<BlobCache> {
        let root = std::env::var_os("SLIPWAY_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("slipway"))
            })
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/slipway"))
            })?;
        let dir = root.join("blobs");
        fs::create_dir_all(&dir).ok()?;
        Some(BlobCache { dir })
    }

    fn path(&self, digest: &str) -> Option<PathBuf> {
        (digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| self.dir.join(digest))
    }

    /// The content with this digest, if cached and intact.
    pub fn get(&self, digest: &str) -> Option<Vec<u8>> {
        let path = self.path(digest)?;
        let data = fs::read(&path).ok()?;
        if blake3::hash(&data).to_hex().as_str() != digest {
            let _ = fs::remove_file(&path);
            return None;
        }
        // Used: keep it.
        let _ = fs::File::options()
            .append(true)
            .open(&path)
            .and_then(|f| f.set_modified(SystemTime::now()));
        Some(data)
    }

    /// Stores the release's files of at least [`MIN_SIZE`] (those not cached yet), and
    /// forgets entries unused for 30 days.
    pub fn store(&self, manifest: &Manifest, tar: &Spool) -> io::Result<()> {
        let wanted: std::collections::BTreeSet<String> = manifest
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::File && e.size >= MIN_SIZE)
            .filter(|e| {
                e.blake3
                    .as_deref()
                    .and_then(|d| self.path(d))
                    .is_some_and(|p| !p.exists())
            })
            .map(|e| e.path.clone())
            .collect();
        if !wanted.is_empty() {
            for data in read_files(tar, &wanted)?.into_values() {
                let digest = blake3::hash(&data).to_hex().to_string();
                let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
                tmp.write_all(&data)?;
                tmp.persist(self.dir.join(&digest)).map_err(|e| e.error)?;
            }
        }
        let now = SystemTime::now();
        for entry in fs::read_dir(&self.dir)?.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).is_ok_and(|age| age > KEEP_UNUSED));
            if old {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::ManifestEntry;

    fn file(path: &str, hash: &str, mode: u32) -> ManifestEntry {
        ManifestEntry {
            path: path.into(),
            kind: EntryKind::File,
            mode,
            size: 1,
            blake3: Some(hash.into()),
            target: None,
            sha256: None,
            blake2b: None,
        }
    }

    #[test]
    fn only_large_changed_files_that_existed_before_are_candidates() {
        let mut big_old = file("bin/app", "1", 0o755);
        big_old.size = MIN_SIZE;
        let mut big_new = file("bin/app", "2", 0o755);
        big_new.size = MIN_SIZE + 10;
        let mut big_added = file("bin/new", "3", 0o755);
        big_added.size = MIN_SIZE;
        let small = file("config", "4", 0o644);
        let old = Manifest {
            entries: vec![big_old, file("config", "0", 0o644)],
        };
        let new = Manifest {
            entries: vec![big_new.clone(), big_added, small],
        };
        let send = ["bin/app", "bin/new", "config"]
            .map(String::from)
            .into_iter()
            .collect();
        let c = candidates(&new, &old, &send);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].0, "bin/app");
        // An unchanged file (same digest) is linked, never patched.
        let same = candidates(&old, &old, &send);
        assert!(same.is_empty());
    }

    #[test]
    fn a_delta_rebuilds_the_new_file_from_the_base_and_only_from_it() {
        let mut seed = 7u64;
        let base: Vec<u8> = (0..3_000_000)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8
            })
            .collect();
        let mut new = base.clone();
        for at in (0..new.len()).step_by(250_000) {
            new[at] ^= 0xff;
        }
        new.extend_from_slice(b"appended");
        let d = delta(&base, &new).unwrap();
        assert!(pays(d.len(), new.len() as u64), "{} bytes", d.len());
        assert!(d.len() < 20_000, "{} bytes", d.len());
        let mut out = Vec::new();
        let mut z = zstd::stream::read::Decoder::with_ref_prefix(&d[..], &base).unwrap();
        z.window_log_max(31).unwrap();
        z.read_to_end(&mut out).unwrap();
        assert!(out == new);
        // Against another base, the frame's checksum refuses it.
        let mut wrong = base.clone();
        wrong[1_100_000] ^= 1;
        let mut z = zstd::stream::read::Decoder::with_ref_prefix(&d[..], &wrong).unwrap();
        z.window_log_max(31).unwrap();
        let mut out = Vec::new();
        assert!(z.read_to_end(&mut out).is_err());
    }
}
