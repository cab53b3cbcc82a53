//! Every shell script slipway runs on a host, built in one place. One script per step
//! per host: a login shell that is slow to start is paid once per step, not per command.
//! Every interpolated value goes through [`quote`](crate::layout::quote).
//!
//! Grouped by what the scripts are about, each file's functions re-exported here
//! (callers write `script::name(..)`):
//!
//! - `probe`: reading a host's state (the probe, `slipway check`'s survey).
//! - `lock`: taking, releasing and breaking the deploy lock.
//! - `upload`: receiving a release, linking unchanged and shared files.
//! - `verify`: checking releases against their manifests, recording their files.
//! - `hooks`: the user's commands in a release, with the hook environment.
//! - `switch`: moving `current`, writing release records.
//! - `prune`: removing, archiving and restoring releases.
//! - `db`: database snapshots, restores, sqlite, migrations, migration commands.
//! - `relay`: `[upload] relay`, a host serving the release to its group, the others fetching it.
//! - `rollout`, `audit`: the state files beside the releases.
//! - `traffic`: the proxy's include, the slots' instances, draining (`[traffic]`).
//!
//! Every public script function is rendered by [`all_for_check`] and checked by
//! `sh -n` and shellcheck (see `check.rs`); a test fails when one is missing there.

mod audit;
#[cfg(test)]
mod check;
mod db;
mod hooks;
mod lock;
mod probe;
mod prune;
mod relay;
mod rollout;
mod switch;
mod traffic;
mod upload;
mod verify;

pub use audit::{audit, read_audit};
#[cfg(test)]
pub use check::all_for_check;
pub use db::{
    adapter, db_command, db_tools, fetch_migrations, list_snapshots, remove_snapshots, restore,
    snapshot, sqlite, sqlite_applied,
};
pub use hooks::{HookEnv, hooks, in_release};
pub use lock::{break_lock, finish, lock, unlock};
pub use probe::{check, probe};
pub use prune::{
    archive_and_remove, discard_release, remove_new_release, remove_releases, restore_release,
};
pub use relay::{
    EXIT_RELAY, Endpoint, RELAY_LINE, relay_fetch, relay_keep, relay_open, relay_stop,
};
pub use rollout::{read_rollout, write_rollout};
pub use switch::{switch, switch_link, write_meta, write_meta_if_present};
pub use traffic::{
    EXIT_PROXY_REFUSED, drain, install_include, proxy_check, read_access_log, read_traffic,
    slot_commands,
};
pub use upload::{
    BUILT_OVER, Encoding, Receive, finalize, make_read_only, read_manifest, receive,
    remove_partial, upload,
};
pub use verify::{record_shipped, record_stat, verify_likely_target, verify_release};

use crate::layout::quote;

/// Exit status of the lock script when someone else holds the lock.
pub const EXIT_LOCK_HELD: i32 = 75;

/// Exit status when a release does not match its manifest, or its unchanged files could
/// not be linked from the previous release: the deployer then sends the whole release.
pub const EXIT_NOT_VERIFIED: i32 = 76;

/// Exit status of [`in_release`] when the command's program was not found (sh's 127,
/// which the ssh transport cannot carry with its output).
pub const EXIT_NOT_FOUND: i32 = 86;

/// The start of every script that runs on its own (fragments appended to one do not
/// repeat it).
const PRELUDE: &str = "set -u\numask 022\n";

/// Fails the script, naming the Debian package to install, when `tool` is missing.
fn need_tool(tool: &str, package: &str) -> String {
    format!(
        "command -v {t} >/dev/null 2>&1 || {{ echo {msg} >&2; exit 1; }}\n",
        t = quote(tool),
        msg = quote(&format!(
            "{tool} is not installed on this host: install it (Debian/Ubuntu: apt-get install {package})"
        )),
    )
}
