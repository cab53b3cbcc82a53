//! The health verdict: a pure function from one host's samples to pass, fail (with the
//! numbers) or inconclusive. The gate ([`super::gate`]) collects the samples.

use std::time::Duration;

use serde::Serialize;

use crate::config::Health;

/// One health check of one host.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    /// The check answered healthy, in this long.
    Healthy(Duration),
    /// The check answered unhealthy (wrong status, non-zero exit, too slow).
    Unhealthy { latency: Duration, why: String },
    /// The check could not be made (the forward or the connection to the host failed):
    /// says nothing about the release, so it is neither healthy nor a failure.
    Unavailable(String),
}

/// What a gate decided about one host.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "lowercase")]
pub enum Verdict {
    Pass { summary: String },
    Fail { reason: String },
    Inconclusive { reason: String },
}

impl Verdict {
    pub fn text(&self) -> &str {
        match self {
            Verdict::Pass { summary } => summary,
            Verdict::Fail { reason } | Verdict::Inconclusive { reason } => reason,
        }
    }
}

/// The numbers a verdict is made of.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    pub samples: u32,
    pub failures: u32,
    pub unavailable: u32,
    pub consecutive_failures: u32,
    pub error_rate: f64,
    pub p95: Option<Duration>,
    pub last_failure: Option<String>,
    pub last_unavailable: Option<String>,
}

