//! Every shell script slipway runs on a host, built in one place. One script per step
//! per host: a login shell that is slow to start is paid once per step, not per command.
//! Every interpolated value goes through [`quote`].

use crate::layout::{
    Layout, RELEASE_MANIFEST, RELEASE_META, RELEASE_STAT, RELEASE_STAT_SHIPPED, ReleaseId, quote,
};

/// Exit status of the lock script when someone else holds the lock.
pub const EXIT_LOCK_HELD: i32 = 75;

/// Exit status when a release does not match its manifest, or its unchanged files could
/// not be linked from the previous release: the deployer then sends the whole release.
pub const EXIT_NOT_VERIFIED: i32 = 76;

const PRELUDE: &str = "set -u\numask 022\n";

/// Reads everything a decision needs, changing nothing: whether `deploy_to` exists, the
/// target of `current`, each release with its record, partial uploads, the lock holder,
/// and the host's clock. Output: one tab-separated record per line. The records are
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
fn probe_body(layout: &Layout) -> String {
    format!(
        r#"if [ -d "$d" ]; then echo "exists	1"; else echo "exists	0"; fi
if [ -L "$d/current" ]; then printf 'current\t'; readlink -- "$d/current"; fi
if [ -d "$d/releases" ]; then
  for r in "$d"/releases/*; do
    [ -e "$r" ] || [ -L "$r" ] || continue
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
printf 'clock\t'; date +%s
"#,
        meta = RELEASE_META,
        rollout = quote(&layout.rollout_state()),
    )
}

/// Takes the deploy lock: `mkdir` is atomic, so of two runs exactly one succeeds. The
/// winner writes who it is; a loser prints the holder and exits [`EXIT_LOCK_HELD`].
/// Once the lock is taken, the same script reads the host's state (the probe), saving
/// a round trip, then runs `then` (more reading a command needs, e.g. a rollback's
/// check of its likely target).
pub fn lock(layout: &Layout, owner_json: &str, then: &str) -> String {
    format!(
        r#"{PRELUDE}d={d}
if [ ! -d "$d/.slipway" ]; then
  mkdir -p -- "$d" && (umask 077 && mkdir -p -- "$d/.slipway") || exit 1
fi
tries=0
while :; do
  umask 077
  if mkdir -- "$d/.slipway/lock" 2>/dev/null; then
    printf '%s\n' {owner} > "$d/.slipway/lock/owner.json" || {{ rmdir -- "$d/.slipway/lock"; exit 1; }}
    umask 022
{probe}{then}
    exit 0
  fi
  umask 022
  if [ ! -e "$d/.slipway/lock" ]; then
    # Not there, yet mkdir failed: released just now (try again), or not creatable.
    [ "$tries" -lt 3 ] || {{ echo "cannot create $d/.slipway/lock" >&2; exit 1; }}
    tries=$((tries + 1))
    continue
  fi
  # The winner of a race writes its record just after its mkdir: give it a moment, so
  # that the loser can name the holder.
  n=0
  while [ ! -s "$d/.slipway/lock/owner.json" ] && [ -d "$d/.slipway/lock" ] && [ $n -lt 20 ]; do
    sleep 0.05 2>/dev/null || sleep 1
    n=$((n + 1))
  done
  # Released in the meantime (the holder finished): try again, a few times.
  if [ -d "$d/.slipway/lock" ] || [ "$tries" -ge 3 ]; then break; fi
  tries=$((tries + 1))
done
cat -- "$d/.slipway/lock/owner.json" 2>/dev/null || echo '{{}}'
exit {EXIT_LOCK_HELD}
"#,
        d = quote(layout.deploy_to()),
        owner = quote(owner_json),
        probe = probe_body(layout),
    )
}

/// Appends `audit_line` to the audit log, then releases the lock: the last round trip
/// of a run.
pub fn finish(layout: &Layout, audit_line: &str, token: &str) -> String {
    format!("{}{}", audit(layout, audit_line), unlock(layout, token))
}

/// Releases the lock if, and only if, it is still the one this run took.
pub fn unlock(layout: &Layout, token: &str) -> String {
    let needle = format!("\"token\":\"{token}\"");
    format!(
        r#"{PRELUDE}d={d}
owner=""
if [ -f "$d/.slipway/lock/owner.json" ]; then IFS= read -r owner < "$d/.slipway/lock/owner.json" || true; fi
case "$owner" in
  *{needle}*) rm -rf -- "$d/.slipway/lock" ;;
esac
"#,
        d = quote(layout.deploy_to()),
        needle = quote(&needle),
    )
}

/// Breaks the lock whoever holds it (`slipway unlock`), printing the holder it removed.
pub fn break_lock(layout: &Layout) -> String {
    format!(
        r#"{PRELUDE}d={d}
if [ -d "$d/.slipway/lock" ]; then
  cat -- "$d/.slipway/lock/owner.json" 2>/dev/null || echo '{{}}'
  rm -rf -- "$d/.slipway/lock"
fi
"#,
        d = quote(layout.deploy_to()),
    )
}

/// Hard-links the unchanged files of an incremental upload from the previous release (the
/// working directory) into the partial release (`$ARGV[1]`), reading `size<TAB>path` lines
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
pub fn upload(layout: &Layout, id: &ReleaseId, previous: Option<&ReleaseId>) -> String {
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
if ! tar -x -o -f - -C "$p"; then
  echo "extracting the release archive into $p failed" >&2
  rm -rf -- "$p"
  exit 1
fi
"#,
        d = quote(layout.deploy_to()),
        partial = quote(&layout.partial(id)),
        release = quote(&layout.release(id)),
    );
    if let Some(prev) = previous {
        s.push_str(&format!(
            r#"if [ -f "$p/.slipway/verify.sizes" ]; then
  rc=127
  if command -v perl >/dev/null 2>&1; then
    rc=0
    (cd -- {prev} && exec perl -e '{LINK_UNCHANGED}' "$p/.slipway/verify.sizes" "$p") || rc=$?
    # Linked and their sizes checked: nothing left for the check after the upload.
    [ "$rc" -ne 0 ] || rm -f -- "$p/.slipway/verify.sizes"
  fi
  if [ "$rc" -eq 127 ] || [ "$rc" -eq 126 ]; then
    # No perl on this host: cp links them; their sizes are checked with the others.
    rc=0
    (cd -- {prev} && cut -f 2- < "$p/.slipway/verify.sizes" | tr '\n' '\0' | xargs -0 -r cp -l --parents -t "$p" --) || rc=1
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
        ));
    }
    s
}

/// A deploy's whole upload step on one host, as one script: checks that the shared files
/// exist (before a byte of the archive is read), receives the archive ([`upload`]),
/// verifies it and links the shared paths ([`finalize`]), then runs `then` in the
/// finished release (marking it ready, when there are no build hooks).
pub fn receive(
    layout: &Layout,
    id: &ReleaseId,
    previous: Option<&ReleaseId>,
    files: &[String],
    dirs: &[String],
    then: &str,
) -> String {
    let mut s = format!("{PRELUDE}d={}\n", quote(layout.deploy_to()));
    for f in files {
        s.push_str(&format!(
            "[ -f {shared} ] || {{ echo \"shared file \"{name}\" is missing in $d/shared (create it, or remove it from [shared] files)\" >&2; exit 1; }}\n",
            shared = quote(&layout.shared_path(f)),
            name = quote(f),
        ));
    }
    s.push_str(&upload(layout, id, previous));
    s.push_str(&finalize(layout, id, files, dirs));
    if !then.is_empty() {
        s.push_str(&format!(
            "cd -- {} || exit 1\n{then}",
            quote(&layout.release(id))
        ));
    }
    s
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

/// Compares two `size mtime path` listings (the first recorded, the second as it is now),
/// printing the paths whose size or modification time differ, or that are gone.
const STAT_CHANGES: &str = r#"
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
    substr($0, 1, 1) == "\\" || (substr($0, 67) in c)' - .slipway/manifest.$ext)
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
fn verify_partial() -> String {
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

/// The environment every hook sees.
pub struct HookEnv<'a> {
    pub release: &'a ReleaseId,
    pub release_path: &'a str,
    pub deploy_to: &'a str,
    pub stage: &'a str,
    pub host: &'a str,
}

/// Runs hook commands one after another in `release_path`; the first failure stops the
/// step and names the command. Each command is the user's own shell text, run by a
/// nested `sh -c` so that nothing of ours is mixed into it.
pub fn hooks(kind: &str, env: &HookEnv<'_>, commands: &[String], then: &str) -> String {
    let mut s = format!(
        "{PRELUDE}cd -- {path} || exit 1\nexport SLIPWAY_RELEASE_ID={id} SLIPWAY_RELEASE_PATH={path} SLIPWAY_DEPLOY_TO={deploy_to} SLIPWAY_STAGE={stage} SLIPWAY_HOST={host}\n",
        path = quote(env.release_path),
        id = quote(env.release.as_str()),
        deploy_to = quote(env.deploy_to),
        stage = quote(env.stage),
        host = quote(env.host),
    );
    for command in commands {
        s.push_str(&format!(
            "sh -c {cmd} </dev/null || {{ rc=$?; printf '%s hook `%s` exited with status %s\\n' {kind} {cmd} \"$rc\" >&2; exit 1; }}\n",
            cmd = quote(command),
            kind = quote(kind),
        ));
    }
    s.push_str(then);
    s
}

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

/// Points `current` at `target` (or removes it, for a first deploy switched back) by
/// renaming a uniquely named temporary link over it: rename(2) is atomic, so a reader
/// sees the old release or the new one, never neither. Then writes the records.
pub fn switch(
    layout: &Layout,
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
    match target {
        Some(id) => {
            let tmp = quote(&layout.current_tmp(id, nonce));
            s.push_str(&format!(
                "[ -f {meta} ] || {{ echo \"release {id} is not complete on this host (no {RELEASE_META})\" >&2; exit 1; }}\n\
                 {{ [ ! -L {tmp} ] || rm -f -- {tmp}; }}\n\
                 ln -s -- {link} {tmp} || exit 1\n\
                 mv -T -- {tmp} \"$d/current\" || {{ rm -f -- {tmp}; echo \"renaming the new link over $d/current failed\" >&2; exit 1; }}\n",
                meta = quote(&format!("{}/{RELEASE_META}", layout.release(id))),
                link = quote(&Layout::current_target(id)),
            ));
        }
        None => s.push_str("rm -f -- \"$d/current\" || exit 1\n"),
    }
    for (id, line) in records {
        s.push_str(&write_meta(layout, id, line));
    }
    s
}

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
    // Archive names are release ids: sortable as text, newest last.
    s.push_str(&format!(
        "ls -1 -- \"$b\" | grep -E '^[0-9]{{8}}T[0-9]{{6}}Z\\.tar\\.zst$' | sort | head -n -{keep} | while IFS= read -r f; do rm -f -- \"$b/$f\"; done\n"
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

/// Appends one line to the audit log (one `write` of a short line with O_APPEND: lines
/// from concurrent writers do not interleave).
pub fn audit(layout: &Layout, line: &str) -> String {
    format!(
        "{{ [ -d {dir} ] || (umask 077 && mkdir -p -- {dir}); }} && {{ [ -f {log} ] || (umask 077 && : > {log}); }} && printf '%s\\n' {line} >> {log} || echo 'slipway: cannot append to the audit log' >&2\n",
        dir = quote(&layout.state_dir()),
        log = quote(&layout.audit_log()),
        line = quote(line),
    )
}

/// Prints the audit log (nothing if there is none yet).
pub fn read_audit(layout: &Layout) -> String {
    format!(
        "{PRELUDE}l={}\nif [ -f \"$l\" ]; then cat -- \"$l\"; fi\n",
        quote(&layout.audit_log())
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
                "if [ -L {p} ] && [ ! -e {p} ]; then t=dangling; elif [ -f {p} ]; then t=file; elif [ -d {p} ]; then t=dir; elif [ -e {p} ]; then t=other; else t=missing; fi\nprintf 'shared_{kind}\\t%s\\t%s\\n' {i} \"$t\"\n"
            ));
        }
    }
    s
}

// --- database (src/db) ---------------------------------------------------------------
//
// Credentials of postgres/mysql reach these scripts on stdin (one value per line: host or
// socket, port, user, password, database), never on a command line (`ps` shows those)
// and never in a file: the tools read them from their environment (PGPASSWORD,
// MYSQL_PWD), which only the same user and root can read.

const READ_DB_CREDENTIALS: &str = "IFS= read -r db_host || { echo 'no database credentials on stdin' >&2; exit 1; }\nIFS= read -r db_port\nIFS= read -r db_user\nIFS= read -r db_password\nIFS= read -r db_name\n";

fn need_tool(tool: &str, package: &str) -> String {
    format!(
        "command -v {t} >/dev/null 2>&1 || {{ echo {msg} >&2; exit 1; }}\n",
        t = quote(tool),
        msg = quote(&format!(
            "{tool} is not installed on this host: install it (Debian/Ubuntu: apt-get install {package})"
        )),
    )
}

/// Runs `sqlite3` on the database file `shared/<path>` with the SQL program on stdin:
/// `-bail` stops at the first error (sqlite3 exits non-zero; an open transaction is
/// rolled back when it closes the file).
pub fn sqlite(layout: &Layout, path: &str) -> String {
    format!(
        "{PRELUDE}{}f={}\nmkdir -p -- \"$(dirname -- \"$f\")\" || exit 1\nexec sqlite3 -bail -batch \"$f\"\n",
        need_tool("sqlite3", "sqlite3"),
        quote(&layout.shared_path(path))
    )
}

/// Runs the read-only `query` on `_sqlx_migrations` of `shared/<path>`, rows separated
/// by `|`; prints nothing when the file or the table does not exist (a read never
/// creates either).
pub fn sqlite_applied(layout: &Layout, path: &str, query: &str) -> String {
    format!(
        "{PRELUDE}{}f={}\n[ -f \"$f\" ] || exit 0\nn=$(sqlite3 -readonly -batch \"$f\" \"SELECT count(*) FROM sqlite_master WHERE type='table' AND name='_sqlx_migrations'\") || exit 1\n[ \"$n\" = 0 ] && exit 0\nexec sqlite3 -readonly -batch -noheader -separator '|' \"$f\" {}\n",
        need_tool("sqlite3", "sqlite3"),
        quote(&layout.shared_path(path)),
        quote(query),
    )
}

/// Prints, base64-encoded, a tar of the directory `dir` of release `id` (nothing if the
/// release has no such directory): how a rollback reads the down scripts of the release
/// being left, which only the host has.
pub fn fetch_migrations(layout: &Layout, id: &ReleaseId, dir: &str) -> String {
    format!(
        "{PRELUDE}r={r}\n[ -d \"$r\" ] || {{ echo \"release \"{id}\" is not on this host\" >&2; exit 1; }}\ncd -- \"$r\" || exit 1\n[ -d {dir} ] || exit 0\nset -e\ntar -cf - -- {dir} | base64\n",
        r = quote(&layout.release(id)),
        id = quote(id.as_str()),
        dir = quote(dir),
    )
}

/// SQL string literal (for sqlite3's command line; then shell-quoted as a whole).
fn sql_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Argument of a sqlite3 dot-command, double-quoted with C escapes.
fn dot_quote(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Takes a snapshot into `backups/db/<name>` (written to a temporary name, then renamed:
/// a snapshot that exists is complete). For postgres and mysql the credentials come on
/// stdin; `sqlite_path` is the database file under `shared/`.
pub fn snapshot(
    layout: &Layout,
    driver: crate::config::DbDriver,
    name: &str,
    sqlite_path: Option<&str>,
) -> String {
    use crate::config::DbDriver;
    let file = layout.db_snapshot(name);
    let tmp = format!("{file}.tmp");
    let mut s = format!(
        "{PRELUDE}mkdir -p -- {dir} || exit 1\nf={f}\nt={t}\nrm -f -- \"$t\"\n",
        dir = quote(&layout.db_backups()),
        f = quote(&file),
        t = quote(&tmp),
    );
    match driver {
        DbDriver::Postgres => {
            s.push_str(&need_tool("pg_dump", "postgresql-client"));
            s.push_str(READ_DB_CREDENTIALS);
            s.push_str("PGHOST=$db_host PGUSER=$db_user PGPASSWORD=$db_password PGDATABASE=$db_name\nexport PGHOST PGUSER PGPASSWORD PGDATABASE\nif [ -n \"$db_port\" ]; then PGPORT=$db_port; export PGPORT; fi\n");
            s.push_str("pg_dump -Fc -f \"$t\" || { rm -f -- \"$t\"; echo 'pg_dump failed' >&2; exit 1; }\n");
        }
        DbDriver::Mysql => {
            s.push_str("if command -v mariadb-dump >/dev/null 2>&1; then dump=mariadb-dump; elif command -v mysqldump >/dev/null 2>&1; then dump=mysqldump; else echo 'mariadb-dump/mysqldump is not installed on this host: install it (Debian/Ubuntu: apt-get install mariadb-client)' >&2; exit 1; fi\n");
            s.push_str(READ_DB_CREDENTIALS);
            s.push_str(MYSQL_CONNECTION);
            s.push_str("MYSQL_PWD=$db_password \"$dump\" \"$@\" --single-transaction --routines --triggers --no-tablespaces --add-drop-database --databases \"$db_name\" > \"$t\" || { rm -f -- \"$t\"; echo \"$dump failed\" >&2; exit 1; }\n");
        }
        DbDriver::Sqlite => {
            let db = layout.shared_path(sqlite_path.unwrap_or_default());
            s.push_str(&need_tool("sqlite3", "sqlite3"));
            s.push_str(&format!(
                "mkdir -p -- \"$(dirname -- {db})\" || exit 1\nsqlite3 -bail {db} {sql} || {{ rm -f -- \"$t\"; echo 'sqlite3 VACUUM INTO failed' >&2; exit 1; }}\n",
                db = quote(&db),
                sql = quote(&format!("VACUUM INTO {}", sql_literal(&tmp))),
            ));
        }
    }
    s.push_str("mv -f -- \"$t\" \"$f\" || exit 1\n");
    s
}

/// Sets the positional parameters to the mysql client's connection options.
const MYSQL_CONNECTION: &str = "if [ -z \"$db_port\" ]; then set -- \"--socket=$db_host\" \"--user=$db_user\"; else set -- \"--host=$db_host\" \"--port=$db_port\" \"--user=$db_user\"; fi\n";

/// Restores the snapshot `backups/db/<name>` into the database.
pub fn restore(
    layout: &Layout,
    driver: crate::config::DbDriver,
    name: &str,
    sqlite_path: Option<&str>,
) -> String {
    use crate::config::DbDriver;
    let mut s = format!(
        "{PRELUDE}f={f}\n[ -f \"$f\" ] || {{ echo \"no snapshot $f on this host\" >&2; exit 1; }}\n",
        f = quote(&layout.db_snapshot(name)),
    );
    match driver {
        DbDriver::Postgres => {
            s.push_str(&need_tool("pg_restore", "postgresql-client"));
            s.push_str(READ_DB_CREDENTIALS);
            s.push_str("PGHOST=$db_host PGUSER=$db_user PGPASSWORD=$db_password\nexport PGHOST PGUSER PGPASSWORD\nif [ -n \"$db_port\" ]; then PGPORT=$db_port; export PGPORT; fi\n");
            s.push_str("pg_restore --clean --if-exists --no-owner --single-transaction --exit-on-error -d \"$db_name\" \"$f\" || { echo 'pg_restore failed' >&2; exit 1; }\n");
        }
        DbDriver::Mysql => {
            s.push_str("if command -v mariadb >/dev/null 2>&1; then client=mariadb; elif command -v mysql >/dev/null 2>&1; then client=mysql; else echo 'the mariadb/mysql client is not installed on this host: install it (Debian/Ubuntu: apt-get install mariadb-client)' >&2; exit 1; fi\n");
            s.push_str(READ_DB_CREDENTIALS);
            s.push_str(MYSQL_CONNECTION);
            s.push_str("MYSQL_PWD=$db_password \"$client\" \"$@\" < \"$f\" || { echo \"$client failed to load the snapshot\" >&2; exit 1; }\n");
        }
        DbDriver::Sqlite => {
            let db = layout.shared_path(sqlite_path.unwrap_or_default());
            s.push_str(&need_tool("sqlite3", "sqlite3"));
            s.push_str(&format!(
                "mkdir -p -- \"$(dirname -- {db})\" || exit 1\nsqlite3 -bail {db} {cmd} || {{ echo 'sqlite3 .restore failed' >&2; exit 1; }}\n",
                db = quote(&db),
                cmd = quote(&format!(".restore {}", dot_quote(&layout.db_snapshot(name)))),
            ));
        }
    }
    s
}

/// Which of the database tools the db host has: one `tool<TAB>path-or-empty` per line.
pub fn db_tools(tools: &[&str]) -> String {
    let mut s = String::from(PRELUDE);
    for t in tools {
        s.push_str(&format!(
            "printf 'tool\t%s\t%s\n' {t} \"$(command -v {t} 2>/dev/null)\"\n",
            t = quote(t)
        ));
    }
    s
}

/// Lists the snapshots in `backups/db/`, one name per line.
pub fn list_snapshots(layout: &Layout) -> String {
    format!(
        "{PRELUDE}d={d}\n[ -d \"$d\" ] || exit 0\nfor f in \"$d\"/*.dump; do [ -f \"$f\" ] && printf '%s\\n' \"${{f##*/}}\"; done\nexit 0\n",
        d = quote(&layout.db_backups()),
    )
}

