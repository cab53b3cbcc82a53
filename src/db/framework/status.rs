//! `slipway db status` in framework mode: the applied migrations in applied order, what
//! each kept release expects, and every disagreement between them.

use serde_json::{Value, json};

use super::Op;
use super::run::run;
use crate::config::{Database, FrameworkMigrator};
use crate::error::{Error, Result};
use crate::fleet::Fleet;
use crate::release::{HostState, ReleaseState};
use crate::run::Outcome;

/// The live release as `db status` compares it: its id, its record, its code.
pub struct Live<'a> {
    pub id: &'a str,
    pub record: Option<&'a [String]>,
    pub known: &'a [super::Known],
}

/// Disagreements between the database and the live release: its code and its record.
pub fn disagreements(applied: &[String], live: &Live<'_>) -> Vec<String> {
    let mut out = Vec::new();
    let (id, record, known) = (live.id, live.record, live.known);
    let unknown: Vec<&str> = applied
        .iter()
        .filter(|a| !known.iter().any(|k| &k.id == *a))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        out.push(format!(
            "applied but unknown to the live release {id}'s code: {}",
            unknown.join(", ")
        ));
    }
    let pending: Vec<&str> = known
        .iter()
        .filter(|k| !applied.contains(&k.id))
        .map(|k| k.id.as_str())
        .collect();
    if !pending.is_empty() {
        out.push(format!(
            "in the live release {id}'s code but not applied: {}",
            pending.join(", ")
        ));
    }
    match record {
        None => out.push(format!(
            "the live release {id} recorded no applied migrations (deployed before framework mode?)"
        )),
        Some(r) => {
            let extra: Vec<&str> = applied
                .iter()
                .filter(|a| !r.contains(a))
                .map(String::as_str)
                .collect();
            let missing: Vec<&str> = r
                .iter()
                .filter(|x| !applied.contains(x))
                .map(String::as_str)
                .collect();
            if !extra.is_empty() {
                out.push(format!(
                    "applied but not in release {id}'s record: {}",
                    extra.join(", ")
                ));
            }
            if !missing.is_empty() {
                out.push(format!(
                    "in release {id}'s record but not applied: {}",
                    missing.join(", ")
                ));
            }
        }
    }
    out
}

/// The status of a framework-mode database, read through the live release's code.
pub async fn status(
    fleet: &Fleet,
    config: &Database,
    migrator: &FrameworkMigrator,
    state: &HostState,
) -> Result<Outcome> {
    let host = fleet.name(config.primary).to_string();
    let Some(current) = state.current() else {
        return Err(Error::Usage(format!(
            "{host} has no current release: the {} migrator runs in a release's code, so there is nothing to read the database with yet",
            migrator.framework.as_str()
        )));
    };
    let ran = run(
        fleet,
        config,
        migrator,
        &current,
        "db-status",
        Op::Inspect,
        &[],
    )
    .await
    .map_err(|m| Error::Step {
        host: host.clone(),
        step: "db-status".into(),
        message: m,
    })?;
    let applied = ran
        .applied()
        .map_err(|m| Error::Step {
            host: host.clone(),
            step: "db-status".into(),
            message: m,
        })?
        .to_vec();
    let live_meta = state.release(&current).and_then(|r| r.meta.clone());
    let live_record = live_meta.as_ref().and_then(|m| m.schema.as_ref());
    let problems = disagreements(
        &applied,
        &Live {
            id: current.as_str(),
            record: live_record.map(|r| r.applied.as_slice()),
            known: &ran.report.known,
        },
    );
    let mut human = format!(
        "database ({}) on {host}: {} applied migration{}, in applied order:\n",
        migrator.framework.as_str(),
        applied.len(),
        if applied.len() == 1 { "" } else { "s" }
    );
    for (n, a) in applied.iter().enumerate() {
        human.push_str(&format!("  {:>3}  {a}\n", n + 1));
    }
    let mut releases: Vec<Value> = Vec::new();
    human.push_str("releases (newest first): what each recorded\n");
    for r in state.releases.iter().rev() {
        let meta = r.meta.as_ref();
        let record = meta.and_then(|m| m.schema.as_ref());
        let st = meta.map(|m| m.state);
        let is_current = r.id == current;
        let view = match record {
            None => "no record".to_string(),
            Some(rec) => {
                let beyond: Vec<&str> = applied
                    .iter()
                    .filter(|a| !rec.applied.contains(a))
                    .map(String::as_str)
                    .collect();
                let lacking: Vec<&str> = rec
                    .applied
                    .iter()
                    .filter(|x| !applied.contains(x))
                    .map(String::as_str)
                    .collect();
                let mut v = format!("expects {} applied", rec.applied.len());
                if beyond.is_empty() && lacking.is_empty() {
                    v.push_str(" (matches the database)");
                } else {
                    if !beyond.is_empty() {
                        v.push_str(&format!(
                            "; the database has beyond it: {}",
                            beyond.join(", ")
                        ));
                    }
                    if !lacking.is_empty() {
                        v.push_str(&format!("; not applied now: {}", lacking.join(", ")));
                    }
                }
                if !rec.applied_now.is_empty() {
                    v.push_str(&format!(
                        "; its deploy applied {}",
                        rec.applied_now.join(", ")
                    ));
                }
                v
            }
        };
        let note = match (st, meta.and_then(|m| m.note.as_deref())) {
            // A snapshot restored after the failure put the whole schema back.
            (Some(ReleaseState::Failed), Some(n))
                if n.contains("partially changed")
                    && !n.contains("the schema is as before this deploy") =>
            {
                format!(" [FAILED, may have left a half-applied migration: {n}]")
            }
            _ => String::new(),
        };
        human.push_str(&format!(
            "  {}{} {}: {view}{note}\n",
            r.id,
            if is_current { " (current)" } else { "" },
            st.map(|s| s.as_str()).unwrap_or("incomplete"),
        ));
        releases.push(json!({
            "id": r.id.as_str(),
            "state": st.map(|s| s.as_str()).unwrap_or("incomplete"),
            "current": is_current,
            "applied": record.map(|r| r.applied.clone()),
            "applied_now": record.map(|r| r.applied_now.clone()),
        }));
    }
    if problems.is_empty() {
        human.push_str("the database agrees with the live release's code and record\n");
    } else {
        human.push_str("DISAGREEMENTS:\n");
        for p in &problems {
            human.push_str(&format!("  - {p}\n"));
        }
    }
    let disagrees = !problems.is_empty();
    crate::db::disagreeing(
        disagrees,
        human,
        json!({
            "mode": "framework",
            "framework": migrator.framework.as_str(),
            "applied": applied,
            "known": ran.report.known.iter().map(|k| json!({"id": k.id, "reversible": k.reversible, "atomic": k.atomic, "destructive": k.destructive.iter().map(|d| d.describe()).collect::<Vec<_>>()})).collect::<Vec<_>>(),
            "releases": releases,
            "disagreements": problems,
            "agrees": problems.is_empty(),
        }),
    )
}

