//! With `[traffic]`: putting the proxy's include in place, starting and stopping a slot's
//! instance, waiting for a slot to drain, reading the split in force, and the proxy's
//! preflight for `slipway check`.

use super::PRELUDE;
use super::hooks::{HookEnv, hooks};
use crate::layout::{Layout, quote};

/// Exit status of [`install_include`] when the proxy's validator refused the include
/// (nothing was reloaded; the previous include is back in place).
pub const EXIT_PROXY_REFUSED: i32 = 77;

/// Puts `content` in place as the include: write `INCLUDE.new`, keep the live one as
/// `INCLUDE.prev`, rename the new one over it, run the validator (`test`); if it fails,
/// the previous include goes back (or the new one away) and nginx's own message is
/// printed, nothing reloaded (exit [`EXIT_PROXY_REFUSED`]). Then the graceful reload,
/// and a wait (at most 5 s) until the master in `pid` runs a worker that was not there
/// before and every previous worker is gone or "shutting down" (nginx's title once it
/// has closed its listening sockets): `-s reload` only sends a signal, and the new split
/// is in force once no previous worker takes a new connection.
pub fn install_include(
    include: &str,
    content: &str,
    test: &str,
    reload: &str,
    pid: &str,
) -> String {
    format!(
        "{PRELUDE}trap '' HUP PIPE INT TERM\n\
         inc={inc}\n\
         dir=$(dirname -- \"$inc\")\n\
         [ -d \"$dir\" ] || {{ echo \"the include's directory $dir does not exist on this host (create it, or set [traffic] include)\" >&2; exit 1; }}\n\
         [ -w \"$dir\" ] || {{ echo \"cannot write the include's directory $dir (give the deploy user write access, or set [traffic] include)\" >&2; exit 1; }}\n\
         printf '%s' {content} > \"$inc.new\" || exit 1\n\
         had=0\n\
         if [ -f \"$inc\" ]; then cp -p -- \"$inc\" \"$inc.prev\" || exit 1; had=1; fi\n\
         mv -f -- \"$inc.new\" \"$inc\" || exit 1\n\
         if ! out=$(sh -c {test} 2>&1 </dev/null); then\n\
         \x20 if [ \"$had\" = 1 ]; then cp -p -- \"$inc.prev\" \"$inc.back\" && mv -f -- \"$inc.back\" \"$inc\"; else rm -f -- \"$inc\"; fi\n\
         \x20 echo {refused} >&2\n\
         \x20 printf '%s\\n' \"$out\" | tail -n 4 >&2\n\
         \x20 exit {EXIT_PROXY_REFUSED}\n\
         fi\n\
         pidf={pid}\n\
         m=''\n\
         before=''\n\
         if [ -r \"$pidf\" ] && m=$(cat -- \"$pidf\") && [ -n \"$m\" ]; then before=\" $(pgrep -P \"$m\" | tr '\\n' ' ')\"; fi\n\
         if ! out=$(sh -c {reload} 2>&1 </dev/null); then\n\
         \x20 printf '%s\\n' \"$out\" | tail -n 4 >&2\n\
         \x20 echo {reload_failed} >&2\n\
         \x20 exit 1\n\
         fi\n\
         i=0\n\
         while [ -n \"$m\" ] && [ \"$i\" -lt 50 ]; do\n\
         \x20 new=0; old=0\n\
         \x20 for p in $(pgrep -P \"$m\"); do\n\
         \x20   case \"$before \" in\n\
         \x20   *\" $p \"*) t=$(tr '\\0' ' ' < \"/proc/$p/cmdline\" 2>/dev/null)\n\
         \x20     case \"$t\" in *'shutting down'*) ;; *'worker process'*) old=1 ;; esac ;;\n\
         \x20   *) new=1 ;;\n\
         \x20   esac\n\
         \x20 done\n\
         \x20 [ \"$new\" = 1 ] && [ \"$old\" = 0 ] && exit 0\n\
         \x20 sleep 0.1\n\
         \x20 i=$((i + 1))\n\
         done\n\
         [ -z \"$m\" ] || echo 'the proxy did not run the new configuration alone within 5s of the reload (no new worker, or a previous one still taking connections)' >&2\n",
        inc = quote(include),
        content = quote(content),
        test = quote(test),
        reload = quote(reload),
        pid = quote(pid),
        refused = quote(&format!(
            "the proxy's validator (`{test}`) refused the configuration with the new include; the previous include is back and nothing was reloaded:"
        )),
        reload_failed = quote(&format!(
            "the include is in place but the reload (`{reload}`) failed: the proxy may still run the previous split"
        )),
    )
}