/// Removes snapshots (retention); `names` are validated snapshot names.
pub fn remove_snapshots(layout: &Layout, names: &[String]) -> String {
    let mut s = String::from(PRELUDE);
    for n in names {
        s.push_str(&format!("rm -f -- {}\n", quote(&layout.db_snapshot(n))));
    }
    s
}

/// Command mode: runs a framework's migration command on the db host in the release,
/// with the hook environment and, for a rollback, `SLIPWAY_TARGET_VERSION`.
pub fn db_command(env: &HookEnv<'_>, command: &str, target: Option<i64>) -> String {
    let mut s = format!(
        "{PRELUDE}cd -- {path} || exit 1\nexport SLIPWAY_RELEASE_ID={id} SLIPWAY_RELEASE_PATH={path} SLIPWAY_DEPLOY_TO={deploy_to} SLIPWAY_STAGE={stage} SLIPWAY_HOST={host}\n",
        path = quote(env.release_path),
        id = quote(env.release.as_str()),
        deploy_to = quote(env.deploy_to),
        stage = quote(env.stage),
        host = quote(env.host),
    );
    let command = match target {
        Some(v) => {
            s.push_str(&format!("export SLIPWAY_TARGET_VERSION={v}\n"));
            command.replace("{version}", &v.to_string())
        }
        None => command.to_string(),
    };
    s.push_str(&format!(
        "sh -c {cmd} </dev/null || {{ rc=$?; printf 'database command `%s` exited with status %s\\n' {cmd} \"$rc\" >&2; exit 1; }}\n",
        cmd = quote(&command),
    ));
    s
}

