//! Checking a release's files against its manifest: a partial upload before it becomes
//! a release, a complete release before a rollback switches to it; and the size and
//! modification-time records that let the second check hash only what changed.

use super::{EXIT_NOT_VERIFIED, PRELUDE};
use crate::layout::{Layout, RELEASE_META, RELEASE_STAT, RELEASE_STAT_SHIPPED, ReleaseId, quote};

/// Compares two `size mtime path` listings (the first recorded, the second as it is now),
/// printing the paths whose size or modification time differ, or that are gone.
pub(super) const STAT_CHANGES: &str = r#"
    NR == FNR { k = $0; sub(/^[^ ]* [^ ]* /, "", k); was[k] = $1 " " $2; next }
    { k = $0; sub(/^[^ ]* [^ ]* /, "", k); if ((k in was) && was[k] != $1 " " $2) print k; delete was[k] }
    END { for (k in was) print k }"#;

/// Records the size and modification time of every file of a release that has just
/// become ready (`.slipway/stat`, `size mtime path` per line), so that a rollback to it
/// later hashes only what changed since (see [`verify_release`]).
pub fn record_stat(layout: &Layout, id: &ReleaseId) -> String {
    record_files(layout, id, RELEASE_STAT)
}

/// The same record, taken before build hooks run (`.slipway/stat.shipped`): a file a
/// build hook rewrites, even to the same size, is then never linked into a later release
/// as if it were the file that was shipped (see [`LINK_UNCHANGED`]).
pub fn record_shipped(layout: &Layout, id: &ReleaseId) -> String {
    record_files(layout, id, RELEASE_STAT_SHIPPED)
}

fn record_files(layout: &Layout, id: &ReleaseId, record: &str) -> String {
    format!(
        "cd -- {r} && find . -path ./.slipway -prune -o -type f -printf '%s %T@ %P\\n' > {tmp} && mv -f -- {tmp} {record} || {{ echo \"cannot record the files of release {id}\" >&2; exit 1; }}\n",
        r = quote(&layout.release(id)),
        tmp = quote(&format!("{record}.tmp")),
        record = quote(record),
    )
}

/// Checks a complete release before it is switched to (a rollback target): a file
/// modified, truncated or removed on the host since it was deployed is refused, naming
/// it. The release's files were verified by content when it was deployed; here the
/// files whose size or modification time differ from what `.slipway/stat` recorded when
/// it became ready are checked again by content against the release's digest list
/// (the way git's index decides what to rehash), so an untouched release costs one
/// `find`, not a hash of every byte. A release without that record (deployed by an
/// older slipway) is hashed whole. Paths that `[shared]` replaced by links are left out
/// (the manifest describes the shipped files; the links are not them).
pub fn verify_release(layout: &Layout, id: &ReleaseId, shared: &[String]) -> String {
    format!(
        "{PRELUDE}r={release}\nid={id}\nEXCL={excluded}\nexport EXCL\n{body}",
        release = quote(&layout.release(id)),
        excluded = quote(&shared.join("\n")),
        body = verify_body(),
    )
}

