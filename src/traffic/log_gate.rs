//! The traffic gate of a `[traffic]` step (`[gate]`): from the moment the step's split is
//! in force, each slot's numbers are read every interval, from one of two sources, and
//! the same verdict ([`log_verdict::verdict`]) judges them; the same loop fails early
//! after `max_consecutive_failures` failing readings and takes the last reading of the
//! window as the step's verdict.
//!
//! - The access log (default): every host's log is read incrementally over the existing
//!   connections (only the bytes written since the last read, in bounded chunks, see
//!   `script::read_access_log`), the requests are counted per slot over all hosts.
//!   However large a log is, only the step's window is read, and memory holds one chunk
//!   of text plus the window's latencies (bounded by [`access_log::MAX_LATENCIES`]).
//! - Prometheus ([`super::prometheus`]): its HTTP API answers each slot's numbers over
//!   the time since the step began.
//!
//! Each verdict is reported with both slots' numbers (`--json`: an `info` event whose
//! `data.gate` holds them) and appended to the audit log.

use std::time::{Duration, Instant};

use chrono::Utc;

use super::access_log::{self, Window};
use super::chart::{self, Series};
use super::driver::Driver;
use super::log_verdict::{self, Judged, Source};
use super::prometheus;
use super::split::Slot;
use crate::audit::{self, Actor, Record};
use crate::config::{Gate, GateSource};
use crate::fleet::Fleet;
use crate::rollout::health::Verdict;
use crate::script;

/// Bytes asked for in one read (the transport caps a command's output at 32 MiB).
pub const READ_MAX: u64 = 8 * 1024 * 1024;
/// Reads per host per turn: a log written faster than 128 MiB per interval is read
/// behind, and caught up at the next turns (or reported when the window ends).
const READS_PER_TURN: usize = 16;

/// One step's traffic gate, whichever its source: started when the split is in force.
pub struct LogGate<'a> {
    gate: &'a Gate,
    started: Instant,
    reader: Reader<'a>,
    /// A host canary: the new hosts' names and the old ones'.
    hosts: Option<(Vec<String>, Vec<String>)>,
    /// Every reading's numbers, for the step's picture ([`chart`]).
    series: Series,
}

/// Where the numbers come from.
enum Reader<'a> {
    Log(LogReader<'a>),
    Prometheus(prometheus::Reader),
}

/// The access logs of every host, read incrementally.
struct LogReader<'a> {
    fleet: &'a Fleet,
    log: String,
    /// Per host: the side its requests count for (a host canary: new or old), or None
    /// for the `slot=` of each line (`[traffic]`).
    sides: Vec<Option<Slot>>,
    /// Per host: where the next read starts (None: not known yet).
    offsets: Vec<Option<u64>>,
    /// Per host: why its last read failed.
    unreadable: Vec<Option<String>>,
    /// Per host: bytes still unread after the last turn.
    behind: Vec<u64>,
    window: Window,
}

impl<'a> LogGate<'a> {
    /// The window starts now: with the access log, notes where every host's log ends
    /// (the window's requests are what comes after).
    pub async fn begin(driver: &'a Driver<'a>, gate: &'a Gate) -> LogGate<'a> {
        let reader = match &gate.source {
            GateSource::AccessLog => {
                let sides = vec![None; driver.fleet.len()];
                let log = &driver.traffic.access_log;
                Reader::Log(LogReader::begin(driver.fleet, log, sides).await)
            }
            GateSource::Prometheus { url, queries } => Reader::Prometheus(
                prometheus::Reader::begin(url, queries, &driver.fleet.stage.app, gate),
            ),
        };
        LogGate {
            gate,
            started: Instant::now(),
            reader,
            hosts: None,
            series: Series::new(gate.window),
        }
    }

    /// A host canary's gate (no `[traffic]`): every host's own access log (`log`), the
    /// hosts in `new` (on the new release) against the others; the window starts now.
    pub async fn begin_hosts(
        fleet: &'a Fleet,
        gate: &'a Gate,
        log: &str,
        new: &[usize],
    ) -> LogGate<'a> {
        let sides = (0..fleet.len())
            .map(|i| Some(if new.contains(&i) { Slot::B } else { Slot::A }))
            .collect();
        let names = |new_side: bool| -> Vec<String> {
            (0..fleet.len())
                .filter(|i| new.contains(i) == new_side)
                .map(|i| fleet.name(i).to_string())
                .collect()
        };
        let hosts = Some((names(true), names(false)));
        LogGate {
            gate,
            started: Instant::now(),
            reader: Reader::Log(LogReader::begin(fleet, log, sides).await),
            hosts,
            series: Series::new(gate.window),
        }
    }

