//! Every shell script slipway runs on a host, built in one place. One script per step
//! per host: a login shell that is slow to start is paid once per step, not per command.
//! Every interpolated value goes through [`quote`].

use crate::layout::{Layout, RELEASE_MANIFEST, RELEASE_META, ReleaseId, quote};

/// Exit status of the lock script when someone else holds the lock.
pub const EXIT_LOCK_HELD: i32 = 75;

/// Exit status when a release does not match its manifest, or its unchanged files could
/// not be linked from the previous release: the deployer then sends the whole release.
pub const EXIT_NOT_VERIFIED: i32 = 76;

const PRELUDE: &str = "set -u\numask 022\n";

/// Reads everything a decision needs, changing nothing: whether `deploy_to` exists, the
/// target of `current`, each release with its record, partial uploads, the lock holder,
/// and the host's clock. Output: one tab-separated record per line.
pub fn probe(layout: &Layout) -> String {
    format!(
        r#"{PRELUDE}d={d}
if [ -d "$d" ]; then echo "exists	1"; else echo "exists	0"; fi
if [ -L "$d/current" ]; then printf 'current\t%s\n' "$(readlink "$d/current")"; fi
if [ -d "$d/releases" ]; then
  for r in "$d"/releases/*; do
    [ -e "$r" ] || [ -L "$r" ] || continue
    n=${{r##*/}}
    m=""
    if [ -f "$r/{meta}" ]; then m=$(tr '\n\t' '  ' < "$r/{meta}"); fi
    printf 'release\t%s\t%s\n' "$n" "$m"
  done
fi
if [ -d "$d/.slipway/lock" ]; then
  printf 'lock\t%s\n' "$(tr '\n\t' '  ' < "$d/.slipway/lock/owner.json" 2>/dev/null)"
fi
printf 'clock\t%s\n' "$(date +%s)"
"#,
        d = quote(layout.deploy_to()),
        meta = RELEASE_META,
    )
}

fn probe_in_subshell(layout: &Layout) -> String {
    format!("(\n{}\n)", probe(layout))
}