/// [`verify_release`] after `r` (the release directory), `id` and `EXCL` (the shared
/// paths, one per line, exported) are set. Exits non-zero, saying why on stderr, if
/// the release does not verify.
fn verify_body() -> String {
    format!(
        r#"[ -d "$r" ] || {{ echo "release $id is missing in $r" >&2; exit 1; }}
cd -- "$r" || exit 1
if [ ! -f .slipway/manifest.sha256 ] && [ ! -f .slipway/manifest.b2 ]; then
  echo "release $id has no manifest to verify (.slipway/manifest.sha256)" >&2
  exit {EXIT_NOT_VERIFIED}
fi
if [ -f {stat} ]; then
  # Unchanged (the usual case): the listing is the recorded one, byte for byte.
  if find . -path ./.slipway -prune -o -type f -printf '%s %T@ %P\n' | cmp -s - {stat}; then exit 0; fi
  changed=$(find . -path ./.slipway -prune -o -type f -printf '%s %T@ %P\n' | awk '{STAT_CHANGES}' {stat} -)
  [ -n "$changed" ] || exit 0
  {choose}
  sums=$(printf '%s\n' "$changed" | awk 'NR == FNR {{ if ($0 != "") c[$0] = 1; next }}
    substr($0, 1, 1) == "\\" || (substr($0, 67) in c) || (substr($0, 67) == "./-" && ("-" in c))' - .slipway/manifest.$ext)
else
  {choose}
  sums=$(awk 'BEGIN {{ n = split(ENVIRON["EXCL"], ex, "\n") }}
    {{ p = substr($0, 67); for (i = 1; i <= n; i++) if (ex[i] != "" && (p == ex[i] || index(p, ex[i] "/") == 1)) next; print }}' \
    .slipway/manifest.$ext)
fi
if [ -n "$sums" ] && ! bad=$(printf '%s\n' "$sums" | $sum --quiet --strict -c - 2>&1); then
  echo "release $id does not match its manifest (modified or truncated on this host since it was deployed): $(printf '%s' "$bad" | head -n 5 | tr '\n' ';')" >&2
  exit {EXIT_NOT_VERIFIED}
fi
exit 0
"#,
        stat = quote(RELEASE_STAT),
        choose = choose_digest("."),
    )
}

/// For the lock script of a rollback: checks the release the rollback will most likely
/// switch to (`to`, or else the newest release older than `current` whose record says
/// ready or live), as [`verify_release`] would, and prints `verified<TAB>ID<TAB>status<TAB>
/// message`. The deployer still decides the target; where it is this one, the verify
/// round trip is saved. Runs after the probe, with `d` set.
pub fn verify_likely_target(to: Option<&ReleaseId>, shared: &[String]) -> String {
    let pick = match to {
        Some(id) => format!("t={}\n", quote(id.as_str())),
        None => format!(
            r#"t=""
if [ -L "$d/current" ]; then
  cur=$(readlink -- "$d/current")
  cur=${{cur##*/}}
  for r in "$d"/releases/*; do
    n=${{r##*/}}
    [ "$n" = "$cur" ] && break
    m=""
    if [ -f "$r/{meta}" ]; then IFS= read -r m < "$r/{meta}" || true; fi
    case "$m" in *'"state":"ready"'*|*'"state":"live"'*) t=$n ;; esac
  done
fi
"#,
            meta = RELEASE_META
        ),
    };
    format!(
        r#"{pick}if [ -n "$t" ] && [ -d "$d/releases/$t" ]; then
  EXCL={excluded}
  export EXCL
  why=$(r="$d/releases/$t"; id=$t; {{
{body}}} 2>&1)
  rc=$?
  if [ "$rc" -eq 0 ]; then printf 'verified\t%s\t0\t\n' "$t"; else printf 'verified\t%s\t%s\t%s\n' "$t" "$rc" "$(printf '%s' "$why" | tr '\n\t' '  ')"; fi
fi
"#,
        excluded = quote(&shared.join("\n")),
        body = verify_body(),
    )
}

/// Sets `sum` (the checking command) and `ext` (the list it reads) for the release in
/// `dir`: `b2sum` where the host has it and the release carries BLAKE2b digests,
/// `sha256sum` otherwise (busybox hosts, releases from before the BLAKE2b lists).
fn choose_digest(dir: &str) -> String {
    format!(
        "if b2sum --version >/dev/null 2>&1 && [ -f \"{dir}/.slipway/manifest.b2\" ]; then sum='b2sum -l 256'; ext=b2; else sum=sha256sum; ext=sha256; fi"
    )
}

/// Checks the partial release against its manifest before shared links replace any path,
/// naming the files that differ: a truncated upload or a full disk is refused. Files that
/// travelled are checked by content (`b2sum -c`, or `sha256sum -c`); in an incremental upload, files
/// hard-linked from the previous release are checked by presence and size
/// (`.slipway/verify.sizes`): their content was checked when they first arrived, and
/// hashing the whole release on every host would cost more than the upload saves.
pub(super) fn verify_partial() -> String {
    format!(
        r#"{choose}
sums=.slipway/manifest.$ext
if [ -f "$p/.slipway/verify.$ext" ]; then sums=.slipway/verify.$ext; fi
if [ -s "$p/$sums" ]; then
  # A whole release is checked by up to 4 processes at once (a host's cores hash in
  # parallel); the few files of an incremental upload by one.
  n=1
  if [ "$sums" = ".slipway/manifest.$ext" ]; then n=$(nproc 2>/dev/null) || n=1; fi
  case "$n" in ''|*[!0-9]*) n=1 ;; esac
  [ "$n" -le 4 ] || n=4
  # Never more parts than lines: an empty part fails `-c` (a one-file release).
  lines=$(wc -l < "$p/$sums")
  case "$lines" in ''|*[!0-9]*) lines=1 ;; esac
  [ "$n" -le "$lines" ] || n=$lines
  if [ "$n" -gt 1 ]; then
    (cd -- "$p" && awk -v n="$n" '{{ print > (".slipway/check." (NR % n)) }}' "$sums") || exit 1
    i=0
    pids=""
    while [ "$i" -lt "$n" ]; do
      [ -f "$p/.slipway/check.$i" ] || : > "$p/.slipway/check.$i"
      (cd -- "$p" && exec $sum --quiet --strict -c ".slipway/check.$i") > "$p/.slipway/check.$i.out" 2>&1 &
      pids="$pids $!"
      i=$((i + 1))
    done
    ok=1
    for pid in $pids; do wait "$pid" || ok=0; done
    bad=$(cat -- "$p"/.slipway/check.*.out)
    rm -f -- "$p"/.slipway/check.*
  elif bad=$(cd -- "$p" && $sum --quiet --strict -c "$sums" 2>&1); then
    ok=1
  else
    ok=0
  fi
  if [ "$ok" != 1 ]; then
    echo "the uploaded release does not match its manifest: $(printf '%s' "$bad" | head -n 5 | tr '\n' ';')" >&2
    rm -rf -- "$p"
    exit {EXIT_NOT_VERIFIED}
  fi
fi
if [ -f "$p/.slipway/verify.sizes" ]; then
  bad=$(cd -- "$p" && find . -type f -printf '%s\t%P\n' | awk -F '\t' '
    NR == FNR {{ want[$2] = $1; next }}
    ($2 in want) {{ if (want[$2] != $1) print $2 ": " $1 " bytes, the manifest says " want[$2]; delete want[$2] }}
    END {{ for (f in want) print f ": missing" }}' .slipway/verify.sizes -)
  if [ -n "$bad" ]; then
    echo "the linked files do not match the manifest: $(printf '%s' "$bad" | head -n 5 | tr '\n' ';')" >&2
    rm -rf -- "$p"
    exit {EXIT_NOT_VERIFIED}
  fi
fi
rm -f -- "$p/.slipway/verify.sha256" "$p/.slipway/verify.b2" "$p/.slipway/verify.sizes"
"#,
        choose = choose_digest("$p")
    )
}

