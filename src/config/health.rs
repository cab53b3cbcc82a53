//! `[health]`: what a host must show after its switch before the rollout goes on (an
//! HTTP status or a command's exit, sampled over a window). Validated like every other
//! section: errors name the key (and the loader adds its line).

use std::time::Duration;

use serde::Deserialize;

use super::field::{Invalid, duration, field, parse_duration};
use super::{KeyPath, Layer};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthLayer {
    pub http: Option<HttpLayer>,
    pub command: Option<String>,
    pub window: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub max_error_rate: Option<f64>,
    pub max_p95: Option<String>,
    pub max_consecutive_failures: Option<i64>,
    pub min_samples: Option<i64>,
    pub failure_budget: Option<i64>,
    pub on_inconclusive: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpLayer {
    pub port: Option<i64>,
    pub path: Option<String>,
    pub expect: Option<i64>,
    pub address: Option<String>,
}

/// One health check of one host.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// `GET path` from the deployer, through an ssh forward to `address:port` as the host
    /// sees it; healthy when the status is `expect`.
    Http {
        /// `None`: 127.0.0.1. `"{host}"` in the config stands for the host's address.
        address: Option<String>,
        port: u16,
        path: String,
        expect: u16,
    },
    /// A command run on the host in the current release; exit 0 is healthy.
    Command(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnInconclusive {
    /// Pause the rollout for a human (`rollout promote` or `abort`).
    Pause,
    /// Treat it as a failed gate: roll back.
    Fail,
}

/// The resolved `[health]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub check: Check,
    pub window: Duration,
    pub interval: Duration,
    /// One check's time limit; longer counts as a failed sample.
    pub timeout: Duration,
    pub max_error_rate: f64,
    pub max_p95: Option<Duration>,
    pub max_consecutive_failures: u32,
    pub min_samples: u32,
    /// Failed samples tolerated per host before the gate fails at once.
    pub failure_budget: Option<u32>,
    pub on_inconclusive: OnInconclusive,
}

pub(super) fn resolve_health(
    stage: &Layer,
    top: &Layer,
    at: &KeyPath,
) -> Result<Option<Health>, Invalid> {
    let (s, t) = (&stage.health, &top.health);
    if s.is_none() && t.is_none() {
        return Ok(None);
    }
    let section = if s.is_some() {
        at.key("health")
    } else {
        KeyPath::root().key("health")
    };
    let http = field!(s, t, at, "health", http);
    let command = field!(s, t, at, "health", command);
    let check = match (http, command) {
        (Some(_), Some((_, p))) => {
            return Err((p, "give either http or command, not both".into()));
        }
        (None, None) => {
            return Err((
                section,
                "missing a check: http = { port = 8080, path = \"/healthz\" } or command = \"...\""
                    .into(),
            ));
        }
        (None, Some((c, p))) => {
            if c.trim().is_empty() || c.contains('\0') {
                return Err((p, "the health command is empty".into()));
            }
            Check::Command(c.clone())
        }
        (Some((h, p)), None) => {
            let port = match h.port {
                Some(n) if (1..=65535).contains(&n) => n as u16,
                Some(n) => {
                    return Err((
                        p.key("port"),
                        format!("port must be between 1 and 65535 (got {n})"),
                    ));
                }
                None => {
                    return Err((
                        p,
                        "missing port: http = { port = 8080, path = \"/healthz\" }".into(),
                    ));
                }
            };
            let path = h.path.clone().unwrap_or_else(|| "/".into());
            if !path.starts_with('/') || path.chars().any(|c| c.is_control() || c == ' ') {
                return Err((
                    p.key("path"),
                    format!(
                        "`{}` is not a request path: start it with `/`, no spaces",
                        path.escape_debug()
                    ),
                ));
            }
            let expect = match h.expect {
                None => 200,
                Some(n) if (100..=599).contains(&n) => n as u16,
                Some(n) => return Err((p.key("expect"), format!("not an HTTP status (got {n})"))),
            };
            let address = match &h.address {
                None => None,
                Some(a) if a == "{host}" => Some(a.clone()),
                Some(a) => {
                    let ok = !a.is_empty()
                        && !a.starts_with('-')
                        && a.chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
                    if !ok {
                        return Err((
                            p.key("address"),
                            format!(
                                "`{}` is not an address (or \"{{host}}\" for the host's own)",
                                a.escape_debug()
                            ),
                        ));
                    }
                    Some(a.clone())
                }
            };
            Check::Http {
                address,
                port,
                path,
                expect,
            }
        }
    };
    let window = duration(field!(s, t, at, "health", window), Duration::from_secs(60))?;
    let interval = duration(field!(s, t, at, "health", interval), Duration::from_secs(2))?;
    if interval.is_zero() {
        let p = field!(s, t, at, "health", interval)
            .map(|(_, p)| p)
            .unwrap_or(section.clone());
        return Err((p, "must be more than 0s".into()));
    }
    let timeout = duration(field!(s, t, at, "health", timeout), Duration::from_secs(5))?;
    let max_error_rate = match field!(s, t, at, "health", max_error_rate) {
        None => 0.01,
        Some((&r, p)) => {
            if !(0.0..=1.0).contains(&r) {
                return Err((
                    p,
                    format!("a rate between 0 and 1, e.g. 0.05 for 5% (got {r})"),
                ));
            }
            r
        }
    };
    let max_p95 = match field!(s, t, at, "health", max_p95) {
        None => None,
        Some((text, p)) => Some(parse_duration(text).map_err(|m| (p, m))?),
    };
    let count = |found: Option<(&i64, KeyPath)>, min: i64| -> Result<Option<u32>, Invalid> {
        match found {
            None => Ok(None),
            Some((&n, _)) if n >= min && n <= 1_000_000 => Ok(Some(n as u32)),
            Some((&n, p)) => Err((p, format!("must be between {min} and 1000000 (got {n})"))),
        }
    };
    let max_consecutive_failures =
        count(field!(s, t, at, "health", max_consecutive_failures), 1)?.unwrap_or(3);
    let min_samples = count(field!(s, t, at, "health", min_samples), 1)?.unwrap_or(5);
    let failure_budget = count(field!(s, t, at, "health", failure_budget), 0)?;
    let on_inconclusive = on_inconclusive(field!(s, t, at, "health", on_inconclusive))?;
    let possible = (window.as_millis() / interval.as_millis().max(1)) as u32 + 1;
    if min_samples > possible {
        let p = field!(s, t, at, "health", min_samples)
            .map(|(_, p)| p)
            .unwrap_or(section);
        return Err((
            p,
            format!(
                "min_samples = {min_samples} can never be reached: a window of {} at an interval of {} takes at most {possible} samples",
                humantime::format_duration(window),
                humantime::format_duration(interval)
            ),
        ));
    }
    Ok(Some(Health {
        check,
        window,
        interval,
        timeout,
        max_error_rate,
        max_p95,
        max_consecutive_failures,
        min_samples,
        failure_budget,
        on_inconclusive,
    }))
}

/// `on_inconclusive = "pause" | "fail"` (default pause), for health and access-log gates.
pub(super) fn on_inconclusive(
    found: Option<(&String, KeyPath)>,
) -> Result<OnInconclusive, Invalid> {
    match found {
        None => Ok(OnInconclusive::Pause),
        Some((v, _)) if v == "pause" => Ok(OnInconclusive::Pause),
        Some((v, _)) if v == "fail" => Ok(OnInconclusive::Fail),
        Some((v, p)) => Err((
            p,
            format!(
                "unknown choice `{}` (use \"pause\" or \"fail\")",
                v.escape_debug()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, ConfigError};

    fn error(extra: &str) -> ConfigError {
        let text = format!(
            "app = \"shop\"\ndeploy_to = \"/srv/shop\"\n{extra}\n[stages.prod]\nhosts = [{{ address = \"a1\" }}, {{ address = \"a2\" }}]\n"
        );
        Config::parse(&text, Path::new("deploy.toml"), Path::new("."))
            .expect_err("should be refused")
    }

    #[test]
    fn mistakes_name_the_key_and_line() {
        let e = error("[health]\nwindow = \"10s\"\n");
        assert_eq!(e.key, "health");
        assert!(e.message.contains("missing a check"), "{e}");

        let e = error("[health]\nhttp = { port = 70000 }\n");
        assert_eq!(e.key, "health.http.port");
        assert_eq!(e.line, Some(4));

        let e = error("[health]\ncommand = \"true\"\nmax_error_rate = 5.0\n");
        assert_eq!(e.key, "health.max_error_rate");
        assert_eq!(e.line, Some(5));

        let e = error(
            "[health]\ncommand = \"true\"\nwindow = \"2s\"\ninterval = \"1s\"\nmin_samples = 10\n",
        );
        assert_eq!(e.key, "health.min_samples");
        assert!(e.message.contains("can never be reached"), "{e}");

        let e = error("[health]\ncommand = \"true\"\nhttp = { port = 80 }\n");
        assert!(e.message.contains("not both"), "{e}");
    }
}
