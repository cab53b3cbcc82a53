//! The access log slipway's include writes (`log_format slipway_<app>`, see [`super::nginx`]),
//! read back as numbers per slot: a pure parser of its lines, an aggregator over a
//! window, and the cursor that turns what `script::read_access_log` printed into the
//! next offset. A host's log is untrusted input: a line that is not slipway's format is
//! counted as malformed and otherwise ignored; nothing in it can panic or grow memory
//! beyond the bounds below.
//!
//! A line: `2026-11-30T13:00:00+00:00 slot=b status=503 request_time=0.021 upstream_time=0.020 method=GET uri=/x`.

use serde::Serialize;

use super::split::Slot;

/// Latencies kept per slot and window: beyond this, a uniform sample of this size
/// (reservoir sampling) stands for all of them, so memory stays bounded (4 bytes each)
/// however busy the window. Counts (requests, 5xx, 4xx) stay exact.
pub const MAX_LATENCIES: usize = 1_000_000;

/// One request, as the log says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Entry {
    pub slot: Slot,
    pub status: u16,
    /// `$request_time` in milliseconds (nginx logs it to the millisecond).
    pub latency_ms: u32,
}

/// One line of slipway's log format, or `None` when it is something else.
pub fn parse_line(line: &str) -> Option<Entry> {
    let slot = match line.split(' ').nth(1)?.strip_prefix("slot=")? {
        "a" => Slot::A,
        "b" => Slot::B,
        _ => return None,
    };
    parse_as(line, slot)
}

/// One line of slipway's log format whatever its `slot=` says (a host canary's log,
/// `slot=-`, where the host tells old from new), counted as `slot`.
pub fn parse_as(line: &str, slot: Slot) -> Option<Entry> {
    let mut fields = line.split(' ');
    let time = fields.next()?;
    // `$time_iso8601`: 2026-11-30T13:00:00+00:00 (25 characters, a `T` at 10).
    if time.len() != 25 || time.as_bytes().get(10) != Some(&b'T') {
        return None;
    }
    match fields.next()?.strip_prefix("slot=")? {
        "a" | "b" | "-" => {}
        _ => return None,
    }
    let status: u16 = fields.next()?.strip_prefix("status=")?.parse().ok()?;
    if !(100..=599).contains(&status) {
        return None;
    }
    let seconds: f64 = fields.next()?.strip_prefix("request_time=")?.parse().ok()?;
    // nginx writes `0.021`; anything else (negative, NaN, inf, days long) is not nginx.
    if !(0.0..1_000_000.0).contains(&seconds) {
        return None;
    }
    Some(Entry {
        slot,
        status,
        latency_ms: (seconds * 1000.0).round() as u32,
    })
}

/// One slot's requests in a window.
#[derive(Debug, Clone, Default)]
pub struct SlotSample {
    pub requests: u64,
    pub errors_5xx: u64,
    pub errors_4xx: u64,
    /// Latencies in ms: all of them, or a uniform sample of [`MAX_LATENCIES`].
    pub latencies: Vec<u32>,
    /// A small deterministic generator for the reservoir (no need for a good one).
    rng: u64,
}

impl SlotSample {
    fn add(&mut self, e: &Entry) {
        self.requests += 1;
        match e.status {
            500..=599 => self.errors_5xx += 1,
            400..=499 => self.errors_4xx += 1,
            _ => {}
        }
        if self.latencies.len() < MAX_LATENCIES {
            self.latencies.push(e.latency_ms);
        } else {
            // Reservoir sampling (Algorithm R): keep each of `requests` with equal chance.
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let j = (self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15) % self.requests) as usize;
            if j < MAX_LATENCIES {
                self.latencies[j] = e.latency_ms;
            }
        }
    }

    /// The numbers a verdict shows.
    pub fn numbers(&self) -> SlotNumbers {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let rate = |n: u64| {
            if self.requests == 0 {
                0.0
            } else {
                n as f64 / self.requests as f64
            }
        };
        SlotNumbers {
            requests: self.requests,
            rate_5xx: rate(self.errors_5xx),
            rate_4xx: rate(self.errors_4xx),
            p50_ms: percentile(&sorted, 0.50),
            p95_ms: percentile(&sorted, 0.95),
            p99_ms: percentile(&sorted, 0.99),
        }
    }
}

/// Nearest rank over sorted values (as the health gate's p95).
pub fn percentile(sorted: &[u32], q: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// One slot's numbers in a window, as printed and recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct SlotNumbers {
    pub requests: u64,
    pub rate_5xx: f64,
    pub rate_4xx: f64,
    pub p50_ms: Option<u32>,
    pub p95_ms: Option<u32>,
    pub p99_ms: Option<u32>,
}