    /// Where the numbers come from, for the gate's progress line.
    pub fn describe(&self) -> String {
        match &self.reader {
            Reader::Log(r) if self.hosts.is_some() => {
                format!("each host's access log {} (new hosts against old)", r.log)
            }
            Reader::Log(_) => "the access log".into(),
            Reader::Prometheus(p) => p.describe(),
        }
    }

    /// One reading: the numbers of the window so far, judged.
    async fn reading(&mut self, canary: Slot, stable: Option<Slot>) -> Judged {
        match &mut self.reader {
            Reader::Log(r) => {
                r.turn().await;
                let mut reading = log_verdict::reading(&r.window, canary, stable);
                reading.hosts = self.hosts.clone();
                log_verdict::verdict(reading, self.gate)
            }
            Reader::Prometheus(p) => p.read(canary, stable, self.gate).await,
        }
    }

    /// Watches the window (less the time since [`LogGate::begin`]), reading every
    /// interval; fails early after `max_consecutive_failures` failing readings in a row.
    /// Returns the verdict and every reading, for [`report`]'s picture.
    pub async fn judge(mut self, canary: Slot, stable: Option<Slot>) -> (Judged, Series) {
        let gate = self.gate;
        let end = self.started + gate.window;
        let mut failing = 0;
        loop {
            let tick = Instant::now() + gate.interval;
            let mut j = self.reading(canary, stable).await;
            let last = Instant::now() >= end;
            self.series.record(self.started.elapsed(), &j);
            if matches!(j.verdict, Verdict::Fail { .. }) {
                failing += 1;
                if failing >= gate.max_consecutive_failures {
                    return (j, self.series);
                }
            } else {
                failing = 0;
            }
            if last {
                let problems = match &self.reader {
                    Reader::Log(r) => r.problems(),
                    // Its reading says what it could not ask.
                    Reader::Prometheus(_) => Vec::new(),
                };
                if !problems.is_empty() && matches!(j.verdict, Verdict::Pass { .. }) {
                    j.verdict = Verdict::Inconclusive {
                        reason: format!(
                            "{} (the numbers read: {})",
                            problems.join("; "),
                            log_verdict::numbers_text(&j)
                        ),
                    };
                }
                return (j, self.series);
            }
            let wake = tick.min(end);
            let now = Instant::now();
            if wake > now {
                tokio::time::sleep(wake - now).await;
            } else {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

impl<'a> LogReader<'a> {
    async fn begin(fleet: &'a Fleet, log: &str, sides: Vec<Option<Slot>>) -> LogReader<'a> {
        let n = fleet.len();
        let mut g = LogReader {
            fleet,
            log: log.to_string(),
            sides,
            offsets: vec![None; n],
            unreadable: vec![None; n],
            behind: vec![0; n],
            window: Window::new(),
        };
        for i in 0..n {
            match g.read(i, 0, 0).await {
                Ok((_, size)) => g.offsets[i] = Some(size),
                Err(e) => g.unreadable[i] = Some(e),
            }
        }
        g
    }

    /// Hosts whose log could not be read, or was written faster than it was read.
    fn problems(&self) -> Vec<String> {
        let fleet = self.fleet;
        (0..self.offsets.len())
            .filter_map(|i| {
                let name = fleet.name(i);
                match (&self.unreadable[i], self.behind[i]) {
                    (Some(e), _) => Some(format!("{name}: cannot read the access log: {e}")),
                    (None, b) if b > 0 => Some(format!(
                        "{name}: {b} bytes of the window were written faster than they could be read"
                    )),
                    _ => None,
                }
            })
            .collect()
    }

    /// One read of host i's log from `offset`, at most `max` bytes: complete lines go
    /// into the window. Returns (the next offset, the file's size).
    async fn read(&mut self, i: usize, offset: u64, max: u64) -> Result<(u64, u64), String> {
        let fleet = self.fleet;
        let text = script::read_access_log(&self.log, offset, max);
        let out = fleet.hosts[i]
            .run(&text, None, fleet.stage.timeouts.command)
            .await
            .map_err(|e| e.to_string())?;
        if !out.success() {
            return Err(out.message());
        }
        let chunk = access_log::parse_chunk(&out.stdout, offset, max)?;
        if chunk.restarted && max > 0 {
            fleet.reporter.warning(
                Some(fleet.name(i)),
                &format!(
                    "the access log {} is smaller than when last read (rotated or truncated): reading it from the start",
                    self.log
                ),
            );
        }
        if chunk.skipped_long_line {
            // Read, not counted as lines: its bytes still count as read.
            self.window.malformed += 1;
            let from = if chunk.restarted { 0 } else { offset };
            self.window.bytes += chunk.next - from;
        }
        self.window.add_lines_as(chunk.lines, self.sides[i]);
        Ok((chunk.next, chunk.size))
    }

    /// Reads what every host's log gained since the last turn.
    async fn turn(&mut self) {
        for i in 0..self.offsets.len() {
            let mut reads = 0;
            let result = loop {
                let offset = match self.offsets[i] {
                    Some(o) => o,
                    // The start was not known: the window starts now on this host.
                    None => match self.read(i, 0, 0).await {
                        Ok((_, size)) => {
                            self.offsets[i] = Some(size);
                            size
                        }
                        Err(e) => break Err(e),
                    },
                };
                match self.read(i, offset, READ_MAX).await {
                    Ok((next, size)) => {
                        self.offsets[i] = Some(next);
                        reads += 1;
                        self.behind[i] = size.saturating_sub(next);
                        if next >= size || reads >= READS_PER_TURN || next == offset {
                            break Ok(());
                        }
                    }
                    Err(e) => break Err(e),
                }
            };
            self.unreadable[i] = result.err();
        }
    }
}

impl LogGate<'_> {
    /// Reads every interval until `duration` after [`LogGate::begin`] (or until `stop`
    /// says so of the window so far), judging nothing: the window's requests, what kept
    /// them from being whole (a host's log that could not be read, or was written
    /// faster than read), and how long it watched. The A/B test's watch
    /// (`traffic::ab`), which decides once, at the end.
    pub async fn collect(
        mut self,
        duration: Duration,
        mut stop: impl FnMut(&Window) -> bool,
    ) -> (Window, Vec<String>, Duration) {
        let Reader::Log(r) = &mut self.reader else {
            // Refused by the config's validation; said again rather than assumed.
            return (
                Window::new(),
                vec!["an A/B test reads the access log: [gate] source = \"prometheus\" cannot run one".into()],
                self.started.elapsed(),
            );
        };
        let end = self.started + duration;
        loop {
            let tick = Instant::now() + self.gate.interval;
            r.turn().await;
            let now = Instant::now();
            if now >= end || stop(&r.window) {
                break;
            }
            tokio::time::sleep(tick.min(end).saturating_duration_since(now)).await;
        }
        let problems = r.problems();
        let window = std::mem::replace(&mut r.window, Window::new());
        (window, problems, self.started.elapsed())
    }
}

/// Reports a verdict: the step's picture on the deployer ([`chart`]), a line (with
/// `--json`, its numbers under `data.gate`; the picture's path ends the line and is
/// `data.gate.chart`) and an audit record (`action = "gate"`). Returns the picture's
/// path, when it was written.
pub async fn report(
    driver: &Driver<'_>,
    step: usize,
    release: &str,
    j: &Judged,
    series: Series,
) -> Option<std::path::PathBuf> {
    report_as(
        driver.fleet,
        &driver.actor,
        &driver.command,
        step,
        release,
        j,
        series,
    )
    .await
}

/// [`report`] for a host canary's gate (no traffic driver): the actor and the command
/// line as `main` records them.
pub async fn report_hosts(
    fleet: &Fleet,
    step: usize,
    release: &str,
    j: &Judged,
    series: Series,
) -> Option<std::path::PathBuf> {
    let command = std::env::args()
        .map(|a| a.escape_debug().to_string())
        .collect::<Vec<_>>()
        .join(" ");
    report_as(fleet, &Actor::current(), &command, step, release, j, series).await
}

/// [`report`] with its actor and command line given.
#[allow(clippy::too_many_arguments)]
pub async fn report_as(
    fleet: &Fleet,
    actor: &Actor,
    command: &str,
    step: usize,
    release: &str,
    j: &Judged,
    series: Series,
) -> Option<std::path::PathBuf> {
    let (word, result) = match &j.verdict {
        Verdict::Pass { .. } => ("passed", "ok"),
        Verdict::Fail { .. } => ("failed", "failed"),
        Verdict::Inconclusive { .. } => ("inconclusive", "inconclusive"),
    };
    let read = match j.source {
        Source::AccessLog => format!("{} KiB of access log read", j.bytes_read.div_ceil(1024)),
        Source::Prometheus => format!("{} Prometheus queries answered", j.queries),
    };
    let chart = picture(fleet, step, release, j, series);
    let text = format!(
        "traffic gate {word} at step {step}: {} ({read})",
        j.verdict.text()
    );
    // The chart is on this machine: its path is for the person running slipway, not
    // for the hosts' audit log.
    let line = match &chart {
        Some(p) => format!("{text}; chart: {}", p.display()),
        None => text.clone(),
    };
    let mut data = serde_json::to_value(j).unwrap_or_default();
    if let Some(o) = data.as_object_mut() {
        o.insert("step".into(), step.into());
        if let Some(p) = &chart {
            o.insert("chart".into(), p.display().to_string().into());
        }
    }
    fleet
        .reporter
        .info_data(&line, serde_json::json!({ "gate": data }));
    let record = Record {
        time: Utc::now(),
        action: "gate".into(),
        stage: fleet.stage.name.clone(),
        actor: actor.clone(),
        command: command.to_string(),
        from: None,
        to: Some(release.to_string()),
        reason: Some(format!("traffic gate, step {step}")),
        result: result.into(),
        message: Some(text),
        duration_ms: 0,
        run: None,
        took_over: None,
    };
    audit::append(fleet, &record).await;
    chart
}

/// Writes the step's picture; a picture that cannot be written is a warning, never a
/// change of the verdict.
fn picture(
    fleet: &Fleet,
    step: usize,
    release: &str,
    j: &Judged,
    mut series: Series,
) -> Option<std::path::PathBuf> {
    let gate = fleet.stage.gate.as_ref()?;
    let Some(dir) = chart::dir(&fleet.stage.app, &fleet.stage.name) else {
        fleet.reporter.warning(
            None,
            "no chart of the traffic gate written: neither SLIPWAY_STATE_DIR, XDG_STATE_HOME nor HOME is set",
        );
        return None;
    };
    series.release = release.to_string();
    series.step = step;
    series.verdict = Some(
        match &j.verdict {
            Verdict::Pass { .. } => "pass",
            Verdict::Fail { .. } => "fail",
            Verdict::Inconclusive { .. } => "inconclusive",
        }
        .into(),
    );
    match chart::write(&dir, &series, &chart::Thresholds::from(gate)) {
        Ok(p) => Some(p),
        Err(e) => {
            fleet
                .reporter
                .warning(None, &format!("no chart of the traffic gate written: {e}"));
            None
        }
    }
}
