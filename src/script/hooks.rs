//! Running the user's commands in a release, with the hook environment: build, restart
//! and health hooks, and one command whose exit status the caller reads.

use super::{EXIT_NOT_FOUND, PRELUDE};
use crate::layout::{ReleaseId, quote};

/// The environment every hook sees.
pub struct HookEnv<'a> {
    pub release: &'a ReleaseId,
    pub release_path: &'a str,
    pub deploy_to: &'a str,
    pub stage: &'a str,
    pub host: &'a str,
}

/// The start of every script that runs the user's commands: into the release, with
/// the hook environment exported.
pub(super) fn enter(env: &HookEnv<'_>) -> String {
    format!(
        "{PRELUDE}cd -- {path} || exit 1\nexport SLIPWAY_RELEASE_ID={id} SLIPWAY_RELEASE_PATH={path} SLIPWAY_DEPLOY_TO={deploy_to} SLIPWAY_STAGE={stage} SLIPWAY_HOST={host}\n",
        path = quote(env.release_path),
        id = quote(env.release.as_str()),
        deploy_to = quote(env.deploy_to),
        stage = quote(env.stage),
        host = quote(env.host),
    )
}

/// Runs hook commands one after another in `release_path`; the first failure stops the
/// step and names the command. Each command is the user's own shell text, run by a
/// nested `sh -c` so that nothing of ours is mixed into it.
pub fn hooks(kind: &str, env: &HookEnv<'_>, commands: &[String], then: &str) -> String {
    let mut s = enter(env);
    for command in commands {
        s.push_str(&format!(
            "sh -c {cmd} </dev/null || {{ rc=$?; printf '%s hook `%s` exited with status %s\\n' {kind} {cmd} \"$rc\" >&2; exit 1; }}\n",
            cmd = quote(command),
            kind = quote(kind),
        ));
    }
    s.push_str(then);
    s
}

/// Runs `command` (already quoted where it carries values) in a release with the hook
/// environment, and exits with its status: the caller reads specific codes.
pub fn in_release(env: &HookEnv<'_>, command: &str) -> String {
    format!(
        "{enter}sh -c {cmd} </dev/null\nrc=$?\n[ \"$rc\" -eq 127 ] && exit {EXIT_NOT_FOUND}\nexit \"$rc\"\n",
        enter = enter(env),
        cmd = quote(command),
    )
}
