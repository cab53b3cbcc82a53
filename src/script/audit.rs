//! The audit log on each host.

use super::PRELUDE;
use crate::layout::{Layout, quote};

/// Appends one line to the audit log (one `write` of a short line with O_APPEND: lines
/// from concurrent writers do not interleave).
pub fn audit(layout: &Layout, line: &str) -> String {
    format!(
        "{{ [ -d {dir} ] || (umask 077 && mkdir -p -- {dir}); }} && {{ [ -f {log} ] || (umask 077 && : > {log}); }} && printf '%s\\n' {line} >> {log} || echo 'slipway: cannot append to the audit log' >&2\n",
        dir = quote(&layout.state_dir()),
        log = quote(&layout.audit_log()),
        line = quote(line),
    )
}

/// Prints the newest `lines` lines of the audit log (nothing if there is none yet):
/// `tail` reads a long log from its end.
pub fn read_audit(layout: &Layout, lines: usize) -> String {
    format!(
        "{PRELUDE}l={}\nif [ -f \"$l\" ]; then tail -n {lines} -- \"$l\"; fi\n",
        quote(&layout.audit_log())
    )
}
