//! `slipway check STAGE`: the preflight of config and hosts, judged by a pure function.

use chrono::Utc;
use serde_json::json;

use super::unlock::describe_lock;
use crate::config::Stage;
use crate::error::{Error, Result};
use crate::fleet::Fleet;
use crate::release::LockInfo;
use crate::run::{Context, Outcome};
use crate::script;

/// What `check` found on one host.
/// Minimum free space and inodes for a deploy to be likely to succeed.
const MIN_FREE_KB: u64 = 100 * 1024;
const MIN_FREE_INODES: u64 = 10_000;
/// Release ids are timestamps; a host clock far off ours makes their order lie.
const MAX_CLOCK_SKEW_SECONDS: i64 = 30;

#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub host: String,
    pub ok: bool,
    pub what: String,
}

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
    let proxy_findings = match &stage.traffic {
        Some(traffic) => {
            let proxy = crate::traffic::proxy::for_config(traffic);
            let text = proxy.check(traffic);
            let results = fleet
                .step_on_each(
                    &fleet.all(),
                    "check",
                    |_| text.clone(),
                    |_| None,
                    stage.timeouts.command,
                )
                .await;
            results
                .into_iter()
                .map(|(i, r)| {
                    let (ok, what) = match r {
                        Ok(out) if out.success() => (
                            true,
                            format!(
                                "{}: installed, its validator passes, {} writable",
                                proxy.name(),
                                traffic.include
                            ),
                        ),
                        Ok(out) => (false, format!("[traffic] proxy: {}", out.message())),
                        Err(e) => (false, format!("[traffic] proxy: the check failed: {e}")),
                    };
                    Finding {
                        host: fleet.name(i).into(),
                        ok,
                        what,
                    }
                })
                .collect()
        }
        None => Vec::new(),
    };
    fleet.close().await;
    // The gate's Prometheus is asked from this machine, as the gate asks it.
    let prometheus_findings = match stage.gate.as_ref().map(|g| &g.source) {
        Some(crate::config::GateSource::Prometheus { url, queries }) => {
            crate::traffic::prometheus::preflight(url, queries, &stage.app)
                .await
                .into_iter()
                .map(|(ok, what)| Finding {
                    host: "(deployer)".into(),
                    ok,
                    what,
                })
                .collect()
        }
        _ => Vec::new(),
    };
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
    findings.extend(proxy_findings);
    findings.extend(prometheus_findings);
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