/// `slipway check` in framework mode: the adapter reads the database with the live
/// release's code (ok, or FAIL with why), and each migration of that code still pending
/// that would break the release serving is named (a warning: the check still passes).
/// The code a deploy brings is not on the hosts before it: its migrations are checked
/// when the deploy inspects them, before migrating.
pub async fn check(
    fleet: &Fleet,
    config: &Database,
    migrator: &FrameworkMigrator,
) -> Vec<(String, bool, String)> {
    let host = fleet.name(config.primary).to_string();
    let framework = migrator.framework.as_str();
    let probed = fleet
        .step(
            config.primary,
            "probe",
            &crate::script::probe(&fleet.layout),
            None,
            fleet.stage.timeouts.command,
        )
        .await;
    let current = match probed {
        Ok(o) => HostState::parse(&host, &o.stdout).current(),
        Err(m) => {
            return vec![(
                host,
                false,
                format!("database ({framework}): cannot read the releases: {m}"),
            )];
        }
    };
    let Some(current) = current else {
        return vec![(
            host,
            true,
            format!(
                "database ({framework}): no live release yet; the first deploy reads the migrations with its code"
            ),
        )];
    };
    let ran = match run(fleet, config, migrator, &current, "check", Op::Inspect, &[]).await {
        Ok(ran) => ran,
        Err(m) => return vec![(host, false, format!("database ({framework}): {m}"))],
    };
    let applied = match ran.applied() {
        Ok(a) => a.to_vec(),
        Err(m) => return vec![(host, false, format!("database ({framework}): {m}"))],
    };
    let pending = ran
        .report
        .known
        .iter()
        .filter(|k| !applied.contains(&k.id))
        .count();
    let mut out = vec![(
        host.clone(),
        true,
        format!(
            "database ({framework}): read with release {current}'s code: {} applied, {pending} pending",
            applied.len()
        ),
    )];
    out.extend(
        super::destructive::warnings(&ran.report.known, &applied)
            .into_iter()
            .map(|w| (host.clone(), true, format!("warning: {w}"))),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::framework::Known;

    fn k(ids: &[&str]) -> Vec<Known> {
        ids.iter()
            .map(|i| Known {
                id: i.to_string(),
                reversible: true,
                atomic: true,
                destructive: vec![],
            })
            .collect()
    }

    #[test]
    fn flags_what_the_live_release_does_not_know_or_record() {
        let applied: Vec<String> = ["a", "b", "x"].iter().map(|s| s.to_string()).collect();
        let record: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let d = disagreements(
            &applied,
            &Live {
                id: "R1",
                record: Some(&record),
                known: &k(&["a", "b", "c"]),
            },
        );
        assert!(
            d.iter()
                .any(|m| m.contains("unknown to the live release R1's code: x")),
            "{d:?}"
        );
        assert!(d.iter().any(|m| m.contains("not applied: c")), "{d:?}");
        let ok: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        assert!(
            disagreements(
                &ok,
                &Live {
                    id: "R1",
                    record: Some(&ok),
                    known: &k(&["a", "b"])
                }
            )
            .is_empty()
        );
    }
}
