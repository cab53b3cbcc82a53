//! The deploy lock on a host: taking it (with the probe in the same round trip),
//! releasing it (only if it is still ours), breaking it.

use super::{EXIT_LOCK_HELD, PRELUDE, audit, probe::probe_body};
use crate::layout::{Layout, quote};

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
/// of a run. Fails (after trying both) when either failed.
pub fn finish(layout: &Layout, audit_line: &str, token: &str) -> String {
    format!(
        "{}slipway_audit_rc=$?\n{}[ \"$slipway_audit_rc\" -eq 0 ] || exit 1\n",
        audit(layout, audit_line),
        unlock(layout, token)
    )
}

/// Releases the lock if, and only if, it is still the one this run took.
pub fn unlock(layout: &Layout, token: &str) -> String {
    let needle = format!("\"token\":\"{token}\"");
    format!(
        r#"{PRELUDE}d={d}
owner=""
if [ -f "$d/.slipway/lock/owner.json" ]; then IFS= read -r owner < "$d/.slipway/lock/owner.json" || true; fi
case "$owner" in
  *{needle}*) rm -rf -- "$d/.slipway/lock" || {{ echo "cannot remove the deploy lock $d/.slipway/lock" >&2; exit 1; }} ;;
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