/// Exit status of [`in_release`] when the command's program was not found (sh's 127,
/// which the ssh transport cannot carry with its output).
pub const EXIT_NOT_FOUND: i32 = 86;

/// Runs `command` (already quoted where it carries values) in a release with the hook
/// environment, and exits with its status: the caller reads specific codes.
pub fn in_release(env: &HookEnv<'_>, command: &str) -> String {
    format!(
        "{PRELUDE}cd -- {path} || exit 1\nexport SLIPWAY_RELEASE_ID={id} SLIPWAY_RELEASE_PATH={path} SLIPWAY_DEPLOY_TO={deploy_to} SLIPWAY_STAGE={stage} SLIPWAY_HOST={host}\nsh -c {cmd} </dev/null\nrc=$?\n[ \"$rc\" -eq 127 ] && exit {EXIT_NOT_FOUND}\nexit \"$rc\"\n",
        path = quote(env.release_path),
        id = quote(env.release.as_str()),
        deploy_to = quote(env.deploy_to),
        stage = quote(env.stage),
        host = quote(env.host),
        cmd = quote(command),
    )
}

/// Writes the rollout state atomically (a temporary file renamed over the old one),
/// private like the audit log beside it.
pub fn write_rollout(layout: &Layout, json_line: &str) -> String {
    let file = layout.rollout_state();
    format!(
        "{PRELUDE}umask 077\nmkdir -p -- {dir} && printf '%s\\n' {json} > {tmp} && mv -f -- {tmp} {file} || {{ echo \"cannot write \"{file} >&2; exit 1; }}\n",
        dir = quote(&layout.state_dir()),
        file = quote(&file),
        tmp = quote(&format!("{file}.tmp")),
        json = quote(json_line),
    )
}

