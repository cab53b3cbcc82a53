//! What each host receives: the whole release, or only the files changed since the
//! release it links the rest from (its manifest read back from the host and checked).

use std::sync::Arc;

use crate::archive::Archive;
use crate::archive::Spool;
use crate::archive::delta;
use crate::fleet::Fleet;
use crate::layout::{
    RELEASE_CHECKSUMS, RELEASE_CHECKSUMS_B2, RELEASE_MANIFEST, RELEASE_META, REVISION_FILE,
    ReleaseId,
};
use crate::release::{HostState, ReleaseMeta};
use crate::script;
use crate::script::Encoding;
use crate::transport::Input;

use super::compress::Encoder;
use super::patch::{self, BlobCache, Patch};

/// What one host receives: the payload (as encoded for the wire), and the release it
/// links unchanged files from.
pub(super) struct Upload {
    pub(super) payload: Arc<Input>,
    pub(super) previous: Option<ReleaseId>,
    pub(super) linked: usize,
    pub(super) encoding: Encoding,
    /// The payload's length before encoding.
    pub(super) raw: u64,
    /// Files sent as binary deltas, and their full size.
    pub(super) patched: (usize, u64),
}

impl Upload {
    fn whole(whole: &Arc<Input>) -> Upload {
        Upload {
            payload: Arc::clone(whole),
            previous: None,
            linked: 0,
            encoding: Encoding::Raw,
            raw: 0,
            patched: (0, 0),
        }
    }
}

/// An incremental payload for one previous release.
#[derive(Clone)]
struct Built {
    plain: Arc<Input>,
    linked: usize,
    /// With binary deltas: the payload, the number of files and their full size.
    patched: Option<(Arc<Input>, (usize, u64))>,
}

/// The incremental payload against `old` (a host's current manifest), and, when a
/// changed large file's previous version is in the cache, the payload that sends it
/// as a binary delta instead.
fn build_incremental(
    archive: &Archive,
    meta: &ReleaseMeta,
    shared: &[String],
    old: &crate::archive::Manifest,
    cache: Option<&BlobCache>,
) -> std::io::Result<Built> {
    let d = delta::delta(&archive.manifest, old, shared);
    let body = delta::filter_tar(&archive.tar, &d.send)?;
    let plain = Arc::new(release_payload(&body, archive, meta, Some(&d), &[])?);
    let mut patches = Vec::new();
    if let Some(cache) = cache {
        let candidates = patch::candidates(&archive.manifest, old, &d.send);
        let wanted = candidates.iter().map(|(p, _)| p.clone()).collect();
        let mut new_files = if candidates.is_empty() {
            Default::default()
        } else {
            patch::read_files(&archive.tar, &wanted)?
        };
        for (path, old_digest) in candidates {
            let (Some(base), Some(new)) = (cache.get(&old_digest), new_files.remove(&path)) else {
                continue;
            };
            let delta = patch::delta(&base, &new)?;
            if patch::pays(delta.len(), new.len() as u64) {
                let mode = archive
                    .manifest
                    .entries
                    .iter()
                    .find(|e| e.path == path)
                    .map_or(0o644, |e| e.mode);
                patches.push(Patch {
                    path,
                    mode,
                    delta,
                    size: new.len() as u64,
                });
            }
        }
    }
    let patched = if patches.is_empty() {
        None
    } else {
        let mut send = d.send.clone();
        for p in &patches {
            send.remove(&p.path);
        }
        let body = delta::filter_tar(&archive.tar, &send)?;
        let payload = Arc::new(release_payload(&body, archive, meta, Some(&d), &patches)?);
        let size = patches.iter().map(|p| p.size).sum();
        Some((payload, (patches.len(), size)))
    };
    Ok(Built {
        plain,
        linked: d.link.len(),
        patched,
    })
}

/// Plans each host's upload: hosts whose current release has a readable manifest that
/// matches its record get only the files that changed (unchanged ones are hard-linked on
/// the host); the others get the whole release. Payloads are built once per distinct
/// previous release, not once per host. Also returns the whole-release payload, for
/// hosts that refuse their incremental one.
pub(super) async fn plan_uploads(
    fleet: &Fleet,
    states: &[HostState],
    archive: &Archive,
    meta: &ReleaseMeta,
    shared: &[String],
) -> std::io::Result<(Vec<Upload>, Arc<Input>)> {
    let whole = Arc::new(release_payload(&archive.tar, archive, meta, None, &[])?);
    let remote = fleet.stage.transport == crate::config::TransportKind::Ssh;
    // Large files are kept for the next deploy's deltas (over ssh only: a local stage
    // has no uplink to save).
    let cache = if remote { BlobCache::open() } else { None };
    // Per previous release: the incremental payload, and the one with binary deltas
    // (for hosts with zstd) when a changed large file has a cached base.
    let mut by_previous: std::collections::BTreeMap<ReleaseId, Option<Built>> = Default::default();
    let mut uploads = Vec::new();
    for (i, state) in states.iter().enumerate() {
        let base = state
            .current()
            .and_then(|c| state.release(&c).and_then(|r| r.meta.clone()));
        let Some(base) = base.filter(|_| fleet.stage.link_unchanged) else {
            uploads.push(Upload::whole(&whole));
            continue;
        };
        if !by_previous.contains_key(&base.id) {
            let built = match previous_manifest(fleet, i, &base).await {
                Some(old) => Some(build_incremental(
                    archive,
                    meta,
                    shared,
                    &old,
                    cache.as_ref(),
                )?),
                None => None,
            };
            by_previous.insert(base.id.clone(), built);
        }
        let has_zstd = state.tools.iter().any(|t| t == "zstd");
        match by_previous.get(&base.id).cloned().flatten() {
            Some(built) => {
                let (payload, patched) = match built.patched {
                    Some((payload, patched)) if has_zstd => (payload, patched),
                    _ => (built.plain, (0, 0)),
                };
                uploads.push(Upload {
                    payload,
                    previous: Some(base.id.clone()),
                    linked: built.linked,
                    encoding: Encoding::Raw,
                    raw: 0,
                    patched,
                })
            }
            None => uploads.push(Upload::whole(&whole)),
        }
    }
    if let Some(cache) = &cache
        && let Err(e) = cache.store(&archive.manifest, &archive.tar)
    {
        fleet.reporter.warning(
            None,
            &format!("cannot keep this release's large files for the next deploy's deltas: {e}"),
        );
    }
    // Each distinct payload is compressed once per encoding, for every host it goes to.
    // A local stage writes to this machine's own disk: nothing to save.
    let setting = match fleet.stage.transport {
        crate::config::TransportKind::Local => crate::config::Compress::Off,
        crate::config::TransportKind::Ssh => fleet.stage.compress,
    };
    let mut encoder = Encoder::new(setting);
    for (upload, state) in uploads.iter_mut().zip(states) {
        let (payload, encoding) = encoder.for_host(&upload.payload, &state.tools)?;
        upload.raw = upload.payload.len();
        upload.payload = payload;
        upload.encoding = encoding;
    }
    Ok((uploads, whole))
}

