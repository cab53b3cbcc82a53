//! `[rollout]`: how the switch moves across a stage's hosts (all at once, rolling,
//! canary, blue-green) and the hooks around it. Validated like every other section:
//! errors name the key (and the loader adds its line). What a host must show before the
//! rollout goes on is `[health]` (`health.rs`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::field::{Invalid, commands, field, parse_duration};
use super::{Host, KeyPath, Layer};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutLayer {
    pub strategy: Option<String>,
    pub batch: Option<CountOrText>,
    pub steps: Option<Vec<f64>>,
    pub pause: Option<String>,
    pub max_parallel: Option<i64>,
    pub pre_rollout: Option<Vec<String>>,
    pub confirm_promotion: Option<Vec<String>>,
    pub post_rollout: Option<Vec<String>>,
    pub on_rollback: Option<Vec<String>>,
    pub traffic: Option<Vec<String>>,
    pub event: Option<String>,
    pub event_ca: Option<String>,
    pub split: Option<f64>,
    pub duration: Option<String>,
    pub winner: Option<String>,
}

/// `batch = 2` or `batch = "25%"`.
#[derive(Debug, Clone)]
pub enum CountOrText {
    Count(i64),
    Text(String),
}

/// By hand rather than `#[serde(untagged)]`: the same errors as every other key ("invalid
/// type: ..., expected a host count or a percentage"), and the key list of
/// `config::keys` (which feeds placeholder values) can read past it.
impl<'de> Deserialize<'de> for CountOrText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<CountOrText, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = CountOrText;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a host count (2) or a percentage (\"25%\")")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<CountOrText, E> {
                Ok(CountOrText::Count(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<CountOrText, E> {
                Ok(CountOrText::Count(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CountOrText, E> {
                Ok(CountOrText::Text(v.to_string()))
            }
            // TOML has no unit value; only the key recorder of `config::keys` sends one.
            fn visit_unit<E: serde::de::Error>(self) -> Result<CountOrText, E> {
                Ok(CountOrText::Text(String::new()))
            }
        }
        d.deserialize_any(V)
    }
}

/// How the hosts of a stage are switched.
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    /// Every host at once.
    AllAtOnce,
    /// Fixed-size batches, each gated before the next.
    Rolling { batch: Batch },
    /// Growing steps (percent of the hosts, the last one 100), each gated, with a pause
    /// between steps.
    Canary { steps: Vec<f64> },
    /// Two pools; the idle one gets the release.
    BlueGreen,
    /// `[traffic]` users: two releases on fixed cohorts for a set time, compared.
    Ab(AbTest),
}

/// `strategy = "ab"`: the new release gets `split` percent of users (sticky, the
/// `[traffic]` split) for `duration`, both cohorts are compared on the access log
/// (`traffic::ab`), and the winner becomes stable by hand or by rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AbTest {
    /// Percent of users on the new release during the test (0 < split < 100).
    pub split: f64,
    pub duration: Duration,
    pub winner: WinnerRule,
}

/// Who makes the A/B test's winner stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WinnerRule {
    /// The rollout pauses with the result; `slipway rollout promote` acts on it.
    Manual,
    /// The deploy acts at once: the new release is promoted only if it won beyond noise.
    Auto,
}

