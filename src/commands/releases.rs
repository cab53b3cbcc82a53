//! `slipway releases STAGE`: every host's releases with their recorded state.

use serde_json::json;

use super::unlock::describe_lock;
use crate::config::Stage;
use crate::error::Result;
use crate::fleet::Fleet;
use crate::plan;
use crate::probe::probe;
use crate::run::{Context, Outcome};

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
