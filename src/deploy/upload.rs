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

/// What one host receives: the payload (as encoded for the wire), and the release it
/// links unchanged files from.
pub(super) struct Upload {
    pub(super) payload: Arc<Input>,
    pub(super) previous: Option<ReleaseId>,
    pub(super) linked: usize,
    pub(super) encoding: Encoding,
    /// The payload's length before encoding.
    pub(super) raw: u64,
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
    let whole = Arc::new(release_payload(&archive.tar, archive, meta, None)?);
    // Per previous release: the incremental payload and how many files it links.
    type Built = Option<(Arc<Input>, usize)>;
    let mut by_previous: std::collections::BTreeMap<ReleaseId, Built> = Default::default();
    let mut uploads = Vec::new();
    for (i, state) in states.iter().enumerate() {
        let base = state
            .current()
            .and_then(|c| state.release(&c).and_then(|r| r.meta.clone()));
        let Some(base) = base.filter(|_| fleet.stage.link_unchanged) else {
            uploads.push(Upload {
                payload: whole.clone(),
                previous: None,
                linked: 0,
                encoding: Encoding::Raw,
                raw: 0,
            });
            continue;
        };
        if !by_previous.contains_key(&base.id) {
            let built = match previous_manifest(fleet, i, &base).await {
                Some(old) => {
                    let d = delta::delta(&archive.manifest, &old, shared);
                    let body = delta::filter_tar(&archive.tar, &d.send)?;
                    Some((
                        Arc::new(release_payload(&body, archive, meta, Some(&d))?),
                        d.link.len(),
                    ))
                }
                None => None,
            };
            by_previous.insert(base.id.clone(), built);
        }
        match by_previous.get(&base.id).cloned().flatten() {
            Some((payload, linked)) => uploads.push(Upload {
                payload,
                previous: Some(base.id.clone()),
                linked,
                encoding: Encoding::Raw,
                raw: 0,
            }),
            None => uploads.push(Upload {
                payload: whole.clone(),
                previous: None,
                linked: 0,
                encoding: Encoding::Raw,
                raw: 0,
            }),
        }
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
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(content.len() as u64);
        header.set_mtime(meta.created_at.timestamp().max(0) as u64);
        builder.append_data(&mut header, path, content.as_bytes())?;
    }
    Ok(Input::spooled(
        Arc::clone(body.file()),
        body.body_len(),
        builder.into_inner()?,
    ))
}
