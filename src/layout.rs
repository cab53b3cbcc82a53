//! Where things live on a host, release ids, and the one shell-quoting function.
//!
//! Every value that reaches a remote shell goes through [`quote`]. Paths are built here
//! and nowhere else, so that a change of layout is a change of this file.

use std::fmt;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

/// The one shell-quoting function: wraps `value` in single quotes so that a POSIX shell
/// (dash, bash, busybox sh) reads it back byte for byte, whatever it contains.
///
/// Single quotes cannot appear inside a single-quoted word, so each `'` becomes `'\''`
/// (close, escaped quote, reopen). NUL cannot be passed through a shell at all; config
/// validation rejects it before anything is quoted, and here it is dropped rather than
/// silently truncating the command at it.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for ch in value.chars() {
        match ch {
            '\'' => out.push_str("'\\''"),
            '\0' => {}
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// The format of release ids: a UTC timestamp, sortable as text.
pub const RELEASE_ID_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// A validated release id (`20261124T040512Z`). Constructed only through
/// [`ReleaseId::parse`] or [`ReleaseId::from_time`], so it is always safe in a path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ReleaseId(String);

impl ReleaseId {
    pub fn from_time(time: DateTime<Utc>) -> ReleaseId {
        ReleaseId(time.format(RELEASE_ID_FORMAT).to_string())
    }

    /// Parses a release id, accepting exactly the format slipway writes.
    pub fn parse(text: &str) -> Result<ReleaseId, String> {
        let ok = text.len() == 16
            && text.is_ascii()
            && NaiveDateTime::parse_from_str(text, RELEASE_ID_FORMAT).is_ok();
        if ok {
            Ok(ReleaseId(text.to_string()))
        } else {
            Err(format!(
                "`{}` is not a release id (expected a UTC timestamp like 20261124T040512Z)",
                text.escape_debug()
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The next id after `self`, one second later: used when two deploys start within
    /// the same second, so ids stay unique and ordered.
    pub fn successor(&self) -> ReleaseId {
        let time = NaiveDateTime::parse_from_str(&self.0, RELEASE_ID_FORMAT)
            .map(|t| t.and_utc())
            .unwrap_or_else(|_| Utc::now());
        ReleaseId::from_time(time + chrono::Duration::seconds(1))
    }
}

impl TryFrom<String> for ReleaseId {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        ReleaseId::parse(&value)
    }
}

impl From<ReleaseId> for String {
    fn from(id: ReleaseId) -> String {
        id.0
    }
}

impl fmt::Display for ReleaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The paths of one application on one host, rooted at `deploy_to`.
#[derive(Debug, Clone)]
pub struct Layout {
    deploy_to: String,
}

impl Layout {
    /// `deploy_to` must already be validated (absolute, normalised, no control characters).
    pub fn new(deploy_to: &str) -> Layout {
        let trimmed = deploy_to.trim_end_matches('/');
        Layout {
            deploy_to: if trimmed.is_empty() {
                "/".into()
            } else {
                trimmed.into()
            },
        }
    }

    pub fn deploy_to(&self) -> &str {
        &self.deploy_to
    }

    fn join(&self, rest: &str) -> String {
        if self.deploy_to == "/" {
            format!("/{rest}")
        } else {
            format!("{}/{rest}", self.deploy_to)
        }
    }

    pub fn current(&self) -> String {
        self.join("current")
    }
    pub fn releases(&self) -> String {
        self.join("releases")
    }
    pub fn release(&self, id: &ReleaseId) -> String {
        self.join(&format!("releases/{id}"))
    }
    pub fn partial(&self, id: &ReleaseId) -> String {
        self.join(&format!("releases/{id}.partial"))
    }
    /// The target of the `current` symlink, relative so that the whole tree can be moved.
    pub fn current_target(id: &ReleaseId) -> String {
        format!("releases/{id}")
    }
    /// A uniquely named temporary link for the switch: a crashed run can never leave a
    /// fixed name behind that blocks (or is mistaken for) the next switch.
    pub fn current_tmp(&self, id: &ReleaseId, nonce: &str) -> String {
        self.join(&format!(".current.tmp.{id}.{nonce}"))
    }
    pub fn shared(&self) -> String {
        self.join("shared")
    }
    /// `slots/`: with `[traffic]`, the links `a` and `b` to the releases live in each slot.
    pub fn slots(&self) -> String {
        self.join("slots")
    }
    /// The path of a link the switch moves: `current`, or `slots/a` and `slots/b`.
    pub fn link(&self, link: Link) -> String {
        match link {
            Link::Current => self.current(),
            Link::Slot(name) => self.join(&format!("slots/{name}")),
        }
    }
    /// What `link` holds for release `id` (relative, like `current`'s).
    pub fn link_target(link: Link, id: &ReleaseId) -> String {
        match link {
            Link::Current => Layout::current_target(id),
            Link::Slot(_) => format!("../releases/{id}"),
        }
    }
    /// The uniquely named temporary link renamed over `link` (see [`Layout::current_tmp`]).
    pub fn link_tmp(&self, link: Link, id: &ReleaseId, nonce: &str) -> String {
        match link {
            Link::Current => self.current_tmp(id, nonce),
            Link::Slot(name) => self.join(&format!("slots/.{name}.tmp.{id}.{nonce}")),
        }
    }
    pub fn shared_path(&self, relative: &str) -> String {
        self.join(&format!("shared/{relative}"))
    }
    pub fn state_dir(&self) -> String {
        self.join(".slipway")
    }
    pub fn lock_dir(&self) -> String {
        self.join(".slipway/lock")
    }
    pub fn lock_info(&self) -> String {
        self.join(".slipway/lock/owner.json")
    }
    pub fn audit_log(&self) -> String {
        self.join(".slipway/log.jsonl")
    }
    /// The state of a staged rollout (see `rollout::state`).
    pub fn rollout_state(&self) -> String {
        self.join(".slipway/rollout.json")
    }
    pub fn backups(&self) -> String {
        self.join("backups")
    }
    /// Database snapshots: `backups/db/<release>-<driver>.dump`.
    pub fn db_backups(&self) -> String {
        self.join("backups/db")
    }
    /// `name` must be a validated snapshot name (see `db::snapshot`).
    pub fn db_snapshot(&self, name: &str) -> String {
        self.join(&format!("backups/db/{name}"))
    }
}

/// A link the switch engine moves by rename(2): `current`, or a traffic slot (`"a"`,
/// `"b"`: the only names there are).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Current,
    Slot(&'static str),
}

/// Inside a release directory: files slipway writes.
pub const RELEASE_META: &str = ".slipway/release.json";
pub const RELEASE_MANIFEST: &str = ".slipway/manifest.jsonl";
pub const RELEASE_CHECKSUMS: &str = ".slipway/manifest.sha256";
/// The same, as BLAKE2b-256 for `b2sum -l 256 -c` (faster where coreutils has it).
pub const RELEASE_CHECKSUMS_B2: &str = ".slipway/manifest.b2";
/// Size and modification time of each file when the release became ready.
pub const RELEASE_STAT: &str = ".slipway/stat";
/// The same, taken right after the upload was verified, before build hooks ran (stages
/// with build hooks only): the state an incremental deploy may link files in.
pub const RELEASE_STAT_SHIPPED: &str = ".slipway/stat.shipped";
pub const REVISION_FILE: &str = "REVISION";

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn quote_round_trips_through_a_real_shell() {
        let nasty = [
            "plain",
            "with space",
            "it's",
            "'",
            "''",
            "$(touch /tmp/x)",
            "`id`",
            "a;b",
            "a\nb",
            "\"double\"",
            "back\\slash",
            "*",
            "-n",
            "",
            "ünïcödé",
            "$HOME ${PATH}",
        ];
        for value in nasty {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", quote(value)))
                .output()
                .expect("sh runs");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                value,
                "value {value:?}"
            );
        }
    }

    #[test]
    fn release_ids_are_validated() {
        assert!(ReleaseId::parse("20261124T040512Z").is_ok());
        for bad in [
            "../x",
            "20261124T040512",
            "2026112T040512Z",
            "x",
            "",
            "20261324T040512Z",
            "20261124T040512Z/",
        ] {
            assert!(ReleaseId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn release_ids_sort_by_time_and_successor_is_later() {
        let a = ReleaseId::parse("20261124T235959Z").unwrap();
        let b = a.successor();
        assert_eq!(b.as_str(), "20261125T000000Z");
        assert!(b > a);
    }

    #[test]
    fn layout_paths() {
        let l = Layout::new("/srv/shop/");
        assert_eq!(l.current(), "/srv/shop/current");
        let id = ReleaseId::parse("20261124T040512Z").unwrap();
        assert_eq!(
            l.partial(&id),
            "/srv/shop/releases/20261124T040512Z.partial"
        );
        assert_eq!(
            l.current_tmp(&id, "ab12"),
            "/srv/shop/.current.tmp.20261124T040512Z.ab12"
        );
        assert_eq!(Layout::new("/").current(), "/current");
    }
}
