//! The rollout state on each host (a staged rollout in progress).

use super::PRELUDE;
use crate::layout::{Layout, quote};

/// Writes the rollout state atomically (a temporary file renamed over the old one),
/// private like the audit log beside it.
pub fn write_rollout(layout: &Layout, json_line: &str) -> String {
    let file = layout.rollout_state();
    format!(
        "{PRELUDE}umask 077\nmkdir -p -- {dir} && printf '%s\\n' {json} > {tmp} && mv -f -- {tmp} {file} || {{ echo \"cannot write \"{file} >&2; exit 1; }}\n",
        dir = quote(&layout.state_dir()),
        file = quote(&file),
        tmp = quote(&format!("{file}.tmp")),
        json = quote(json_line),
    )
}

/// Prints the rollout state (nothing if there is none).
pub fn read_rollout(layout: &Layout) -> String {
    format!(
        "{PRELUDE}f={}\nif [ -f \"$f\" ]; then cat -- \"$f\"; fi\n",
        quote(&layout.rollout_state())
    )
}
