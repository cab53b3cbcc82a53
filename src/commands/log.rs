//! `slipway log STAGE`: the audit log of every host, merged in time order, saying where
//! hosts disagree; `slipway log --verify STAGE`: each host's hash chain checked.

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
    /// The record, without its host's chain fields (`seq`, `prev`).
    pub record: serde_json::Value,
    pub hosts: Vec<String>,
    /// Hosts that do not have it although their log goes back further: the action was
    /// written on every host of the stage, so these disagree (a host that was down, or a
    /// line removed).
    pub missing: Vec<String>,
}

/// Merges the audit logs of several hosts: an action recorded on every host it touched
/// appears once, with the hosts that recorded it, in time order, and the hosts that
/// should have it and do not. Lines that are not valid records are skipped (a torn last
/// line after a crash, say; `--verify` names them). Only the newest [`LOG_LINES`] lines
/// of each host count, whatever the host sent.
pub fn merge_logs(
    logs: &[(String, String)],
    since: Option<chrono::DateTime<Utc>>,
) -> Vec<LogEntry> {
    let mut merged: Vec<LogEntry> = Vec::new();
    // Where each action's entry is, by its key: a log of many thousand lines (a long
    // life, or a host that writes junk) merges in one pass, not one scan per line.
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    // Each host's oldest record: it was in the stage from then on.
    let mut first: Vec<(&str, chrono::DateTime<Utc>)> = Vec::new();
    for (host, text) in logs {
        let lines: Vec<&str> = text.lines().collect();
        for line in &lines[lines.len().saturating_sub(LOG_LINES)..] {
            let Ok(mut record) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if let Some(fields) = record.as_object_mut() {
                fields.remove("seq");
                fields.remove("prev");
            }
            let Some(time) = record["time"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            else {
                continue;
            };
            let time = time.with_timezone(&Utc);
            match first.iter_mut().find(|(h, _)| h == host) {
                Some((_, t)) => *t = (*t).min(time),
                None => first.push((host, time)),
            }
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
                        missing: Vec::new(),
                    });
                }
            }
        }
    }
    for entry in &mut merged {
        entry.missing = first
            .iter()
            .filter(|(h, t)| *t <= entry.time && !entry.hosts.iter().any(|x| x == h))
            .map(|(h, _)| h.to_string())
            .collect();
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

/// Every host's audit log, by host name: its newest `lines` lines, or all of it (what
/// `--verify` needs: a chain is checked from its first line). Either way what a host
/// sends is bounded by the transport's output cap.
async fn read_logs(
    stage: &Stage,
    ctx: &Context,
    lines: Option<usize>,
) -> Result<Vec<(String, String)>> {
    let fleet = Fleet::connect(stage, ctx.reporter.clone()).await?;
    let script = script::read_audit(&fleet.layout, lines);
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
                if lines.is_some_and(|n| out.stdout.lines().nth(n.saturating_sub(1)).is_some()) {
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
    Ok(logs)
}

/// `slipway log STAGE`: the audit log, merged from every host.
pub async fn log(
    stage: &Stage,
    ctx: &Context,
    since: Option<chrono::DateTime<Utc>>,
) -> Result<Outcome> {
    let logs = read_logs(stage, ctx, Some(LOG_LINES)).await?;
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
        if !e.missing.is_empty() {
            human.push_str(&format!(
                "    MISSING on {} (recorded on {})\n",
                e.missing.join(", "),
                e.hosts.join(", ")
            ));
        }
    }
    if entries.is_empty() {
        human.push_str("(no audit entries)\n");
    }
    let disagree = entries.iter().filter(|e| !e.missing.is_empty()).count();
    if disagree > 0 {
        human.push_str(&format!(
            "hosts disagree: {disagree} entr{} missing on some hosts (a host that was down then, or a line removed: `slipway log --verify {}` checks each host's chain)\n",
            if disagree == 1 { "y is" } else { "ies are" },
            stage.name
        ));
    }
    let data = json!({
        "entries": entries.iter().map(|e| json!({ "record": e.record, "hosts": e.hosts, "missing": e.missing })).collect::<Vec<_>>(),
        "disagreements": disagree,
    });
    Ok(Outcome { human, data })
}

/// Heads saved earlier, by host: (entry number, line hash).
pub type SavedHeads = std::collections::BTreeMap<String, (u64, String)>;

/// The heads in the output of an earlier `slipway --json log --verify` (its `result`
/// event, intact or broken).
pub fn saved_heads(text: &str) -> std::result::Result<SavedHeads, String> {
    let result = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "result")
        .ok_or("no `result` event: save the output of `slipway --json log --verify STAGE`")?;
    let data = &result["data"]["result"];
    let hosts = data["hosts"]
        .as_array()
        .or_else(|| data["report"]["hosts"].as_array())
        .ok_or("its result has no hosts: save the output of `slipway --json log --verify STAGE`")?;
    let heads: SavedHeads = hosts
        .iter()
        .filter_map(|h| {
            Some((
                h["host"].as_str()?.to_string(),
                (
                    h["head"]["seq"].as_u64()?,
                    h["head"]["hash"].as_str()?.to_string(),
                ),
            ))
        })
        .collect();
    if heads.is_empty() {
        return Err("no host in it has a head (were their logs chained then?)".into());
    }
    Ok(heads)
}

