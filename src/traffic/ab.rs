//! The A/B test (`[rollout] strategy = "ab"`): the new release gets a fixed share of
//! users (sticky, the `[traffic]` split) for a set duration; both cohorts' requests are
//! read from the access log ([`LogGate::collect`]) and compared, and the result names a
//! winner or says there is none. The executor records it in the rollout state and
//! pauses (`winner = "manual"`) or acts on it (`"auto"`); `rollout promote` makes the
//! winner stable.
//!
//! The statistics, both two-sided, each at alpha/2 (Bonferroni: with two releases that
//! behave the same, a winner is named at most alpha of the time):
//! - 5xx rates: the pooled two-proportion z-test;
//! - latencies: the Mann-Whitney U test ([`mann_whitney::greater_p`] each way,
//!   p = 2·min), normal approximation with continuity and tie corrections.
//!
//! A significant difference of 5xx rates decides (the lower rate wins, however fast the
//! other); otherwise a significant latency difference does, if the slower cohort's p50
//! or p95 is more than `[gate] min_p95_difference` above the other's (nginx logs to the
//! millisecond: 1ms against 2ms is no reason to ship). Fewer than `[gate] min_requests`
//! in either cohort, or a log that could not be read whole: no winner.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::access_log::{SlotNumbers, SlotSample};
use super::driver::Driver;
use super::log_gate::LogGate;
use super::mann_whitney;
use super::split::Slot;
use super::state::TrafficState;
use crate::audit::{self, Record};
use crate::config::{AbTest, Gate};
use crate::fleet::Fleet;
use crate::layout::ReleaseId;
use crate::release::ReleaseState;
use crate::rollout::plan::RolloutPlan;

/// Which release won.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Winner {
    /// The release under test.
    New,
    /// The release that was serving before.
    Stable,
    /// No difference beyond noise (or too little to tell).
    None,
}

/// What decided the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Basis {
    /// The 5xx rates differ beyond noise.
    Errors,
    /// The latencies differ beyond noise and beyond the floor.
    Latency,
    /// Neither differs beyond noise.
    NoDifference,
    /// A cohort had fewer than `min_requests`.
    TooFewRequests,
    /// Some host's log could not be read (or was read behind): the numbers are partial.
    Unreadable,
    /// Stopped before its duration: the new cohort failed beyond `[gate] max_error_rate`.
    Guard,
}

/// The thresholds of the decision (from `[gate]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    /// The family-wise level: each of the two tests runs at alpha / 2.
    pub alpha: f64,
    pub min_requests: u64,
    /// Latency differences at or below this (at p50 and p95) never decide.
    pub min_difference_ms: u32,
}

impl Rules {
    pub fn of(gate: &Gate) -> Rules {
        Rules {
            alpha: gate.alpha,
            min_requests: gate.min_requests,
            min_difference_ms: u32::try_from(gate.min_p95_difference.as_millis())
                .unwrap_or(u32::MAX),
        }
    }
}

/// The two tests' results.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Tests {
    /// Two-proportion z statistic of the 5xx rates (new minus stable; 0 when neither
    /// cohort had a 5xx).
    pub errors_z: f64,
    /// Its two-sided p-value.
    pub errors_p: f64,
    /// Mann-Whitney one-sided p-values each way, and the two-sided one.
    pub latency_p_new_slower: f64,
    pub latency_p_new_faster: f64,
    pub latency_p: f64,
}

/// The guard of a running test: the new cohort (with at least `min_requests`) answers
/// 5xx to more than `[gate] max_error_rate` of its requests. `max_consecutive_failures`
/// readings in a row stop the test, which the stable release then wins.
pub fn over_guard(new: &SlotNumbers, gate: &Gate) -> bool {
    new.requests >= gate.min_requests && new.rate_5xx > gate.max_error_rate
}

/// The decision over two cohorts' samples, pure.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub winner: Winner,
    pub basis: Basis,
    pub tests: Tests,
    /// Why, in words (without the numbers, which the result adds).
    pub why: String,
}

