//! The read-only and maintenance commands: `releases`, `status`, `check`, `unlock`.

pub mod recipes;

use chrono::Utc;
use serde_json::json;

use crate::audit::append as audit;
use crate::config::Stage;
use crate::error::{Error, Result};
use crate::fleet::Fleet;
use crate::plan;
use crate::probe::probe;
use crate::release::LockInfo;
use crate::run::{Context, Outcome};
use crate::script;

/// `slipway releases STAGE`: every host's releases with their recorded state.
pub async fn releases(stage: &Stage, ctx: &Context) -> Result<Outcome> {
    let fleet = Fleet::connect(stage, ctx.reporter.clone()).await?;
    let states = probe(&fleet).await;
    fleet.close().await;
    let states = states?;
    let mut human = String::new();
    let mut data = Vec::new();
    for s in &states {
        let current = s.current();
        let target = plan::rollback_target(s);
        human.push_str(&format!("{}:\n", s.host));
        if s.releases.is_empty() {
            human.push_str("  (no releases)\n");
        }
        let mut rows = Vec::new();
        for r in s.releases.iter().rev() {
            let state = r.state().map(|st| st.as_str()).unwrap_or("incomplete");
            let mark = if Some(&r.id) == current.as_ref() {
                "current"
            } else if Some(&r.id) == target.as_ref() {
                "rollback target"
            } else {
                ""
            };
            let revision = r.meta.as_ref().map(|m| m.revision.as_str()).unwrap_or("-");
            let note = r
                .meta
                .as_ref()
                .and_then(|m| m.note.as_deref())
                .unwrap_or("");
            human.push_str(&format!(
                "  {}  {:<12} {:<26} {:<16} {}\n",
                r.id, state, revision, mark, note
            ));
            rows.push(json!({ "id": r.id.as_str(), "state": state, "revision": revision, "current": mark == "current", "rollback_target": mark == "rollback target", "note": note }));
        }
        for p in &s.partials {
            human.push_str(&format!(
                "  {p}  (partial upload: removed by the next deploy)\n"
            ));
        }
        if let Some(lock) = &s.lock {
            human.push_str(&format!("  locked by {}\n", describe_lock(lock.as_ref())));
        }
        data.push(json!({ "host": s.host, "current": current.map(|c| c.to_string()), "releases": rows, "partials": s.partials }));
    }
    Ok(Outcome {
        human,
        data: json!({ "hosts": data }),
    })
}

/// `slipway status STAGE`: one line per host.
pub async fn status(stage: &Stage, ctx: &Context) -> Result<Outcome> {
    // Where every host stands, even when some are down (after a fault, that is the point).
    let (fleet, unreachable) = Fleet::connect_reachable(stage, ctx.reporter.clone()).await;
    let states = if fleet.is_empty() {
        Ok(Vec::new())
    } else {
        probe(&fleet).await
    };
    let rollout = if fleet.is_empty() {
        Ok(None)
    } else {
        crate::rollout::state::read(&fleet).await
    };
    fleet.close().await;
    let states = states?;
    let rollout = rollout?;
    let mut human = String::new();
    let mut data = Vec::new();
    let currents: std::collections::BTreeSet<_> = states.iter().map(|s| s.current()).collect();
    for (host, error) in &unreachable {
        human.push_str(&format!("{host:<24} UNREACHABLE: {error}\n"));
        data.push(json!({ "host": host, "reachable": false, "error": error }));
    }
    for s in &states {
        let current = s
            .current()
            .map(|c| c.to_string())
            .unwrap_or_else(|| "(nothing deployed)".into());
        // The newest good release before the current one: where a rollback would go.
        let previous = s.current().and_then(|c| {
            s.releases
                .iter()
                .rev()
                .find(|r| r.id < c && r.is_good())
                .map(|r| r.id.to_string())
        });
        let lock = s
            .lock
            .as_ref()
            .map(|l| format!("  locked by {}", describe_lock(l.as_ref())))
            .unwrap_or_default();
        let (step, gate) = match &rollout {
            Some(r) => crate::rollout::state::host_summary(r, &s.host),
            None => (None, None),
        };
        human.push_str(&format!(
            "{:<24} {current}  previous: {}{}{}{lock}\n",
            s.host,
            previous.as_deref().unwrap_or("-"),
            step.as_ref()
                .map(|x| format!("  rollout: {x}"))
                .unwrap_or_default(),
            gate.as_ref()
                .map(|g| format!("  gate: {g}"))
                .unwrap_or_default(),
        ));
        data.push(json!({ "host": s.host, "current": s.current().map(|c| c.to_string()), "previous": previous, "rollout_step": step, "gate": gate, "locked": s.lock.is_some() }));
    }
    if let Some(r) = rollout.as_ref().filter(|r| r.in_progress()) {
        // Hosts on two releases are what a rollout in progress looks like.
        human.push_str(&format!(
            "rollout in progress: {} (`slipway rollout status {}`)\n",
            r.describe(),
            stage.name
        ));
        return Ok(Outcome {
            human,
            data: json!({ "hosts": data, "rollout": r }),
        });
    }
    if currents.len() > 1 {
        human.push_str(&format!(
            "hosts are on different releases: bring them together with `slipway rollback {} --to ID` or a new deploy\n",
            stage.name
        ));
        return Err(Error::Diverged(human));
    }
    if !unreachable.is_empty() {
        let names: Vec<&str> = unreachable.iter().map(|(h, _)| h.as_str()).collect();
        human.push_str(&format!(
            "{} host(s) unreachable: {} (where they stand is unknown; bring them back, then `slipway status {}` again)\n",
            names.len(),
            names.join(", "),
            stage.name
        ));
        return Err(Error::Diverged(human));
    }
    Ok(Outcome {
        human,
        data: json!({ "hosts": data }),
    })
}

