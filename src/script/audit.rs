//! The audit log on each host: a hash chain, one JSON object per line.

use super::PRELUDE;
use crate::audit_chain::GENESIS;
use crate::layout::{Layout, quote};

/// Appends one record to the audit log as the next entry of the host's chain: the line
/// starts with `"seq"` (the previous entry's plus one) and `"prev"` (the SHA-256 of the
/// previous line's bytes, or [`GENESIS`] in an empty log), both computed here, on the
/// host, under a lock on the log itself (`flock` on the file; a lock directory where
/// there is no `flock`), so two writers (a locked run's last step and an `unlock`, say)
/// cannot both chain to the same line. Only the last line is read, however long the log.
///
/// `record_json` is the record as a JSON object (`{...}`). The fragment runs in a
/// subshell and never exits the script it is part of: a failure prints
/// `slipway: cannot append to the audit log` on stderr and leaves `$?` non-zero.
pub fn audit(layout: &Layout, record_json: &str) -> String {
    // The record's own fields follow "seq" and "prev" in the same object.
    let rest = match record_json.trim().strip_prefix('{') {
        Some(r) if r.trim() != "}" => format!(",{r}"),
        _ => "}".to_string(),
    };
    format!(
        r#"(
  dir={dir}
  log={log}
  {{ [ -d "$dir" ] || (umask 077 && mkdir -p -- "$dir"); }} || exit 1
  {{ [ -f "$log" ] || (umask 077 && : > "$log"); }} || exit 1
  command -v sha256sum >/dev/null 2>&1 || {{ echo 'sha256sum is not installed on this host (it is part of coreutils): the audit log is hash-chained' >&2; exit 1; }}
  exec 9>>"$log" || exit 1
  slipway_chain_append() {{
    last=''
    h={genesis}
    if [ -s "$log" ]; then
      # A last line torn by a crash (no newline) stays a line of its own.
      if [ -n "$(tail -c 1 -- "$log")" ]; then printf '\n' >&9 || return 1; fi
      last=$(tail -n 1 -- "$log") || return 1
      h=$(printf '%s' "$last" | sha256sum) || return 1
      h=${{h%% *}}
    fi
    n=0
    case $last in
      '{{"seq":'*) n=${{last#'{{"seq":'}}; n=${{n%%,*}} ;;
    esac
    case $n in ''|*[!0-9]*) n=0 ;; esac
    printf '{{"seq":%s,"prev":"%s"%s\n' "$((n + 1))" "$h" {rest} >&9
  }}
  if command -v flock >/dev/null 2>&1; then
    flock -w 30 9 || {{ echo 'the audit log stayed locked by another writer for 30 s' >&2; exit 1; }}
    slipway_chain_append
  else
    # No flock(1): a lock directory next to the log. One left by a writer that died
    # holding it (a few milliseconds' window) is taken over once it is 30 s old — its
    # own age, not the time spent waiting behind live writers.
    tries=0
    until mkdir -- "$log.lock" 2>/dev/null; do
      tries=$((tries + 1))
      if [ "$tries" -ge 300 ]; then
        tries=0
        if born=$(stat -c %Y -- "$log.lock" 2>/dev/null) && now=$(date +%s 2>/dev/null); then
          [ $((now - born)) -lt 30 ] || rm -rf -- "$log.lock"
        elif ! command -v stat >/dev/null 2>&1; then
          rm -rf -- "$log.lock"
        fi
        continue
      fi
      sleep 0.1 2>/dev/null || sleep 1
    done
    slipway_chain_append
    rc=$?
    rmdir -- "$log.lock"
    exit "$rc"
  fi
) || {{ echo 'slipway: cannot append to the audit log' >&2; false; }}
"#,
        dir = quote(&layout.state_dir()),
        log = quote(&layout.audit_log()),
        genesis = GENESIS,
        rest = quote(&rest),
    )
}

