//! `[gate]`: judging each `[traffic]` step by the requests users actually made, read
//! from the proxy's access log (the new slot against the stable one, in the same
//! window). Validated like every other section: errors name the key.

use std::time::Duration;

use serde::Deserialize;

use super::OnInconclusive;
use super::field::{Invalid, duration, field, parse_duration};
use super::{KeyPath, Layer};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateLayer {
    pub window: Option<String>,
    pub interval: Option<String>,
    pub min_requests: Option<i64>,
    pub max_error_rate: Option<f64>,
    pub max_error_rate_increase: Option<f64>,
    pub max_p95: Option<String>,
    pub max_p95_increase: Option<f64>,
    pub min_p95_difference: Option<String>,
    pub alpha: Option<f64>,
    pub max_consecutive_failures: Option<i64>,
    pub on_inconclusive: Option<String>,
}

/// The resolved `[gate]` section: the thresholds of the access-log gate.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    /// How long each step's requests are watched.
    pub window: Duration,
    /// How often the log is read (and the numbers so far judged).
    pub interval: Duration,
    /// Fewer requests to the new slot than this in the window: inconclusive.
    pub min_requests: u64,
    /// The new slot's 5xx share may not exceed this.
    pub max_error_rate: f64,
    /// Nor exceed the stable slot's by more than this (a difference of rates).
    pub max_error_rate_increase: Option<f64>,
    /// The new slot's p95 may not exceed this.
    pub max_p95: Option<Duration>,
    /// Nor the stable slot's p95 by more than this share (0.3: 30 % slower), when the
    /// Mann-Whitney test also says the new slot is slower (p < alpha).
    pub max_p95_increase: Option<f64>,
    /// A p95 at most this much above the stable slot's is never a latency failure,
    /// whatever the share: nginx logs to the millisecond, and 1ms becoming 2ms is +100%.
    pub min_p95_difference: Duration,
    pub alpha: f64,
    /// Consecutive readings whose numbers so far fail: the gate fails before its
    /// window is over.
    pub max_consecutive_failures: u32,
    pub on_inconclusive: OnInconclusive,
}

