//! What a host holds: its releases with their recorded state, `current`, the lock.
//! Every decision reads these records, never directory mtimes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::layout::ReleaseId;

/// The recorded state of a release (`.slipway/release.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReleaseState {
    /// Uploaded or being built; never a switch target.
    Preparing,
    /// Complete and built: may be switched to (includes releases that were live before).
    Ready,
    /// What `current` points at.
    Live,
    /// A deploy of it failed; never chosen automatically.
    Failed,
    /// It was live and was rolled back; never chosen automatically.
    RolledBack,
}

impl ReleaseState {
    /// Complete and not marked bad: a candidate for rollback, counted by retention.
    pub fn is_good(self) -> bool {
        matches!(self, ReleaseState::Ready | ReleaseState::Live)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseState::Preparing => "preparing",
            ReleaseState::Ready => "ready",
            ReleaseState::Live => "live",
            ReleaseState::Failed => "failed",
            ReleaseState::RolledBack => "rolled-back",
        }
    }
}

/// The record slipway keeps in each release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseMeta {
    pub id: ReleaseId,
    pub app: String,
    pub stage: String,
    pub revision: String,
    pub state: ReleaseState,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// `user@machine` of the deployer.
    pub deployed_by: String,
    pub manifest_digest: String,
    pub files: usize,
    pub bytes: u64,
    /// The schema version after this release's migrations (when the app has a database).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<i64>,
    /// The migrations applied in the database once this release was migrated, oldest
    /// first, with the checksums of their up scripts (sqlx's SHA-384, hex).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migrations: Vec<MigrationRecord>,
    /// Framework mode: the applied migrations once this release was migrated, and the
    /// ones its deploy applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<SchemaRecord>,
    /// Why the state changed last (a failed step, a rollback reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl ReleaseMeta {
    /// A copy in `state`, stamped now, with `note`.
    pub fn with_state(&self, state: ReleaseState, note: Option<String>) -> ReleaseMeta {
        ReleaseMeta {
            state,
            updated_at: Utc::now(),
            // A note quotes failures, which may quote a framework's connection settings.
            // And may quote megabytes a host printed: the record stays one short line.
            note: note.map(|n| crate::report::clip(&crate::redact::scrub(&n), 4000).into_owned()),
            ..self.clone()
        }
    }

    /// One line of JSON, as stored on the host.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Framework mode: the schema as a release recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaRecord {
    /// `django`, `rails`, ...
    pub framework: String,
    /// Every applied migration once this release was migrated, oldest first (the
    /// framework's own ids).
    pub applied: Vec<String>,
    /// The ones this release's deploy applied, in applied order.
    #[serde(default)]
    pub applied_now: Vec<String>,
}

/// One applied migration, as a release records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationRecord {
    pub version: i64,
    pub description: String,
    /// SHA-384 of the up script, lower-case hex.
    pub checksum: String,
}

/// One release directory as found on a host.
#[derive(Debug, Clone, PartialEq)]
pub struct ReleaseEntry {
    pub id: ReleaseId,
    /// `None` when `release.json` is missing or unreadable: such a release is incomplete.
    pub meta: Option<ReleaseMeta>,
}

impl ReleaseEntry {
    pub fn state(&self) -> Option<ReleaseState> {
        self.meta.as_ref().map(|m| m.state)
    }
    pub fn is_good(&self) -> bool {
        self.state().is_some_and(ReleaseState::is_good)
    }
}

/// Who holds the deploy lock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockInfo {
    pub user: String,
    pub machine: String,
    pub pid: u32,
    pub command: String,
    pub since: DateTime<Utc>,
    /// Random per run: a run only ever removes the lock it took.
    pub token: String,
}