#[cfg(test)]
mod tests {
    use super::super::{Encoding, receive};
    use super::*;

    /// A tar of `files`, with the digest lists a deploy ships; `lie` replaces the
    /// content of one file after its digests were taken.
    fn release_tar(files: &[(&str, &str)], lie: Option<(&str, &str)>) -> Vec<u8> {
        let digest = |data: &[u8]| -> (String, String) {
            use blake2::Digest as _;
            let b2 = blake2::Blake2b::<blake2::digest::consts::U32>::digest(data);
            let sha = sha2::Sha256::digest(data);
            let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
            (hex(&b2), hex(&sha))
        };
        let mut b = tar::Builder::new(Vec::new());
        let (mut b2s, mut shas) = (String::new(), String::new());
        let add = |b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, path, data).unwrap();
        };
        for (path, content) in files {
            let (b2, sha) = digest(content.as_bytes());
            b2s.push_str(&format!("{b2}  {path}\n"));
            shas.push_str(&format!("{sha}  {path}\n"));
            let content = match lie {
                Some((p, other)) if p == *path => other,
                _ => content,
            };
            add(&mut b, path, content.as_bytes());
        }
        add(&mut b, ".slipway/manifest.b2", b2s.as_bytes());
        add(&mut b, ".slipway/manifest.sha256", shas.as_bytes());
        add(&mut b, ".slipway/release.json", b"{}\n");
        b.into_inner().unwrap()
    }

    #[test]
    fn an_upload_is_verified_by_content_before_it_becomes_a_release() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(&dir.path().join("app").to_string_lossy());
        let id = ReleaseId::parse("20261124T040512Z").unwrap();
        let files: Vec<(String, String)> = (0..40)
            .map(|i| (format!("d{}/f{i}.txt", i % 3), format!("content {i}\n")))
            .collect();
        let files: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_str()))
            .collect();
        let run = |tar: Vec<u8>| {
            use std::io::Write;
            let mut child = std::process::Command::new("sh")
                .arg("-c")
                .arg(receive(&layout, &id, None, Encoding::Raw, &[], &[], "").whole())
                .stdin(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(&tar).unwrap();
            child.wait_with_output().unwrap()
        };
        // One file differs from its digest (in every checker's share of the list): refused,
        // naming it, and nothing is left behind.
        let out = run(release_tar(&files, Some(("d1/f7.txt", "tampered\n"))));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(EXIT_NOT_VERIFIED), "{err}");
        assert!(
            err.contains("d1/f7.txt") && err.contains("does not match"),
            "{err}"
        );
        assert!(!std::path::Path::new(&layout.partial(&id)).exists());
        assert!(!std::path::Path::new(&layout.release(&id)).exists());
        // As shipped: the release is in place, and the checkers' files are gone.
        let out = run(release_tar(&files, None));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let release = std::path::Path::new(&layout.release(&id)).to_path_buf();
        assert_eq!(
            std::fs::read_to_string(release.join("d1/f7.txt")).unwrap(),
            "content 7\n"
        );
        let leftovers: Vec<_> = std::fs::read_dir(release.join(".slipway"))
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("check"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
