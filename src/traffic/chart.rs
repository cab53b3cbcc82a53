//! Pictures of an access-log gate: the readings the gate made over a step's window,
//! the new slot against the stable one, drawn as an SVG the deployer keeps beside the
//! verdict (`gates/<app>/<stage>/<release>-step<N>.svg` under its state directory, see
//! [`dir`]).
//!
//! [`Series`] is plain data, filled by [`Series::record`] from each reading's
//! [`Judged`] numbers; [`render`] is a pure function from it and the [`Thresholds`] to
//! SVG text. Three panels share the time axis (seconds since the window began):
//! requests per interval, the 5xx rate and the p95 latency of the window so far (the
//! numbers the gate judged at that reading), with each threshold drawn where there is
//! one: a fixed line for the absolute ones, a line following the stable slot for the
//! relative ones. A reading whose numbers failed a threshold is a pale red band.
//!
//! Drawn with plotters' SVG backend alone (no font files: text is `<text>` elements
//! that the viewer lays out, so label sizes are estimated, not measured).

use std::path::{Path, PathBuf};
use std::time::Duration;

use plotters::prelude::*;
use serde::Serialize;

use super::log_verdict::Judged;
use crate::config::Gate;
use crate::rollout::health::Verdict;

/// The size of the picture, in pixels.
pub const SIZE: (u32, u32) = (1000, 700);

/// One slot at one reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SlotReading {
    /// Requests logged since the previous reading.
    pub requests: u64,
    /// The 5xx share of the window so far.
    pub rate_5xx: f64,
    /// The p95 latency of the window so far, in ms (None: no request yet).
    pub p95_ms: Option<u32>,
}

/// One reading of the gate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Reading {
    /// Seconds since the window began.
    pub at_secs: f64,
    pub canary: SlotReading,
    pub stable: Option<SlotReading>,
    /// The numbers so far failed a threshold at this reading.
    pub failing: bool,
}

/// A step's readings, both slots.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Series {
    pub release: String,
    pub step: usize,
    pub canary_slot: String,
    pub stable_slot: Option<String>,
    /// The step's window: the time axis spans it even when the gate stopped early.
    pub window_secs: f64,
    pub readings: Vec<Reading>,
    /// The verdict's word (`pass`, `fail`, `inconclusive`), once there is one.
    pub verdict: Option<String>,
    /// Requests counted so far (new, stable): each reading shows what it added.
    #[serde(skip)]
    seen: (u64, u64),
}

impl Series {
    pub fn new(window: Duration) -> Series {
        Series {
            window_secs: window.as_secs_f64(),
            ..Series::default()
        }
    }

    /// Adds the reading `j`, made `at` after the window began.
    pub fn record(&mut self, at: Duration, j: &Judged) {
        self.canary_slot = j.canary_slot.clone();
        self.stable_slot = j.stable_slot.clone();
        let canary = SlotReading {
            requests: j.canary.requests.saturating_sub(self.seen.0),
            rate_5xx: j.canary.rate_5xx,
            p95_ms: j.canary.p95_ms,
        };
        let stable = j.stable.map(|s| SlotReading {
            requests: s.requests.saturating_sub(self.seen.1),
            rate_5xx: s.rate_5xx,
            p95_ms: s.p95_ms,
        });
        self.seen = (
            j.canary.requests,
            j.stable.map_or(self.seen.1, |s| s.requests),
        );
        self.readings.push(Reading {
            at_secs: at.as_secs_f64(),
            canary,
            stable,
            failing: matches!(j.verdict, Verdict::Fail { .. }),
        });
    }
}

/// The `[gate]` thresholds a picture draws.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub max_error_rate: f64,
    pub max_error_rate_increase: Option<f64>,
    pub max_p95_ms: Option<f64>,
    pub max_p95_increase: Option<f64>,
    pub min_p95_difference_ms: f64,
}

impl From<&Gate> for Thresholds {
    fn from(g: &Gate) -> Thresholds {
        Thresholds {
            max_error_rate: g.max_error_rate,
            max_error_rate_increase: g.max_error_rate_increase,
            max_p95_ms: g.max_p95.map(|d| d.as_secs_f64() * 1000.0),
            max_p95_increase: g.max_p95_increase,
            min_p95_difference_ms: g.min_p95_difference.as_secs_f64() * 1000.0,
        }
    }
}

