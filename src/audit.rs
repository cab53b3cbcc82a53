//! The audit log: one JSON object per action, appended to `.slipway/log.jsonl` on every
//! host the action touched.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Who is acting: the user, the machine, and the CI job if there is one.
#[derive(Debug, Clone, Serialize)]
pub struct Actor {
    pub user: String,
    pub machine: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ci: Option<String>,
}

impl Actor {
    pub fn current() -> Actor {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .ok()
            .filter(|u| !u.is_empty())
            // SAFETY: getuid has no preconditions.
            .unwrap_or_else(|| format!("uid{}", unsafe { libc::getuid() }));
        let machine = hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "unknown".into());
        Actor {
            user: clean(&user),
            machine: clean(&machine),
            ci: ci_identity(),
        }
    }

    pub fn name(&self) -> String {
        format!("{}@{}", self.user, self.machine)
    }
}

/// Names from the environment are shown in messages and paths: keep them printable.
fn clean(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// The CI job, from the variables CI systems set.
fn ci_identity() -> Option<String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if let (Some(repo), Some(run)) = (var("GITHUB_REPOSITORY"), var("GITHUB_RUN_ID")) {
        return Some(clean(&format!("github-actions {repo} run {run}")));
    }
    if let (Some(project), Some(job)) = (var("CI_PROJECT_PATH"), var("CI_JOB_ID")) {
        return Some(clean(&format!("gitlab-ci {project} job {job}")));
    }
    var("CI").map(|_| "ci".to_string())
}

/// One line of the audit log.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub time: DateTime<Utc>,
    pub action: String,
    pub stage: String,
    pub actor: Actor,
    pub command: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub duration_ms: u64,
    /// The run that held the deploy lock (its lock's token): a lock still held with this
    /// token after the record was written anywhere is a leftover of a finished run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// Locks of other runs this run broke to take its own (a dead process, a finished run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub took_over: Option<String>,
}

impl Record {
    pub fn to_line(&self) -> String {
        // Errors quote what hosts and frameworks printed: no credentials on the hosts.
        let mut value = serde_json::to_value(self).unwrap_or_default();
        crate::redact::scrub_json(&mut value);
        // One shell argument carries the line to every host: a message quoting a host's
        // megabytes would fail there (and leave the lock behind with it).
        if let Some(serde_json::Value::String(m)) = value.get_mut("message")
            && let std::borrow::Cow::Owned(short) = crate::report::clip(m, 4000)
        {
            *m = short;
        }
        serde_json::to_string(&value).unwrap_or_default()
    }
}

/// Appends `record` to the audit log on every host, as the next entry of each host's
/// hash chain (best effort: a host that fails is reported by the step, and the command
/// goes on). Safe without the deploy lock: the append locks the log itself.
pub async fn append(fleet: &crate::fleet::Fleet, record: &Record) {
    let script = crate::script::audit(&fleet.layout, &record.to_line());
    let _ = fleet
        .step_on(
            &fleet.all(),
            "audit",
            |_| script.clone(),
            None,
            fleet.stage.timeouts.command,
        )
        .await;
}
