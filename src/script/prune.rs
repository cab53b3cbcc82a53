//! Removing releases (retention, failed releases), archiving them first where the stage
//! says so, and restoring an archived release.

use super::{PRELUDE, need_tool, remove_partial, write_meta_if_present};
use crate::layout::{Layout, ReleaseId, quote};

/// Removes releases (retention, or a failed release's leftovers).
pub fn remove_releases(layout: &Layout, ids: &[ReleaseId]) -> String {
    let mut s = String::from(PRELUDE);
    for id in ids {
        // A read-only (`immutable`) release: its directories must be writable to empty them.
        let r = quote(&layout.release(id));
        s.push_str(&format!("chmod -R u+w -- {r} 2>/dev/null\nrm -rf -- {r}\n"));
    }
    s
}

/// Removes a new release entirely, its partial upload too (a deploy stopped on purpose
/// before the switch).
pub fn remove_new_release(layout: &Layout, id: &ReleaseId) -> String {
    format!(
        "{}{}",
        remove_partial(layout, id),
        remove_releases(layout, std::slice::from_ref(id))
    )
}

/// Discards a new release after a failure before the switch: its partial upload goes, and
/// where it got as far as `releases/ID` its record becomes `failed_line` (kept for
/// inspection, pruned later).
pub fn discard_release(layout: &Layout, id: &ReleaseId, failed_line: &str) -> String {
    format!(
        "{}{}",
        remove_partial(layout, id),
        write_meta_if_present(layout, id, failed_line)
    )
}

/// Archives each release to `backups/releases/ID.tar.zst` (zstd on the host), then
/// removes it; keeps the newest `keep` archives. A release that cannot be archived (no
/// zstd, a full disk) is kept and said so: pruning never loses a release silently.
pub fn archive_and_remove(layout: &Layout, ids: &[ReleaseId], keep: usize) -> String {
    let mut s = format!(
        "{PRELUDE}d={d}\nb=\"$d/backups/releases\"\nmkdir -p -- \"$b\" || exit 1\nhave_zstd=1\ncommand -v zstd >/dev/null 2>&1 || {{ have_zstd=0; echo 'zstd is not installed on this host: old releases are kept, not archived (apt-get install zstd)' >&2; }}\n",
        d = quote(layout.deploy_to()),
    );
    for id in ids {
        let r = quote(&layout.release(id));
        s.push_str(&format!(
            "if [ \"$have_zstd\" = 1 ]; then\n  if tar -C \"$d/releases\" -cf - -- {id} | zstd -q -T1 -o \"$b/{id}.tar.zst.tmp\" -f && mv -f -- \"$b/{id}.tar.zst.tmp\" \"$b/{id}.tar.zst\"; then\n    chmod -R u+w -- {r} 2>/dev/null\n    rm -rf -- {r}\n  else\n    rm -f -- \"$b/{id}.tar.zst.tmp\"\n    echo 'archiving release {id} failed: it is kept' >&2\n  fi\nfi\n"
        ));
    }
    // Archive names are release ids: sortable as text, so a glob lists them oldest first
    // (in any locale: digits, and `T` and `Z` at the same places). All but the newest
    // `keep` go.
    s.push_str(&format!(
        "set --\nfor f in \"$b\"/*.tar.zst; do\n  case \"${{f##*/}}\" in\n    {id}.tar.zst) set -- \"$@\" \"$f\" ;;\n  esac\ndone\nwhile [ \"$#\" -gt {keep} ]; do rm -f -- \"$1\"; shift; done\n",
        id = "[0-9]".repeat(8) + "T" + &"[0-9]".repeat(6) + "Z",
    ));
    s
}

/// Restores `id` from `backups/releases/ID.tar.zst` if its directory is gone (for
/// `rollback --to`); prints `restored` when it did. The caller verifies the manifest.
pub fn restore_release(layout: &Layout, id: &ReleaseId) -> String {
    format!(
        "{PRELUDE}d={d}\nr={r}\na=\"$d/backups/releases/{id}.tar.zst\"\nt=\"$d/releases/.restore.{id}\"\nif [ ! -d \"$r\" ] && [ -f \"$a\" ]; then\n  {zstd}  rm -rf -- \"$t\" && mkdir -p -- \"$t\" || exit 1\n  if ! zstd -dc -- \"$a\" | tar -x -C \"$t\"; then rm -rf -- \"$t\"; echo \"cannot extract $a\" >&2; exit 1; fi\n  mv -- \"$t/{id}\" \"$r\" && rm -rf -- \"$t\" || {{ echo \"the archive $a does not hold release {id}\" >&2; rm -rf -- \"$t\"; exit 1; }}\n  echo restored\nfi\n",
        d = quote(layout.deploy_to()),
        r = quote(&layout.release(id)),
        zstd = need_tool("zstd", "zstd"),
    )
}
