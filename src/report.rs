//! What the user sees. Three shapes of the same events:
//!
//! - on a terminal: one live line per host (its current step, bytes uploaded, elapsed
//!   time), collapsing to a summary table at the end (indicatif, on stderr);
//! - not on a terminal: plain timestamped lines on stderr;
//! - `--json`: one event per line on stdout, following the versioned schema in the
//!   README (`docs/events.schema.json`).
//!
//! The result of a command is the only thing on stdout besides `--json` events and the
//! `--dry-run` plan.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde_json::Value;

/// The version of the `--json` event schema. Bumped on any incompatible change.
pub const EVENT_SCHEMA: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Started,
    Ok,
    Failed,
    Skipped,
}

/// One `--json` event.
#[derive(Debug, Clone, Serialize)]
pub struct Event<'a> {
    pub schema: u32,
    pub time: String,
    /// `step` (a step on a host), `plan`, `info`, `warning` or `result`.
    pub event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// How human output is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Json,
    /// Plain timestamped lines on stderr.
    Lines,
    /// Live per-host lines on a terminal.
    Progress,
}

/// What the live display and the summary table know about one host.
struct HostLine {
    bar: Option<ProgressBar>,
    first_seen: Instant,
    last_step: String,
    /// The live line's text: the current step and how it went.
    status: String,
    steps: usize,
    failed: Option<String>,
    uploaded: u64,
    busy: Duration,
}

pub struct Reporter {
    format: Format,
    mode: Mode,
    verbose: bool,
    quiet: bool,
    colour: bool,
    started: Instant,
    out: Mutex<()>,
    multi: Option<MultiProgress>,
    hosts: Mutex<BTreeMap<String, HostLine>>,
    /// Set once the live lines have collapsed into the summary.
    finished: Mutex<bool>,
    result_sent: Mutex<bool>,
}

impl Reporter {
    /// A reporter for this process: live progress when stderr is a terminal (and not
    /// `--quiet`), plain lines otherwise, JSON events with `--json`.
    pub fn new(format: Format, verbose: bool, quiet: bool) -> Reporter {
        let terminal = std::io::stderr().is_terminal();
        let mode = match format {
            Format::Json => Mode::Json,
            Format::Human if terminal && !quiet && !dumb_terminal() => Mode::Progress,
            Format::Human => Mode::Lines,
        };
        Reporter::with_mode(format, mode, verbose, quiet)
    }