/// Prints the audit log: its last `lines` lines, or all of it (nothing if there is none
/// yet). What comes back is bounded by the transport's output cap either way.
pub fn read_audit(layout: &Layout, lines: Option<usize>) -> String {
    let read = match lines {
        Some(n) => format!("tail -n {n} --"),
        None => "cat --".to_string(),
    };
    format!(
        "{PRELUDE}l={}\nif [ -f \"$l\" ]; then {read} \"$l\"; fi\n",
        quote(&layout.audit_log())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(script: &str) -> std::process::Output {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap()
    }

    #[test]
    fn appends_chain_each_line_to_the_one_before_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().join("it's $(x)").to_str().unwrap());
        for i in 0..3 {
            let out = run(&audit(
                &layout,
                &format!("{{\"action\":\"deploy\",\"n\":{i},\"m\":\"it's $(x) \\\"q\\\"\"}}"),
            ));
            assert!(out.status.success(), "{out:?}");
        }
        let text = std::fs::read_to_string(layout.audit_log()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with(&format!("{{\"seq\":1,\"prev\":\"{GENESIS}\",")));
        assert!(lines[2].starts_with("{\"seq\":3,"));
        let v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(v["m"], "it's $(x) \"q\"");
        let report = crate::audit_chain::verify(&text);
        assert!(report.broken.is_none(), "{report:?}");
        assert_eq!(report.head.unwrap().seq, 3);
    }

    #[test]
    fn a_log_of_an_older_version_is_continued_and_a_torn_line_kept_apart() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().to_str().unwrap());
        std::fs::create_dir_all(layout.state_dir()).unwrap();
        std::fs::write(
            layout.audit_log(),
            "{\"action\":\"old\"}\n{\"action\":\"torn",
        )
        .unwrap();
        assert!(
            run(&audit(&layout, "{\"action\":\"new\"}"))
                .status
                .success()
        );
        let text = std::fs::read_to_string(layout.audit_log()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[2].starts_with("{\"seq\":1,"), "{text}");
        let report = crate::audit_chain::verify(&text);
        assert!(report.broken.is_none(), "{report:?}");
        assert_eq!(report.chain_from, Some(3));
    }

    #[test]
    fn concurrent_writers_never_chain_to_the_same_line() {
        concurrent_appends(None);
    }

    #[test]
    fn concurrent_writers_are_serialised_without_flock_too() {
        // A PATH with the tools the script needs, except flock(1).
        let bin = tempfile::tempdir().unwrap();
        for tool in [
            "sh",
            "mkdir",
            "tail",
            "sha256sum",
            "rmdir",
            "rm",
            "sleep",
            "stat",
            "date",
        ] {
            let path = ["/usr/bin", "/bin"]
                .iter()
                .map(|d| std::path::Path::new(d).join(tool))
                .find(|p| p.exists())
                .unwrap_or_else(|| panic!("{tool} is not installed"));
            std::os::unix::fs::symlink(path, bin.path().join(tool)).unwrap();
        }
        concurrent_appends(Some(bin.path()));
    }

    fn concurrent_appends(path: Option<&std::path::Path>) {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().to_str().unwrap());
        let script = audit(&layout, "{\"action\":\"x\"}");
        let children: Vec<_> = (0..8)
            .map(|_| {
                let mut command = std::process::Command::new("/bin/sh");
                command
                    .arg("-c")
                    .arg(format!("for i in 1 2 3 4 5; do {script} done"));
                if let Some(path) = path {
                    command.env("PATH", path);
                }
                command.spawn().unwrap()
            })
            .collect();
        for mut c in children {
            assert!(c.wait().unwrap().success());
        }
        let text = std::fs::read_to_string(layout.audit_log()).unwrap();
        assert_eq!(text.lines().count(), 40);
        let report = crate::audit_chain::verify(&text);
        assert!(report.broken.is_none(), "{report:?}\n{text}");
        assert_eq!(report.head.unwrap().seq, 40);
    }
}
