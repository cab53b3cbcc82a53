//! `[gate]`: judging each `[traffic]` step by the requests users actually made, read
//! from the proxy's access log or asked of Prometheus (the new slot against the stable
//! one, in the same window). Validated like every other section: errors name the key.

use std::time::Duration;

use serde::Deserialize;
use url::Url;

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
    pub source: Option<String>,
    pub prometheus: Option<String>,
    pub queries: Option<QueriesLayer>,
    pub access_log: Option<String>,
}

/// `[gate.queries]`: PromQL per number, each replacing a default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueriesLayer {
    pub requests: Option<String>,
    pub errors_5xx: Option<String>,
    pub errors_4xx: Option<String>,
    pub p50: Option<String>,
    pub p95: Option<String>,
    pub p99: Option<String>,
}

/// Where a step's numbers come from.
#[derive(Debug, Clone, PartialEq)]
pub enum GateSource {
    /// The include's access log on every host (`[traffic] access_log`), read over ssh.
    AccessLog,
    /// Prometheus's HTTP API (`/api/v1/query`), asked from the deployer.
    Prometheus { url: Url, queries: Box<Queries> },
}

/// The PromQL of each number, `{slot}`, `{window}` and `{app}` still in them. Counts
/// answer a number of requests, latencies seconds; an empty query is not asked (its
/// number shows as `-`). `requests`, `errors_5xx` and `p95` are never empty.
#[derive(Debug, Clone, PartialEq)]
pub struct Queries {
    pub requests: String,
    pub errors_5xx: String,
    pub errors_4xx: String,
    pub p50: String,
    pub p95: String,
    pub p99: String,
}

/// The defaults: a counter `http_requests_total` with a `code` label and a histogram
/// `http_request_duration_seconds`, both carrying a `slot` label (what the common
/// Prometheus client libraries' HTTP middlewares expose, plus the slot).
pub const DEFAULT_REQUESTS: &str = r#"sum(increase(http_requests_total{slot="{slot}"}[{window}]))"#;
pub const DEFAULT_ERRORS_5XX: &str =
    r#"sum(increase(http_requests_total{slot="{slot}",code=~"5.."}[{window}]))"#;
pub const DEFAULT_ERRORS_4XX: &str =
    r#"sum(increase(http_requests_total{slot="{slot}",code=~"4.."}[{window}]))"#;

/// The default latency query for quantile `q` (0.5, 0.95, 0.99).
pub fn default_quantile(q: &str) -> String {
    format!(
        r#"histogram_quantile({q}, sum by (le) (increase(http_request_duration_seconds_bucket{{slot="{{slot}}"}}[{{window}}])))"#
    )
}

impl Default for Queries {
    fn default() -> Queries {
        Queries {
            requests: DEFAULT_REQUESTS.into(),
            errors_5xx: DEFAULT_ERRORS_5XX.into(),
            errors_4xx: DEFAULT_ERRORS_4XX.into(),
            p50: default_quantile("0.5"),
            p95: default_quantile("0.95"),
            p99: default_quantile("0.99"),
        }
    }
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
    /// The access log (default) or Prometheus.
    pub source: GateSource,
    /// Without `[traffic]`: each host's access log (slipway's format, `slot=-`), the
    /// switched hosts judged against those not switched yet.
    pub hosts_log: Option<String>,
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
    let hosts_log = match (field!(s, t, at, "gate", access_log), has_traffic) {
        (None, false) => {
            return Err((
                section,
                "[gate] without [traffic] reads each host's own access log: set access_log = \"/var/log/nginx/shop-gate.log\" (see \"Host canaries judged by the access log\"), add [traffic], or remove [gate]".into(),
            ));
        }
        (Some((_, p)), true) => {
            return Err((
                p,
                "with [traffic] the gate reads [traffic] access_log: remove this one".into(),
            ));
        }
        (Some((path, p)), false) => {
            if !path.starts_with('/') || path.chars().any(char::is_control) || path.len() > 4096 {
                return Err((
                    p,
                    format!(
                        "`{}` is not an absolute path on the hosts (e.g. \"/var/log/nginx/shop-gate.log\")",
                        path.escape_debug()
                    ),
                ));
            }
            Some(path.clone())
        }
        (None, true) => None,
    };
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
    let source = resolve_source(stage, top, at, &section)?;
    if hosts_log.is_some() && source != GateSource::AccessLog {
        return Err((
            section.key("source"),
            "without [traffic] the gate reads each host's access_log: Prometheus judges [traffic] slots only".into(),
        ));
    }
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
        source,
        hosts_log,
    }))
}

