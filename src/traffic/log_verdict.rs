//! The `[gate]` verdict: a pure function from both slots' numbers in a window (the new
//! slot and the stable one, over every host) and the `[gate]` thresholds to pass, fail
//! or inconclusive, with the numbers of both slots in its text. The numbers come from
//! the access log ([`judge`], over a [`Window`] of its lines) or from Prometheus
//! ([`super::prometheus`]); either way [`verdict`] decides, with the same thresholds.
//!
//! The latency gate fails when the new slot's p95 is more than `max_p95_increase` (and
//! more than `min_p95_difference`) above the stable slot's AND, when the source has the
//! requests' own latencies (the access log), the one-sided Mann-Whitney U test says its
//! latencies are larger (p < `alpha`): a p95 that moved by noise alone does not roll
//! back. Prometheus answers quantiles, not requests: there is no rank test, and the p95
//! thresholds decide alone.

use serde::Serialize;

use super::access_log::{SlotNumbers, Window};
use super::mann_whitney;
use super::split::Slot;
use crate::config::Gate;
use crate::rollout::health::Verdict;

/// Where a verdict's numbers came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    AccessLog,
    Prometheus,
}

/// Both slots' numbers in one window, from either source: what a verdict is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub source: Source,
    pub canary_slot: Slot,
    pub canary: SlotNumbers,
    /// None on a first deploy (no stable slot): the absolute thresholds alone apply.
    pub stable_slot: Option<Slot>,
    pub stable: Option<SlotNumbers>,
    /// The one-sided Mann-Whitney p-value of "the new slot is slower", when the source
    /// has each request's latency (the access log) and there is a stable slot.
    pub p_slower: Option<f64>,
    pub malformed_lines: u64,
    pub bytes_read: u64,
    /// Queries answered (Prometheus).
    pub queries: u64,
    /// Why some numbers are missing or unsure (a source's own problems): the verdict is
    /// inconclusive when this is not empty, whatever the numbers say.
    pub unsure: Vec<String>,
    /// What explains the numbers without making them unusable (a series Prometheus
    /// does not have yet): shown after them.
    pub notes: Vec<String>,
    /// A host canary (no `[traffic]`): the hosts on the new release and those not yet,
    /// which stand for the canary and stable "slots".
    pub hosts: Option<(Vec<String>, Vec<String>)>,
}

/// A verdict and what it was made of.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Judged {
    #[serde(flatten)]
    pub verdict: Verdict,
    pub source: Source,
    pub canary_slot: String,
    pub canary: SlotNumbers,
    pub stable_slot: Option<String>,
    pub stable: Option<SlotNumbers>,
    /// The one-sided Mann-Whitney p-value of "the new slot is slower" (None without a
    /// stable slot to compare with, or from Prometheus).
    pub p_slower: Option<f64>,
    pub alpha: f64,
    pub malformed_lines: u64,
    pub bytes_read: u64,
    pub queries: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// A host canary: the hosts on the new release (`canary`) ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_hosts: Option<Vec<String>>,
    /// ... and those not switched yet (`stable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_hosts: Option<Vec<String>>,
}

/// The numbers of both slots, as every verdict's text ends.
pub fn numbers_text(j: &Judged) -> String {
    let mut s = match &j.new_hosts {
        Some(hosts) => format!("new hosts ({}): {}", hosts.join(", "), j.canary),
        None => format!("slot {} (new): {}", j.canary_slot, j.canary),
    };
    match (&j.old_hosts, &j.stable_slot, &j.stable) {
        (Some(hosts), _, Some(n)) => {
            s.push_str(&format!("; old hosts ({}): {n}", hosts.join(", ")))
        }
        (None, Some(slot), Some(n)) => s.push_str(&format!("; slot {slot} (stable): {n}")),
        _ => {}
    }
    if let Some(p) = j.p_slower {
        s.push_str(&format!(
            "; Mann-Whitney p(new slower) = {} (alpha {})",
            p_text(p),
            j.alpha
        ));
    }
    if j.malformed_lines > 0 {
        s.push_str(&format!(
            "; {} malformed log line(s) ignored",
            j.malformed_lines
        ));
    }
    for note in &j.notes {
        s.push_str(&format!("; {note}"));
    }
    s
}