fn describe_lock(lock: Option<&LockInfo>) -> String {
    lock.map(LockInfo::describe)
        .unwrap_or_else(|| "an unknown holder (unreadable lock record)".into())
}

/// `slipway unlock STAGE`: breaks the lock whoever holds it, and says whose it was.
pub async fn unlock(stage: &Stage, ctx: &Context) -> Result<Outcome> {
    let fleet = Fleet::connect(stage, ctx.reporter.clone()).await?;
    if ctx.dry_run {
        let states = probe(&fleet).await;
        fleet.close().await;
        let mut human = String::from("Plan: remove the deploy lock on:\n");
        for s in states? {
            if let Some(l) = &s.lock {
                human.push_str(&format!(
                    "  {}: held by {}\n",
                    s.host,
                    describe_lock(l.as_ref())
                ));
            }
        }
        ctx.reporter.plan(&human, json!({}));
        return Ok(Outcome {
            human: "Nothing was changed (--dry-run).".into(),
            data: json!({ "dry_run": true }),
        });
    }
    let script = script::break_lock(&fleet.layout);
    let results = fleet
        .step_on(
            &fleet.all(),
            "unlock",
            |_| script.clone(),
            None,
            stage.timeouts.command,
        )
        .await;
    let mut broken = Vec::new();
    let mut errors = Vec::new();
    for (i, r) in &results {
        match r {
            Ok(out) if !out.stdout.trim().is_empty() => {
                let holder = serde_json::from_str::<LockInfo>(out.stdout.trim()).ok();
                broken.push((fleet.name(*i).to_string(), describe_lock(holder.as_ref())));
            }
            Ok(_) => {}
            Err(e) => errors.push(format!("{}: {e}", fleet.name(*i))),
        }
    }
    // Breaking a lock is on record too (it does not take the lock: it removes it).
    let mut record = crate::operation::record(&fleet, ctx, "unlock", std::time::Instant::now());
    record.reason = Some(if broken.is_empty() {
        "no lock was held".into()
    } else {
        format!("broke the lock of {}", broken[0].1)
    });
    if !errors.is_empty() {
        record.result = "failed".into();
    }
    audit(&fleet, &record).await;
    fleet.close().await;
    if !errors.is_empty() {
        return Err(Error::Step {
            host: "-".into(),
            step: "unlock".into(),
            message: errors.join("; "),
        });
    }
    let human = if broken.is_empty() {
        format!("no deploy lock was held on {}", stage.name)
    } else {
        broken
            .iter()
            .map(|(h, who)| format!("{h}: removed the lock of {who}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(Outcome {
        human,
        data: json!({ "unlocked": broken.iter().map(|(h, _)| h).collect::<Vec<_>>() }),
    })
}

/// What `check` found on one host.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub host: String,
    pub ok: bool,
    pub what: String,
}