impl LockInfo {
    pub fn describe(&self) -> String {
        let age = Utc::now().signed_duration_since(self.since);
        let minutes = age.num_minutes();
        let ago = if minutes >= 1 {
            format!("{minutes} min ago")
        } else {
            format!("{} s ago", age.num_seconds().max(0))
        };
        // A host writes this record: any field may be of any length.
        let clip = |text| crate::report::clip(text, 200);
        format!(
            "{}@{} (pid {}, `{}`, since {}, {ago}){}",
            clip(&self.user),
            clip(&self.machine),
            self.pid,
            clip(&self.command),
            self.since.format("%Y-%m-%d %H:%M:%S UTC"),
            if self.is_stale_here() {
                "; stale: that process is no longer running on this machine"
            } else if self.names_this_process() {
                "; it names this very process, which does not hold it: the host's lock record is forged or copied"
            } else {
                ""
            }
        )
    }

    /// Whether the record claims to be the process reading it (never true of a lock this
    /// process took: it knows its own and does not ask).
    pub fn names_this_process(&self) -> bool {
        self.pid == std::process::id() && self.machine == crate::audit::Actor::current().machine
    }

    /// Whether the holder was a process on this machine that is gone (killed, crashed).
    /// A lock from another machine cannot be judged from here: never called stale.
    pub fn is_stale_here(&self) -> bool {
        let here = crate::audit::Actor::current().machine;
        self.machine == here && !std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

/// Everything the probe script read on one host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostState {
    pub host: String,
    /// Whether `deploy_to` exists at all.
    pub exists: bool,
    /// The raw target of `current` (`releases/ID`), if the link exists.
    pub current_link: Option<String>,
    /// Releases, oldest first.
    pub releases: Vec<ReleaseEntry>,
    /// Names of `releases/*.partial` directories (uploads that never finished).
    pub partials: Vec<String>,
    /// Entries in `releases/` that are not release ids (left alone, but reported).
    pub strays: Vec<String>,
    /// The lock holder, if locked. `Some(None)` when the lock exists but is unreadable.
    pub lock: Option<Option<LockInfo>>,
    /// The host's clock, seconds since the epoch.
    pub clock: Option<i64>,
    /// Decompressors found on the host's PATH (`zstd`, `gzip`).
    pub tools: Vec<String>,
    /// The raw `.slipway/rollout.json`, when a staged rollout has been recorded.
    pub rollout_json: Option<String>,
    /// A rollback's likely target, checked by the lock script
    /// ([`crate::script::verify_likely_target`]).
    pub verified: Option<Verified>,
}

/// How a release checked against its manifest on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub id: String,
    /// The check's exit status: 0 when the release is as deployed.
    pub status: i32,
    /// Why not, when it is not.
    pub message: String,
}

impl HostState {
    /// The release `current` points at, if it is a well-formed `releases/ID` link (the
    /// only shape slipway writes: a link elsewhere, `../other/releases/ID` or `/`, is
    /// no release of this app, see [`HostState::current_elsewhere`]).
    pub fn current(&self) -> Option<ReleaseId> {
        let link = self.current_link.as_deref()?;
        let id = link.strip_prefix("releases/")?;
        ReleaseId::parse(id).ok()
    }

    /// The target of a `current` link that is not `releases/ID`: the host was changed by
    /// hand, or lies. Shown, never followed.
    pub fn current_elsewhere(&self) -> Option<&str> {
        self.current_link
            .as_deref()
            .filter(|_| self.current().is_none())
    }

    pub fn release(&self, id: &ReleaseId) -> Option<&ReleaseEntry> {
        self.releases.iter().find(|r| &r.id == id)
    }

    /// The records a switch to `target` writes on this host: `target` becomes live, the
    /// release being left (if another) takes `left` with `note`.
    /// The record of the release `current` points at.
    pub fn current_meta(&self) -> Option<ReleaseMeta> {
        let current = self.current()?;
        self.release(&current)?.meta.clone()
    }