impl Thresholds {
    /// The new slot's p95 above which the relative latency threshold is crossed, given
    /// the stable slot's (as `log_verdict` decides it: the share of a stable p95 of at
    /// least 1 ms, and never within `min_p95_difference`).
    fn p95_limit(&self, stable_ms: f64) -> Option<f64> {
        self.max_p95_increase
            .map(|inc| stable_ms + (inc * stable_ms.max(1.0)).max(self.min_p95_difference_ms))
    }
}

/// The picture's file name for a step of a release.
pub fn file_name(release: &str, step: usize) -> String {
    format!("{release}-step{step}.svg")
}

/// Where the pictures of a stage are kept on the deployer: `gates/<app>/<stage>` under
/// `$SLIPWAY_STATE_DIR`, else `$XDG_STATE_HOME/slipway`, else `~/.local/state/slipway`
/// (None: none of them is set). Not in the project directory: a source shipped from the
/// directory of deploy.toml (`path = "."`, what `slipway init` writes) may not hold
/// `.slipway/`, and pictures of past gates do not belong in the next release.
pub fn dir(app: &str, stage: &str) -> Option<PathBuf> {
    dir_from(|k| std::env::var_os(k), app, stage)
}

/// The pictures of `release`'s steps 1 to `steps` that are on this machine, as
/// `rollout status` lists them.
pub fn written(app: &str, stage: &str, release: &str, steps: usize) -> Vec<(usize, PathBuf)> {
    // The release comes from the hosts' rollout record: only a release id names a file.
    if crate::layout::ReleaseId::parse(release).is_err() {
        return vec![];
    }
    let Some(dir) = dir(app, stage) else {
        return vec![];
    };
    (1..=steps)
        .map(|n| (n, dir.join(file_name(release, n))))
        .filter(|(_, p)| p.is_file())
        .collect()
}

fn dir_from(
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
    app: &str,
    stage: &str,
) -> Option<PathBuf> {
    let set = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let root = set("SLIPWAY_STATE_DIR")
        // The XDG spec: a relative XDG_STATE_HOME is invalid, ignore it.
        .or_else(|| {
            set("XDG_STATE_HOME")
                .filter(|p| p.is_absolute())
                .map(|p| p.join("slipway"))
        })
        .or_else(|| set("HOME").map(|h| h.join(".local/state/slipway")))?;
    let root = std::path::absolute(&root).unwrap_or(root);
    Some(root.join("gates").join(app).join(stage))
}

/// Writes the picture into `dir` (made if missing) by a rename, so a reader never sees
/// half a file. Returns its path.
pub fn write(dir: &Path, series: &Series, thresholds: &Thresholds) -> Result<PathBuf, String> {
    let svg = render(series, thresholds)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join(file_name(&series.release, series.step));
    let tmp = dir.join(format!(".{}.tmp", file_name(&series.release, series.step)));
    std::fs::write(&tmp, svg).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot rename {} to {}: {e}", tmp.display(), path.display())
    })?;
    prune(dir);
    Ok(path)
}

/// How many releases' pictures a stage keeps on the deployer.
pub const KEPT_RELEASES: usize = 20;

/// Removes the pictures of all but the [`KEPT_RELEASES`] newest releases in `dir`.
/// Housekeeping: a picture that cannot be removed stays, and the next write tries again.
fn prune(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    for name in stale(&names, KEPT_RELEASES) {
        let _ = std::fs::remove_file(dir.join(name));
    }
}

/// Of the file names in a stage's picture directory, those of pictures (`<release>-step<N>.svg`)
/// of releases older than the `keep` newest. Release ids sort by time; other files are
/// never named.
fn stale(names: &[String], keep: usize) -> Vec<&String> {
    let release = |name: &str| -> Option<String> {
        let (release, step) = name.strip_suffix(".svg")?.rsplit_once("-step")?;
        step.parse::<usize>().ok()?;
        crate::layout::ReleaseId::parse(release).ok()?;
        Some(release.to_string())
    };
    let mut releases: Vec<String> = names.iter().filter_map(|n| release(n)).collect();
    releases.sort_unstable();
    releases.dedup();
    let cut = releases.len().saturating_sub(keep);
    let old = &releases[..cut];
    names
        .iter()
        .filter(|n| release(n).is_some_and(|r| old.binary_search(&r).is_ok()))
        .collect()
}