/// The pooled two-proportion z-test, two-sided: (z, p) for x1 of n1 against x2 of n2.
pub fn two_proportion(x1: u64, n1: u64, x2: u64, n2: u64) -> (f64, f64) {
    if n1 == 0 || n2 == 0 {
        return (0.0, 1.0);
    }
    let (n1f, n2f) = (n1 as f64, n2 as f64);
    let pooled = (x1 + x2) as f64 / (n1f + n2f);
    let se = (pooled * (1.0 - pooled) * (1.0 / n1f + 1.0 / n2f)).sqrt();
    if se <= 0.0 || !se.is_finite() {
        return (0.0, 1.0);
    }
    let z = (x1 as f64 / n1f - x2 as f64 / n2f) / se;
    (z, (2.0 * mann_whitney::upper_tail(z.abs())).min(1.0))
}

fn pct(r: f64) -> String {
    format!("{:.2}%", r * 100.0)
}

pub fn p_text(p: f64) -> String {
    if p < 0.0001 {
        "<0.0001".into()
    } else {
        format!("{p:.4}")
    }
}

/// Decides the A/B test over the new cohort's and the stable cohort's requests.
pub fn decide(new: &SlotSample, stable: &SlotSample, rules: &Rules) -> Decision {
    let (errors_z, errors_p) = two_proportion(
        new.errors_5xx,
        new.requests,
        stable.errors_5xx,
        stable.requests,
    );
    let slower = mann_whitney::greater_p(&new.latencies, &stable.latencies);
    let faster = mann_whitney::greater_p(&stable.latencies, &new.latencies);
    let tests = Tests {
        errors_z,
        errors_p,
        latency_p_new_slower: slower,
        latency_p_new_faster: faster,
        latency_p: (2.0 * slower.min(faster)).min(1.0),
    };
    let level = rules.alpha / 2.0;
    let decision = |winner, basis, why: String| Decision {
        winner,
        basis,
        tests,
        why,
    };
    let fewest = new.requests.min(stable.requests);
    if fewest < rules.min_requests {
        return decision(
            Winner::None,
            Basis::TooFewRequests,
            format!(
                "too few requests to compare: a cohort had {fewest}, fewer than [gate] min_requests = {}",
                rules.min_requests
            ),
        );
    }
    let (n, s) = (new.numbers(), stable.numbers());
    if errors_p < level {
        let (winner, lower) = if n.rate_5xx < s.rate_5xx {
            (Winner::New, "the new release")
        } else {
            (Winner::Stable, "the stable release")
        };
        return decision(
            winner,
            Basis::Errors,
            format!(
                "{lower} has the lower 5xx rate ({} against {}), beyond noise: two-proportion z-test p = {} < {level}",
                pct(n.rate_5xx.min(s.rate_5xx)),
                pct(n.rate_5xx.max(s.rate_5xx)),
                p_text(errors_p)
            ),
        );
    }
    if tests.latency_p < level {
        let new_faster = faster < slower;
        let (fast, slow) = if new_faster { (&n, &s) } else { (&s, &n) };
        let gap = |f: Option<u32>, s: Option<u32>| match (f, s) {
            (Some(f), Some(s)) => s.saturating_sub(f),
            _ => 0,
        };
        let p50_gap = gap(fast.p50_ms, slow.p50_ms);
        let p95_gap = gap(fast.p95_ms, slow.p95_ms);
        let who = if new_faster {
            "the new release"
        } else {
            "the stable release"
        };
        if p50_gap.max(p95_gap) > rules.min_difference_ms {
            return decision(
                if new_faster {
                    Winner::New
                } else {
                    Winner::Stable
                },
                Basis::Latency,
                format!(
                    "the 5xx rates do not differ beyond noise (p = {} >= {level}); {who} is faster ({p50_gap}ms at p50, {p95_gap}ms at p95), beyond noise: Mann-Whitney p = {} < {level}",
                    p_text(errors_p),
                    p_text(tests.latency_p)
                ),
            );
        }
        return decision(
            Winner::None,
            Basis::NoDifference,
            format!(
                "no difference that matters: {who} is faster beyond noise (Mann-Whitney p = {}) but by {p50_gap}ms at p50 and {p95_gap}ms at p95, within [gate] min_p95_difference = {}ms; 5xx rates p = {}",
                p_text(tests.latency_p),
                rules.min_difference_ms,
                p_text(errors_p)
            ),
        );
    }
    decision(
        Winner::None,
        Basis::NoDifference,
        format!(
            "no difference beyond noise: 5xx rates p = {}, latencies Mann-Whitney p = {} (each >= {level})",
            p_text(errors_p),
            p_text(tests.latency_p)
        ),
    )
}