impl Strategy {
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::AllAtOnce => "all-at-once",
            Strategy::Rolling { .. } => "rolling",
            Strategy::Canary { .. } => "canary",
            Strategy::BlueGreen => "blue-green",
            Strategy::Ab(_) => "ab",
        }
    }

    /// With `[traffic]`: the shares of users on the new release, step by step (the last
    /// one 100: everyone, then promotion).
    pub fn user_steps(&self) -> Vec<f64> {
        match self {
            Strategy::Canary { steps } => steps.clone(),
            Strategy::Ab(test) => vec![test.split, 100.0],
            _ => vec![100.0],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Batch {
    Count(usize),
    Percent(f64),
}

/// What happens between two steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// Wait this long (zero: go on at once).
    For(Duration),
    /// Stop and wait for `slipway rollout promote` (or abort).
    Manual,
}

/// The resolved `[rollout]` section (all-at-once when there is none).
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    pub strategy: Strategy,
    pub pause: Pause,
    /// At most this many hosts switched and restarted at the same time.
    pub max_parallel: usize,
    /// Commands run on the deployer (in the config's directory) around the rollout.
    pub pre_rollout: Vec<String>,
    pub confirm_promotion: Vec<String>,
    pub post_rollout: Vec<String>,
    pub on_rollback: Vec<String>,
    /// Blue-green: moves traffic to the pool in `SLIPWAY_POOL` (run on the deployer).
    pub traffic: Vec<String>,
    /// `http://` or `https://` URL that gets a JSON POST on every transition.
    pub event: Option<String>,
    /// A PEM file of CAs trusted for the webhook besides the system's (checked on load).
    pub event_ca: Option<PathBuf>,
}

impl Default for Rollout {
    fn default() -> Rollout {
        Rollout {
            strategy: Strategy::AllAtOnce,
            pause: Pause::For(Duration::ZERO),
            max_parallel: DEFAULT_MAX_PARALLEL,
            pre_rollout: vec![],
            confirm_promotion: vec![],
            post_rollout: vec![],
            on_rollback: vec![],
            traffic: vec![],
            event: None,
            event_ca: None,
        }
    }
}

pub const DEFAULT_MAX_PARALLEL: usize = 16;

