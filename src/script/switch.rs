//! Moving `current` and writing release records.

use super::PRELUDE;
use crate::layout::{Layout, Link, RELEASE_META, ReleaseId, quote};

/// Writes a release's record atomically (a temporary file renamed over the old one).
pub fn write_meta(layout: &Layout, id: &ReleaseId, meta_line: &str) -> String {
    let file = format!("{}/{RELEASE_META}", layout.release(id));
    format!(
        "{{ [ -d {dir} ] || mkdir -p -- {dir}; }} && printf '%s\\n' {meta} > {tmp} && mv -f -- {tmp} {file} || {{ echo \"cannot write \"{file} >&2; exit 1; }}\n",
        dir = quote(&format!("{}/.slipway", layout.release(id))),
        file = quote(&file),
        tmp = quote(&format!("{file}.tmp")),
        meta = quote(meta_line),
    )
}

/// [`write_meta`] where release `id` is on the host (a release that never got as far as
/// `releases/ID` there has no record to write).
pub fn write_meta_if_present(layout: &Layout, id: &ReleaseId, meta_line: &str) -> String {
    format!(
        "if [ -d {r} ]; then\n{write}fi\n",
        r = quote(&layout.release(id)),
        write = write_meta(layout, id, meta_line),
    )
}

/// Points `current` at `target` (or removes it, for a first deploy switched back) by
/// renaming a uniquely named temporary link over it: rename(2) is atomic, so a reader
/// sees the old release or the new one, never neither. Then writes the records.
pub fn switch(
    layout: &Layout,
    target: Option<&ReleaseId>,
    nonce: &str,
    records: &[(ReleaseId, String)],
) -> String {
    switch_link(layout, Link::Current, target, nonce, records)
}

/// [`switch`] for any link the engine moves: `current`, or a traffic slot's link
/// (`slots/a`, `slots/b`), by the same rename under the same per-host lock.
pub fn switch_link(
    layout: &Layout,
    link: Link,
    target: Option<&ReleaseId>,
    nonce: &str,
    records: &[(ReleaseId, String)],
) -> String {
    // Once begun, a switch runs to its end on the host even if the deployer dies (its
    // session closed): otherwise `current` could be renamed but the records not written
    // (found by tests/faults: a SIGKILL during the switch left `current` on a release
    // recorded as `ready`).
    // Switches on one host never interleave: a switch delayed by a stalled connection
    // and the switch-back sent after it gave up can both arrive when the host wakes up;
    // run one after the other, each leaves `current` and the records agreeing (found by
    // tests/faults). `flock` is util-linux; without it the switch runs unserialised.
    let mut s = format!(
        "{PRELUDE}trap '' HUP PIPE INT TERM\nd={d}\nif [ -d \"$d/.slipway\" ] && command -v flock >/dev/null 2>&1; then exec 9>>\"$d/.slipway/switch.lock\" && flock -w 60 9; fi\n",
        d = quote(layout.deploy_to())
    );
    let path = quote(&layout.link(link));
    if let Link::Slot(_) = link {
        s.push_str(&format!(
            "mkdir -p -- {} || exit 1\n",
            quote(&layout.slots())
        ));
    }
    match target {
        Some(id) => {
            let tmp = quote(&layout.link_tmp(link, id, nonce));
            s.push_str(&format!(
                "[ -f {meta} ] || {{ echo \"release {id} is not complete on this host (no {RELEASE_META})\" >&2; exit 1; }}\n\
                 {{ [ ! -L {tmp} ] || rm -f -- {tmp}; }}\n\
                 ln -s -- {link} {tmp} || exit 1\n\
                 mv -T -- {tmp} {path} || {{ rm -f -- {tmp}; echo \"renaming the new link over \"{path}\" failed\" >&2; exit 1; }}\n",
                meta = quote(&format!("{}/{RELEASE_META}", layout.release(id))),
                link = quote(&Layout::link_target(link, id)),
            ));
        }
        None => s.push_str(&format!("rm -f -- {path} || exit 1\n")),
    }
    for (id, line) in records {
        s.push_str(&write_meta(layout, id, line));
    }
    s
}