/// One A/B test's result, as recorded in the rollout state, printed, sent with `--json`
/// and appended to the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbResult {
    pub new_release: String,
    pub new_slot: Slot,
    pub new: SlotNumbers,
    pub stable_release: Option<String>,
    pub stable_slot: Slot,
    pub stable: SlotNumbers,
    /// Percent of users on the new release during the test.
    pub split: f64,
    /// How long the cohorts were watched, in seconds.
    pub watched_secs: f64,
    pub tests: Tests,
    /// The family-wise level; each test ran at alpha / 2.
    pub alpha: f64,
    pub winner: Winner,
    pub basis: Basis,
    pub why: String,
    /// Hosts whose log could not be read whole.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    pub malformed_lines: u64,
    pub at: DateTime<Utc>,
}

impl AbResult {
    /// The winner's release id (None: no winner).
    pub fn winner_release(&self) -> Option<&str> {
        match self.winner {
            Winner::New => Some(&self.new_release),
            Winner::Stable => self.stable_release.as_deref(),
            Winner::None => None,
        }
    }

    /// One line: who won and why.
    pub fn verdict(&self) -> String {
        match self.winner {
            Winner::New => format!(
                "winner: the new release {} ({})",
                self.new_release, self.why
            ),
            Winner::Stable => format!(
                "winner: the stable release {} ({})",
                self.stable_release.as_deref().unwrap_or("(unrecorded)"),
                self.why
            ),
            Winner::None => format!("no winner ({})", self.why),
        }
    }

    /// The report: each cohort's numbers, both tests, the winner.
    pub fn text(&self) -> String {
        let mut s = format!(
            "A/B test over {:.0}s, {}% of users on the new release:\n  new    {} (slot {}): {}\n  stable {} (slot {}): {}\n  5xx rates: two-proportion z-test, two-sided, z = {:.2}, p = {}\n  latency: Mann-Whitney U, two-sided, p = {} (one-sided: new slower p = {}, new faster p = {})\n  each test at alpha/2 = {} (alpha {})\n  {}",
            self.watched_secs,
            super::split::trim(self.split),
            self.new_release,
            self.new_slot,
            self.new,
            self.stable_release.as_deref().unwrap_or("(unrecorded)"),
            self.stable_slot,
            self.stable,
            self.tests.errors_z,
            p_text(self.tests.errors_p),
            p_text(self.tests.latency_p),
            p_text(self.tests.latency_p_new_slower),
            p_text(self.tests.latency_p_new_faster),
            self.alpha / 2.0,
            self.alpha,
            self.verdict()
        );
        for p in &self.problems {
            s.push_str(&format!("\n  {p}"));
        }
        if self.malformed_lines > 0 {
            s.push_str(&format!(
                "\n  {} malformed log line(s) ignored",
                self.malformed_lines
            ));
        }
        s
    }
}

/// The user steps of an A/B rollout: the test at `split`, then everyone (promotion). A
/// first deploy has nothing to compare with: one step, everyone on the new slot.
pub fn plan(test: &AbTest, hosts: &[String], first: bool) -> RolloutPlan {
    let mut p = super::plan(&[test.split, 100.0], hosts, first);
    if !first {
        p.strategy = "ab".into();
    }
    p
}