/// Runs `[traffic] start` or `stop` commands in a slot (its link as the working
/// directory) with the hook environment plus SLIPWAY_SLOT, SLIPWAY_PORT and
/// SLIPWAY_ADDRESS; `start` also writes `slots/<slot>.env` with the same values first
/// (for a systemd template unit's `EnvironmentFile=`).
pub fn slot_commands(
    kind: &str,
    layout: &Layout,
    env: &HookEnv<'_>,
    slot: &str,
    port: &str,
    address: &str,
    commands: &[String],
) -> String {
    let vars = [
        ("SLIPWAY_SLOT", slot),
        ("SLIPWAY_PORT", port),
        ("SLIPWAY_ADDRESS", address),
        ("SLIPWAY_RELEASE_ID", env.release.as_str()),
        ("SLIPWAY_RELEASE_PATH", env.release_path),
        ("SLIPWAY_DEPLOY_TO", env.deploy_to),
        ("SLIPWAY_STAGE", env.stage),
    ];
    let mut s = String::new();
    let file = format!("{}/{slot}.env", layout.slots());
    if kind == "start" {
        let body: String = vars
            .iter()
            .map(|(k, v)| format!("{k}={}\n", systemd_value(v)))
            .collect();
        s.push_str(&format!(
            "mkdir -p -- {dir} && printf '%s' {body} > {tmp} && mv -f -- {tmp} {file} || {{ echo \"cannot write \"{file} >&2; exit 1; }}\n",
            dir = quote(&layout.slots()),
            body = quote(&body),
            tmp = quote(&format!("{file}.tmp")),
            file = quote(&file),
        ));
    }
    s.push_str("export");
    for (k, v) in &vars[..3] {
        s.push_str(&format!(" {k}={}", quote(v)));
    }
    s.push('\n');
    format!("{s}{}", hooks(kind, env, commands, ""))
}

/// A value for a systemd `EnvironmentFile=` line: quoted when it needs to be.
fn systemd_value(v: &str) -> String {
    if v.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':'))
    {
        v.to_string()
    } else {
        format!(
            "\"{}\"",
            v.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', " ")
        )
    }
}

/// Waits until a slot no longer serves anyone, at most `seconds`: the proxy's old
/// workers (children of the master in `pid` titled "shutting down") have finished their
/// requests, and, for a TCP slot (`connections` = address and port), no connection to
/// it is established any more (`ss`). Prints `drained` or `still busy after Ns` (exit 0
/// both: the caller says what it does next).
pub fn drain(pid: &str, connections: Option<(&str, u16)>, seconds: u64) -> String {
    let conn = match connections {
        Some((address, port)) => format!(
            "  if command -v ss >/dev/null 2>&1 && [ -n \"$(ss -Htn state established src {} 2>/dev/null)\" ]; then busy=1; fi\n",
            quote(&if address.contains(':') {
                format!("[{address}]:{port}")
            } else {
                format!("{address}:{port}")
            })
        ),
        None => String::new(),
    };
    format!(
        "{PRELUDE}pidf={pid}\nend=$(( $(date +%s) + {seconds} ))\n\
         while :; do\n\
         \x20 busy=0\n\
         \x20 if [ -r \"$pidf\" ] && m=$(cat -- \"$pidf\") && [ -n \"$m\" ]; then\n\
         \x20   if pgrep -P \"$m\" -f 'shutting down' >/dev/null 2>&1; then busy=1; fi\n\
         \x20 fi\n\
         {conn}\
         \x20 [ \"$busy\" = 0 ] && {{ echo drained; exit 0; }}\n\
         \x20 [ \"$(date +%s)\" -ge \"$end\" ] && {{ echo 'still busy after {seconds}s'; exit 0; }}\n\
         \x20 sleep 0.2\n\
         done\n",
        pid = quote(pid),
    )
}