const NEW: RGBColor = RGBColor(214, 39, 40);
const STABLE: RGBColor = RGBColor(31, 119, 180);
const LIMIT: RGBColor = RGBColor(110, 110, 110);
const FAILING: RGBColor = RGBColor(250, 200, 200);
const FONT: &str = "sans-serif";

/// A line to draw in a panel.
struct Line {
    label: String,
    color: RGBColor,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

/// One panel: its title, the unit of its y axis, its lines.
struct Panel {
    title: String,
    unit: &'static str,
    lines: Vec<Line>,
}

/// The SVG of `series` with `thresholds` drawn.
pub fn render(series: &Series, thresholds: &Thresholds) -> Result<String, String> {
    let mut svg = String::new();
    draw(&mut svg, series, thresholds).map_err(|e| format!("cannot draw the gate's chart: {e}"))?;
    Ok(svg)
}

fn slot_lines(
    series: &Series,
    value: impl Fn(&SlotReading) -> Option<f64>,
) -> (Line, Option<Line>) {
    let new = Line {
        label: format!("slot {} (new)", series.canary_slot),
        color: NEW,
        dashed: false,
        points: series
            .readings
            .iter()
            .filter_map(|r| value(&r.canary).map(|v| (r.at_secs, v)))
            .collect(),
    };
    let stable = series.stable_slot.as_ref().map(|slot| Line {
        label: format!("slot {slot} (stable)"),
        color: STABLE,
        dashed: false,
        points: series
            .readings
            .iter()
            .filter_map(|r| r.stable.as_ref().and_then(&value).map(|v| (r.at_secs, v)))
            .collect(),
    });
    (new, stable)
}

fn panels(series: &Series, t: &Thresholds) -> [Panel; 3] {
    let x_end = x_end(series);
    let flat = |label: String, y: f64| Line {
        label,
        color: LIMIT,
        dashed: true,
        points: vec![(0.0, y), (x_end, y)],
    };
    // Requests per interval.
    let (new, stable) = slot_lines(series, |s| Some(s.requests as f64));
    let requests = Panel {
        title: "requests per reading interval".into(),
        unit: "requests",
        lines: [Some(new), stable].into_iter().flatten().collect(),
    };
    // 5xx rate of the window so far, in percent.
    let (new, stable) = slot_lines(series, |s| Some(s.rate_5xx * 100.0));
    let mut lines = vec![flat(
        format!("max_error_rate {}%", pct(t.max_error_rate)),
        t.max_error_rate * 100.0,
    )];
    if let (Some(inc), Some(s)) = (t.max_error_rate_increase, &stable) {
        lines.push(Line {
            label: format!("stable + max_error_rate_increase {}%", pct(inc)),
            color: LIMIT,
            dashed: true,
            points: s
                .points
                .iter()
                .map(|&(x, y)| (x, y + inc * 100.0))
                .collect(),
        });
    }
    lines.extend([Some(new), stable].into_iter().flatten());
    let errors = Panel {
        title: "5xx rate of the window so far (what the gate judges)".into(),
        unit: "5xx %",
        lines,
    };
    // p95 of the window so far, in ms.
    let (new, stable) = slot_lines(series, |s| s.p95_ms.map(f64::from));
    let mut lines = Vec::new();
    if let Some(max) = t.max_p95_ms {
        lines.push(flat(format!("max_p95 {max}ms"), max));
    }
    if let (Some(inc), Some(s)) = (t.max_p95_increase, &stable) {
        lines.push(Line {
            label: format!(
                "stable + max_p95_increase {:.0}% (fails only if Mann-Whitney p < alpha)",
                inc * 100.0
            ),
            color: LIMIT,
            dashed: true,
            points: s
                .points
                .iter()
                .filter_map(|&(x, y)| t.p95_limit(y).map(|l| (x, l)))
                .collect(),
        });
    }
    lines.extend([Some(new), stable].into_iter().flatten());
    let latency = Panel {
        title: "p95 latency of the window so far".into(),
        unit: "p95 ms",
        lines,
    };
    [requests, errors, latency]
}

fn pct(rate: f64) -> String {
    let p = rate * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{p:.0}")
    } else {
        format!("{p:.1}")
    }
}

fn x_end(series: &Series) -> f64 {
    series
        .readings
        .iter()
        .map(|r| r.at_secs)
        .fold(series.window_secs, f64::max)
        .max(1.0)
}