    fn with_mode(format: Format, mode: Mode, verbose: bool, quiet: bool) -> Reporter {
        let colour = colour_enabled();
        console::set_colors_enabled_stderr(colour);
        console::set_colors_enabled(colour);
        Reporter {
            format,
            mode,
            verbose,
            quiet,
            colour,
            started: Instant::now(),
            out: Mutex::new(()),
            multi: (mode == Mode::Progress)
                .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10))),
            hosts: Mutex::new(BTreeMap::new()),
            finished: Mutex::new(false),
            result_sent: Mutex::new(false),
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn verbose(&self) -> bool {
        self.verbose
    }

    /// Prints one line on stderr, above the live lines when there are some.
    fn line(&self, text: &str) {
        match &self.multi {
            Some(multi) if !self.is_finished() => {
                let _ = multi.println(text);
            }
            _ => {
                let _ = writeln!(std::io::stderr().lock(), "{text}");
            }
        }
    }

    fn is_finished(&self) -> bool {
        self.finished.lock().map(|f| *f).unwrap_or(true)
    }

    fn emit(&self, event: Event<'_>) {
        // Whatever a host or a framework printed may carry credentials, and terminal
        // control sequences: both are taken out here, the one door to the operator.
        let message = event
            .message
            .map(|m| printable(&crate::redact::scrub(m)).into_owned());
        let host = event.host.map(|h| printable(h).into_owned());
        let step = event.step.map(|h| printable(h).into_owned());
        let data = event.data.map(|mut d| {
            crate::redact::scrub_json(&mut d);
            printable_json(&mut d);
            d
        });
        let event = Event {
            message: message.as_deref(),
            host: host.as_deref(),
            step: step.as_deref(),
            data,
            ..event
        };
        let _guard = self.out.lock();
        match self.mode {
            Mode::Json => {
                if let Ok(line) = serde_json::to_string(&event) {
                    let mut stdout = std::io::stdout().lock();
                    let _ = writeln!(stdout, "{line}");
                    let _ = stdout.flush();
                }
            }
            Mode::Progress if event.event == "step" => self.update_line(&event),
            Mode::Lines | Mode::Progress => {
                if self.quiet
                    && !matches!(event.status, Some(Status::Failed))
                    && event.event != "warning"
                {
                    return;
                }
                self.line(&self.plain(&event));
            }
        }
    }

    /// `[  1.23s] app1 upload ok (0.42s): 1.2 MiB`.
    fn plain(&self, event: &Event<'_>) -> String {
        let elapsed = self.started.elapsed().as_secs_f64();
        let mut line = format!("[{elapsed:6.2}s]");
        if let Some(host) = event.host {
            line.push_str(&format!(" {host}"));
        }
        if let Some(step) = event.step {
            line.push_str(&format!(" {step}"));
        }
        match event.status {
            Some(Status::Started) => line.push_str(" ..."),
            Some(Status::Ok) => line.push_str(&format!(" {}", self.paint("ok", Paint::Good))),
            Some(Status::Failed) => {
                line.push_str(&format!(" {}", self.paint("FAILED", Paint::Bad)))
            }
            Some(Status::Skipped) => line.push_str(" skipped"),
            None => {}
        }
        if let Some(ms) = event.elapsed_ms {
            line.push_str(&format!(" ({:.2}s)", ms as f64 / 1000.0));
        }
        if let Some(message) = event.message {
            if event.event == "warning" {
                line.push_str(&format!(
                    " {}: {message}",
                    self.paint("warning", Paint::Bad)
                ));
            } else if event.status.is_some() {
                line.push_str(&format!(": {message}"));
            } else {
                line.push_str(&format!(" {message}"));
            }
        }
        line
    }

    /// The live line of a host: `app1   upload   12.0 MiB/51.2 MiB   [00:03]`.
    fn update_line(&self, event: &Event<'_>) {
        let (Some(host), Some(step)) = (event.host, event.step) else {
            return;
        };
        let Ok(mut hosts) = self.hosts.lock() else {
            return;
        };
        let entry = self.host_line(&mut hosts, host);
        entry.last_step = step.to_string();
        match event.status {
            Some(Status::Started) => {
                entry.status = step.to_string();
                self.redraw(entry);
            }
            Some(Status::Ok) | Some(Status::Skipped) => {
                entry.steps += 1;
                entry.busy += Duration::from_millis(event.elapsed_ms.unwrap_or(0));
                entry.status = format!("{step} {}", self.paint("ok", Paint::Good));
                self.redraw(entry);
            }
            Some(Status::Failed) => {
                entry.steps += 1;
                entry.failed = Some(format!("{step}: {}", event.message.unwrap_or("failed")));
                entry.status = format!(
                    "{step} {}: {}",
                    self.paint("FAILED", Paint::Bad),
                    event.message.unwrap_or("")
                );
                self.redraw(entry);
                // A failure is worth a line that stays, whatever happens to the bars.
                drop(hosts);
                self.line(&self.plain(event));
            }
            None => {}
        }
    }

    /// `build ok   7.0 KiB sent`: the step, then what was uploaded so far.
    fn redraw(&self, line: &HostLine) {
        if let Some(bar) = &line.bar {
            if line.uploaded > 0 {
                bar.set_message(format!(
                    "{:<16} {} sent",
                    line.status,
                    human_bytes(line.uploaded)
                ));
            } else {
                bar.set_message(line.status.clone());
            }
        }
    }

    fn host_line<'m>(
        &self,
        hosts: &'m mut BTreeMap<String, HostLine>,
        host: &str,
    ) -> &'m mut HostLine {
        hosts.entry(host.to_string()).or_insert_with(|| {
            let bar = self.multi.as_ref().map(|multi| {
                let style = ProgressStyle::with_template(if self.colour {
                    "{spinner:.cyan} {prefix:.bold} {wide_msg} {elapsed:>4}"
                } else {
                    "{spinner} {prefix} {wide_msg} {elapsed:>4}"
                })
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
                let bar = multi.add(ProgressBar::new_spinner().with_style(style));
                bar.set_prefix(format!("{host:<24}"));
                bar.enable_steady_tick(Duration::from_millis(120));
                bar
            });
            HostLine {
                bar,
                first_seen: Instant::now(),
                last_step: String::new(),
                status: String::new(),
                steps: 0,
                failed: None,
                uploaded: 0,
                busy: Duration::ZERO,
            }
        })
    }

    fn base<'a>(event: &'a str) -> Event<'a> {
        Event {
            schema: EVENT_SCHEMA,
            time: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            event,
            host: None,
            step: None,
            status: None,
            message: None,
            elapsed_ms: None,
            data: None,
        }
    }

    /// A step started on a host: the live line shows it; plain lines and `--json` show
    /// starts only with `-v` (`--json` has one event per step per host: its outcome).
    pub fn started(&self, host: &str, step: &str) {
        if self.mode != Mode::Progress && !self.verbose {
            return;
        }
        self.emit(Event {
            host: Some(host),
            step: Some(step),
            status: Some(Status::Started),
            ..Self::base("step")
        });
    }

    /// Bytes of a step's stdin sent to a host so far (the upload).
    pub fn bytes(&self, host: &str, sent: u64, total: u64) {
        let Ok(mut hosts) = self.hosts.lock() else {
            return;
        };
        let entry = self.host_line(&mut hosts, host);
        entry.uploaded = sent;
        if let Some(bar) = &entry.bar {
            bar.set_message(format!(
                "{:<16} {}/{}",
                entry.last_step,
                human_bytes(sent),
                human_bytes(total)
            ));
        }
    }

    pub fn finished(&self, host: &str, step: &str, elapsed: Duration, message: Option<&str>) {
        let data = (step == "upload")
            .then(|| self.uploaded(host))
            .flatten()
            .map(|b| serde_json::json!({ "bytes": b }));
        let sent;
        let message = match (message, &data) {
            (None, Some(_)) if self.mode == Mode::Lines => {
                sent = human_bytes(self.uploaded(host).unwrap_or(0));
                Some(sent.as_str())
            }
            _ => message,
        };
        self.emit(Event {
            host: Some(host),
            step: Some(step),
            status: Some(Status::Ok),
            elapsed_ms: Some(elapsed.as_millis() as u64),
            message,
            data,
            ..Self::base("step")
        });
    }

    fn uploaded(&self, host: &str) -> Option<u64> {
        self.hosts
            .lock()
            .ok()
            .and_then(|h| h.get(host).map(|l| l.uploaded))
    }

    pub fn failed(&self, host: &str, step: &str, elapsed: Duration, message: &str) {
        self.emit(Event {
            host: Some(host),
            step: Some(step),
            status: Some(Status::Failed),
            elapsed_ms: Some(elapsed.as_millis() as u64),
            message: Some(message),
            ..Self::base("step")
        });
    }

    pub fn info(&self, message: &str) {
        self.emit(Event {
            message: Some(message),
            ..Self::base("info")
        });
    }

    /// An `info` line that carries data for `--json` (`data`), the text alone otherwise.
    pub fn info_data(&self, message: &str, data: Value) {
        self.emit(Event {
            message: Some(message),
            data: Some(data),
            ..Self::base("info")
        });
    }

    /// Extra detail (script output) shown with `-v` only.
    pub fn detail(&self, host: &str, text: &str) {
        if !self.verbose || text.trim().is_empty() {
            return;
        }
        for line in text.lines() {
            self.emit(Event {
                host: Some(host),
                message: Some(line),
                ..Self::base("info")
            });
        }
    }

    pub fn warning(&self, host: Option<&str>, message: &str) {
        self.emit(Event {
            host,
            message: Some(message),
            ..Self::base("warning")
        });
    }

    /// The plan, as data: `--dry-run` prints it, `--json` carries it.
    pub fn plan(&self, human: &str, data: Value) {
        match self.format {
            Format::Json => self.emit(Event {
                data: Some(data),
                ..Self::base("plan")
            }),
            Format::Human => {
                let _guard = self.out.lock();
                let print = || {
                    let _ = write!(std::io::stdout().lock(), "{}", printable(human));
                };
                match &self.multi {
                    Some(multi) => multi.suspend(print),
                    None => print(),
                }
            }
        }
    }

    /// Ends the live display: the per-host lines collapse into a summary table (on
    /// stderr) when the command did more than look at the hosts.
    pub fn finish(&self) {
        let Ok(mut done) = self.finished.lock() else {
            return;
        };
        if *done {
            return;
        }
        *done = true;
        drop(done);
        let Some(multi) = &self.multi else {
            return;
        };
        let Ok(hosts) = self.hosts.lock() else {
            return;
        };
        for line in hosts.values() {
            if let Some(bar) = &line.bar {
                bar.finish_and_clear();
            }
        }
        let _ = multi.clear();
        let worked = hosts.values().any(|l| l.steps > 2 || l.failed.is_some());
        if !worked || self.quiet {
            return;
        }
        let mut table = format!(
            "{:<24} {:>5} {:>10} {:>8}  {}\n",
            "HOST", "STEPS", "UPLOADED", "TIME", "RESULT"
        );
        for (host, line) in hosts.iter() {
            let result = match &line.failed {
                Some(why) => self.paint(&format!("FAILED {why}"), Paint::Bad),
                None => self.paint("ok", Paint::Good),
            };
            table.push_str(&format!(
                "{:<24} {:>5} {:>10} {:>7.1}s  {}\n",
                host,
                line.steps,
                if line.uploaded > 0 {
                    human_bytes(line.uploaded)
                } else {
                    "-".into()
                },
                line.first_seen.elapsed().as_secs_f64(),
                result
            ));
        }
        let _ = write!(std::io::stderr().lock(), "{table}");
    }

    /// The command's result: stdout in both formats. `exit_class` is `ok` or the failure
    /// class. `--json` has exactly one `result` event, the last: a command that reports
    /// its own failure in detail (check) is not followed by a second one.
    pub fn result(&self, human: &str, exit_class: &str, data: Value) {
        self.finish();
        match self.format {
            Format::Json => {
                let Ok(mut sent) = self.result_sent.lock() else {
                    return;
                };
                if *sent {
                    return;
                }
                *sent = true;
                self.emit(Event {
                    message: Some(human.trim_end()),
                    status: Some(if exit_class == "ok" {
                        Status::Ok
                    } else {
                        Status::Failed
                    }),
                    data: Some(serde_json::json!({ "exit_class": exit_class, "result": data })),
                    elapsed_ms: Some(self.started.elapsed().as_millis() as u64),
                    ..Self::base("result")
                })
            }
            Format::Human => {
                if human.is_empty() {
                    return;
                }
                let _guard = self.out.lock();
                let mut stdout = std::io::stdout().lock();
                let _ = write!(stdout, "{}", printable(human));
                if !human.ends_with('\n') {
                    let _ = writeln!(stdout);
                }
            }
        }
    }

    fn paint(&self, text: &str, paint: Paint) -> String {
        if !self.colour {
            return text.to_string();
        }
        let style = console::Style::new().force_styling(true);
        match paint {
            Paint::Good => style.green().apply_to(text).to_string(),
            Paint::Bad => style.red().bold().apply_to(text).to_string(),
        }
    }
}