    pub fn switch_records(
        &self,
        target: &ReleaseId,
        left: ReleaseState,
        note: Option<String>,
    ) -> Vec<(ReleaseId, String)> {
        let mut out = Vec::new();
        if let Some(meta) = self.release(target).and_then(|r| r.meta.as_ref()) {
            out.push((
                target.clone(),
                meta.with_state(ReleaseState::Live, None).to_line(),
            ));
        }
        if let Some(current) = self.current()
            && &current != target
            && let Some(meta) = self.release(&current).and_then(|r| r.meta.as_ref())
        {
            let line = meta.with_state(left, note).to_line();
            out.push((current, line));
        }
        out
    }

    /// Parses the probe script's output (see `script::probe`).
    pub fn parse(host: &str, stdout: &str) -> HostState {
        let mut state = HostState {
            host: host.to_string(),
            ..HostState::default()
        };
        for line in stdout.lines() {
            let mut parts = line.splitn(3, '\t');
            let tag = parts.next().unwrap_or_default();
            let a = parts.next().unwrap_or_default();
            let b = parts.next().unwrap_or_default();
            match tag {
                "exists" => state.exists = a == "1",
                "current" if !a.is_empty() => state.current_link = Some(a.to_string()),
                "release" => match ReleaseId::parse(a) {
                    Ok(id) => {
                        let meta = serde_json::from_str::<ReleaseMeta>(b)
                            .ok()
                            .filter(|m| m.id == id);
                        state.releases.push(ReleaseEntry { id, meta });
                    }
                    Err(_) if a.ends_with(".partial") => state.partials.push(a.to_string()),
                    Err(_) => state.strays.push(a.to_string()),
                },
                // `releases/ID` is a symlink: not a release (it may point anywhere).
                "link" => state.strays.push(a.to_string()),
                "lock" => state.lock = Some(serde_json::from_str(a).ok()),
                "clock" => state.clock = a.parse().ok(),
                "tool" if !a.is_empty() => state.tools.push(a.to_string()),
                "rollout" if !a.trim().is_empty() => state.rollout_json = Some(a.to_string()),
                "verified" => {
                    let (status, message) = b.split_once('\t').unwrap_or((b, ""));
                    state.verified = Some(Verified {
                        id: a.to_string(),
                        status: status.parse().unwrap_or(1),
                        message: crate::report::clip(message.trim(), 1000).into_owned(),
                    });
                }
                _ => {}
            }
        }
        state.releases.sort_by(|x, y| x.id.cmp(&y.id));
        state
    }
}

/// The release `current` points at on every host, if they agree.
pub fn common_current(states: &[HostState]) -> Option<String> {
    let first = states.first()?.current()?;
    states
        .iter()
        .all(|s| s.current().as_ref() == Some(&first))
        .then(|| first.to_string())
}

