//! The access-log gate of a `[traffic]` step (`[gate]`): from the moment the step's split
//! is in force, every host's access log is read incrementally over the existing
//! connections (only the bytes written since the last read, in bounded chunks, see
//! `script::read_access_log`), the requests are counted per slot over all hosts, and
//! [`log_verdict::judge`] decides. However large a log is, only the step's window is
//! read, and memory holds one chunk of text plus the window's latencies (bounded by
//! [`access_log::MAX_LATENCIES`]).
//!
//! Each verdict is reported with both slots' numbers (`--json`: an `info` event whose
//! `data.gate` holds them) and appended to the audit log.

use std::time::{Duration, Instant};

use chrono::Utc;

use super::access_log::{self, Window};
use super::chart::{self, Series};
use super::driver::Driver;
use super::log_verdict::{self, Judged};
use super::split::Slot;
use crate::audit::{self, Record};
use crate::config::Gate;
use crate::rollout::health::Verdict;
use crate::script;

/// Bytes asked for in one read (the transport caps a command's output at 32 MiB).
pub const READ_MAX: u64 = 8 * 1024 * 1024;
/// Reads per host per turn: a log written faster than 128 MiB per interval is read
/// behind, and caught up at the next turns (or reported when the window ends).
const READS_PER_TURN: usize = 16;

/// One step's watch of the access logs: started when the split is in force.
pub struct LogGate<'a> {
    driver: &'a Driver<'a>,
    gate: &'a Gate,
    started: Instant,
    /// Per host: where the next read starts (None: not known yet).
    offsets: Vec<Option<u64>>,
    /// Per host: why its last read failed.
    unreadable: Vec<Option<String>>,
    /// Per host: bytes still unread after the last turn.
    behind: Vec<u64>,
    window: Window,
    /// Every reading's numbers, for the step's picture ([`chart`]).
    series: Series,
}

impl<'a> LogGate<'a> {
    /// Notes where every host's log ends now: the window's requests are what comes after.
    pub async fn begin(driver: &'a Driver<'a>, gate: &'a Gate) -> LogGate<'a> {
        let n = driver.fleet.len();
        let mut g = LogGate {
            driver,
            gate,
            started: Instant::now(),
            offsets: vec![None; n],
            unreadable: vec![None; n],
            behind: vec![0; n],
            window: Window::new(),
            series: Series::new(gate.window),
        };
        for i in 0..n {
            match g.read(i, 0, 0).await {
                Ok((_, size)) => g.offsets[i] = Some(size),
                Err(e) => g.unreadable[i] = Some(e),
            }
        }
        g
    }

    /// One read of host i's log from `offset`, at most `max` bytes: complete lines go
    /// into the window. Returns (the next offset, the file's size).
    async fn read(&mut self, i: usize, offset: u64, max: u64) -> Result<(u64, u64), String> {
        let fleet = self.driver.fleet;
        let text = script::read_access_log(&self.driver.traffic.access_log, offset, max);
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
                    self.driver.traffic.access_log
                ),
            );
        }
        if chunk.skipped_long_line {
            // Read, not counted as lines: its bytes still count as read.
            self.window.malformed += 1;
            let from = if chunk.restarted { 0 } else { offset };
            self.window.bytes += chunk.next - from;
        }
        self.window.add_lines(chunk.lines);
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

    /// Watches the window (less the time since [`LogGate::begin`]), reading every
    /// interval; fails early after `max_consecutive_failures` failing readings in a row.
    /// Returns the verdict and every reading, for [`report`]'s picture.
    pub async fn judge(mut self, canary: Slot, stable: Option<Slot>) -> (Judged, Series) {
        let gate = self.gate;
        let end = self.started + gate.window;
        let mut failing = 0;
        loop {
            let tick = Instant::now() + gate.interval;
            self.turn().await;
            let last = Instant::now() >= end;
            let mut j = log_verdict::judge(&self.window, canary, stable, gate);
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
                let fleet = self.driver.fleet;
                let problems: Vec<String> = (0..self.offsets.len())
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
                    .collect();
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
    let fleet = driver.fleet;
    let (word, result) = match &j.verdict {
        Verdict::Pass { .. } => ("passed", "ok"),
        Verdict::Fail { .. } => ("failed", "failed"),
        Verdict::Inconclusive { .. } => ("inconclusive", "inconclusive"),
    };
    let chart = picture(driver, step, release, j, series);
    let text = format!(
        "traffic gate {word} at step {step}: {} ({} KiB of access log read)",
        j.verdict.text(),
        j.bytes_read.div_ceil(1024)
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
        actor: driver.actor.clone(),
        command: driver.command.clone(),
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
    driver: &Driver<'_>,
    step: usize,
    release: &str,
    j: &Judged,
    mut series: Series,
) -> Option<std::path::PathBuf> {
    let fleet = driver.fleet;
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