fn resolve_source(
    stage: &Layer,
    top: &Layer,
    at: &KeyPath,
    section: &KeyPath,
) -> Result<GateSource, Invalid> {
    let (s, t) = (&stage.gate, &top.gate);
    let url = field!(s, t, at, "gate", prometheus);
    let queries = field!(s, t, at, "gate", queries);
    match field!(s, t, at, "gate", source) {
        None => {}
        Some((v, _)) if v == "access_log" => {}
        Some((v, _)) if v == "prometheus" => {
            let Some((text, p)) = url else {
                return Err((
                    section.key("prometheus"),
                    "source = \"prometheus\" needs the server's address: prometheus = \"http://127.0.0.1:9090\"".into(),
                ));
            };
            let url = prometheus_url(text).map_err(|m| (p, m))?;
            let queries = Box::new(resolve_queries(queries)?);
            return Ok(GateSource::Prometheus { url, queries });
        }
        Some((v, p)) => {
            return Err((
                p,
                format!(
                    "unknown source `{}` (use \"access_log\" or \"prometheus\")",
                    v.escape_debug()
                ),
            ));
        }
    }
    // The access log: Prometheus's keys would be silently ignored.
    if let Some((_, p)) = url {
        return Err((
            p,
            "is read only with source = \"prometheus\": add that, or remove it".into(),
        ));
    }
    if let Some((_, p)) = queries {
        return Err((
            p,
            "are asked only with source = \"prometheus\": add that, or remove them".into(),
        ));
    }
    Ok(GateSource::AccessLog)
}

