//! What the user sees. Human lines go to stderr (plain and timestamped); `--json` puts
//! one event per line on stdout, following the versioned schema in the README; the
//! result of a command is the only other thing on stdout.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
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

pub struct Reporter {
    format: Format,
    verbose: bool,
    quiet: bool,
    started: Instant,
    out: Mutex<()>,
}

impl Reporter {
    pub fn new(format: Format, verbose: bool, quiet: bool) -> Reporter {
        Reporter {
            format,
            verbose,
            quiet,
            started: Instant::now(),
            out: Mutex::new(()),
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn verbose(&self) -> bool {
        self.verbose
    }

    fn emit(&self, event: Event<'_>) {
        let _guard = self.out.lock();
        match self.format {
            Format::Json => {
                if let Ok(line) = serde_json::to_string(&event) {
                    let mut stdout = std::io::stdout().lock();
                    let _ = writeln!(stdout, "{line}");
                    let _ = stdout.flush();
                }
            }
            Format::Human => {
                if self.quiet
                    && !matches!(event.status, Some(Status::Failed))
                    && event.event != "warning"
                {
                    return;
                }
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
                    Some(Status::Ok) => line.push_str(" ok"),
                    Some(Status::Failed) => line.push_str(" FAILED"),
                    Some(Status::Skipped) => line.push_str(" skipped"),
                    None => {}
                }
                if let Some(ms) = event.elapsed_ms {
                    line.push_str(&format!(" ({:.2}s)", ms as f64 / 1000.0));
                }
                if let Some(message) = event.message {
                    if event.event == "warning" {
                        line.push_str(&format!(" warning: {message}"));
                    } else if event.status.is_some() {
                        line.push_str(&format!(": {message}"));
                    } else {
                        line.push_str(&format!(" {message}"));
                    }
                }
                let _ = writeln!(std::io::stderr().lock(), "{line}");
            }
        }
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

    /// A step started on a host. Human output shows starts only with `-v`.
    pub fn started(&self, host: &str, step: &str) {
        if self.format == Format::Human && !self.verbose {
            return;
        }
        self.emit(Event {
            host: Some(host),
            step: Some(step),
            status: Some(Status::Started),
            ..Self::base("step")
        });
    }

    pub fn finished(&self, host: &str, step: &str, elapsed: Duration, message: Option<&str>) {
        self.emit(Event {
            host: Some(host),
            step: Some(step),
            status: Some(Status::Ok),
            elapsed_ms: Some(elapsed.as_millis() as u64),
            message,
            ..Self::base("step")
        });
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
                let _ = write!(std::io::stdout().lock(), "{human}");
            }
        }
    }

    /// The command's result: stdout in both formats. `exit_class` is `ok` or the failure class.
    pub fn result(&self, human: &str, exit_class: &str, data: Value) {
        match self.format {
            Format::Json => self.emit(Event {
                message: Some(human.trim_end()),
                status: Some(if exit_class == "ok" {
                    Status::Ok
                } else {
                    Status::Failed
                }),
                data: Some(serde_json::json!({ "exit_class": exit_class, "result": data })),
                elapsed_ms: Some(self.started.elapsed().as_millis() as u64),
                ..Self::base("result")
            }),
            Format::Human => {
                if human.is_empty() {
                    return;
                }
                let _guard = self.out.lock();
                let mut stdout = std::io::stdout().lock();
                let _ = write!(stdout, "{human}");
                if !human.ends_with('\n') {
                    let _ = writeln!(stdout);
                }
            }
        }
    }
}

/// Whether colour is wanted: never with `NO_COLOR`, never when stderr is not a terminal.
pub fn colour_enabled() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}