pub(super) fn resolve_rollout(
    stage: &Layer,
    top: &Layer,
    at: &KeyPath,
    base: &Path,
) -> Result<Rollout, Invalid> {
    let (s, t) = (&stage.rollout, &top.rollout);
    let mut rollout = Rollout::default();
    let strategy = field!(s, t, at, "rollout", strategy);
    let batch = field!(s, t, at, "rollout", batch);
    let steps = field!(s, t, at, "rollout", steps);
    rollout.strategy = match strategy {
        None => Strategy::AllAtOnce,
        Some((name, p)) => match name.as_str() {
            "all-at-once" => Strategy::AllAtOnce,
            "rolling" => Strategy::Rolling {
                batch: match &batch {
                    None => Batch::Count(1),
                    Some((b, bp)) => parse_batch(b, bp)?,
                },
            },
            "canary" => Strategy::Canary {
                steps: match &steps {
                    None => vec![10.0, 50.0, 100.0],
                    Some((list, sp)) => check_steps(list, sp)?,
                },
            },
            "blue-green" => Strategy::BlueGreen,
            "ab" => Strategy::Ab(resolve_ab(s, t, at)?),
            other => {
                return Err((
                    p,
                    format!(
                        "unknown strategy `{}` (use \"all-at-once\", \"rolling\", \"canary\", \"blue-green\" or \"ab\")",
                        other.escape_debug()
                    ),
                ));
            }
        },
    };
    let name = rollout.strategy.name();
    if let Some((_, bp)) = &batch
        && name != "rolling"
    {
        return Err((
            bp.clone(),
            format!("batch applies to strategy = \"rolling\" (this stage's strategy is {name})"),
        ));
    }
    if let Some((_, sp)) = &steps
        && name != "canary"
    {
        return Err((
            sp.clone(),
            format!("steps apply to strategy = \"canary\" (this stage's strategy is {name})"),
        ));
    }
    if name != "ab" {
        let keys = [
            field!(s, t, at, "rollout", split).map(|(_, p)| p),
            field!(s, t, at, "rollout", duration).map(|(_, p)| p),
            field!(s, t, at, "rollout", winner).map(|(_, p)| p),
        ];
        if let Some(p) = keys.into_iter().flatten().next() {
            return Err((
                p,
                format!(
                    "split, duration and winner apply to strategy = \"ab\" (this stage's strategy is {name})"
                ),
            ));
        }
    }
    if let Some((text, p)) = field!(s, t, at, "rollout", pause) {
        if name == "ab" {
            return Err((
                p,
                "pause applies between canary steps; an A/B test waits for `slipway rollout promote` with winner = \"manual\"".into(),
            ));
        }
        rollout.pause = if text == "manual" {
            Pause::Manual
        } else {
            Pause::For(parse_duration(text).map_err(|m| {
                (
                    p.clone(),
                    format!("{m}, or \"manual\" to wait for `slipway rollout promote`"),
                )
            })?)
        };
    }
    if let Some((&n, p)) = field!(s, t, at, "rollout", max_parallel) {
        if !(1..=1024).contains(&n) {
            return Err((p, format!("must be between 1 and 1024 (got {n})")));
        }
        rollout.max_parallel = n as usize;
    }
    rollout.pre_rollout = commands(field!(s, t, at, "rollout", pre_rollout))?;
    rollout.confirm_promotion = commands(field!(s, t, at, "rollout", confirm_promotion))?;
    rollout.post_rollout = commands(field!(s, t, at, "rollout", post_rollout))?;
    rollout.on_rollback = commands(field!(s, t, at, "rollout", on_rollback))?;
    let traffic = field!(s, t, at, "rollout", traffic);
    let traffic_at = traffic.as_ref().map(|(_, p)| p.clone());
    rollout.traffic = commands(traffic)?;
    match (&rollout.strategy, traffic_at) {
        (Strategy::BlueGreen, None) => {
            return Err((
                strategy_at(s, t, at),
                "strategy = \"blue-green\" needs a traffic hook: traffic = [\"bin/route-to $SLIPWAY_POOL\"] (it moves traffic to the pool named in SLIPWAY_POOL)".into(),
            ));
        }
        (Strategy::BlueGreen, Some(_)) => {}
        (other, Some(p)) => {
            return Err((
                p,
                format!(
                    "traffic applies to strategy = \"blue-green\" (this stage's strategy is {})",
                    other.name()
                ),
            ));
        }
        _ => {}
    }
    if let Some((url, p)) = field!(s, t, at, "rollout", event) {
        rollout.event = Some(check_event_url(url).map_err(|m| (p, m))?);
        // It may carry a token: masked in everything slipway shows (`slipway config`
        // included), from the moment the file is read.
        crate::redact::register(url);
    }
    if let Some((file, p)) = field!(s, t, at, "rollout", event_ca) {
        if rollout.event.is_none() {
            return Err((
                p,
                "event_ca is the CA for the event webhook: set event = \"https://...\" too, or remove event_ca".into(),
            ));
        }
        rollout.event_ca = Some(check_event_ca(file, base).map_err(|m| (p, m))?);
    }
    Ok(rollout)
}

/// The keys of `strategy = "ab"`: `split` (default 50), `duration` (default 60s),
/// `winner` (default manual).
fn resolve_ab(
    s: &Option<RolloutLayer>,
    t: &Option<RolloutLayer>,
    at: &KeyPath,
) -> Result<AbTest, Invalid> {
    let split = match field!(s, t, at, "rollout", split) {
        None => 50.0,
        Some((&v, _)) if v > 0.0 && v < 100.0 => v,
        Some((&v, p)) => {
            return Err((
                p,
                format!(
                    "split is the percentage of users on the new release during the test, above 0 and below 100 (got {v})"
                ),
            ));
        }
    };
    let duration = match field!(s, t, at, "rollout", duration) {
        None => Duration::from_secs(60),
        Some((text, p)) => {
            let d = parse_duration(text).map_err(|m| (p.clone(), m))?;
            if d.is_zero() {
                return Err((
                    p,
                    "an A/B test needs a duration above 0s, e.g. \"60s\"".into(),
                ));
            }
            d
        }
    };
    let winner = match field!(s, t, at, "rollout", winner) {
        None => WinnerRule::Manual,
        Some((v, _)) if v == "manual" => WinnerRule::Manual,
        Some((v, _)) if v == "auto" => WinnerRule::Auto,
        Some((v, p)) => {
            return Err((
                p,
                format!(
                    "unknown winner rule `{}`: \"manual\" (pause with the result for `slipway rollout promote`) or \"auto\" (promote the new release only if it wins beyond noise)",
                    v.escape_debug()
                ),
            ));
        }
    };
    Ok(AbTest {
        split,
        duration,
        winner,
    })
}