/// Prometheus's base address: http(s), a host, no query or fragment (the API's path is
/// appended to it, so a server under a path prefix works).
fn prometheus_url(text: &str) -> Result<Url, String> {
    let mut url = Url::parse(text.trim()).map_err(|e| {
        format!(
            "`{}` is not a URL ({e}); write it like \"http://127.0.0.1:9090\"",
            text.escape_debug()
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "`{}` is not an http:// or https:// address of a server",
            text.escape_debug()
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("the server's base address takes no `?query` or `#fragment`".into());
    }
    // A password in the URL (basic auth) is masked in everything slipway shows.
    if let Some(password) = url.password() {
        crate::redact::register(password);
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

fn resolve_queries(found: Option<(&QueriesLayer, KeyPath)>) -> Result<Queries, Invalid> {
    let mut q = Queries::default();
    let Some((layer, at)) = found else {
        return Ok(q);
    };
    let slots = [
        (&layer.requests, &mut q.requests, "requests", true),
        (&layer.errors_5xx, &mut q.errors_5xx, "errors_5xx", true),
        (&layer.errors_4xx, &mut q.errors_4xx, "errors_4xx", false),
        (&layer.p50, &mut q.p50, "p50", false),
        (&layer.p95, &mut q.p95, "p95", true),
        (&layer.p99, &mut q.p99, "p99", false),
    ];
    for (given, into, key, needed) in slots {
        let Some(text) = given else { continue };
        let p = at.key(key);
        let text = text.trim();
        if text.is_empty() {
            if needed {
                return Err((
                    p,
                    "the gate needs this number: write its PromQL, or leave the key out for the default".into(),
                ));
            }
            into.clear();
            continue;
        }
        if text.contains('\0') || text.len() > 8192 {
            return Err((
                p,
                "a PromQL query of at most 8192 bytes, without NUL".into(),
            ));
        }
        if !text.contains("{slot}") {
            return Err((
                p,
                "must select one slot with `{slot}` (e.g. `slot=\"{slot}\"`): without it both slots get the same number".into(),
            ));
        }
        *into = text.to_string();
    }
    Ok(q)
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
        assert!(e.message.contains("set access_log"), "{e}");
        // Host canaries: each host's own log.
        let c = parse(
            "[rollout]\nstrategy = \"canary\"\n[gate]\naccess_log = \"/var/log/nginx/g.log\"\n",
        )
        .unwrap();
        let g = c.stage("prod").unwrap().gate.clone().expect("a gate");
        assert_eq!(g.hosts_log.as_deref(), Some("/var/log/nginx/g.log"));
        for (bad, key) in [
            ("access_log = \"g.log\"", "gate.access_log"),
            (
                "access_log = \"/g.log\"\nsource = \"prometheus\"\nprometheus = \"http://p:1\"",
                "gate.source",
            ),
        ] {
            let e = parse(&format!("[gate]\n{bad}\n")).unwrap_err();
            assert_eq!(e.key, key, "{bad}: {e}");
        }
        let e = parse(&format!(
            "[rollout]\nstrategy = \"canary\"\n{TRAFFIC}[gate]\naccess_log = \"/g.log\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "gate.access_log", "{e}");

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

    #[test]
    fn prometheus_as_the_source() {
        use super::{GateSource, Queries};
        let c = parse(&format!(
            "[rollout]\nstrategy = \"canary\"\n{TRAFFIC}[gate]\nsource = \"prometheus\"\nprometheus = \"http://127.0.0.1:9090\"\n[gate.queries]\np95 = 'histogram_quantile(0.95, sum by (le) (rate(lat_bucket{{app=\"{{app}}\",slot=\"{{slot}}\"}}[{{window}}])))'\np99 = \"\"\n"
        ))
        .unwrap();
        let g = c.stage("prod").unwrap().gate.clone().expect("a gate");
        let GateSource::Prometheus { url, queries } = &g.source else {
            panic!("{:?}", g.source)
        };
        assert_eq!(url.as_str(), "http://127.0.0.1:9090/");
        assert_eq!(queries.requests, Queries::default().requests);
        assert!(
            queries
                .p95
                .starts_with("histogram_quantile(0.95, sum by (le) (rate(lat_bucket{app=\"{app}\"")
        );
        assert_eq!(queries.p99, "");
        // The access log stays the default.
        let c = parse(&format!(
            "[rollout]\nstrategy = \"canary\"\n{TRAFFIC}[gate]\n"
        ))
        .unwrap();
        assert_eq!(
            c.stage("prod").unwrap().gate.as_ref().unwrap().source,
            GateSource::AccessLog
        );

        for (bad, key, needle) in [
            ("source = \"graphite\"", "gate.source", "unknown source"),
            (
                "source = \"prometheus\"",
                "gate.prometheus",
                "needs the server's address",
            ),
            (
                "source = \"prometheus\"\nprometheus = \"127.0.0.1:9090\"",
                "gate.prometheus",
                "http://",
            ),
            (
                "source = \"prometheus\"\nprometheus = \"ftp://p:9090\"",
                "gate.prometheus",
                "http://",
            ),
            (
                "source = \"prometheus\"\nprometheus = \"http://p:9090/?x=1\"",
                "gate.prometheus",
                "no `?query`",
            ),
            (
                "prometheus = \"http://p:9090\"",
                "gate.prometheus",
                "only with source = \"prometheus\"",
            ),
            (
                "[gate.queries]\nrequests = 'sum(x{slot=\"{slot}\"})'",
                "gate.queries",
                "only with source",
            ),
            (
                "source = \"prometheus\"\nprometheus = \"http://p:9090\"\n[gate.queries]\nrequests = 'sum(x)'",
                "gate.queries.requests",
                "{slot}",
            ),
            (
                "source = \"prometheus\"\nprometheus = \"http://p:9090\"\n[gate.queries]\np95 = ''",
                "gate.queries.p95",
                "needs this number",
            ),
            (
                "source = \"prometheus\"\nprometheus = \"http://p:9090\"\n[gate.queries]\np90 = 'x'",
                "gate.queries",
                "p90",
            ),
        ] {
            let e = parse(&format!(
                "[rollout]\nstrategy = \"canary\"\n{TRAFFIC}[gate]\n{bad}\n"
            ))
            .unwrap_err();
            assert!(e.key.starts_with(key), "{bad}: {e}");
            assert!(e.to_string().contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn the_readme_shows_the_default_queries() {
        let readme = include_str!("../../README.md");
        let q = super::Queries::default();
        for query in [
            &q.requests,
            &q.errors_5xx,
            &q.errors_4xx,
            &q.p50,
            &q.p95,
            &q.p99,
        ] {
            assert!(
                readme.contains(query.as_str()),
                "README lacks the default query {query}"
            );
        }
    }
}