/// Whether step `k` (0-based) of `plan` is the A/B test.
pub fn is_test_step(plan: &RolloutPlan, k: usize) -> bool {
    plan.strategy == "ab" && k == 0 && plan.steps.len() == 2
}

/// Watches both cohorts for the test's duration (less the time since `watch` began)
/// and decides. Reports the result (a line, `--json` data under `ab`, an audit record).
pub async fn run(
    watch: LogGate<'_>,
    driver: &Driver<'_>,
    gate: &Gate,
    test: &AbTest,
    traffic: &TrafficState,
    release: &ReleaseId,
) -> Option<AbResult> {
    let stable_slot = traffic.stable?;
    driver.fleet.reporter.info(&format!(
        "A/B test: {}% of users on {release} (slot {}), the rest on {} (slot {stable_slot}), for {}",
        super::split::trim(test.split),
        traffic.canary,
        traffic.stable_release.as_deref().unwrap_or("the stable release"),
        humantime::format_duration(test.duration)
    ));
    let mut failing = 0u32;
    let guard = |w: &super::access_log::Window| {
        if over_guard(&w.slot(traffic.canary).numbers(), gate) {
            failing += 1;
        } else {
            failing = 0;
        }
        failing >= gate.max_consecutive_failures
    };
    let (window, problems, watched) = watch.collect(test.duration, guard).await;
    let new = window.slot(traffic.canary);
    let stable = window.slot(stable_slot);
    let mut d = decide(new, stable, &Rules::of(gate));
    if failing >= gate.max_consecutive_failures {
        d.winner = Winner::Stable;
        d.basis = Basis::Guard;
        d.why = format!(
            "stopped after {:.0}s of {}: the new release answered 5xx to {} of its requests, above [gate] max_error_rate = {}, in {failing} readings in a row",
            watched.as_secs_f64(),
            humantime::format_duration(test.duration),
            pct(new.numbers().rate_5xx),
            pct(gate.max_error_rate)
        );
    } else if !problems.is_empty() && d.winner != Winner::None {
        d.winner = Winner::None;
        d.basis = Basis::Unreadable;
        d.why = format!(
            "the access log was not read whole, so the numbers are partial ({}); had they been whole: {}",
            problems.join("; "),
            d.why
        );
    }
    let result = AbResult {
        new_release: release.to_string(),
        new_slot: traffic.canary,
        new: new.numbers(),
        stable_release: traffic.stable_release.clone(),
        stable_slot,
        stable: stable.numbers(),
        split: test.split,
        watched_secs: watched.as_secs_f64(),
        tests: d.tests,
        alpha: gate.alpha,
        winner: d.winner,
        basis: d.basis,
        why: d.why,
        problems,
        malformed_lines: window.malformed,
        at: Utc::now(),
    };
    report(driver, &result).await;
    Some(result)
}

async fn report(driver: &Driver<'_>, r: &AbResult) {
    let fleet = driver.fleet;
    let text = r.text();
    fleet.reporter.info_data(
        &text,
        serde_json::json!({ "ab": serde_json::to_value(r).unwrap_or_default() }),
    );
    let record = Record {
        time: Utc::now(),
        action: "ab-test".into(),
        stage: fleet.stage.name.clone(),
        actor: driver.actor.clone(),
        command: driver.command.clone(),
        from: r.stable_release.clone(),
        to: Some(r.new_release.clone()),
        reason: Some(r.verdict()),
        result: match r.winner {
            Winner::New => "new",
            Winner::Stable => "stable",
            Winner::None => "none",
        }
        .into(),
        message: Some(text),
        duration_ms: (r.watched_secs * 1000.0) as u64,
        run: None,
        took_over: None,
    };
    audit::append(fleet, &record).await;
}