pub fn tally(samples: &[Sample]) -> Tally {
    let mut t = Tally::default();
    let mut latencies = Vec::new();
    let mut run = 0;
    for s in samples {
        match s {
            Sample::Healthy(l) => {
                t.samples += 1;
                latencies.push(*l);
                run = 0;
            }
            Sample::Unhealthy { latency, why } => {
                t.samples += 1;
                t.failures += 1;
                latencies.push(*latency);
                run += 1;
                t.consecutive_failures = t.consecutive_failures.max(run);
                t.last_failure = Some(why.clone());
            }
            Sample::Unavailable(why) => {
                t.unavailable += 1;
                t.last_unavailable = Some(why.clone());
            }
        }
    }
    if t.samples > 0 {
        t.error_rate = t.failures as f64 / t.samples as f64;
        latencies.sort();
        // Nearest rank: the smallest latency at or above 95% of the samples.
        let rank = ((0.95 * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
        t.p95 = Some(latencies[rank - 1]);
    }
    t
}

fn pct(rate: f64) -> String {
    let p = rate * 100.0;
    if (p - p.round()).abs() < 0.05 {
        format!("{}%", p.round())
    } else {
        format!("{p:.1}%")
    }
}

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// Whether the samples so far already fail the gate, before its window is over: too many
/// consecutive failures, or the failure budget spent. `None`: keep sampling.
pub fn early_failure(host: &str, samples: &[Sample], limits: &Health) -> Option<Verdict> {
    let t = tally(samples);
    if t.consecutive_failures >= limits.max_consecutive_failures {
        return Some(Verdict::Fail {
            reason: format!(
                "{host}: {} consecutive failed checks (limit {}){}",
                t.consecutive_failures,
                limits.max_consecutive_failures,
                last(&t.last_failure)
            ),
        });
    }
    if let Some(budget) = limits.failure_budget
        && t.failures > budget
    {
        return Some(Verdict::Fail {
            reason: format!(
                "{host}: {} failed checks > failure budget {budget} over {} samples{}",
                t.failures,
                t.samples,
                last(&t.last_failure)
            ),
        });
    }
    None
}

fn last(why: &Option<String>) -> String {
    why.as_ref()
        .map(|w| format!(" (last: {w})"))
        .unwrap_or_default()
}

/// The verdict on one host at the end of its window.
pub fn judge(host: &str, samples: &[Sample], limits: &Health) -> Verdict {
    if let Some(fail) = early_failure(host, samples, limits) {
        return fail;
    }
    let t = tally(samples);
    if t.samples < limits.min_samples {
        return Verdict::Inconclusive {
            reason: format!(
                "{host}: only {} sample(s), {} needed to judge{}",
                t.samples,
                limits.min_samples,
                if t.unavailable > 0 {
                    format!(
                        "; {} check(s) could not be made{}",
                        t.unavailable,
                        last(&t.last_unavailable)
                    )
                } else {
                    String::new()
                }
            ),
        };
    }
    if t.error_rate > limits.max_error_rate {
        return Verdict::Fail {
            reason: format!(
                "{host}: error rate {} > {} over {} samples{}",
                pct(t.error_rate),
                pct(limits.max_error_rate),
                t.samples,
                last(&t.last_failure)
            ),
        };
    }
    if let (Some(max), Some(p95)) = (limits.max_p95, t.p95)
        && p95 > max
    {
        return Verdict::Fail {
            reason: format!(
                "{host}: p95 latency {} > {} over {} samples",
                ms(p95),
                ms(max),
                t.samples
            ),
        };
    }
    Verdict::Pass {
        summary: format!(
            "{host}: healthy, error rate {} over {} samples, p95 {}",
            pct(t.error_rate),
            t.samples,
            t.p95.map(ms).unwrap_or_else(|| "-".into())
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Check, OnInconclusive};

    fn limits() -> Health {
        Health {
            check: Check::Command("true".into()),
            window: Duration::from_secs(60),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            max_error_rate: 0.05,
            max_p95: Some(Duration::from_millis(300)),
            max_consecutive_failures: 3,
            min_samples: 10,
            failure_budget: None,
            on_inconclusive: OnInconclusive::Pause,
        }
    }

    fn ok(ms: u64) -> Sample {
        Sample::Healthy(Duration::from_millis(ms))
    }

    fn bad() -> Sample {
        Sample::Unhealthy {
            latency: Duration::from_millis(5),
            why: "status 500".into(),
        }
    }

    #[test]
    fn healthy_samples_pass() {
        let samples = vec![ok(10); 20];
        assert!(matches!(
            judge("app1", &samples, &limits()),
            Verdict::Pass { .. }
        ));
    }

    #[test]
    fn error_rate_fails_with_its_numbers() {
        // 5 failures in 40, never 3 in a row: 12.5% > 5%.
        let mut samples = Vec::new();
        for i in 0..40 {
            samples.push(if i % 8 == 0 { bad() } else { ok(10) });
        }
        match judge("app3", &samples, &limits()) {
            Verdict::Fail { reason } => {
                assert!(
                    reason.starts_with("app3: error rate 12.5% > 5% over 40 samples"),
                    "{reason}"
                )
            }
            v => panic!("{v:?}"),
        }
        // A failure rate at the threshold passes.
        let mut samples = vec![ok(10); 19];
        samples.push(bad());
        assert!(matches!(
            judge("a", &samples, &limits()),
            Verdict::Pass { .. }
        ));
    }

    #[test]
    fn consecutive_failures_fail_early() {
        let samples = vec![ok(1), bad(), bad(), bad()];
        let v = early_failure("app2", &samples, &limits()).expect("fails early");
        assert!(v.text().contains("3 consecutive failed checks"), "{v:?}");
        assert_eq!(
            early_failure("app2", &[bad(), bad(), ok(1)], &limits()),
            None
        );
    }

    #[test]
    fn failure_budget() {
        let mut l = limits();
        l.failure_budget = Some(1);
        l.max_error_rate = 1.0;
        let samples = vec![bad(), ok(1), bad(), ok(1)];
        assert!(matches!(
            early_failure("a", &samples, &l),
            Some(Verdict::Fail { .. })
        ));
        assert_eq!(early_failure("a", &samples[..2], &l), None);
    }

    #[test]
    fn slow_answers_fail_on_p95() {
        let mut samples = vec![ok(10); 18];
        samples.push(ok(900));
        samples.push(ok(900));
        match judge("app4", &samples, &limits()) {
            Verdict::Fail { reason } => {
                assert_eq!(reason, "app4: p95 latency 900ms > 300ms over 20 samples")
            }
            v => panic!("{v:?}"),
        }
        // One slow answer in 20 is the top 5%: p95 is the 19th.
        let mut samples = vec![ok(10); 19];
        samples.push(ok(900));
        assert!(matches!(
            judge("a", &samples, &limits()),
            Verdict::Pass { .. }
        ));
    }

    #[test]
    fn too_few_samples_or_unavailable_checks_are_inconclusive_not_failures() {
        match judge("app5", &[ok(1), ok(1)], &limits()) {
            Verdict::Inconclusive { reason } => {
                assert_eq!(reason, "app5: only 2 sample(s), 10 needed to judge")
            }
            v => panic!("{v:?}"),
        }
        let samples = vec![Sample::Unavailable("forward refused".into()); 30];
        match judge("app6", &samples, &limits()) {
            Verdict::Inconclusive { reason } => {
                assert!(reason.contains("30 check(s) could not be made"), "{reason}");
                assert!(reason.contains("forward refused"), "{reason}");
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn p95_is_nearest_rank() {
        let samples: Vec<Sample> = (1..=100).map(ok).collect();
        assert_eq!(tally(&samples).p95, Some(Duration::from_millis(95)));
        assert_eq!(tally(&[ok(7)]).p95, Some(Duration::from_millis(7)));
    }
}
