//! `slipway log STAGE`: the audit log of every host, merged in time order.

use chrono::Utc;
use serde_json::json;

use crate::config::Stage;
use crate::error::{Error, Result};
use crate::fleet::Fleet;
use crate::run::{Context, Outcome};
use crate::script;

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

/// How many of each host's newest audit records `slipway log` reads: a log of years (or
/// a host writing junk) is shown from its end, in bounded time and memory.
pub const LOG_LINES: usize = 10_000;

/// One action, as recorded on one or more hosts.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    pub time: chrono::DateTime<Utc>,
    pub record: serde_json::Value,
    pub hosts: Vec<String>,
}

/// Merges the audit logs of several hosts: an action recorded on every host it touched
/// appears once, with the hosts that recorded it, in time order. Lines that are not
/// valid records are skipped (a torn last line after a crash, say). Only the newest
/// [`LOG_LINES`] lines of each host count, whatever the host sent.
pub fn merge_logs(
    logs: &[(String, String)],
    since: Option<chrono::DateTime<Utc>>,
) -> Vec<LogEntry> {
    let mut merged: Vec<LogEntry> = Vec::new();
    // Where each action's entry is, by its key: a log of many thousand lines (a long
    // life, or a host that writes junk) merges in one pass, not one scan per line.
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (host, text) in logs {
        let lines: Vec<&str> = text.lines().collect();
        for line in &lines[lines.len().saturating_sub(LOG_LINES)..] {
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
            match index.entry(action_key(&record)) {
                std::collections::hash_map::Entry::Occupied(at) => {
                    merged[*at.get()].hosts.push(host.clone())
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(merged.len());
                    merged.push(LogEntry {
                        time,
                        record,
                        hosts: vec![host.clone()],
                    });
                }
            }
        }
    }
    merged.sort_by_key(|e| e.time);
    merged
}

/// Records of one action on several hosts differ only in their time (each host's
/// record is written when that host is reached): the rest is the action's key.
fn action_key(v: &serde_json::Value) -> String {
    serde_json::json!([
        v["action"],
        v["command"],
        v["actor"],
        v["from"],
        v["to"],
        v["result"],
        v["duration_ms"]
    ])
    .to_string()
}

/// `slipway log STAGE`: the audit log, merged from every host.
pub async fn log(
    stage: &Stage,
    ctx: &Context,
    since: Option<chrono::DateTime<Utc>>,
) -> Result<Outcome> {
    let fleet = Fleet::connect(stage, ctx.reporter.clone()).await?;
    let script = script::read_audit(&fleet.layout, LOG_LINES);
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
            Ok(out) => {
                if out.stdout.lines().nth(LOG_LINES - 1).is_some() {
                    ctx.reporter.warning(
                        Some(fleet.name(i)),
                        &format!("showing this host's newest {LOG_LINES} audit records only (the whole log is .slipway/log.jsonl on the host)"),
                    );
                }
                logs.push((fleet.name(i).to_string(), out.stdout))
            }
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
    fn only_the_newest_lines_of_each_host_count() {
        let line = |n: usize| {
            format!(
                "{{\"time\":\"2026-11-24T05:00:00.{n:06}Z\",\"action\":\"deploy\",\"command\":\"c{n}\"}}\n"
            )
        };
        let text: String = (0..LOG_LINES + 5).map(line).collect();
        let merged = merge_logs(&[("h".to_string(), text)], None);
        assert_eq!(merged.len(), LOG_LINES);
        assert_eq!(merged[0].record["command"], "c5");
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