/// Prints the rollout state (nothing if there is none).
pub fn read_rollout(layout: &Layout) -> String {
    format!(
        "{PRELUDE}f={}\nif [ -f \"$f\" ]; then cat -- \"$f\"; fi\n",
        quote(&layout.rollout_state())
    )
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
        );
        assert!(script.contains(&format!("perl -e '{LINK_UNCHANGED}'")));
    }

    #[test]
    fn scripts_parse_as_posix_shell() {
        let layout = Layout::new("/srv/it's $(touch /tmp/x)");
        let id = ReleaseId::parse("20261124T040512Z").unwrap();
        let files = vec!["config/db 'x'.yml".to_string()];
        let dirs = vec!["log".to_string()];
        let env = HookEnv {
            release: &id,
            release_path: "/srv/a b",
            deploy_to: "/srv/$(x)",
            stage: "s",
            host: "h",
        };
        let scripts = [
            probe(&layout),
            lock(&layout, "{\"a\":\"'\"}", ""),
            unlock(&layout, "abc"),
            break_lock(&layout),
            upload(&layout, &id, None),
            upload(&layout, &id, Some(&id)),
            finalize(&layout, &id, &files, &dirs),
            hooks("build", &env, &["echo 'hi' && false".to_string()], ""),
            switch(&layout, Some(&id), "n1", &[(id.clone(), "{}".into())]),
            switch(&layout, None, "n1", &[]),
            remove_releases(&layout, std::slice::from_ref(&id)),
            audit(&layout, "{\"x\":\"$(y)\"}"),
            check(&layout, &files, &dirs),
            sqlite(&layout, "db/a'b.sqlite3"),
            sqlite_applied(&layout, "db/a.sqlite3", "SELECT 'x'"),
            fetch_migrations(&layout, &id, "db/migrate"),
            list_snapshots(&layout),
            db_tools(&["sqlite3", "pg_dump"]),
            remove_snapshots(&layout, &["x-postgres.dump".to_string()]),
            db_command(&env, "bin/migrate --to {version}", Some(3)),
            write_rollout(&layout, "{\"reason\":\"it's $(x)\"}"),
            read_rollout(&layout),
            receive(&layout, &id, Some(&id), &files, &dirs, "echo ready\n"),
            verify_release(&layout, &id, &files),
            format!(
                "d=/x\n{}{}",
                verify_likely_target(None, &dirs),
                verify_likely_target(Some(&id), &dirs)
            ),
            record_stat(&layout, &id),
        ];
        let mut scripts = scripts.to_vec();
        for driver in [
            crate::config::DbDriver::Postgres,
            crate::config::DbDriver::Mysql,
            crate::config::DbDriver::Sqlite,
        ] {
            scripts.push(snapshot(&layout, driver, "x-y.dump", Some("db/x\"y'.db")));
            scripts.push(restore(&layout, driver, "x-y.dump", Some("db/x.db")));
        }
        for script in scripts {
            // `sh -n` parses without running: every script must be valid POSIX shell.
            let out = std::process::Command::new("sh")
                .arg("-n")
                .arg("-c")
                .arg(&script)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{script}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

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
                .arg(receive(&layout, &id, None, &[], &[], ""))
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