/// After the new release was promoted: the release it replaced keeps its place as the
/// rollback target (it served users moments ago), with a note saying it lost the test
/// (or was replaced by hand without a winner). A note that cannot be written is a
/// warning: the promotion stands.
pub async fn mark_replaced(fleet: &Fleet, r: &AbResult) {
    let Some(old) = r
        .stable_release
        .as_deref()
        .and_then(|id| ReleaseId::parse(id).ok())
    else {
        return;
    };
    let note = match r.winner {
        Winner::New => format!("lost the A/B test to {}: {}", r.new_release, r.why),
        _ => format!(
            "replaced by {} after an A/B test with {}",
            r.new_release,
            r.verdict()
        ),
    };
    let states = match crate::probe::probe(fleet).await {
        Ok(s) => s,
        Err(e) => {
            fleet.reporter.warning(
                None,
                &format!("{old} not marked as the A/B test's loser: {e}"),
            );
            return;
        }
    };
    for (i, s) in states.iter().enumerate() {
        let Some(meta) = s.release(&old).and_then(|r| r.meta.as_ref()) else {
            continue;
        };
        let state = if meta.state.is_good() {
            ReleaseState::Ready
        } else {
            meta.state
        };
        let line = meta.with_state(state, Some(note.clone())).to_line();
        let script = crate::script::write_meta(&fleet.layout, &old, &line);
        let done = fleet.hosts[i]
            .run(&script, None, fleet.stage.timeouts.command)
            .await;
        if let Err(m) = done.map_err(|e| e.to_string()).and_then(|o| {
            if o.success() {
                Ok(())
            } else {
                Err(o.message())
            }
        }) {
            fleet.reporter.warning(
                Some(fleet.name(i)),
                &format!("{old} not marked as the A/B test's loser: {m}"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::log_verdict::tests::{lines, window};

    fn rules() -> Rules {
        Rules {
            alpha: 0.05,
            min_requests: 50,
            min_difference_ms: 5,
        }
    }

    fn decided(parts: &[String]) -> Decision {
        let w = window(parts);
        decide(w.slot(Slot::B), w.slot(Slot::A), &rules())
    }

    #[test]
    fn the_two_proportion_test_matches_a_worked_example() {
        // 30 of 300 against 15 of 300: pooled 0.075, se = sqrt(.075*.925*2/300) =
        // 0.021506, z = 0.05/0.021506 = 2.3249, two-sided p = erfc(z/√2) = 0.02007.
        let (z, p) = two_proportion(30, 300, 15, 300);
        assert!((z - 2.3249).abs() < 1e-3, "{z}");
        assert!((p - 0.020_074).abs() < 1e-5, "{p}");
        assert_eq!(two_proportion(0, 100, 0, 100), (0.0, 1.0));
        assert_eq!(two_proportion(0, 0, 3, 100), (0.0, 1.0));
    }

    #[test]
    fn errors_decide_before_latency() {
        // The new cohort is faster but fails 10 % of its requests: the stable one wins.
        let d = decided(&[lines("b", 1000, 10, 100), lines("a", 1000, 30, 0)]);
        assert_eq!(
            (d.winner, d.basis),
            (Winner::Stable, Basis::Errors),
            "{d:?}"
        );
        assert!(d.tests.errors_p < 0.0001, "{d:?}");
        assert!(d.tests.latency_p_new_faster < 0.0001, "{d:?}");
        assert!(d.why.contains("two-proportion"), "{}", d.why);
        // The other way round: the new one has fewer errors.
        let d = decided(&[lines("b", 1000, 30, 0), lines("a", 1000, 30, 100)]);
        assert_eq!((d.winner, d.basis), (Winner::New, Basis::Errors), "{d:?}");
    }

    #[test]
    fn latency_decides_when_errors_do_not_differ() {
        let d = decided(&[lines("b", 500, 40, 1), lines("a", 500, 20, 1)]);
        assert_eq!(
            (d.winner, d.basis),
            (Winner::Stable, Basis::Latency),
            "{d:?}"
        );
        assert!(d.tests.latency_p_new_slower < 0.0001, "{d:?}");
        assert!(d.why.contains("Mann-Whitney"), "{}", d.why);
        let d = decided(&[lines("b", 500, 20, 0), lines("a", 500, 40, 0)]);
        assert_eq!((d.winner, d.basis), (Winner::New, Basis::Latency), "{d:?}");
    }

    #[test]
    fn the_same_behaviour_tiny_gaps_and_few_requests_name_no_winner() {
        let d = decided(&[lines("b", 500, 20, 5), lines("a", 500, 20, 5)]);
        assert_eq!(
            (d.winner, d.basis),
            (Winner::None, Basis::NoDifference),
            "{d:?}"
        );
        assert!(d.tests.latency_p > 0.5 && d.tests.errors_p > 0.5, "{d:?}");
        // 1ms against 3ms: beyond noise, but within the floor.
        let mut tiny = String::new();
        for (slot, ms) in [("b", 3), ("a", 1)] {
            for _ in 0..200 {
                tiny.push_str(&format!(
                    "2026-11-30T13:00:00+00:00 slot={slot} status=200 request_time=0.00{ms} u\n"
                ));
            }
        }
        let d = decided(&[tiny]);
        assert_eq!(
            (d.winner, d.basis),
            (Winner::None, Basis::NoDifference),
            "{d:?}"
        );
        assert!(d.tests.latency_p < 0.0001, "{d:?}");
        // Half the errors on a cohort of 49: too few to tell, whatever the numbers.
        let d = decided(&[lines("b", 49, 20, 25), lines("a", 500, 20, 0)]);
        assert_eq!((d.winner, d.basis), (Winner::None, Basis::TooFewRequests));
        assert!(d.why.contains("min_requests = 50"), "{}", d.why);
    }

    #[test]
    fn a_small_error_difference_within_noise_leaves_latency_to_decide() {
        // 3 of 400 against 1 of 400: p ≈ 0.32, not an error verdict; the new cohort
        // is clearly faster.
        let d = decided(&[lines("b", 400, 20, 3), lines("a", 400, 45, 1)]);
        assert!(d.tests.errors_p > 0.1, "{d:?}");
        assert_eq!((d.winner, d.basis), (Winner::New, Basis::Latency), "{d:?}");
    }

    #[test]
    fn the_guard_needs_enough_requests_above_the_gate_rate() {
        let gate = crate::config::Gate {
            window: std::time::Duration::from_secs(60),
            interval: std::time::Duration::from_secs(1),
            min_requests: 50,
            max_error_rate: 0.05,
            max_error_rate_increase: None,
            max_p95: None,
            max_p95_increase: None,
            min_p95_difference: std::time::Duration::from_millis(5),
            alpha: 0.05,
            max_consecutive_failures: 2,
            on_inconclusive: crate::config::OnInconclusive::Pause,
            source: crate::config::GateSource::AccessLog,
            hosts_log: None,
        };
        let numbers = |n, errors| window(&[lines("b", n, 20, errors)]).b.numbers();
        assert!(over_guard(&numbers(100, 10), &gate));
        assert!(
            !over_guard(&numbers(100, 5), &gate),
            "at the rate is not above it"
        );
        assert!(!over_guard(&numbers(49, 49), &gate), "too few to judge");
    }

    #[test]
    fn an_ab_plan_has_the_test_then_everyone() {
        let test = AbTest {
            split: 30.0,
            duration: std::time::Duration::from_secs(60),
            winner: crate::config::WinnerRule::Manual,
        };
        let hosts = vec!["h1".to_string()];
        let p = plan(&test, &hosts, false);
        assert_eq!(p.strategy, "ab");
        let percents: Vec<_> = p.steps.iter().map(|s| s.percent).collect();
        assert_eq!(percents, vec![Some(30.0), Some(100.0)]);
        assert!(is_test_step(&p, 0) && !is_test_step(&p, 1));
        let first = plan(&test, &hosts, true);
        assert_eq!(first.steps.len(), 1);
        assert!(!is_test_step(&first, 0));
    }
}