/// Minimum free space and inodes for a deploy to be likely to succeed.
const MIN_FREE_KB: u64 = 100 * 1024;
const MIN_FREE_INODES: u64 = 10_000;
/// Release ids are timestamps; a host clock far off ours makes their order lie.
const MAX_CLOCK_SKEW_SECONDS: i64 = 30;

/// Judges the check script's survey of one host. Pure, so it is tested without hosts.
pub fn judge(host: &str, survey: &str, stage: &Stage, local_clock: i64) -> Vec<Finding> {
    let get = |key: &str| {
        survey
            .lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('\t')))
            .map(str::trim)
    };
    let mut out = Vec::new();
    let mut add = |ok: bool, what: String| {
        out.push(Finding {
            host: host.to_string(),
            ok,
            what,
        })
    };
    let nearest = get("nearest").unwrap_or("?");
    if get("exists") == Some("1") {
        add(
            get("writable") == Some("1"),
            format!("{} is writable", stage.deploy_to),
        );
    } else {
        add(
            get("writable") == Some("1"),
            format!(
                "{} does not exist yet; {nearest} is writable so the first deploy can create it",
                stage.deploy_to
            ),
        );
    }
    match get("space").and_then(|v| v.parse::<u64>().ok()) {
        Some(kb) => add(
            kb >= MIN_FREE_KB,
            format!(
                "free space: {} MiB (at least {} MiB wanted)",
                kb / 1024,
                MIN_FREE_KB / 1024
            ),
        ),
        None => add(false, "free space: could not be read (df -Pk)".into()),
    }
    match get("inodes").and_then(|v| v.parse::<u64>().ok()) {
        Some(n) => add(
            n >= MIN_FREE_INODES,
            format!("free inodes: {n} (at least {MIN_FREE_INODES} wanted)"),
        ),
        // Some filesystems (btrfs) report no inode limit.
        None => add(true, "free inodes: not limited on this filesystem".into()),
    }
    if let (Some(a), Some(b)) = (get("dev_deploy_to"), get("dev_releases")) {
        add(
            a == b,
            format!(
                "releases/ and current are on the same filesystem ({})",
                if a == b {
                    "yes"
                } else {
                    "no: the switch would not be an atomic rename"
                }
            ),
        );
    }
    add(
        get("tar").is_some_and(|t| !t.is_empty()),
        "tar is installed".into(),
    );
    if stage.archive_pruned > 0 {
        add(
            get("zstd").is_some_and(|t| !t.is_empty()),
            "zstd is installed (archive_pruned archives releases with it; without it old releases are kept, not archived: apt-get install zstd)".into(),
        );
    }
    add(
        get("mv_t") == Some("1"),
        "mv supports -T (GNU coreutils), needed for the atomic switch".into(),
    );
    match get("clock").and_then(|v| v.parse::<i64>().ok()) {
        Some(remote) => {
            let skew = remote - local_clock;
            add(
                skew.abs() <= MAX_CLOCK_SKEW_SECONDS,
                format!("clock skew: {skew:+} s (at most {MAX_CLOCK_SKEW_SECONDS} s)"),
            );
        }
        None => add(false, "clock: could not be read".into()),
    }
    if let Some(lock) = get("lock") {
        let holder = serde_json::from_str::<LockInfo>(lock).ok();
        add(
            false,
            format!(
                "the deploy lock is held by {} (if that run is gone: slipway unlock {})",
                describe_lock(holder.as_ref()),
                stage.name
            ),
        );
    }
    for (kind, list) in [("file", &stage.shared_files), ("dir", &stage.shared_dirs)] {
        for (i, path) in list.iter().enumerate() {
            let key = format!("shared_{kind}");
            let found = survey
                .lines()
                .filter_map(|l| {
                    l.strip_prefix(key.as_str())
                        .and_then(|r| r.strip_prefix('\t'))
                })
                .find_map(|r| {
                    r.split_once('\t')
                        .filter(|(n, _)| n.parse::<usize>().ok() == Some(i))
                        .map(|(_, t)| t.trim().to_string())
                });
            let found = found.unwrap_or_else(|| "missing".into());
            let shared = format!("{}/shared/{path}", stage.deploy_to);
            match (kind, found.as_str()) {
                ("file", "file") | ("dir", "dir") => {
                    add(true, format!("shared {kind} {path} is present"))
                }
                // Shared dirs are created by the first deploy.
                ("dir", "missing") => add(
                    true,
                    format!("shared dir {path} will be created by the next deploy"),
                ),
                ("file", "missing") => add(
                    false,
                    format!(
                        "shared file {path} is missing in {}/shared (create it, or remove it from [shared] files)",
                        stage.deploy_to
                    ),
                ),
                (_, other) => add(false, format!("{shared} should be a {kind} but is {other}")),
            }
        }
    }
    out
}