impl std::fmt::Display for SlotNumbers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |v: Option<u32>| v.map_or("-".to_string(), |v| format!("{v}ms"));
        write!(
            f,
            "{} requests, 5xx {:.1}%, 4xx {:.1}%, p50 {} p95 {} p99 {}",
            self.requests,
            self.rate_5xx * 100.0,
            self.rate_4xx * 100.0,
            ms(self.p50_ms),
            ms(self.p95_ms),
            ms(self.p99_ms)
        )
    }
}

/// Both slots' requests in a window (over every host), and what could not be read.
#[derive(Debug, Clone, Default)]
pub struct Window {
    pub a: SlotSample,
    pub b: SlotSample,
    pub malformed: u64,
    /// Bytes of log read for this window.
    pub bytes: u64,
}

impl Window {
    pub fn new() -> Window {
        let mut w = Window::default();
        w.a.rng = 0x2545_f491_4f6c_dd1d;
        w.b.rng = 0x9e37_79b9_7f4a_7c15;
        w
    }

    pub fn slot(&self, slot: Slot) -> &SlotSample {
        match slot {
            Slot::A => &self.a,
            Slot::B => &self.b,
        }
    }

    /// Adds complete lines (each ending in `\n`).
    pub fn add_lines(&mut self, text: &str) {
        self.add_lines_as(text, None);
    }

    /// Adds complete lines, each counted under `slot` when given (a host canary's log:
    /// the host says whether its requests are new or old), else under its own `slot=`.
    pub fn add_lines_as(&mut self, text: &str, slot: Option<Slot>) {
        self.bytes += text.len() as u64;
        for line in text.lines() {
            if line.is_empty() {
                continue;
            }
            let entry = match slot {
                Some(s) => parse_as(line, s),
                None => parse_line(line),
            };
            match entry {
                Some(e) => match e.slot {
                    Slot::A => self.a.add(&e),
                    Slot::B => self.b.add(&e),
                },
                None => self.malformed += 1,
            }
        }
    }
}

/// What one read of a host's log gave: the complete lines, and where the next read
/// starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk<'a> {
    /// Complete lines (up to the last newline read).
    pub lines: &'a str,
    /// The offset the next read starts at.
    pub next: u64,
    /// The file's size when read: more to read when `next < size`.
    pub size: u64,
    /// The read started over at 0 (the log was rotated or truncated).
    pub restarted: bool,
    /// A line longer than the whole read was skipped (counted as malformed).
    pub skipped_long_line: bool,
}

