//! The release archive: built once per deploy, on this machine, from the
//! application source (a local directory or a ref of a local git repository).
//!
//! Both kinds of source go through the same path: collect the entries, check
//! them, sort them, and emit them through one deterministic tar writer while
//! hashing the files into the [`Manifest`]. So a directory and a git ref holding
//! the same tree give byte-identical archives and equal manifests (except for
//! empty directories, which git does not track).
//!
//! - `source.rs`: [`Source`], and what both kinds share (the source directory, the
//!   `exclude` patterns); `dir.rs` walks a directory as git would see it, `git.rs`
//!   reads what `git archive` emits for a commit
//! - `node.rs`: an entry on its way from a source into the archive
//! - `assemble.rs`: the deterministic tar writer, spooled to a temporary file ([`spool`])
//! - `manifest.rs`: [`Manifest`], its `manifest.jsonl` form and digest, the checks a
//!   manifest read back from a host must pass, and the [`check_list`]s hosts verify
//!   a release with
//! - `digest.rs`: the content digests (blake3, SHA-256, BLAKE2b)
//! - [`delta`]: the incremental payload: the files a host already has, and the tar
//!   stream of the rest
//! - `error.rs`: [`ArchiveError`], and how an I/O error reads in it

mod assemble;
pub mod delta;
mod digest;
mod dir;
mod error;
mod git;
mod manifest;
mod node;
mod source;
pub mod spool;
#[cfg(test)]
mod test_support;

use std::fmt;

pub use digest::{Digest, hex};
pub use error::ArchiveError;
pub use manifest::{EntryKind, Manifest, ManifestEntry, check_list, digest_of};
pub use source::Source;
pub use spool::Spool;

use assemble::assemble;
use source::{exclude_matcher, source_dir};

/// A built release archive.
pub struct Archive {
    /// The tar stream: sorted paths, fixed owners, mtimes and normalised modes;
    /// spooled to a temporary file, never held whole in memory.
    pub tar: Spool,
    pub manifest: Manifest,
    /// The commit sha for a git source; `blake3:` and the first 16 hex digits of
    /// the manifest digest for a directory source.
    pub revision: String,
    /// Entries of a git source that a release cannot carry, left out, as `path (kind)`
    /// (a directory source refuses special files instead, naming them).
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

/// Builds the release archive of `source`.
pub fn build(source: &Source) -> Result<Archive, ArchiveError> {
    match source {
        Source::Dir { path, exclude } => {
            let excluded = exclude_matcher(exclude)?;
            let root = source_dir(path)?;
            let nodes = dir::walk_dir(&root, &excluded)?;
            let (tar, manifest) = assemble(nodes, path)?;
            let digest = manifest.digest();
            Ok(Archive {
                tar,
                revision: format!("blake3:{}", &digest[..16]),
                manifest,
                skipped: Vec::new(),
            })
        }
        Source::Git {
            repo,
            reference,
            exclude,
        } => {
            let excluded = exclude_matcher(exclude)?;
            source_dir(repo)?;
            let commit = git::resolve_commit(repo, reference)?;
            let (nodes, skipped) = git::read_git_archive(repo, &commit, &excluded)?;
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