/// `slipway check STAGE`: a preflight that changes nothing.
pub async fn check(stage: &Stage, ctx: &Context) -> Result<Outcome> {
    let fleet = Fleet::connect(stage, ctx.reporter.clone()).await?;
    let script = script::check(&fleet.layout, &stage.shared_files, &stage.shared_dirs);
    let results = fleet
        .step_on(
            &fleet.all(),
            "check",
            |_| script.clone(),
            None,
            stage.timeouts.command,
        )
        .await;
    let db_findings = match &stage.database {
        Some(config) => crate::db::status::check(&fleet, config).await,
        None => Vec::new(),
    };
    fleet.close().await;
    let local_clock = Utc::now().timestamp();
    let mut findings = Vec::new();
    for (i, r) in results {
        match r {
            Ok(out) => findings.extend(judge(fleet.name(i), &out.stdout, stage, local_clock)),
            Err(e) => findings.push(Finding {
                host: fleet.name(i).into(),
                ok: false,
                what: format!("the check script failed: {e}"),
            }),
        }
    }
    findings.extend(
        db_findings
            .into_iter()
            .map(|(host, ok, what)| Finding { host, ok, what }),
    );
    let mut human = String::new();
    for f in &findings {
        human.push_str(&format!(
            "{} {:<20} {}\n",
            if f.ok { "ok  " } else { "FAIL" },
            f.host,
            f.what
        ));
    }
    let failed: Vec<&Finding> = findings.iter().filter(|f| !f.ok).collect();
    if failed.is_empty() {
        human.push_str(&format!("all checks passed on {} host(s)\n", fleet.len()));
        let data = json!({ "passed": true, "findings": findings.iter().map(|f| json!({"host": f.host, "ok": f.ok, "what": f.what})).collect::<Vec<_>>() });
        Ok(Outcome { human, data })
    } else {
        ctx.reporter.result(&human, "failed", json!({ "findings": findings.iter().map(|f| json!({"host": f.host, "ok": f.ok, "what": f.what})).collect::<Vec<_>>() }));
        Err(Error::Refused(format!("{} check(s) failed", failed.len())))
    }
}

/// `--since`: a duration back from `now` (`2h`, `7d`) or an RFC 3339 time.
pub fn parse_since(
    text: &str,
    now: chrono::DateTime<Utc>,
) -> std::result::Result<chrono::DateTime<Utc>, String> {
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    let duration = crate::config::parse_duration(text).map_err(|_| {
        format!(
            "--since: `{}` is neither a duration (2h, 7d) nor a time (2026-11-24T05:00:00Z)",
            text.escape_debug()
        )
    })?;
    let duration =
        chrono::Duration::from_std(duration).map_err(|_| "--since: too far back".to_string())?;
    now.checked_sub_signed(duration)
        .ok_or_else(|| "--since: too far back".to_string())
}

/// One action, as recorded on one or more hosts.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    pub time: chrono::DateTime<Utc>,
    pub record: serde_json::Value,
    pub hosts: Vec<String>,
}