/// Parses what `script::read_access_log(log, offset, max)` printed. Only complete lines
/// count: a line being written (or cut by `max`) is read again next time. A single
/// line longer than `max` is skipped rather than read forever.
pub fn parse_chunk(out: &str, offset: u64, max: u64) -> Result<Chunk<'_>, String> {
    let (header, body) = out.split_once('\n').unwrap_or((out, ""));
    let nums: Vec<u64> = header
        .strip_prefix("slipway-log ")
        .map(|h| h.split(' ').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_default();
    let [from, end, size] = nums[..] else {
        return Err(format!(
            "the log reader printed `{}` (expected `slipway-log OFFSET END SIZE`)",
            header.chars().take(80).collect::<String>().escape_debug()
        ));
    };
    if end < from || end - from < body.len() as u64 {
        return Err(format!(
            "the log reader sent {} bytes for {from}..{end}",
            body.len()
        ));
    }
    let complete = body.rfind('\n').map_or(0, |i| i + 1);
    let skipped_long_line = complete == 0 && body.len() as u64 >= max && max > 0;
    let consumed = if skipped_long_line {
        body.len()
    } else {
        complete
    };
    Ok(Chunk {
        lines: &body[..complete],
        next: from + consumed as u64,
        size,
        restarted: from < offset,
        skipped_long_line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "2026-11-30T13:00:00+00:00 slot=b status=503 request_time=0.021 upstream_time=0.020 method=GET uri=/a b";

    #[test]
    fn lines_of_slipways_format_parse_and_others_do_not() {
        assert_eq!(
            parse_line(LINE),
            Some(Entry {
                slot: Slot::B,
                status: 503,
                latency_ms: 21
            })
        );
        for bad in [
            "",
            "garbage",
            "2026-11-30T13:00:00+00:00 slot=c status=200 request_time=0.001",
            "2026-11-30T13:00:00+00:00 slot=a status=999 request_time=0.001",
            "2026-11-30T13:00:00+00:00 slot=a status=200 request_time=-1",
            "2026-11-30T13:00:00+00:00 slot=a status=200 request_time=NaN",
            "2026-11-30T13:00:00+00:00 slot=a status=200 request_time=inf",
            "2026-11-30T13:00:00+00:00 slot=a status=200 request_time=1e300",
            "2026-11-30T13:00:00+00:00 slot=a status=200",
            "2026-11-30 slot=a status=200 request_time=0.001",
            "2026-11-30T13:00:00+00:00 status=200 slot=a request_time=0.001",
            "2026-11-30T13:00:00+00:00 slot=a status=-200 request_time=0.001",
            "2026-11-30T13:00:00+00:00  slot=a status=200 request_time=0.001",
            "ü026-11-30T13:00:00+00:0 slot=a status=200 request_time=0.001",
        ] {
            assert_eq!(parse_line(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_host_canarys_line_counts_as_the_hosts_side() {
        let line = "2026-11-30T13:00:00+00:00 slot=- status=500 request_time=0.004 upstream_time=0.004 method=GET uri=/";
        assert_eq!(parse_line(line), None);
        let mut w = Window::new();
        w.add_lines_as(&format!("{line}\n{LINE}\nnot a line\n"), Some(Slot::A));
        assert_eq!((w.a.requests, w.a.errors_5xx, w.b.requests), (2, 2, 0));
        assert_eq!(w.malformed, 1);
        assert_eq!(parse_as(&line.replace("slot=-", "slot=x"), Slot::A), None);
    }

    #[test]
    fn a_window_counts_each_slot_and_the_malformed_lines() {
        let mut w = Window::new();
        let mut text = String::new();
        for i in 0..100 {
            let status = if i < 20 {
                500
            } else if i < 25 {
                404
            } else {
                200
            };
            text.push_str(&format!(
                "2026-11-30T13:00:00+00:00 slot=b status={status} request_time=0.{:03} upstream_time=- method=GET uri=/\n",
                i + 1
            ));
        }
        text.push_str("2026-11-30T13:00:00+00:00 slot=a status=200 request_time=0.005 upstream_time=0.005 method=GET uri=/\n");
        text.push_str("not a line\n\n\u{0}\u{1}?? slot=a\n");
        w.add_lines(&text);
        let b = w.b.numbers();
        assert_eq!(b.requests, 100);
        assert!((b.rate_5xx - 0.20).abs() < 1e-9);
        assert!((b.rate_4xx - 0.05).abs() < 1e-9);
        assert_eq!(
            (b.p50_ms, b.p95_ms, b.p99_ms),
            (Some(50), Some(95), Some(99))
        );
        assert_eq!(w.a.numbers().requests, 1);
        assert_eq!(w.malformed, 2);
        assert_eq!(
            b.to_string(),
            "100 requests, 5xx 20.0%, 4xx 5.0%, p50 50ms p95 95ms p99 99ms"
        );
        let none = Window::new().a.numbers();
        assert_eq!(
            none.to_string(),
            "0 requests, 5xx 0.0%, 4xx 0.0%, p50 - p95 - p99 -"
        );
    }

    #[test]
    fn latencies_beyond_the_cap_are_sampled_not_stored() {
        let mut s = SlotSample {
            rng: 1,
            ..Default::default()
        };
        for i in 0..(MAX_LATENCIES as u64 + 500_000) {
            s.add(&Entry {
                slot: Slot::A,
                status: 200,
                latency_ms: if i % 4 == 0 { 30 } else { 10 },
            });
        }
        assert_eq!(s.requests, MAX_LATENCIES as u64 + 500_000);
        assert_eq!(s.latencies.len(), MAX_LATENCIES);
        let n = s.numbers();
        assert_eq!((n.p50_ms, n.p95_ms), (Some(10), Some(30)));
        // The sample stays uniform: about a quarter of it is 30ms.
        let share = s.latencies.iter().filter(|&&v| v == 30).count() as f64 / MAX_LATENCIES as f64;
        assert!((share - 0.25).abs() < 0.01, "{share}");
    }

    #[test]
    fn a_chunk_gives_complete_lines_and_the_next_offset() {
        // Two complete lines and half of a third: the half is read again next time.
        let out = "slipway-log 100 130 500\nline one\nline two\nhalf a li";
        let c = parse_chunk(out, 100, 1000).unwrap();
        assert_eq!(c.lines, "line one\nline two\n");
        assert_eq!((c.next, c.size, c.restarted), (118, 500, false));
        // The file shrank below the offset: the reader started over at 0.
        let c = parse_chunk("slipway-log 0 4 4\nabc\n", 900, 1000).unwrap();
        assert_eq!((c.lines, c.next, c.restarted), ("abc\n", 4, true));
        // Nothing new.
        let c = parse_chunk("slipway-log 7 7 7\n", 7, 1000).unwrap();
        assert_eq!((c.lines, c.next), ("", 7));
        // One line longer than a whole read: skipped, not read forever.
        let c = parse_chunk("slipway-log 0 8 100\nxxxxxxxx", 0, 8).unwrap();
        assert_eq!((c.lines, c.next, c.skipped_long_line), ("", 8, true));
        // What a confused host might print.
        for bad in [
            "",
            "hello\n",
            "slipway-log 1 2\n",
            "slipway-log 5 1 9\n",
            "slipway-log 0 2 9\nabcdef\n",
        ] {
            assert!(parse_chunk(bad, 0, 8).is_err(), "{bad:?}");
        }
    }
}