#[derive(Clone, Copy)]
enum Paint {
    Good,
    Bad,
}

/// `1.2 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `text` safe to show on a terminal: every control character except newline and tab
/// (C0, DEL, C1 — ESC, CSI and OSC sequences, `\r`, backspace, bell) and the
/// bidirectional overrides that reorder what is shown are written as visible escapes
/// (`\x1b`, `\r`, `\u{202e}`). Hosts print anything: release ids, lock owners, hook
/// output, error messages. Every line slipway shows passes through here ([`Reporter`]
/// and `main`'s last error line), so no host can move the cursor, retitle the window,
/// hide text or fake a line of slipway's own.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    fn unsafe_char(c: char) -> bool {
        (c.is_control() && c != '\n' && c != '\t')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            _ if !unsafe_char(c) => out.push(c),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `text` cut to about `max` characters: its start and its end (where an error usually
/// says why), with how much was left out between. A host's one-line error of megabytes
/// must not become a message of megabytes on the terminal, in release records and in
/// every host's audit log.
pub fn clip(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    let count = text.chars().count();
    if count <= max {
        return std::borrow::Cow::Borrowed(text);
    }
    let head: String = text.chars().take(max / 2).collect();
    let tail: String = text.chars().skip(count - max / 2).collect();
    std::borrow::Cow::Owned(format!(
        "{head} [... {} characters left out ...] {tail}",
        count - head.chars().count() - tail.chars().count()
    ))
}

/// Every string (and key) of a `--json` value made [`printable`]: a consumer that shows
/// a field must not receive a raw escape sequence either.
pub fn printable_json(value: &mut Value) {
    match value {
        Value::String(s) => {
            if let std::borrow::Cow::Owned(clean) = printable(s) {
                *s = clean;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(printable_json),
        Value::Object(o) => {
            if o.keys()
                .any(|k| matches!(printable(k), std::borrow::Cow::Owned(_)))
            {
                let old = std::mem::take(o);
                for (k, v) in old {
                    o.insert(printable(&k).into_owned(), v);
                }
            }
            o.values_mut().for_each(printable_json);
        }
        _ => {}
    }
}

fn dumb_terminal() -> bool {
    std::env::var("TERM").is_ok_and(|t| t == "dumb")
}

/// Whether colour is wanted: never with `NO_COLOR`, never when stderr is not a terminal.
pub fn colour_enabled() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::io::stderr().is_terminal()
        && !dumb_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_like_people_write_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(51 * 1024 * 1024), "51.0 MiB");
    }

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(printable("plain\ttext\nnext"), "plain\ttext\nnext");
        assert_eq!(
            printable("\x1b[2J\x1b]0;pwned\x07ok\rfake\u{9b}\u{202e}"),
            "\\x1b[2J\\x1b]0;pwned\\x07ok\\rfake\\x9b\\u{202e}"
        );
        let mut v = serde_json::json!({"a\x1b": ["\x1b[31m", 1], "b": "\u{7f}"});
        printable_json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"a\\x1b": ["\\x1b[31m", 1], "b": "\\x7f"})
        );
    }

    #[test]
    fn long_text_keeps_its_start_and_end() {
        assert_eq!(clip("short", 10), "short");
        let long = format!("start{}end", "é".repeat(5000));
        let c = clip(&long, 20);
        assert_eq!(
            c,
            "startééééé [... 4988 characters left out ...] éééééééend"
        );
    }

    #[test]
    fn plain_lines_carry_time_host_step_status_and_message() {
        let r = Reporter::with_mode(Format::Human, Mode::Lines, false, false);
        let line = r.plain(&Event {
            host: Some("app1"),
            step: Some("upload"),
            status: Some(Status::Failed),
            elapsed_ms: Some(1500),
            message: Some("disk full"),
            ..Reporter::base("step")
        });
        assert!(line.starts_with('['), "{line}");
        assert!(
            line.ends_with("app1 upload FAILED (1.50s): disk full"),
            "{line}"
        );
    }
}
