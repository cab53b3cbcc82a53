//! Getting a release onto a host: receiving the archive, hard-linking the unchanged
//! files of an incremental upload, linking the shared paths, renaming the partial
//! release into place; and reading back a release's manifest for the next upload.

use super::{
    EXIT_NOT_VERIFIED, PRELUDE,
    verify::{STAT_CHANGES, verify_partial},
};
pub use crate::encoding::Encoding;
use crate::layout::{
    Layout, RELEASE_MANIFEST, RELEASE_STAT, RELEASE_STAT_SHIPPED, ReleaseId, quote,
};

/// Hard-links the unchanged files of an incremental upload from the previous release (the
/// working directory) into the partial release (`$ARGV[1]`, relative to it), reading `size<TAB>path` lines
/// (`$ARGV[0]`). Each file must still be a regular file of the size in the manifest and,
/// where the previous release recorded them, of the size and modification time it had
/// when it was shipped (`.slipway/stat.shipped`, taken before build hooks ran) or, for a
/// stage without build hooks, when that release became ready (`.slipway/stat`): a file
/// edited since, on the host or by a build hook, even to the same size, is not linked,
/// and the deployer sends everything instead. Perl, where the host has it (every Debian
/// and Ubuntu host: perl-base is essential), makes one `link` per file; `cp -l --parents`
/// stats every parent of every path and took about twice as long (40-55 ms against
/// 15-30 ms for 3,000 files, these checks included). Without perl, `cp` does it (and the
/// sizes are checked after, by [`verify_partial`]).
const LINK_UNCHANGED: &str = r#"my ($list, $to) = @ARGV; my (%made, %was);
my $st;
if (open($st, "<", ".slipway/stat.shipped") or open($st, "<", ".slipway/stat")) {
  while (my $line = <$st>) {
    chomp $line;
    my ($size, $mtime, $path) = split / /, $line, 3;
    $mtime =~ s/[.].*//;
    $was{$path} = "$size $mtime";
  }
}
open(my $in, "<", $list) or die "cannot read $list: $!\n";
while (my $line = <$in>) {
  chomp $line;
  my ($size, $path) = split /\t/, $line, 2;
  my @st = lstat($path) or die "$path: missing in the previous release\n";
  -f _ or die "$path: not a regular file in the previous release\n";
  $st[7] == $size or die "$path: $st[7] bytes, the manifest says $size\n";
  !exists $was{$path} or $was{$path} eq "$st[7] $st[9]"
    or die "$path: changed since the previous release was shipped (on the host, or by a build hook)\n";
  if ($path =~ m{^(.*)/[^/]*$}) {
    my $dir = "";
    for my $part (split m{/}, $1) {
      $dir = $dir eq "" ? $part : "$dir/$part";
      next if $made{$dir}++;
      mkdir("$to/$dir") or -d "$to/$dir" or die "cannot create $dir: $!\n";
    }
  }
  link($path, "$to/$path") or die "cannot link $path: $!\n";
}
close($in) or die "cannot read $list: $!\n";"#;