/// `slipway log --verify STAGE`: every host's chain checked; the first break of each
/// broken one named (exit 4); each host's head printed, to keep and compare later. With
/// `saved` heads (`--against`), each must still be in its host's log, unchanged.
pub async fn verify_log(
    stage: &Stage,
    ctx: &Context,
    saved: Option<&SavedHeads>,
) -> Result<Outcome> {
    let logs = read_logs(stage, ctx, None).await?;
    let mut human = String::new();
    let mut hosts = Vec::new();
    let mut broken = Vec::new();
    for (host, text) in &logs {
        let mut report = crate::audit_chain::verify(text);
        if report.broken.is_none()
            && let Some((seq, hash)) = saved.and_then(|s| s.get(host))
        {
            report.broken = crate::audit_chain::check_saved_head(text, *seq, hash);
        }
        let older = if report.unchained > 0 {
            format!(
                "; {} older line(s) before it, not chained (written before slipway chained its log)",
                report.unchained
            )
        } else {
            String::new()
        };
        let line = match (&report.broken, report.chain_from) {
            (Some(b), _) => {
                broken.push(host.clone());
                format!(
                    "{host:<24} BROKEN at line {}: {} ({})",
                    b.line,
                    b.message,
                    b.kind.as_str()
                )
            }
            (None, None) if report.lines == 0 => format!("{host:<24} ok: empty log"),
            (None, None) => format!(
                "{host:<24} NOT CHAINED: {} line(s), all written before slipway chained its log (the chain starts with the next record)",
                report.lines
            ),
            (None, Some(from)) => format!(
                "{host:<24} ok: {} line(s), chain from line {from}{older}",
                report.lines
            ),
        };
        human.push_str(&line);
        human.push('\n');
        if let Some(head) = &report.head {
            human.push_str(&format!(
                "{:<24} head: entry {} at line {}, sha256 {}\n",
                "", head.seq, head.line, head.hash
            ));
        }
        let mut value = serde_json::to_value(&report).unwrap_or_default();
        value["host"] = json!(host);
        value["ok"] = json!(report.broken.is_none());
        hosts.push(value);
    }
    human.push_str(match saved {
        Some(_) if broken.is_empty() => {
            "Each host's log also still holds the head saved earlier, unchanged.\n"
        }
        _ => "The chain shows lines changed, removed, inserted or reordered; not a cut at the end or a whole log rewritten: keep the heads above (e.g. `slipway --json log --verify` in CI artifacts) and check against them next time (--against FILE).\n",
    });
    let data = json!({ "hosts": hosts, "ok": broken.is_empty() });
    if broken.is_empty() {
        return Ok(Outcome { human, data });
    }
    Err(Error::Disagrees {
        message: format!(
            "the audit log of {} is not intact:\n{human}",
            broken.join(", ")
        ),
        report: data,
    })
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
        // h2's log starts after the unlock: it joined later, nothing is missing. h3's
        // goes back to the unlock, and lacks the deploy (with its chain fields: the same).
        assert!(merged.iter().all(|e| e.missing.is_empty()));
        let chained = format!("{{\"seq\":1,\"prev\":\"00\",{}", &b[1..]);
        let mut logs = logs;
        logs.push(("h3".to_string(), format!("{chained}\n")));
        let merged = merge_logs(&logs, None);
        assert_eq!(merged.len(), 2, "{merged:?}");
        assert_eq!(merged[0].hosts, vec!["h1", "h3"]);
        assert!(merged[0].missing.is_empty());
        assert_eq!(merged[0].record.get("seq"), None);
        assert_eq!(merged[1].missing, vec!["h3"]);
    }
}