fn draw(
    svg: &mut String,
    series: &Series,
    t: &Thresholds,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(svg, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let verdict = series.verdict.as_deref().unwrap_or("no verdict");
    let title = format!(
        "traffic gate, release {} step {}: {verdict} — slot {} (new) against {}",
        series.release,
        series.step,
        series.canary_slot,
        series
            .stable_slot
            .as_ref()
            .map(|s| format!("slot {s} (stable)"))
            .unwrap_or_else(|| "no stable slot".into())
    );
    let root = root.titled(&title, (FONT, 20))?;
    let x_end = x_end(series);
    let areas = root.split_evenly((3, 1));
    for (area, panel) in areas.iter().zip(panels(series, t)) {
        let top = panel
            .lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.1))
            .filter(|y| y.is_finite())
            .fold(0.0f64, f64::max);
        let y_end = if top > 0.0 { top * 1.15 } else { 1.0 };
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, (FONT, 16))
            .margin_left(10)
            .margin_right(20)
            .x_label_area_size(32)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..x_end, 0.0..y_end)?;
        chart
            .configure_mesh()
            .x_desc("seconds since the step's window began")
            .y_desc(panel.unit)
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 13))
            .light_line_style(RGBColor(235, 235, 235))
            .y_label_formatter(&|v| {
                if y_end >= 10.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.1}")
                }
            })
            .draw()?;
        // Behind the lines: the readings whose numbers failed.
        let failing: Vec<f64> = series
            .readings
            .iter()
            .filter(|r| r.failing)
            .map(|r| r.at_secs)
            .collect();
        if !failing.is_empty() {
            chart
                .draw_series(failing.iter().map(|&x| {
                    PathElement::new(vec![(x, 0.0), (x, y_end)], FAILING.stroke_width(8))
                }))?
                .label("a reading failing a threshold")
                .legend(|(x, y)| Rectangle::new([(x, y - 4), (x + 20, y + 4)], FAILING.filled()));
        }
        for line in panel.lines {
            let color = line.color;
            if line.dashed {
                let style = color.stroke_width(2);
                chart
                    .draw_series(DashedLineSeries::new(line.points, 8, 5, style))?
                    .label(line.label)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 8, y)], color.stroke_width(2))
                    });
            } else {
                chart
                    .draw_series(LineSeries::new(line.points.clone(), color.stroke_width(2)))?
                    .label(line.label)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                // A dot on each reading: a single reading has no line to show it.
                chart.draw_series(
                    line.points
                        .iter()
                        .map(|&p| Circle::new(p, 3, color.filled())),
                )?;
            }
        }
        chart
            .configure_series_labels()
            // Upper right: a gate that fails early has its readings on the left.
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, 12))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::access_log::SlotNumbers;

    fn judged(at_requests: (u64, u64), rates: (f64, f64), p95: (u32, u32), fail: bool) -> Judged {
        let n = |requests, rate_5xx, p95| SlotNumbers {
            requests,
            rate_5xx,
            rate_4xx: 0.0,
            p50_ms: Some(p95 / 2),
            p95_ms: Some(p95),
            p99_ms: Some(p95 * 2),
        };
        Judged {
            verdict: if fail {
                Verdict::Fail { reason: "x".into() }
            } else {
                Verdict::Pass {
                    summary: "x".into(),
                }
            },
            canary_slot: "b".into(),
            canary: n(at_requests.0, rates.0, p95.0),
            stable_slot: Some("a".into()),
            stable: Some(n(at_requests.1, rates.1, p95.1)),
            p_slower: Some(0.5),
            alpha: 0.05,
            malformed_lines: 0,
            bytes_read: 0,
            source: crate::traffic::log_verdict::Source::AccessLog,
            queries: 0,
            notes: Vec::new(),
            new_hosts: None,
            old_hosts: None,
        }
    }

    fn thresholds() -> Thresholds {
        Thresholds {
            max_error_rate: 0.05,
            max_error_rate_increase: Some(0.02),
            max_p95_ms: Some(250.0),
            max_p95_increase: Some(0.3),
            min_p95_difference_ms: 5.0,
        }
    }

    fn series() -> Series {
        let mut s = Series::new(Duration::from_secs(3));
        s.release = "20261130T130000Z".into();
        s.step = 1;
        s.record(
            Duration::from_millis(500),
            &judged((40, 45), (0.2, 0.0), (30, 20), true),
        );
        s.record(
            Duration::from_millis(1000),
            &judged((90, 100), (0.22, 0.01), (31, 21), true),
        );
        s.verdict = Some("fail".into());
        s
    }

    /// The text of every `<text>` element, and whether the whole is well-formed: each
    /// tag closed in order, attribute values quoted, nothing but entities after `&`.
    fn parse_xml(svg: &str) -> Result<Vec<String>, String> {
        let mut open: Vec<String> = Vec::new();
        let mut texts = Vec::new();
        let mut rest = svg;
        let mut current_text: Option<String> = None;
        while let Some(lt) = rest.find('<') {
            let content = &rest[..lt];
            check_entities(content)?;
            if let Some(t) = current_text.as_mut() {
                t.push_str(content.trim());
            }
            let gt = rest[lt..].find('>').ok_or("a tag is not closed")? + lt;
            let tag = &rest[lt + 1..gt];
            rest = &rest[gt + 1..];
            if tag.starts_with('?') || tag.starts_with('!') {
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                let top = open.pop().ok_or(format!("</{name}> closes nothing"))?;
                if top != name.trim() {
                    return Err(format!("</{name}> closes <{top}>"));
                }
                if top == "text" {
                    let t = current_text.take().unwrap_or_default();
                    texts.push(
                        t.replace("&lt;", "<")
                            .replace("&gt;", ">")
                            .replace("&quot;", "\"")
                            .replace("&apos;", "'")
                            .replace("&amp;", "&"),
                    );
                }
                continue;
            }
            let name = tag
                .split(|c: char| c.is_whitespace() || c == '/')
                .next()
                .unwrap_or_default()
                .to_string();
            if name.is_empty() {
                return Err(format!("an empty tag: <{tag}>"));
            }
            if tag.matches('"').count() % 2 != 0 {
                return Err(format!("unbalanced quotes in <{tag}>"));
            }
            check_entities(tag)?;
            if !tag.ends_with('/') {
                if name == "text" {
                    current_text = Some(String::new());
                }
                open.push(name);
            }
        }
        check_entities(rest)?;
        if !open.is_empty() {
            return Err(format!("not closed: {open:?}"));
        }
        Ok(texts)
    }

    fn check_entities(text: &str) -> Result<(), String> {
        for (i, _) in text.match_indices('&') {
            let after = &text[i..];
            if !["&lt;", "&gt;", "&amp;", "&quot;", "&apos;", "&#"]
                .iter()
                .any(|e| after.starts_with(e))
            {
                return Err(format!("a bare & in {text:?}"));
            }
        }
        Ok(())
    }

    #[test]
    fn records_what_each_interval_added() {
        let s = series();
        let r: Vec<(u64, Option<u64>)> = s
            .readings
            .iter()
            .map(|r| (r.canary.requests, r.stable.map(|s| s.requests)))
            .collect();
        assert_eq!(r, vec![(40, Some(45)), (50, Some(55))]);
        assert_eq!(s.readings[1].canary.rate_5xx, 0.22);
        assert_eq!(s.readings[1].stable.unwrap().p95_ms, Some(21));
        assert!(s.readings.iter().all(|r| r.failing));
        assert_eq!(
            (s.canary_slot.as_str(), s.stable_slot.as_deref()),
            ("b", Some("a"))
        );
    }

    #[test]
    fn the_picture_is_well_formed_and_names_both_slots_and_the_thresholds() {
        let svg = render(&series(), &thresholds()).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
        let texts = parse_xml(&svg).unwrap_or_else(|e| panic!("{e}:\n{svg}"));
        let has = |needle: &str| texts.iter().any(|t| t.contains(needle));
        for needle in [
            "slot b (new)",
            "slot a (stable)",
            "release 20261130T130000Z step 1: fail",
            "max_error_rate 5%",
            "stable + max_error_rate_increase 2%",
            "max_p95 250ms",
            "stable + max_p95_increase 30%",
            "requests per reading interval",
            "5xx %",
            "p95 ms",
            "seconds since the step's window began",
        ] {
            assert!(has(needle), "no text {needle:?} in {texts:?}");
        }
        assert!(has("a reading failing a threshold"), "{texts:?}");
        // Each slot in each of the 3 panels' legends.
        assert_eq!(texts.iter().filter(|t| *t == "slot b (new)").count(), 3);
        assert_eq!(texts.iter().filter(|t| *t == "slot a (stable)").count(), 3);
        // The lines: the new slot's and the stable slot's in their colours, the
        // thresholds dashed in theirs.
        for colour in ["#D62728", "#1F77B4", "#6E6E6E"] {
            assert!(svg.contains(colour), "no {colour} in the picture");
        }
        // The max_error_rate line is horizontal at 5% across the whole window: drawn as
        // dashes, all at one y.
        let dashes: Vec<&str> = svg
            .lines()
            .filter(|l| l.contains("<polyline") && l.contains("#6E6E6E"))
            .collect();
        assert!(dashes.len() > 3, "no dashed threshold lines: {dashes:?}");
    }

    #[test]
    fn the_picture_without_a_stable_slot_or_readings_still_draws() {
        let mut s = Series::new(Duration::from_secs(10));
        s.release = "r".into();
        s.step = 2;
        s.canary_slot = "a".into();
        let t = Thresholds {
            max_error_rate: 0.01,
            max_error_rate_increase: None,
            max_p95_ms: None,
            max_p95_increase: Some(0.3),
            min_p95_difference_ms: 5.0,
        };
        let texts = parse_xml(&render(&s, &t).unwrap()).unwrap();
        assert!(
            texts.iter().any(|t| t.contains("no stable slot")),
            "{texts:?}"
        );
        assert!(texts.iter().any(|t| t.contains("no verdict")), "{texts:?}");
        assert!(!texts.iter().any(|t| t.contains("(stable)")), "{texts:?}");
        assert!(!texts.iter().any(|t| t.contains("failing")), "{texts:?}");
        // A hostile release name is escaped, never markup.
        s.release = "<x&y>".into();
        let svg = render(&s, &t).unwrap();
        assert!(parse_xml(&svg).is_ok());
        assert!(svg.contains("&lt;x&amp;y&gt;"));
    }

    #[test]
    fn the_relative_p95_limit_is_the_verdicts() {
        let t = thresholds();
        // 20ms stable: +30% is 6ms, beyond the 5ms floor.
        assert_eq!(t.p95_limit(20.0), Some(26.0));
        // 2ms stable: +30% is 0.6ms, within the floor: 5ms above.
        assert_eq!(t.p95_limit(2.0), Some(7.0));
    }

    #[test]
    fn the_directory_follows_the_environment() {
        fn env<'a>(
            pairs: &'a [(&'a str, &'a str)],
        ) -> impl Fn(&str) -> Option<std::ffi::OsString> + 'a {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        }
        let all = [
            ("SLIPWAY_STATE_DIR", "/s"),
            ("XDG_STATE_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(
            dir_from(env(&all), "shop", "prod"),
            Some(PathBuf::from("/s/gates/shop/prod"))
        );
        assert_eq!(
            dir_from(env(&all[1..]), "shop", "prod"),
            Some(PathBuf::from("/x/slipway/gates/shop/prod"))
        );
        assert_eq!(
            dir_from(env(&[("XDG_STATE_HOME", "rel"), ("HOME", "/h")]), "a", "b"),
            Some(PathBuf::from("/h/.local/state/slipway/gates/a/b"))
        );
        assert_eq!(dir_from(env(&[("SLIPWAY_STATE_DIR", "")]), "a", "b"), None);
    }

    #[test]
    fn only_the_newest_releases_pictures_are_kept() {
        let names: Vec<String> = [
            "20261101T000000Z-step1.svg",
            "20261101T000000Z-step2.svg",
            "20261102T000000Z-step1.svg",
            "20261103T000000Z-step1.svg",
            "20261103T000000Z-step3.svg",
            "notes.txt",
            "../x-step1.svg",
            "20261101T000000Z-stepX.svg",
            ".20261101T000000Z-step1.svg.tmp",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let gone: Vec<&str> = stale(&names, 2).into_iter().map(|s| s.as_str()).collect();
        assert_eq!(
            gone,
            ["20261101T000000Z-step1.svg", "20261101T000000Z-step2.svg"]
        );
        assert!(stale(&names, 3).is_empty());
        assert_eq!(stale(&names, 0).len(), 5);
    }

    #[test]
    fn writes_by_a_rename() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("gates");
        let p = write(&target, &series(), &thresholds()).unwrap();
        assert_eq!(p, target.join("20261130T130000Z-step1.svg"));
        let names: Vec<_> = std::fs::read_dir(&target)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(
            std::fs::read_to_string(&p)
                .unwrap()
                .contains("slot a (stable)")
        );
    }
}