/// Receives the release archive on stdin into `releases/ID.partial`. Leftovers of a
/// crashed run (stale `.partial` dirs and temporary `current` links) are removed first:
/// the lock is held, so nobody else is writing them. With `previous`, the archive holds
/// only new and changed files plus `.slipway/verify.sizes` (`size<TAB>path`), the files to
/// hard-link from the previous release: one command links all of them, not one command
/// per file (see [`LINK_UNCHANGED`]).
pub fn upload(
    layout: &Layout,
    id: &ReleaseId,
    previous: Option<&ReleaseId>,
    encoding: Encoding,
) -> String {
    let extract = match encoding.decoder() {
        None => r#"if ! tar -x -o -f - -C "$p"; then
  echo "extracting the release archive into $p failed" >&2"#
            .to_string(),
        // Both exit statuses, through fd 3 (sh has no pipefail): a decoder that fails
        // halfway must fail the upload even if tar took the truncated stream quietly.
        Some(decoder) => format!(
            r#"codes=$( {{ {{ {decoder}; echo "$?" >&3; }} | {{ tar -x -o -f - -C "$p"; echo "$?" >&3; }}; }} 3>&1 >&2 )
case "$codes" in *[!0[:space:]]*|"") ok=0 ;; *) ok=1 ;; esac
if [ "$ok" -ne 1 ]; then
  echo "decompressing ({name}) and extracting the release archive into $p failed" >&2"#,
            name = encoding.name()
        ),
    };
    let mut s = format!(
        r#"{PRELUDE}d={d}
[ -d "$d/releases" ] && [ -d "$d/shared" ] || mkdir -p -- "$d/releases" "$d/shared" || exit 1
for p in "$d"/releases/*.partial "$d"/.current.tmp.*; do
  [ -e "$p" ] || [ -L "$p" ] || continue
  rm -rf -- "$p" || exit 1
done
p={partial}
if [ -e {release} ]; then echo "release {id} already exists in $d/releases" >&2; exit 1; fi
mkdir -- "$p" || exit 1
{extract}
  rm -rf -- "$p"
  exit 1
fi
"#,
        d = quote(layout.deploy_to()),
        partial = quote(&layout.partial(id)),
        release = quote(&layout.release(id)),
    );
    if let Some(prev) = previous {
        // Binary deltas against the previous release's copy. A base that differs on this
        // host fails zstd's frame checksum (or, failing that, the check after the
        // upload): not verified, and the deployer sends the whole release instead.
        s.push_str(&format!(
            r#"if [ -f "$p/.slipway/patches" ]; then
  rc=0
  b={prev}
  while IFS='	' read -r n mode path; do
    zstd -d -q --long=31 --patch-from="$b/$path" -o "$p/$path" "$p/.slipway/patch/$n" && chmod "$mode" "$p/$path" || {{ rc=1; break; }}
  done < "$p/.slipway/patches"
  if [ "$rc" -ne 0 ]; then
    echo "a binary delta did not apply: the previous release's copy differs on this host" >&2
    rm -rf -- "$p"
    exit {EXIT_NOT_VERIFIED}
  fi
  rm -rf -- "$p/.slipway/patch" "$p/.slipway/patches"
fi
"#,
            prev = quote(&layout.release(prev)),
        ));
        s.push_str(&format!(
            r#"if [ -f "$p/.slipway/verify.sizes" ]; then
  rc=127
  if command -v perl >/dev/null 2>&1; then
    rc=0
    (cd -- {prev} && exec perl -e '{LINK_UNCHANGED}' "$p/.slipway/verify.sizes" {to}) || rc=$?
    # Linked and their sizes checked: nothing left for the check after the upload.
    [ "$rc" -ne 0 ] || rm -f -- "$p/.slipway/verify.sizes"
  fi
  if [ "$rc" -eq 127 ] || [ "$rc" -eq 126 ]; then
    # No perl on this host: cp links them; their sizes are checked with the others.
    rc=0
    (cd -- {prev} && cut -f 2- < "$p/.slipway/verify.sizes" | tr '\n' '\0' | xargs -0 -r cp -l --parents -t {to} --) || rc=1
  fi
  if [ "$rc" -ne 0 ]; then
    echo "linking unchanged files from release {prev_id} failed" >&2
    rm -rf -- "$p"
    exit {EXIT_NOT_VERIFIED}
  fi
fi
"#,
            prev = quote(&layout.release(prev)),
            prev_id = prev,
            // Relative to the previous release (both are in releases/): a path of the
            // release then needs only its own length plus ~25 bytes under PATH_MAX,
            // whatever the length of deploy_to.
            to = quote(&format!("../{id}.partial")),
        ));
    }
    s
}

/// A deploy's upload step on one host, in two parts ([`Receive::whole`] is the step as one
/// script): checks that the shared files exist (before a byte of the archive is read),
/// receives the archive ([`upload`]), verifies it and links the shared paths
/// ([`finalize`]), then runs `then` in the finished release (marking it ready, when there
/// are no build hooks). In parts for a host that must check what it read before the
/// release is finished (a host fetching from a relay checks the stream's digest).
#[derive(Debug, Clone)]
pub struct Receive {
    /// Checks the shared files and extracts the archive (stdin) into `partial`.
    pub head: String,
    /// Verifies the partial release, links the shared paths, renames it into place and
    /// runs the step's `then`.
    pub tail: String,
    /// `releases/ID.partial`, where `head` extracts.
    pub partial: String,
}

impl Receive {
    /// The whole step, as a direct upload runs it.
    pub fn whole(&self) -> String {
        format!("{}{}", self.head, self.tail)
    }
}

/// The upload step's two parts: see [`Receive`].
pub fn receive(
    layout: &Layout,
    id: &ReleaseId,
    previous: Option<&ReleaseId>,
    encoding: Encoding,
    files: &[String],
    dirs: &[String],
    then: &str,
) -> Receive {
    let mut head = format!("{PRELUDE}d={}\n", quote(layout.deploy_to()));
    for f in files {
        head.push_str(&format!(
            "[ -f {shared} ] || {{ echo \"shared file \"{name}\" is missing in $d/shared (create it, or remove it from [shared] files)\" >&2; exit 1; }}\n",
            shared = quote(&layout.shared_path(f)),
            name = quote(f),
        ));
    }
    head.push_str(&upload(layout, id, previous, encoding));
    let mut tail = finalize(layout, id, files, dirs);
    if !then.is_empty() {
        tail.push_str(&format!(
            "cd -- {} || exit 1\n{then}",
            quote(&layout.release(id))
        ));
    }
    Receive {
        head,
        tail,
        partial: layout.partial(id),
    }
}

/// Checks the shared files, links shared files and dirs into the partial release, then
/// renames it to `releases/ID`. A missing shared file fails here, before any switch,
/// and the partial release is removed.
pub fn finalize(layout: &Layout, id: &ReleaseId, files: &[String], dirs: &[String]) -> String {
    let mut s = format!(
        "{PRELUDE}d={d}\np={partial}\nr={release}\n[ -d \"$p\" ] || {{ echo \"$p is missing (the upload did not finish)\" >&2; exit 1; }}\n{verify}missing=0\n",
        verify = verify_partial(),
        d = quote(layout.deploy_to()),
        partial = quote(&layout.partial(id)),
        release = quote(&layout.release(id)),
    );
    for f in files {
        let shared = quote(&layout.shared_path(f));
        s.push_str(&format!(
            "if [ ! -f {shared} ]; then echo \"shared file \"{name}\" is missing in $d/shared (create it, or remove it from [shared] files)\" >&2; missing=1; fi\n",
            name = quote(f),
        ));
    }
    s.push_str("if [ \"$missing\" -ne 0 ]; then rm -rf -- \"$p\"; exit 1; fi\n");
    for dir in dirs {
        let shared = quote(&layout.shared_path(dir));
        s.push_str(&format!(
            "[ -d {shared} ] || mkdir -p -- {shared} || exit 1\n"
        ));
    }
    for path in files.iter().chain(dirs) {
        let shared = quote(&layout.shared_path(path));
        let inside_path = format!("{}/{path}", layout.partial(id));
        let inside = quote(&inside_path);
        let parent = quote(inside_path.rsplit_once('/').map_or(".", |(dir, _)| dir));
        s.push_str(&format!(
            "{{ {{ [ ! -e {inside} ] && [ ! -L {inside} ]; }} || rm -rf -- {inside}; }} && {{ [ -d {parent} ] || mkdir -p -- {parent}; }} && ln -s -- {shared} {inside} || {{ echo \"cannot link \"{name}\" into the release\" >&2; rm -rf -- \"$p\"; exit 1; }}\n",
            name = quote(path),
        ));
        s.push_str(&format!(
            "[ -e {inside} ] || {{ echo \"shared link \"{name}\" does not resolve\" >&2; rm -rf -- \"$p\"; exit 1; }}\n",
            name = quote(path),
        ));
    }
    s.push_str("mv -- \"$p\" \"$r\" || { rm -rf -- \"$p\"; exit 1; }\n");
    s
}

/// Makes a built release read-only (`immutable = true`): every file and directory loses
/// its write bits, except `.slipway/` (its record changes state on switches). Symlinks
/// (the shared links) are not followed: shared files stay writable.
pub fn make_read_only(layout: &Layout, id: &ReleaseId) -> String {
    let r = quote(&layout.release(id));
    format!(
        "chmod -R a-w -- {r} && chmod u+w -- {r}/.slipway || {{ echo \"cannot make release {id} read-only\" >&2; exit 1; }}\n"
    )
}

/// Prints a release's manifest (for incremental uploads).
pub fn read_manifest(layout: &Layout, id: &ReleaseId) -> String {
    format!(
        r#"{PRELUDE}r={r}
cat -- "$r/{RELEASE_MANIFEST}" || exit 1
if [ -f "$r/{RELEASE_STAT_SHIPPED}" ] && [ -f "$r/{RELEASE_STAT}" ]; then
  echo '{BUILT_OVER}'
  awk '{STAT_CHANGES}' "$r/{RELEASE_STAT_SHIPPED}" "$r/{RELEASE_STAT}"
fi
"#,
        r = quote(&layout.release(id)),
    )
}

/// In [`read_manifest`]'s output, after the manifest: the shipped files that the
/// release's build hooks changed or removed, one path per line. They are not what the
/// manifest says any more, so a deploy sends them instead of linking them.
pub const BUILT_OVER: &str = "#built-over";

/// Removes a partial upload.
pub fn remove_partial(layout: &Layout, id: &ReleaseId) -> String {
    format!("{PRELUDE}rm -rf -- {}\n", quote(&layout.partial(id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_perl_linker_fits_in_single_quotes() {
        // It is passed as `perl -e '...'`: a single quote would end it early.
        assert!(!LINK_UNCHANGED.contains('\''));
        let script = upload(
            &Layout::new("/srv/app"),
            &ReleaseId::parse("20260101T000000Z").unwrap(),
            Some(&ReleaseId::parse("20251231T000000Z").unwrap()),
            Encoding::Raw,
        );
        assert!(script.contains(&format!("perl -e '{LINK_UNCHANGED}'")));
    }
}
