//! Reading a host's state, changing nothing: the probe every locked step starts from
//! (also run inside the lock script) and the preflight survey of `slipway check`.

use super::PRELUDE;
use crate::layout::{Layout, RELEASE_META, quote};

/// Reads everything a decision needs, changing nothing: whether `deploy_to` exists, the
/// target of `current`, each release with its record, partial uploads, the lock holder,
/// which decompressors the host has (for the upload's compression), and the host's clock. Output: one tab-separated record per line. The records are
/// one-line JSON files (slipway writes them so), read with the shell's own `read`: at
/// fleet scale every process a step starts is paid once per host.
pub fn probe(layout: &Layout) -> String {
    format!(
        "{PRELUDE}d={d}\n{body}",
        d = quote(layout.deploy_to()),
        body = probe_body(layout)
    )
}

/// The probe after `d` is set (shared with the lock script).
pub(super) fn probe_body(layout: &Layout) -> String {
    format!(
        r#"if [ -d "$d" ]; then echo "exists	1"; else echo "exists	0"; fi
if [ -L "$d/current" ]; then printf 'current\t'; readlink -- "$d/current"; fi
if [ -d "$d/releases" ]; then
  for r in "$d"/releases/*; do
    [ -e "$r" ] || [ -L "$r" ] || continue
    # A release is a directory of its own: a link (say to /) is never read through.
    if [ -L "$r" ]; then printf 'link\t%s\n' "${{r##*/}}"; continue; fi
    m=""
    if [ -f "$r/{meta}" ]; then IFS= read -r m < "$r/{meta}" || true; fi
    printf 'release\t%s\t%s\n' "${{r##*/}}" "$m"
  done
fi
if [ -d "$d/.slipway/lock" ]; then
  m=""
  if [ -f "$d/.slipway/lock/owner.json" ]; then IFS= read -r m < "$d/.slipway/lock/owner.json" || true; fi
  printf 'lock\t%s\n' "$m"
fi
if [ -f {rollout} ]; then m=""; IFS= read -r m < {rollout} || true; printf 'rollout\t%s\n' "$m"; fi
for t in zstd gzip; do if command -v "$t" >/dev/null 2>&1; then printf 'tool\t%s\n' "$t"; fi; done
printf 'clock\t'; date +%s
"#,
        meta = RELEASE_META,
        rollout = quote(&layout.rollout_state()),
    )
}

/// The preflight survey `slipway check` judges: changes nothing.
pub fn check(layout: &Layout, files: &[String], dirs: &[String]) -> String {
    let mut s = format!(
        r#"{PRELUDE}d={d}
e="$d"
while [ ! -e "$e" ]; do e=$(dirname -- "$e"); done
printf 'exists\t%s\n' "$([ -d "$d" ] && echo 1 || echo 0)"
printf 'nearest\t%s\n' "$e"
printf 'writable\t%s\n' "$([ -w "$e" ] && echo 1 || echo 0)"
printf 'space\t%s\n' "$(df -Pk -- "$e" 2>/dev/null | awk 'NR==2 {{print $4}}')"
printf 'inodes\t%s\n' "$(df -Pi -- "$e" 2>/dev/null | awk 'NR==2 {{print $4}}')"
printf 'dev_deploy_to\t%s\n' "$(stat -c %d -- "$e" 2>/dev/null)"
if [ -d "$d/releases" ]; then printf 'dev_releases\t%s\n' "$(stat -c %d -- "$d/releases")"; fi
printf 'tar\t%s\n' "$(command -v tar)"
printf 'zstd\t%s\n' "$(command -v zstd)"
if mv --help 2>&1 | grep -q -- '-T'; then echo "mv_t	1"; else echo "mv_t	0"; fi
printf 'clock\t%s\n' "$(date +%s)"
if [ -d "$d/.slipway/lock" ]; then printf 'lock\t%s\n' "$(tr '\n\t' '  ' < "$d/.slipway/lock/owner.json" 2>/dev/null)"; fi
"#,
        d = quote(layout.deploy_to()),
    );
    for (kind, list) in [("file", files), ("dir", dirs)] {
        for (i, path) in list.iter().enumerate() {
            let p = quote(&layout.shared_path(path));
            s.push_str(&format!(
                "if [ -L {p} ] && [ ! -e {p} ]; then t='dangling'; elif [ -f {p} ]; then t='file'; elif [ -d {p} ]; then t='dir'; elif [ -e {p} ]; then t='other'; else t='missing'; fi\nprintf 'shared_{kind}\\t%s\\t%s\\n' {i} \"$t\"\n"
            ));
        }
    }
    s
}