/// `has_traffic`: the stage has `[traffic]`, whose access log `[gate]` reads.
pub(super) fn resolve_gate(
    stage: &Layer,
    top: &Layer,
    at: &KeyPath,
    has_traffic: bool,
) -> Result<Option<Gate>, Invalid> {
    let (s, t) = (&stage.gate, &top.gate);
    if s.is_none() && t.is_none() {
        return Ok(None);
    }
    let section = if s.is_some() {
        at.key("gate")
    } else {
        KeyPath::root().key("gate")
    };
    if !has_traffic {
        return Err((
            section,
            "[gate] judges the requests in the access log of [traffic]: add [traffic], or remove [gate] (host canaries are judged by [health])".into(),
        ));
    }
    let window = duration(field!(s, t, at, "gate", window), Duration::from_secs(60))?;
    let interval = duration(field!(s, t, at, "gate", interval), Duration::from_secs(5))?;
    if interval.is_zero() || window < interval {
        let p = field!(s, t, at, "gate", interval)
            .map(|(_, p)| p)
            .unwrap_or(section.clone());
        return Err((
            p,
            format!(
                "the log is read every interval within the window: interval must be more than 0s and at most the window ({})",
                humantime::format_duration(window)
            ),
        ));
    }
    let rate = |found: Option<(&f64, KeyPath)>, default: Option<f64>| match found {
        None => Ok(default),
        Some((&r, p)) if !(0.0..=1.0).contains(&r) => Err((
            p,
            format!("a rate between 0 and 1, e.g. 0.05 for 5% (got {r})"),
        )),
        Some((&r, _)) => Ok(Some(r)),
    };
    let max_error_rate =
        rate(field!(s, t, at, "gate", max_error_rate), Some(0.01))?.unwrap_or(0.01);
    let max_error_rate_increase = rate(field!(s, t, at, "gate", max_error_rate_increase), None)?;
    let max_p95 = match field!(s, t, at, "gate", max_p95) {
        None => None,
        Some((text, p)) => Some(parse_duration(text).map_err(|m| (p, m))?),
    };
    let max_p95_increase = match field!(s, t, at, "gate", max_p95_increase) {
        None => Some(0.3),
        Some((&r, p)) if !(0.0..=100.0).contains(&r) => {
            return Err((
                p,
                format!("a share of the stable slot's p95, e.g. 0.3 for 30% slower (got {r})"),
            ));
        }
        Some((&r, _)) => Some(r),
    };
    let min_p95_difference = duration(
        field!(s, t, at, "gate", min_p95_difference),
        Duration::from_millis(5),
    )?;
    let alpha = match field!(s, t, at, "gate", alpha) {
        None => 0.05,
        Some((&a, p)) if !(a > 0.0 && a < 0.5) => {
            return Err((
                p,
                format!("a significance level between 0 and 0.5, e.g. 0.05 (got {a})"),
            ));
        }
        Some((&a, _)) => a,
    };
    let min_requests = match field!(s, t, at, "gate", min_requests) {
        None => 100,
        Some((&n, _)) if (1..=1_000_000_000).contains(&n) => n as u64,
        Some((&n, p)) => {
            return Err((p, format!("must be between 1 and 1000000000 (got {n})")));
        }
    };
    let max_consecutive_failures = match field!(s, t, at, "gate", max_consecutive_failures) {
        None => 3,
        Some((&n, _)) if (1..=1_000_000).contains(&n) => n as u32,
        Some((&n, p)) => return Err((p, format!("must be between 1 and 1000000 (got {n})"))),
    };
    let on_inconclusive =
        super::health::on_inconclusive(field!(s, t, at, "gate", on_inconclusive))?;
    Ok(Some(Gate {
        window,
        interval,
        min_requests,
        max_error_rate,
        max_error_rate_increase,
        max_p95,
        max_p95_increase,
        min_p95_difference,
        alpha,
        max_consecutive_failures,
        on_inconclusive,
    }))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, ConfigError};

    const TRAFFIC: &str = "[traffic]\ninclude = \"/etc/nginx/conf.d/slipway-shop.conf\"\nslots = { a = 8001, b = 8002 }\nstart = [\"bin/start\"]\n";

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        let text = format!(
            "app = \"shop\"\ndeploy_to = \"/srv/shop\"\n{extra}\n[stages.prod]\nhosts = [{{ address = \"a1\" }}]\n"
        );
        Config::parse(&text, Path::new("deploy.toml"), Path::new("."))
    }

    #[test]
    fn defaults_and_mistakes() {
        let c = parse(&format!(
            "[rollout]\nstrategy = \"canary\"\n{TRAFFIC}[gate]\n"
        ))
        .unwrap();
        let g = c.stage("prod").unwrap().gate.clone().expect("a gate");
        assert_eq!(g.min_requests, 100);
        assert_eq!(g.max_p95_increase, Some(0.3));
        assert_eq!(g.alpha, 0.05);
        assert_eq!(g.window, std::time::Duration::from_secs(60));

        let e = parse("[gate]\nwindow = \"10s\"\n").unwrap_err();
        assert_eq!(e.key, "gate");
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("add [traffic]"), "{e}");

        for (bad, key) in [
            ("max_error_rate = 5.0", "gate.max_error_rate"),
            ("alpha = 0.9", "gate.alpha"),
            ("min_requests = 0", "gate.min_requests"),
            ("interval = \"2m\"", "gate.interval"),
            ("max_p95 = \"soon\"", "gate.max_p95"),
            ("min_p95_difference = \"5\"", "gate.min_p95_difference"),
            ("on_inconclusive = \"maybe\"", "gate.on_inconclusive"),
            ("max_p95_increase = -1.0", "gate.max_p95_increase"),
        ] {
            let e = parse(&format!(
                "[rollout]\nstrategy = \"canary\"\n{TRAFFIC}[gate]\n{bad}\n"
            ))
            .unwrap_err();
            assert_eq!(e.key, key, "{bad}: {e}");
        }
    }
}