/// Takes the deploy lock: `mkdir` is atomic, so of two runs exactly one succeeds. The
/// winner writes who it is; a loser prints the holder and exits [`EXIT_LOCK_HELD`].
/// Once the lock is taken, the same script reads the host's state (the probe), saving
/// a round trip.
pub fn lock(layout: &Layout, owner_json: &str) -> String {
    format!(
        r#"{PRELUDE}d={d}
mkdir -p -- "$d" || exit 1
(umask 077 && mkdir -p -- "$d/.slipway") || exit 1
if (umask 077 && mkdir -- "$d/.slipway/lock") 2>/dev/null; then
  (umask 077 && printf '%s\n' {owner} > "$d/.slipway/lock/owner.json") || {{ rmdir -- "$d/.slipway/lock"; exit 1; }}
  {then}
  exit 0
fi
if [ ! -d "$d/.slipway/lock" ]; then echo "cannot create $d/.slipway/lock" >&2; exit 1; fi
cat -- "$d/.slipway/lock/owner.json" 2>/dev/null || echo '{{}}'
exit {EXIT_LOCK_HELD}
"#,
        d = quote(layout.deploy_to()),
        owner = quote(owner_json),
        then = probe_in_subshell(layout),
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
if grep -qF -- {needle} "$d/.slipway/lock/owner.json" 2>/dev/null; then
  rm -rf -- "$d/.slipway/lock"
fi
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

/// Receives the release archive on stdin into `releases/ID.partial`. Leftovers of a
/// crashed run (stale `.partial` dirs and temporary `current` links) are removed first:
/// the lock is held, so nobody else is writing them. With `previous`, the archive holds
/// only new and changed files plus `.slipway/link-list`, the files to hard-link from the
/// previous release: one `cp -l` for all of them, not one command per file.
pub fn upload(layout: &Layout, id: &ReleaseId, previous: Option<&ReleaseId>) -> String {
    let mut s = format!(
        r#"{PRELUDE}d={d}
mkdir -p -- "$d/releases" "$d/shared" || exit 1
for p in "$d"/releases/*.partial; do
  [ -e "$p" ] || continue
  rm -rf -- "$p" || exit 1
done
rm -f -- "$d"/.current.tmp.*
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
            r#"if [ -f "$p/.slipway/link-list" ]; then
  if ! (cd -- {prev} && tr '\n' '\0' < "$p/.slipway/link-list" | xargs -0 -r cp -l --parents -t "$p" --); then
    echo "linking unchanged files from release {prev_id} failed" >&2
    rm -rf -- "$p"
    exit {EXIT_NOT_VERIFIED}
  fi
  rm -f -- "$p/.slipway/link-list"
fi
"#,
            prev = quote(&layout.release(prev)),
            prev_id = prev,
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
        s.push_str(&format!("mkdir -p -- {shared} || exit 1\n"));
    }
    for (path, is_dir) in files
        .iter()
        .map(|f| (f, false))
        .chain(dirs.iter().map(|d| (d, true)))
    {
        let shared = quote(&layout.shared_path(path));
        let inside = quote(&format!("{}/{path}", layout.partial(id)));
        let _ = is_dir;
        s.push_str(&format!(
            "rm -rf -- {inside} && mkdir -p -- \"$(dirname -- {inside})\" && ln -s -- {shared} {inside} || {{ echo \"cannot link \"{name}\" into the release\" >&2; rm -rf -- \"$p\"; exit 1; }}\n",
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

/// Checks every file of the partial release against `.slipway/manifest.sha256`, before
/// shared links replace any path: a truncated upload, a full disk or a tampered file in
/// the release linked from is refused, naming the files.
fn verify_partial() -> String {
    format!(
        r#"if [ -f "$p/.slipway/manifest.sha256" ]; then
  if ! bad=$(cd -- "$p" && sha256sum --quiet --strict -c .slipway/manifest.sha256 2>&1); then
    echo "the uploaded release does not match its manifest: $(printf '%s' "$bad" | head -n 5 | tr '\n' ';')" >&2
    rm -rf -- "$p"
    exit {EXIT_NOT_VERIFIED}
  fi
fi
"#
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
        "mkdir -p -- \"$(dirname -- {file})\" && printf '%s\\n' {meta} > {tmp} && mv -f -- {tmp} {file} || {{ echo \"cannot write \"{file} >&2; exit 1; }}\n",
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
    let mut s = format!("{PRELUDE}d={d}\n", d = quote(layout.deploy_to()));
    match target {
        Some(id) => {
            let tmp = quote(&layout.current_tmp(id, nonce));
            s.push_str(&format!(
                "[ -f {meta} ] || {{ echo \"release {id} is not complete on this host (no {RELEASE_META})\" >&2; exit 1; }}\n\
                 rm -f -- {tmp}\n\
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
        s.push_str(&format!("rm -rf -- {}\n", quote(&layout.release(id))));
    }
    s
}

/// Prints a release's manifest (for incremental uploads).
pub fn read_manifest(layout: &Layout, id: &ReleaseId) -> String {
    format!(
        "{PRELUDE}cat -- {}\n",
        quote(&format!("{}/{RELEASE_MANIFEST}", layout.release(id)))
    )
}

/// Removes a partial upload.
pub fn remove_partial(layout: &Layout, id: &ReleaseId) -> String {
    format!("{PRELUDE}rm -rf -- {}\n", quote(&layout.partial(id)))
}

/// Appends one line to the audit log (one `write` of a short line with O_APPEND: lines
/// from concurrent writers do not interleave).
pub fn audit(layout: &Layout, line: &str) -> String {
    format!(
        "(umask 077 && mkdir -p -- {dir} && printf '%s\\n' {line} >> {log}) || echo 'slipway: cannot append to the audit log' >&2\n",
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

#[cfg(test)]
mod tests {
    use super::*;

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
            lock(&layout, "{\"a\":\"'\"}"),
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
        ];
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
}