/// The id of a new release: now, or just after the newest release or partial upload on
/// any host (a clock behind the hosts' newest still sorts after it). Ids more than a day
/// ahead are no clock skew: one host listing `99991231T235959Z` must not push every
/// host's next release past the year 9999 (where ids stop being ids).
pub fn next_release_id(states: &[HostState]) -> ReleaseId {
    let now = ReleaseId::from_time(Utc::now());
    let horizon = ReleaseId::from_time(Utc::now() + chrono::Duration::days(1));
    let newest = states
        .iter()
        .flat_map(|s| {
            s.releases.iter().map(|r| r.id.clone()).chain(
                s.partials
                    .iter()
                    .filter_map(|p| ReleaseId::parse(p.trim_end_matches(".partial")).ok()),
            )
        })
        .filter(|id| *id <= horizon)
        .max();
    match newest {
        Some(n) if n >= now => n.successor(),
        _ => now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checked_target_is_parsed_with_its_status_and_reason() {
        let ok = HostState::parse("h", "verified\t20260101T000000Z\t0\t\n");
        assert_eq!(
            ok.verified,
            Some(Verified {
                id: "20260101T000000Z".into(),
                status: 0,
                message: String::new()
            })
        );
        let bad = HostState::parse(
            "h",
            "verified\t20260101T000000Z\t76\trelease x does not match: a.txt: FAILED \n",
        );
        let v = bad.verified.unwrap();
        assert_eq!(
            (v.status, v.message.as_str()),
            (76, "release x does not match: a.txt: FAILED")
        );
        let garbled = HostState::parse("h", "verified\t20260101T000000Z\tx\n");
        assert_eq!(
            garbled.verified.unwrap().status,
            1,
            "unreadable status: not verified"
        );
    }

    pub fn meta(id: &str, state: ReleaseState) -> ReleaseMeta {
        let now = Utc::now();
        ReleaseMeta {
            id: ReleaseId::parse(id).unwrap(),
            app: "shop".into(),
            stage: "prod".into(),
            revision: "abc".into(),
            state,
            created_at: now,
            updated_at: now,
            deployed_by: "me@here".into(),
            manifest_digest: "d".into(),
            files: 1,
            bytes: 1,
            schema_version: None,
            migrations: vec![],
            schema: None,
            note: None,
        }
    }

    #[test]
    fn parses_probe_output() {
        let m = meta("20261124T040512Z", ReleaseState::Live);
        let out = format!(
            "exists\t1\ncurrent\treleases/20261124T040512Z\nrelease\t20261124T040512Z\t{}\nrelease\t20261124T050000Z.partial\t\nrelease\tjunk\t\nrelease\t20261124T030000Z\t{{broken\ntool\tzstd\ntool\tgzip\nclock\t1790000000\n",
            m.to_line()
        );
        let s = HostState::parse("h1", &out);
        assert!(s.exists);
        assert_eq!(s.current().unwrap().as_str(), "20261124T040512Z");
        assert_eq!(s.releases.len(), 2);
        assert_eq!(s.releases[0].id.as_str(), "20261124T030000Z");
        assert!(
            s.releases[0].meta.is_none(),
            "unreadable meta means incomplete"
        );
        assert_eq!(
            s.releases[1].meta.as_ref().unwrap().state,
            ReleaseState::Live
        );
        assert_eq!(s.partials, vec!["20261124T050000Z.partial"]);
        assert_eq!(s.strays, vec!["junk"]);
        assert_eq!(s.clock, Some(1790000000));
        assert_eq!(s.tools, vec!["zstd", "gzip"]);
        assert_eq!(s.lock, None);
    }

    #[test]
    fn ids_far_in_the_future_do_not_move_the_next_one() {
        let s = HostState::parse("h", "release\t99991231T235959Z\t\n");
        let next = next_release_id(&[s]);
        assert!(next.as_str() < "21000101T000000Z", "{next}");
        let soon = ReleaseId::from_time(Utc::now() + chrono::Duration::hours(1));
        let s = HostState::parse("h", &format!("release\t{soon}\t\n"));
        assert_eq!(next_release_id(&[s]), soon.successor());
    }

    #[test]
    fn current_is_only_ever_a_release_of_this_app() {
        for link in [
            "../other/releases/20261124T040512Z",
            "/srv/other/releases/20261124T040512Z",
            "/",
            "releases/../../etc",
            "releases/20261124T040512Z/..",
        ] {
            let s = HostState::parse("h", &format!("current\t{link}\n"));
            assert_eq!(s.current(), None, "{link}");
            assert_eq!(s.current_elsewhere(), Some(link));
        }
        let s = HostState::parse(
            "h",
            "current\treleases/20261124T040512Z\nlink\t20261124T050000Z\n",
        );
        assert_eq!(s.current().unwrap().as_str(), "20261124T040512Z");
        assert!(s.releases.is_empty(), "a linked release is no release");
        assert_eq!(s.strays, vec!["20261124T050000Z"]);
    }

    #[test]
    fn meta_whose_id_disagrees_with_its_directory_is_ignored() {
        let m = meta("20261124T040512Z", ReleaseState::Ready);
        let out = format!("release\t20261124T050000Z\t{}\n", m.to_line());
        let s = HostState::parse("h1", &out);
        assert!(s.releases[0].meta.is_none());
    }
}