fn p_text(p: f64) -> String {
    if p < 0.0001 {
        "<0.0001".into()
    } else {
        format!("{p:.4}")
    }
}

fn pct(r: f64) -> String {
    format!("{:.1}%", r * 100.0)
}

/// Judges `window` of the access log: the new slot `canary` against `stable` (None on a
/// first deploy, where only the absolute thresholds apply).
pub fn judge(window: &Window, canary: Slot, stable: Option<Slot>, gate: &Gate) -> Judged {
    verdict(reading(window, canary, stable), gate)
}

/// The numbers of `window` of the access log, and the rank test on its latencies.
pub fn reading(window: &Window, canary: Slot, stable: Option<Slot>) -> Reading {
    let p_slower = stable.map(|st| {
        mann_whitney::greater_p(&window.slot(canary).latencies, &window.slot(st).latencies)
    });
    Reading {
        source: Source::AccessLog,
        canary_slot: canary,
        canary: window.slot(canary).numbers(),
        stable_slot: stable,
        stable: stable.map(|s| window.slot(s).numbers()),
        p_slower,
        malformed_lines: window.malformed,
        bytes_read: window.bytes,
        queries: 0,
        unsure: Vec::new(),
        notes: Vec::new(),
        hosts: None,
    }
}

/// The verdict on `reading`, whichever source it came from.
pub fn verdict(reading: Reading, gate: &Gate) -> Judged {
    let mut j = Judged {
        verdict: Verdict::Inconclusive {
            reason: String::new(),
        },
        source: reading.source,
        canary_slot: reading.canary_slot.name().to_string(),
        canary: reading.canary,
        stable_slot: reading.stable_slot.map(|s| s.name().to_string()),
        stable: reading.stable,
        p_slower: reading.p_slower,
        alpha: gate.alpha,
        malformed_lines: reading.malformed_lines,
        bytes_read: reading.bytes_read,
        queries: reading.queries,
        notes: reading.notes,
        new_hosts: reading.hosts.as_ref().map(|h| h.0.clone()),
        old_hosts: reading.hosts.map(|h| h.1),
    };
    let numbers = numbers_text(&j);
    j.verdict = if reading.unsure.is_empty() {
        decide(
            &reading.canary,
            reading.stable.as_ref(),
            reading.p_slower,
            gate,
            &numbers,
        )
    } else {
        Verdict::Inconclusive {
            reason: format!("{}: {numbers}", reading.unsure.join("; ")),
        }
    };
    j
}