pub(super) fn strategy_at(
    s: &Option<RolloutLayer>,
    t: &Option<RolloutLayer>,
    at: &KeyPath,
) -> KeyPath {
    field!(s, t, at, "rollout", strategy)
        .map(|(_, p)| p)
        .unwrap_or_else(|| at.key("rollout"))
}

/// Blue-green needs every host in a pool, and both pools non-empty.
pub(super) fn check_pools(rollout: &Rollout, hosts: &[Host], at: &KeyPath) -> Result<(), Invalid> {
    if rollout.strategy != Strategy::BlueGreen {
        return Ok(());
    }
    if let Some((i, h)) = hosts.iter().enumerate().find(|(_, h)| h.pool.is_none()) {
        return Err((
            at.key("hosts").index(i),
            format!(
                "host `{}` has no pool: with strategy = \"blue-green\" every host needs pool = \"blue\" or \"green\"",
                h.name
            ),
        ));
    }
    for pool in ["blue", "green"] {
        if !hosts.iter().any(|h| h.pool.as_deref() == Some(pool)) {
            return Err((
                at.key("hosts"),
                format!("blue-green needs hosts in both pools: no host has pool = \"{pool}\""),
            ));
        }
    }
    Ok(())
}

fn parse_batch(value: &CountOrText, at: &KeyPath) -> Result<Batch, Invalid> {
    match value {
        CountOrText::Count(n) if *n >= 1 => Ok(Batch::Count(*n as usize)),
        CountOrText::Count(n) => Err((
            at.clone(),
            format!("a batch needs at least 1 host (got {n})"),
        )),
        CountOrText::Text(text) => {
            let pct = text
                .trim()
                .strip_suffix('%')
                .and_then(|n| n.trim().parse::<f64>().ok())
                .filter(|p| *p > 0.0 && *p <= 100.0);
            match pct {
                Some(p) => Ok(Batch::Percent(p)),
                None => Err((
                    at.clone(),
                    format!(
                        "`{}` is not a batch size: write a host count (batch = 2) or a percentage of the hosts (batch = \"25%\")",
                        text.escape_debug()
                    ),
                )),
            }
        }
    }
}

fn check_steps(steps: &[f64], at: &KeyPath) -> Result<Vec<f64>, Invalid> {
    if steps.is_empty() {
        return Err((
            at.clone(),
            "give at least one step, e.g. steps = [10, 50, 100]".into(),
        ));
    }
    let mut last = 0.0;
    for (i, &p) in steps.iter().enumerate() {
        if !(p > 0.0 && p <= 100.0) {
            return Err((
                at.index(i),
                format!("a step is a percentage of the hosts, above 0 and at most 100 (got {p})"),
            ));
        }
        if p <= last {
            return Err((
                at.index(i),
                format!("steps must grow: {p} does not come after {last}"),
            ));
        }
        last = p;
    }
    if last != 100.0 {
        return Err((
            at.index(steps.len() - 1),
            format!("the last step must be 100 (every host), got {last}: add 100 at the end"),
        ));
    }
    Ok(steps.to_vec())
}