/// The manifest of a host's current release, if it can be read and matches the digest
/// recorded in that release's record, less the files its build hooks rewrote.
pub(super) async fn previous_manifest(
    fleet: &Fleet,
    i: usize,
    base: &ReleaseMeta,
) -> Option<crate::archive::Manifest> {
    let out = fleet
        .exec(
            i,
            "read-manifest",
            &script::read_manifest(&fleet.layout, &base.id),
            None,
            fleet.stage.timeouts.command,
        )
        .await
        .ok()?;
    if !out.success() {
        return None;
    }
    let marker = format!("\n{}\n", script::BUILT_OVER);
    let (text, built_over) = match out.stdout.split_once(&marker) {
        Some((manifest, paths)) => (format!("{manifest}\n"), paths),
        None => (out.stdout.clone(), ""),
    };
    // The digest is of the bytes as written then: a manifest in an older layout (one
    // that carried every digest) still matches its record and still serves as a base.
    if crate::archive::digest_of(&text) != base.manifest_digest {
        return None;
    }
    let mut manifest = crate::archive::Manifest::from_json_lines(&text).ok()?;
    // Files its build hooks rewrote are no longer the shipped ones: send them again.
    let built: std::collections::BTreeSet<&str> = built_over.lines().collect();
    manifest
        .entries
        .retain(|e| !built.contains(e.path.as_str()));
    Some(manifest)
}

/// A tar body (the whole archive, or only changed files), followed by slipway's own files
/// of the release (REVISION, the manifest, its sha256 and BLAKE2b lists, the release record, and for an
/// incremental upload the files to link with their sizes), as one tar stream.
pub(super) fn release_payload(
    body: &Spool,
    archive: &Archive,
    meta: &ReleaseMeta,
    incremental: Option<&delta::Delta>,
    patches: &[Patch],
) -> std::io::Result<Input> {
    // The body's entries, then these (tar entries do not depend on their offset).
    let mut builder = tar::Builder::new(Vec::new());
    let mut files = vec![
        (REVISION_FILE, format!("{}\n", meta.revision)),
        (RELEASE_MANIFEST, archive.manifest.to_json_lines()),
        (
            RELEASE_CHECKSUMS,
            delta::check_list(&archive.manifest, delta::Digest::Sha256),
        ),
        (
            RELEASE_CHECKSUMS_B2,
            delta::check_list(&archive.manifest, delta::Digest::Blake2b),
        ),
        (RELEASE_META, format!("{}\n", meta.to_line())),
    ];
    if let Some(d) = incremental {
        files.push((
            ".slipway/verify.sha256",
            delta::check_list_sent(&archive.manifest, d, delta::Digest::Sha256),
        ));
        files.push((
            ".slipway/verify.b2",
            delta::check_list_sent(&archive.manifest, d, delta::Digest::Blake2b),
        ));
        files.push((
            ".slipway/verify.sizes",
            delta::size_list_linked(&archive.manifest, d),
        ));
    }
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    dir.set_mtime(meta.created_at.timestamp().max(0) as u64);
    builder.append_data(&mut dir, ".slipway/", std::io::empty())?;
    // Binary deltas: `.slipway/patches` lists `N<TAB>mode<TAB>path` for each
    // `.slipway/patch/N` (see script::upload).
    let mut blobs: Vec<(String, &[u8])> = Vec::new();
    let mut list = String::new();
    for (n, p) in patches.iter().enumerate() {
        list.push_str(&format!("{n}\t{:o}\t{}\n", p.mode & 0o7777, p.path));
        blobs.push((format!(".slipway/patch/{n}"), &p.delta));
    }
    if !patches.is_empty() {
        files.push((".slipway/patches", list));
    }
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(content.len() as u64);
        header.set_mtime(meta.created_at.timestamp().max(0) as u64);
        builder.append_data(&mut header, path, content.as_bytes())?;
    }
    for (path, content) in blobs {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(content.len() as u64);
        header.set_mtime(meta.created_at.timestamp().max(0) as u64);
        builder.append_data(&mut header, path, content)?;
    }
    Ok(Input::spooled(
        Arc::clone(body.file()),
        body.body_len(),
        builder.into_inner()?,
    ))
}