fn decide(
    c: &SlotNumbers,
    s: Option<&SlotNumbers>,
    p_slower: Option<f64>,
    gate: &Gate,
    numbers: &str,
) -> Verdict {
    if c.requests < gate.min_requests {
        return Verdict::Inconclusive {
            reason: format!(
                "only {} request(s) reached the new slot, fewer than min_requests = {}: {numbers}",
                c.requests, gate.min_requests
            ),
        };
    }
    let fail = |why: String| Verdict::Fail {
        reason: format!("{why}: {numbers}"),
    };
    if c.rate_5xx > gate.max_error_rate {
        return fail(format!(
            "5xx rate {} > max_error_rate {}",
            pct(c.rate_5xx),
            pct(gate.max_error_rate)
        ));
    }
    if let (Some(inc), Some(s)) = (gate.max_error_rate_increase, s)
        && c.rate_5xx - s.rate_5xx > inc
    {
        return fail(format!(
            "5xx rate {} is more than max_error_rate_increase {} above the stable slot's {}",
            pct(c.rate_5xx),
            pct(inc),
            pct(s.rate_5xx)
        ));
    }
    // A latency threshold with no p95 of the new slot (a source that answered its
    // requests but no latency): the step cannot be judged on latency.
    let relative = gate.max_p95_increase.is_some() && s.is_some_and(|s| s.p95_ms.is_some());
    if c.p95_ms.is_none() && (gate.max_p95.is_some() || relative) {
        return Verdict::Inconclusive {
            reason: format!(
                "no p95 of the new slot to judge its latency by (max_p95 or max_p95_increase is set): {numbers}"
            ),
        };
    }
    if let (Some(max), Some(p95)) = (gate.max_p95, c.p95_ms)
        && u128::from(p95) > max.as_millis()
    {
        return fail(format!("p95 {p95}ms > max_p95 {}ms", max.as_millis()));
    }
    let mut note = String::new();
    if let (Some(inc), Some(s)) = (gate.max_p95_increase, s)
        && let (Some(cp), Some(sp)) = (c.p95_ms, s.p95_ms)
    {
        // A stable p95 of 0ms (nginx's resolution) counts as 1ms: no division by zero.
        let increase = (f64::from(cp) - f64::from(sp)) / f64::from(sp.max(1));
        let beyond_floor = u128::from(cp.saturating_sub(sp)) > gate.min_p95_difference.as_millis();
        // Without a rank test, a p95 of a handful of stable requests (the stragglers of a
        // 100 % step) is no yardstick.
        let comparable = p_slower.is_some() || s.requests >= gate.min_requests;
        if increase > inc && beyond_floor && !comparable {
            note = format!(
                " (p95 not compared with the stable slot's: only {} stable request(s), fewer than min_requests)",
                s.requests
            );
        } else if increase > inc && beyond_floor {
            let above = format!(
                "p95 {cp}ms is {:.0}% above the stable slot's {sp}ms (max_p95_increase {:.0}%)",
                increase * 100.0,
                inc * 100.0,
            );
            match p_slower {
                Some(p) if p < gate.alpha => {
                    return fail(format!(
                        "{above} and the new slot is slower beyond noise (Mann-Whitney p = {} < alpha {})",
                        p_text(p),
                        gate.alpha
                    ));
                }
                Some(p) => {
                    note = format!(
                        " (p95 {:.0}% above the stable slot's, but within noise: p = {} >= alpha {})",
                        increase * 100.0,
                        p_text(p),
                        gate.alpha
                    );
                }
                // Quantiles only (Prometheus): no rank test to tell noise apart.
                None => {
                    return fail(format!(
                        "{above} and more than min_p95_difference {}ms (no rank test: the source gives quantiles, not each request)",
                        gate.min_p95_difference.as_millis()
                    ));
                }
            }
        }
    }
    Verdict::Pass {
        summary: format!("within thresholds{note}: {numbers}"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::OnInconclusive;

    fn gate() -> Gate {
        Gate {
            window: Duration::from_secs(10),
            interval: Duration::from_secs(1),
            min_requests: 50,
            max_error_rate: 0.05,
            max_error_rate_increase: None,
            max_p95: None,
            max_p95_increase: Some(0.3),
            min_p95_difference: Duration::from_millis(5),
            alpha: 0.05,
            max_consecutive_failures: 2,
            on_inconclusive: OnInconclusive::Pause,
            source: crate::config::GateSource::AccessLog,
            hosts_log: None,
        }
    }

    /// `n` requests to `slot`, latencies spread evenly over [base/2, 3*base/2) ms, the
    /// first `errors` of them 500s.
    pub(crate) fn lines(slot: &str, n: u32, base: u32, errors: u32) -> String {
        (0..n)
            .map(|i| {
                let ms = base / 2 + (i * 7919) % base.max(1);
                let status = if i < errors { 500 } else { 200 };
                format!("2026-11-30T13:00:00+00:00 slot={slot} status={status} request_time={}.{:03} upstream_time=- method=GET uri=/\n", ms / 1000, ms % 1000)
            })
            .collect()
    }

    pub(crate) fn window(text: &[String]) -> Window {
        let mut w = Window::new();
        for t in text {
            w.add_lines(t);
        }
        w
    }

    #[test]
    fn errors_fail_with_both_slots_numbers() {
        let w = window(&[lines("b", 100, 20, 20), lines("a", 400, 20, 0)]);
        let j = judge(&w, Slot::B, Some(Slot::A), &gate());
        let Verdict::Fail { reason } = &j.verdict else {
            panic!("{j:?}")
        };
        assert!(
            reason.starts_with("5xx rate 20.0% > max_error_rate 5.0%"),
            "{reason}"
        );
        assert!(
            reason.contains("slot b (new): 100 requests, 5xx 20.0%"),
            "{reason}"
        );
        assert!(
            reason.contains("slot a (stable): 400 requests, 5xx 0.0%"),
            "{reason}"
        );
        // Relative to the stable slot.
        let mut g = gate();
        g.max_error_rate = 1.0;
        g.max_error_rate_increase = Some(0.1);
        let j = judge(&w, Slot::B, Some(Slot::A), &g);
        assert!(matches!(j.verdict, Verdict::Fail { .. }), "{j:?}");
        g.max_error_rate_increase = Some(0.25);
        assert!(matches!(
            judge(&w, Slot::B, Some(Slot::A), &g).verdict,
            Verdict::Pass { .. }
        ));
    }

    #[test]
    fn slower_beyond_noise_fails_and_the_same_distribution_passes() {
        let slow = window(&[lines("b", 100, 28, 0), lines("a", 400, 20, 0)]);
        let j = judge(&slow, Slot::B, Some(Slot::A), &gate());
        let Verdict::Fail { reason } = &j.verdict else {
            panic!("{j:?}")
        };
        assert!(reason.contains("above the stable slot's"), "{reason}");
        assert!(j.p_slower.unwrap() < 0.001);
        let same = window(&[lines("b", 100, 20, 0), lines("a", 400, 20, 0)]);
        let j = judge(&same, Slot::B, Some(Slot::A), &gate());
        assert!(matches!(j.verdict, Verdict::Pass { .. }), "{j:?}");
        // A p95 far above, on too few requests to tell from noise: passes, says so.
        let mut g = gate();
        g.min_requests = 3;
        let few = window(&[
            "2026-11-30T13:00:00+00:00 slot=b status=200 request_time=0.010 u\n".repeat(2)
                + "2026-11-30T13:00:00+00:00 slot=b status=200 request_time=0.060 u\n",
            lines("a", 3, 20, 0),
        ]);
        let j = judge(&few, Slot::B, Some(Slot::A), &g);
        let Verdict::Pass { summary } = &j.verdict else {
            panic!("{j:?}")
        };
        assert!(summary.contains("within noise"), "{summary}");
        // Tiny latencies: 1ms → 3ms is +200% and beyond noise, but within the floor.
        let mut tiny = String::new();
        for (slot, ms) in [("b", 3), ("a", 1)] {
            for _ in 0..200 {
                tiny.push_str(&format!(
                    "2026-11-30T13:00:00+00:00 slot={slot} status=200 request_time=0.00{ms} u\n"
                ));
            }
        }
        let j = judge(&window(&[tiny]), Slot::B, Some(Slot::A), &gate());
        assert!(matches!(j.verdict, Verdict::Pass { .. }), "{j:?}");
        assert!(j.p_slower.unwrap() < 0.001);
        // Absolute p95.
        g.max_p95 = Some(Duration::from_millis(5));
        assert!(matches!(
            judge(&few, Slot::B, Some(Slot::A), &g).verdict,
            Verdict::Fail { .. }
        ));
    }

    #[test]
    fn too_few_requests_is_inconclusive_never_a_pass() {
        let w = window(&[lines("b", 49, 20, 0), lines("a", 400, 20, 0)]);
        let j = judge(&w, Slot::B, Some(Slot::A), &gate());
        let Verdict::Inconclusive { reason } = &j.verdict else {
            panic!("{j:?}")
        };
        assert!(reason.contains("only 49 request(s)"), "{reason}");
        // Nor a fail, however bad the few are.
        let w = window(&[lines("b", 10, 20, 10)]);
        assert!(matches!(
            judge(&w, Slot::B, None, &gate()).verdict,
            Verdict::Inconclusive { .. }
        ));
        // A first deploy: no stable slot, the absolute thresholds alone.
        let w = window(&[lines("b", 60, 20, 0)]);
        let j = judge(&w, Slot::B, None, &gate());
        assert!(matches!(j.verdict, Verdict::Pass { .. }), "{j:?}");
        assert_eq!(j.p_slower, None);
    }

    /// Numbers as Prometheus gives them: counts and quantiles, no latencies.
    fn prom(canary: SlotNumbers, stable: SlotNumbers) -> Reading {
        Reading {
            source: Source::Prometheus,
            canary_slot: Slot::B,
            canary,
            stable_slot: Some(Slot::A),
            stable: Some(stable),
            p_slower: None,
            malformed_lines: 0,
            bytes_read: 0,
            queries: 12,
            unsure: vec![],
            notes: vec![],
            hosts: None,
        }
    }

    fn numbers(requests: u64, rate_5xx: f64, p95: Option<u32>) -> SlotNumbers {
        SlotNumbers {
            requests,
            rate_5xx,
            rate_4xx: 0.0,
            p50_ms: p95.map(|p| p / 2),
            p95_ms: p95,
            p99_ms: p95.map(|p| p + 5),
        }
    }

    #[test]
    fn quantiles_alone_decide_by_the_p95_thresholds() {
        let g = gate();
        // 40 % slower at p95: fails without a rank test, and says why.
        let j = verdict(
            prom(numbers(200, 0.0, Some(42)), numbers(200, 0.0, Some(30))),
            &g,
        );
        let Verdict::Fail { reason } = &j.verdict else {
            panic!("{j:?}")
        };
        assert!(
            reason.starts_with("p95 42ms is 40% above the stable slot's 30ms (max_p95_increase 30%) and more than min_p95_difference 5ms (no rank test"),
            "{reason}"
        );
        assert!(
            reason.contains("slot b (new): 200 requests")
                && reason.contains("slot a (stable): 200 requests"),
            "{reason}"
        );
        assert_eq!(j.p_slower, None);
        // As fast, or slower only within the floor: passes.
        for (c, s) in [(31, 30), (4, 1)] {
            let j = verdict(
                prom(numbers(200, 0.0, Some(c)), numbers(200, 0.0, Some(s))),
                &g,
            );
            assert!(matches!(j.verdict, Verdict::Pass { .. }), "{j:?}");
        }
        // The same errors rule as the access log's.
        let j = verdict(
            prom(numbers(200, 0.2, Some(30)), numbers(200, 0.0, Some(30))),
            &g,
        );
        assert!(
            j.verdict
                .text()
                .starts_with("5xx rate 20.0% > max_error_rate 5.0%"),
            "{j:?}"
        );
        // A stable slot of a few stragglers (a 100 % step) is no yardstick.
        let j = verdict(
            prom(numbers(200, 0.0, Some(60)), numbers(3, 0.0, Some(30))),
            &g,
        );
        let Verdict::Pass { summary } = &j.verdict else {
            panic!("{j:?}")
        };
        assert!(summary.contains("only 3 stable request(s)"), "{summary}");
        // Requests but no p95 (a latency query that matches nothing): inconclusive.
        let j = verdict(
            prom(numbers(200, 0.0, None), numbers(200, 0.0, Some(30))),
            &g,
        );
        let Verdict::Inconclusive { reason } = &j.verdict else {
            panic!("{j:?}")
        };
        assert!(reason.starts_with("no p95 of the new slot"), "{reason}");
        // The source's own problems: inconclusive whatever the numbers, and both slots'
        // numbers still shown.
        let mut r = prom(numbers(200, 0.5, Some(30)), numbers(200, 0.0, Some(30)));
        r.unsure = vec![
            "Prometheus at http://127.0.0.1:9/ over the last 5s: 6 queries got no answer".into(),
        ];
        r.notes = vec!["Prometheus had no series for the requests of slot a".into()];
        let j = verdict(r, &g);
        let Verdict::Inconclusive { reason } = &j.verdict else {
            panic!("{j:?}")
        };
        assert!(
            reason.starts_with("Prometheus at http://127.0.0.1:9/"),
            "{reason}"
        );
        assert!(
            reason.contains("(stable): 200 requests")
                && reason.ends_with("no series for the requests of slot a"),
            "{reason}"
        );
        let json = serde_json::to_value(&j).unwrap();
        assert_eq!(json["source"], "prometheus");
        assert_eq!(json["canary"]["requests"], 200);
    }
}