/// Event webhooks are `http://` or `https://` POSTs. The URL may carry a token, so
/// errors show it masked.
fn check_event_url(url: &str) -> Result<String, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!(
            "`{}`: the event webhook must be an http:// or https:// URL",
            crate::redact::url(&parsed)
        ));
    }
    Ok(url.to_string())
}

/// `event_ca`, relative to the config file's directory: a readable PEM file of
/// certificates usable as trust anchors.
fn check_event_ca(file: &str, base: &Path) -> Result<PathBuf, String> {
    if file.trim().is_empty() || file.contains('\0') {
        return Err("must be the path of a PEM file of CA certificates".into());
    }
    let path = base.join(super::field::expand_home(file));
    crate::rollout::http::load_ca(&path).map_err(|e| {
        format!(
            "{e} (event_ca must name a PEM file of the CA that signed the webhook's certificate)"
        )
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Check, Config, ConfigError, OnInconclusive};

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        let text = format!(
            "app = \"shop\"\ndeploy_to = \"/srv/shop\"\n{extra}\n[stages.prod]\nhosts = [{{ address = \"a1\" }}, {{ address = \"a2\" }}]\n"
        );
        Config::parse(&text, Path::new("deploy.toml"), Path::new("."))
    }

    fn error(extra: &str) -> ConfigError {
        parse(extra).expect_err("should be refused")
    }

    #[test]
    fn defaults_are_all_at_once_without_a_gate() {
        let c = parse("").unwrap();
        let s = c.stage("prod").unwrap();
        assert_eq!(s.rollout, Rollout::default());
        assert_eq!(s.health, None);
    }

    #[test]
    fn a_full_canary_with_an_http_gate() {
        let c = parse(
            "[rollout]\nstrategy = \"canary\"\nsteps = [10, 50, 100]\npause = \"manual\"\nmax_parallel = 4\npre_rollout = [\"echo hi\"]\nevent = \"http://127.0.0.1:9000/hook\"\n[health]\nhttp = { port = 8080, path = \"/healthz\", expect = 204 }\nwindow = \"30s\"\ninterval = \"1s\"\nmax_error_rate = 0.05\nmax_p95 = \"300ms\"\nmin_samples = 10\nfailure_budget = 2\non_inconclusive = \"fail\"\n",
        )
        .unwrap();
        let s = c.stage("prod").unwrap();
        assert_eq!(
            s.rollout.strategy,
            Strategy::Canary {
                steps: vec![10.0, 50.0, 100.0]
            }
        );
        assert_eq!(s.rollout.pause, Pause::Manual);
        assert_eq!(s.rollout.max_parallel, 4);
        let h = s.health.as_ref().unwrap();
        assert_eq!(
            h.check,
            Check::Http {
                address: None,
                port: 8080,
                path: "/healthz".into(),
                expect: 204
            }
        );
        assert_eq!(h.max_p95, Some(Duration::from_millis(300)));
        assert_eq!(h.failure_budget, Some(2));
        assert_eq!(h.on_inconclusive, OnInconclusive::Fail);
    }

    #[test]
    fn rolling_batches_by_count_or_percent() {
        let c = parse("[rollout]\nstrategy = \"rolling\"\nbatch = \"25%\"\n").unwrap();
        assert_eq!(
            c.stage("prod").unwrap().rollout.strategy,
            Strategy::Rolling {
                batch: Batch::Percent(25.0)
            }
        );
        let c = parse("[rollout]\nstrategy = \"rolling\"\nbatch = 2\n").unwrap();
        assert_eq!(
            c.stage("prod").unwrap().rollout.strategy,
            Strategy::Rolling {
                batch: Batch::Count(2)
            }
        );
    }

    #[test]
    fn mistakes_name_the_key_and_line() {
        let e = error("[rollout]\nstrategy = \"yolo\"\n");
        assert_eq!(e.key, "rollout.strategy");
        assert_eq!(e.line, Some(4));
        assert!(e.message.contains("unknown strategy"), "{e}");

        let e = error("[rollout]\nstrategy = \"canary\"\nsteps = [10, 50, 90]\n");
        assert_eq!(e.key, "rollout.steps[2]");
        assert!(e.message.contains("last step must be 100"), "{e}");

        let e = error("[rollout]\nstrategy = \"canary\"\nsteps = [50, 10, 100]\n");
        assert_eq!(e.key, "rollout.steps[1]");

        let e = error("[rollout]\nstrategy = \"rolling\"\nbatch = \"lots\"\n");
        assert_eq!(e.key, "rollout.batch");
        assert_eq!(e.line, Some(5));

        let e = error("[rollout]\nbatch = 2\n");
        assert!(e.message.contains("strategy = \"rolling\""), "{e}");

        let e = error("[rollout]\npause = \"soon\"\n");
        assert_eq!(e.key, "rollout.pause");
        assert!(e.message.contains("manual"), "{e}");

        let e = error("[rollout]\nmax_parallel = 0\n");
        assert_eq!(e.key, "rollout.max_parallel");

        let e = error("[rollout]\nevent = \"ftp://chat.example.com/x?token=s3cret\"\n");
        assert_eq!(e.key, "rollout.event");
        assert!(!e.message.contains("s3cret"), "{e}");

        let e = error("[rollout]\nevent_ca = \"ca.pem\"\n");
        assert_eq!(e.key, "rollout.event_ca");
        assert!(e.message.contains("set event"), "{e}");

        let e = error(
            "[rollout]\nevent = \"https://hooks.example.com/x\"\nevent_ca = \"no-such-ca.pem\"\n",
        );
        assert_eq!(e.key, "rollout.event_ca");
        assert!(e.message.contains("no-such-ca.pem"), "{e}");

        // serde: unknown keys are named too.
        let e = error("[rollout]\nstrategy = \"canary\"\nstep = [10]\n");
        assert!(e.message.contains("unknown field `step`"), "{e}");
    }

    #[test]
    fn blue_green_needs_pools_and_a_traffic_hook() {
        let text = |rollout: &str, hosts: &str| {
            format!(
                "app = \"shop\"\ndeploy_to = \"/srv/shop\"\n[rollout]\n{rollout}\n[stages.prod]\nhosts = [{hosts}]\n"
            )
        };
        let parse = |t: String| Config::parse(&t, Path::new("deploy.toml"), Path::new("."));
        let ok = parse(text(
            "strategy = \"blue-green\"\ntraffic = [\"lb $SLIPWAY_POOL\"]",
            "{ address = \"a1\", pool = \"blue\" }, { address = \"a2\", pool = \"green\" }",
        ))
        .unwrap();
        assert_eq!(
            ok.stage("prod").unwrap().rollout.strategy,
            Strategy::BlueGreen
        );
        let e = parse(text(
            "strategy = \"blue-green\"",
            "{ address = \"a1\", pool = \"blue\" }, { address = \"a2\", pool = \"green\" }",
        ))
        .unwrap_err();
        assert_eq!(e.key, "rollout.strategy");
        assert!(e.message.contains("traffic hook"), "{e}");
        let e = parse(text(
            "strategy = \"blue-green\"\ntraffic = [\"x\"]",
            "{ address = \"a1\", pool = \"blue\" }, { address = \"a2\" }",
        ))
        .unwrap_err();
        assert_eq!(e.key, "stages.prod.hosts[1]");
        let e = parse(text(
            "strategy = \"blue-green\"\ntraffic = [\"x\"]",
            "{ address = \"a1\", pool = \"blue\" }, { address = \"a2\", pool = \"blue\" }",
        ))
        .unwrap_err();
        assert!(e.message.contains("both pools"), "{e}");
        let e = parse(text(
            "strategy = \"canary\"",
            "{ address = \"a1\", pool = \"purple\" }",
        ))
        .unwrap_err();
        assert_eq!(e.key, "stages.prod.hosts[0].pool");
        let e = parse(text("traffic = [\"x\"]", "{ address = \"a1\" }")).unwrap_err();
        assert!(e.message.contains("blue-green"), "{e}");
    }

    #[test]
    fn an_ab_test_needs_traffic_and_a_gate_and_checks_its_keys() {
        let traffic = "[traffic]\ninclude = \"/etc/nginx/conf.d/shop.conf\"\nslots = { a = 18001, b = 18002 }\nstart = [\"bin/start\"]\n[health]\nhttp = { port = 18001, path = \"/healthz\" }\n";
        let c = parse(&format!(
            "[rollout]\nstrategy = \"ab\"\nsplit = 30\nduration = \"90s\"\nwinner = \"auto\"\n{traffic}[gate]\n"
        ))
        .unwrap();
        assert_eq!(
            c.stage("prod").unwrap().rollout.strategy,
            Strategy::Ab(AbTest {
                split: 30.0,
                duration: Duration::from_secs(90),
                winner: WinnerRule::Auto
            })
        );
        let c = parse(&format!("[rollout]\nstrategy = \"ab\"\n{traffic}[gate]\n")).unwrap();
        let Strategy::Ab(test) = c.stage("prod").unwrap().rollout.strategy else {
            panic!("not ab")
        };
        assert_eq!(
            (test.split, test.duration, test.winner),
            (50.0, Duration::from_secs(60), WinnerRule::Manual)
        );
        assert_eq!(
            Strategy::Ab(test).user_steps(),
            vec![50.0, 100.0],
            "the test, then everyone"
        );

        let e = error("[rollout]\nstrategy = \"ab\"\n");
        assert_eq!(e.key, "rollout.strategy");
        assert!(e.message.contains("needs [traffic]"), "{e}");
        let e = error(&format!("[rollout]\nstrategy = \"ab\"\n{traffic}"));
        assert_eq!(e.key, "rollout.strategy");
        assert!(e.message.contains("needs [gate]"), "{e}");
        for (bad, key, says) in [
            ("split = 100", "rollout.split", "below 100"),
            ("split = 0", "rollout.split", "above 0"),
            ("duration = \"0s\"", "rollout.duration", "above 0s"),
            ("duration = \"soon\"", "rollout.duration", "not a duration"),
            ("winner = \"best\"", "rollout.winner", "\"manual\""),
            ("pause = \"manual\"", "rollout.pause", "winner = \"manual\""),
            ("steps = [50, 100]", "rollout.steps", "canary"),
        ] {
            let e = error(&format!(
                "[rollout]\nstrategy = \"ab\"\n{bad}\n{traffic}[gate]\n"
            ));
            assert_eq!(e.key, key, "{bad}: {e}");
            assert!(e.message.contains(says), "{bad}: {e}");
        }
        let e = error("[rollout]\nstrategy = \"canary\"\nsplit = 50\n");
        assert_eq!(e.key, "rollout.split");
        assert!(e.message.contains("strategy = \"ab\""), "{e}");
    }

    #[test]
    fn a_stage_overrides_key_by_key() {
        let text = "app = \"shop\"\ndeploy_to = \"/srv/shop\"\n[rollout]\nstrategy = \"canary\"\nsteps = [50, 100]\n[stages.prod]\nhosts = [{ address = \"a1\" }]\n[stages.prod.rollout]\npause = \"manual\"\n[stages.dev]\nhosts = [{ address = \"d1\" }]\n";
        let c = Config::parse(text, Path::new("deploy.toml"), Path::new(".")).unwrap();
        let prod = &c.stage("prod").unwrap().rollout;
        assert_eq!(prod.pause, Pause::Manual);
        assert_eq!(prod.strategy.name(), "canary");
        assert_eq!(
            c.stage("dev").unwrap().rollout.pause,
            Pause::For(Duration::ZERO)
        );
    }
}