/// Prints the split in force (the include's first line) and where each slot points:
/// `include: ...`, `a: releases/ID`, `b: ...` (empty when there is none).
pub fn read_traffic(layout: &Layout, include: &str) -> String {
    format!(
        "{PRELUDE}inc={inc}\n\
         if [ -f \"$inc\" ]; then printf 'include: %s\\n' \"$(head -n 1 -- \"$inc\")\"; else echo 'include:'; fi\n\
         for s in a b; do printf '%s: %s\\n' \"$s\" \"$(readlink -- {slots}/\"$s\" 2>/dev/null)\"; done\n",
        inc = quote(include),
        slots = quote(&layout.slots()),
    )
}

/// Reads at most `max` bytes of the access log `log` from byte `offset` on. Prints
/// `slipway-log OFFSET END SIZE` (the bytes it sends: OFFSET..END of a file of SIZE), then
/// those bytes with every byte outside printable ASCII, tab and newline turned into `?`
/// one for one, so the deployer can count bytes in the text it gets. A file smaller than
/// `offset` was rotated or truncated: it starts over at 0. No file: `slipway-log 0 0 0`.
/// `tail -c +N` seeks on a regular file: a large log costs nothing before `offset`.
pub fn read_access_log(log: &str, offset: u64, max: u64) -> String {
    format!(
        "{PRELUDE}f={log}\n\
         off={offset}\n\
         size=$(stat -c %s -- \"$f\" 2>/dev/null) || size=0\n\
         if [ \"$size\" -lt \"$off\" ]; then off=0; fi\n\
         end=$((off + {max}))\n\
         if [ \"$end\" -gt \"$size\" ]; then end=$size; fi\n\
         echo \"slipway-log $off $end $size\"\n\
         if [ \"$end\" -gt \"$off\" ]; then tail -c +$((off + 1)) -- \"$f\" | head -c $((end - off)) | tr -c '\\11\\12\\40-\\176' '?'; fi\n",
        log = quote(log),
    )
}

/// `slipway check`: the proxy is installed, its validator passes, and the include's
/// directory is writable. Each problem is a line on stderr; exit 1 when any.
pub fn proxy_check(binary: &str, package: &str, include: &str, test: &str) -> String {
    format!(
        "{PRELUDE}bad=0\n\
         if ! command -v {bin} >/dev/null 2>&1 && [ ! -x /usr/sbin/{bin} ]; then echo {missing} >&2; bad=1; fi\n\
         dir=$(dirname -- {inc})\n\
         if [ ! -d \"$dir\" ] || [ ! -w \"$dir\" ]; then echo \"the include's directory $dir is missing or not writable by this user (create it or grant access, or set [traffic] include)\" >&2; bad=1; fi\n\
         if [ \"$bad\" = 0 ] && ! out=$(sh -c {test} 2>&1 </dev/null); then printf '%s\\n' \"$out\" | tail -n 3 >&2; echo {failing} >&2; bad=1; fi\n\
         exit \"$bad\"\n",
        bin = quote(binary),
        inc = quote(include),
        test = quote(test),
        missing = quote(&format!(
            "{binary} is not installed on this host: [traffic] needs it (Debian/Ubuntu: apt-get install {package})"
        )),
        failing = quote(&format!(
            "the proxy's validator `{test}` fails on this host: fix the proxy's configuration first"
        )),
    )
}