/// Merges the audit logs of several hosts: an action recorded on every host it touched
/// appears once, with the hosts that recorded it, in time order. Lines that are not
/// valid records are skipped (a torn last line after a crash, say).
pub fn merge_logs(
    logs: &[(String, String)],
    since: Option<chrono::DateTime<Utc>>,
) -> Vec<LogEntry> {
    let mut merged: Vec<LogEntry> = Vec::new();
    for (host, text) in logs {
        for line in text.lines() {
            let Ok(record) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let Some(time) = record["time"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            else {
                continue;
            };
            let time = time.with_timezone(&Utc);
            if since.is_some_and(|s| time < s) {
                continue;
            }
            match merged.iter_mut().find(|e| same_action(&e.record, &record)) {
                Some(entry) => entry.hosts.push(host.clone()),
                None => merged.push(LogEntry {
                    time,
                    record,
                    hosts: vec![host.clone()],
                }),
            }
        }
    }
    merged.sort_by_key(|e| e.time);
    merged
}

/// Records of one action on several hosts differ only in their time (each host's
/// record is written when that host is reached).
fn same_action(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    let key = |v: &serde_json::Value| {
        (
            v["action"].clone(),
            v["command"].clone(),
            v["actor"].clone(),
            v["from"].clone(),
            v["to"].clone(),
            v["result"].clone(),
            v["duration_ms"].clone(),
        )
    };
    key(a) == key(b)
}

/// `slipway log STAGE`: the audit log, merged from every host.
pub async fn log(
    stage: &Stage,
    ctx: &Context,
    since: Option<chrono::DateTime<Utc>>,
) -> Result<Outcome> {
    let fleet = Fleet::connect(stage, ctx.reporter.clone()).await?;
    let script = script::read_audit(&fleet.layout);
    let results = fleet
        .step_on(
            &fleet.all(),
            "read-log",
            |_| script.clone(),
            None,
            stage.timeouts.command,
        )
        .await;
    fleet.close().await;
    let mut logs = Vec::new();
    for (i, r) in results {
        match r {
            Ok(out) => logs.push((fleet.name(i).to_string(), out.stdout)),
            Err(e) => {
                return Err(Error::Step {
                    host: fleet.name(i).into(),
                    step: "read-log".into(),
                    message: e.to_string(),
                });
            }
        }
    }
    let entries = merge_logs(&logs, since);
    let mut human = String::new();
    for e in &entries {
        let r = &e.record;
        let text = |k: &str| r[k].as_str().unwrap_or("").to_string();
        let actor = format!(
            "{}@{}",
            r["actor"]["user"].as_str().unwrap_or("?"),
            r["actor"]["machine"].as_str().unwrap_or("?")
        );
        let change = match (r["from"].as_str(), r["to"].as_str()) {
            (Some(f), Some(t)) => format!("{f} -> {t}"),
            (None, Some(t)) => format!("-> {t}"),
            _ => String::new(),
        };
        human.push_str(&format!(
            "{}  {:<8} {:<8} {:<20} {:<36} {} host(s){}{}\n",
            e.time.format("%Y-%m-%d %H:%M:%S"),
            text("action"),
            text("result"),
            actor,
            change,
            e.hosts.len(),
            r["reason"]
                .as_str()
                .map(|x| format!("  reason: {x}"))
                .unwrap_or_default(),
            r["message"]
                .as_str()
                .map(|x| format!("  ({x})"))
                .unwrap_or_default(),
        ));
    }
    if entries.is_empty() {
        human.push_str("(no audit entries)\n");
    }
    let data = json!({ "entries": entries.iter().map(|e| json!({ "record": e.record, "hosts": e.hosts })).collect::<Vec<_>>() });
    Ok(Outcome { human, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_and_times() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-24T06:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_since("2h", now).unwrap().to_rfc3339(),
            "2026-11-24T04:00:00+00:00"
        );
        assert_eq!(
            parse_since("2026-11-24T05:00:00Z", now)
                .unwrap()
                .to_rfc3339(),
            "2026-11-24T05:00:00+00:00"
        );
        assert!(parse_since("yesterday-ish", now).is_err());
    }

    #[test]
    fn logs_merge_across_hosts_in_time_order() {
        let a = r#"{"time":"2026-11-24T05:00:00.1Z","action":"deploy","command":"c","actor":{"user":"u","machine":"m"},"to":"X","result":"ok","duration_ms":5}"#;
        let a2 = r#"{"time":"2026-11-24T05:00:00.2Z","action":"deploy","command":"c","actor":{"user":"u","machine":"m"},"to":"X","result":"ok","duration_ms":5}"#;
        let b = r#"{"time":"2026-11-24T04:00:00Z","action":"unlock","command":"u","actor":{"user":"u","machine":"m"},"result":"ok","duration_ms":0}"#;
        let logs = vec![
            ("h1".to_string(), format!("{a}\n{b}\n{{torn")),
            ("h2".to_string(), format!("{a2}\n")),
        ];
        let merged = merge_logs(&logs, None);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].record["action"], "unlock");
        assert_eq!(merged[1].hosts, vec!["h1", "h2"]);
        let since = chrono::DateTime::parse_from_rfc3339("2026-11-24T04:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(merge_logs(&logs, Some(since)).len(), 1);
    }
}
