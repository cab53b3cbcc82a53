//! `[traffic]`: two releases live on each host behind a proxy (nginx), and rollout steps
//! that are percentages of users instead of hosts. Validated like every other section:
//! errors name the key (and the loader adds its line). What the proxy does with these
//! values is `traffic::nginx`; this file only decides what is allowed.

use std::time::Duration;

use serde::Deserialize;

use super::field::{Invalid, commands, duration, field};
use super::{KeyPath, Layer, Strategy};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficLayer {
    pub proxy: Option<String>,
    pub include: Option<String>,
    pub key: Option<String>,
    pub pin: Option<String>,
    pub slots: Option<SlotsLayer>,
    pub address: Option<String>,
    pub start: Option<Vec<String>>,
    pub stop: Option<Vec<String>>,
    pub drain: Option<String>,
    pub test: Option<String>,
    pub reload: Option<String>,
    pub access_log: Option<String>,
    pub pid: Option<String>,
    pub salt: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotsLayer {
    pub a: Option<PortOrPath>,
    pub b: Option<PortOrPath>,
}

/// `8001` or `"unix:/run/shop-a.sock"`.
#[derive(Debug, Clone)]
pub enum PortOrPath {
    Port(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for PortOrPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PortOrPath, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = PortOrPath;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a port (8001) or a Unix socket (\"unix:/run/shop-a.sock\")")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<PortOrPath, E> {
                Ok(PortOrPath::Port(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<PortOrPath, E> {
                Ok(PortOrPath::Port(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PortOrPath, E> {
                Ok(PortOrPath::Text(v.to_string()))
            }
            // Only the key recorder of `config::keys` sends a unit.
            fn visit_unit<E: serde::de::Error>(self) -> Result<PortOrPath, E> {
                Ok(PortOrPath::Text(String::new()))
            }
        }
        d.deserialize_any(V)
    }
}

/// The proxy in front of the slots. Only nginx so far; the proxy side is the
/// `traffic::proxy::Proxy` trait, so others can follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    Nginx,
}

/// What a request is split on: the same value always lands on the same slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitKey {
    Cookie(String),
    Header(String),
    Query(String),
    /// The client address (also the fallback of the others when the value is empty).
    Addr,
}

impl SplitKey {
    pub fn text(&self) -> String {
        match self {
            SplitKey::Cookie(n) => format!("cookie:{n}"),
            SplitKey::Header(n) => format!("header:{n}"),
            SplitKey::Query(n) => format!("query:{n}"),
            SplitKey::Addr => "addr".into(),
        }
    }
}

/// Where one slot's instance listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Port(u16),
    Unix(String),
}

impl Endpoint {
    /// The port in `SLIPWAY_PORT` (a socket's path for a Unix socket).
    pub fn env_value(&self) -> String {
        match self {
            Endpoint::Port(p) => p.to_string(),
            Endpoint::Unix(path) => path.clone(),
        }
    }
}

/// The resolved `[traffic]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct Traffic {
    pub proxy: ProxyKind,
    /// The file slipway owns on each host (nginx's http{} context includes it).
    pub include: String,
    pub key: SplitKey,
    /// A header or cookie whose value `canary` or `stable` pins a request to that slot.
    pub pin: Option<SplitKey>,
    /// Slot a's and slot b's endpoints; `None`: static files served from the slot links.
    pub slots: Option<[Endpoint; 2]>,
    /// The address TCP slots listen on as nginx and health checks see it:
    /// "127.0.0.1" (default), another address, or "{host}" for the host's own.
    pub address: String,
    pub start: Vec<String>,
    pub stop: Vec<String>,
    pub drain: Duration,
    pub test: String,
    pub reload: String,
    pub access_log: String,
    /// nginx's pid file: its old workers are what a drain waits for.
    pub pid: String,
    /// A fixed salt (the same users first on every rollout); `None`: a fresh random
    /// salt per rollout, recorded in its state.
    pub salt: Option<String>,
}

impl Traffic {
    /// The address host `host_address` reaches slot endpoints on.
    pub fn address_on(&self, host_address: &str) -> String {
        if self.address == "{host}" {
            host_address.to_string()
        } else {
            self.address.clone()
        }
    }
}

/// A value that ends up inside nginx's configuration or a path: no whitespace, quotes,
/// `;`, braces, `$` or control characters (they would change the config's meaning).
fn proxy_safe(value: &str) -> bool {
    !value.is_empty()
        && !value.chars().any(|c| {
            c.is_whitespace()
                || c.is_control()
                || matches!(c, '"' | '\'' | ';' | '{' | '}' | '$' | '#' | '\\')
        })
}

fn absolute_path(value: &str, what: &str, p: &KeyPath) -> Result<String, Invalid> {
    if !value.starts_with('/') || !proxy_safe(value) || value.split('/').any(|s| s == "..") {
        return Err((
            p.clone(),
            format!(
                "`{}` is not a usable {what}: an absolute path without spaces, quotes, `;`, `{{}}`, `$`, `#` or `..`",
                value.escape_debug()
            ),
        ));
    }
    Ok(value.to_string())
}

/// `cookie:uid`, `header:X-User`, `query:machine`, `addr`.
pub fn parse_key(text: &str, allow_addr: bool) -> Result<SplitKey, String> {
    let usage = if allow_addr {
        "write cookie:NAME, header:NAME, query:NAME or addr"
    } else {
        "write header:NAME or cookie:NAME"
    };
    if text == "addr" {
        return if allow_addr {
            Ok(SplitKey::Addr)
        } else {
            Err(format!("`addr` cannot pin a request ({usage})"))
        };
    }
    let Some((kind, name)) = text.split_once(':') else {
        return Err(format!("`{}` is not a key ({usage})", text.escape_debug()));
    };
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !ok {
        return Err(format!(
            "`{}` is not a usable name: letters, digits, `_` and `-` ({usage})",
            name.escape_debug()
        ));
    }
    match kind {
        "cookie" if !name.contains('-') => Ok(SplitKey::Cookie(name.into())),
        "header" => Ok(SplitKey::Header(name.into())),
        "query" if allow_addr && !name.contains('-') => Ok(SplitKey::Query(name.into())),
        "cookie" | "query" => Err(format!(
            "nginx cannot read a {kind} named `{name}` (a `-` in it): use letters, digits and `_`"
        )),
        other => Err(format!(
            "unknown key kind `{}` ({usage})",
            other.escape_debug()
        )),
    }
}

pub(super) fn resolve_traffic(
    stage: &Layer,
    top: &Layer,
    at: &KeyPath,
    app: &str,
    strategy: &Strategy,
) -> Result<Option<Traffic>, Invalid> {
    let (s, t) = (&stage.traffic, &top.traffic);
    // An A/B test splits users ([traffic]) and compares them on the access log ([gate]).
    if let Strategy::Ab(_) = strategy {
        let missing = match (
            s.is_some() || t.is_some(),
            stage.gate.is_some() || top.gate.is_some(),
        ) {
            (false, _) => Some(
                "[traffic] (two slots behind the proxy) and [gate] (the access log both cohorts are read from)",
            ),
            (true, false) => Some(
                "[gate] (the access log both cohorts are read from, its interval, alpha and min_requests)",
            ),
            (true, true) => None,
        };
        if let Some(what) = missing {
            return Err((
                super::rollout::strategy_at(&stage.rollout, &top.rollout, at),
                format!("strategy = \"ab\" needs {what}: add it, or use another strategy"),
            ));
        }
        let source = [&stage.gate, &top.gate]
            .into_iter()
            .find_map(|g| g.as_ref().and_then(|g| g.source.clone()));
        if source.as_deref() == Some("prometheus") {
            return Err((
                super::rollout::strategy_at(&stage.rollout, &top.rollout, at),
                "strategy = \"ab\" compares every request of both cohorts (a rank test on their latencies), which only the access log gives: set [gate] source = \"access_log\", or use strategy = \"canary\" with Prometheus".into(),
            ));
        }
    }
    if s.is_none() && t.is_none() {
        return Ok(None);
    }
    let section = if s.is_some() {
        at.key("traffic")
    } else {
        KeyPath::root().key("traffic")
    };
    match strategy {
        Strategy::AllAtOnce | Strategy::Canary { .. } | Strategy::Ab(_) => {}
        other => {
            return Err((
                section,
                format!(
                    "[traffic] moves users, not hosts: use [rollout] strategy = \"canary\" (steps are percentages of users on every host), \"ab\" or \"all-at-once\"; {} is not supported with [traffic]",
                    other.name()
                ),
            ));
        }
    }
    let proxy = match field!(s, t, at, "traffic", proxy) {
        None => ProxyKind::Nginx,
        Some((v, _)) if v == "nginx" => ProxyKind::Nginx,
        Some((v, p)) => {
            return Err((
                p,
                format!(
                    "unknown proxy `{}`: only \"nginx\" is supported so far",
                    v.escape_debug()
                ),
            ));
        }
    };
    let include = match field!(s, t, at, "traffic", include) {
        None => format!("/etc/nginx/conf.d/slipway-{app}.conf"),
        Some((v, p)) => absolute_path(v, "include file", &p)?,
    };
    let key = match field!(s, t, at, "traffic", key) {
        None => SplitKey::Addr,
        Some((v, p)) => parse_key(v, true).map_err(|m| (p, m))?,
    };
    let pin = match field!(s, t, at, "traffic", pin) {
        None => None,
        Some((v, p)) => Some(parse_key(v, false).map_err(|m| (p, m))?),
    };
    let start = commands(field!(s, t, at, "traffic", start))?;
    let stop = commands(field!(s, t, at, "traffic", stop))?;
    let slots = match field!(s, t, at, "traffic", slots) {
        None => None,
        Some((layer, p)) => {
            let one = |v: &Option<PortOrPath>, name: &str| -> Result<Endpoint, Invalid> {
                match v {
                    None => Err((
                        p.clone(),
                        format!("slot {name} has no port: slots = {{ a = 8001, b = 8002 }}"),
                    )),
                    Some(PortOrPath::Port(n)) if (1..=65535).contains(n) => {
                        Ok(Endpoint::Port(*n as u16))
                    }
                    Some(PortOrPath::Port(n)) => Err((
                        p.key(name),
                        format!("port must be between 1 and 65535 (got {n})"),
                    )),
                    Some(PortOrPath::Text(text)) => match text.strip_prefix("unix:") {
                        Some(path) => Ok(Endpoint::Unix(absolute_path(
                            path,
                            "Unix socket path",
                            &p.key(name),
                        )?)),
                        None => Err((
                            p.key(name),
                            format!(
                                "`{}` is neither a port nor \"unix:/path\"",
                                text.escape_debug()
                            ),
                        )),
                    },
                }
            };
            let a = one(&layer.a, "a")?;
            let b = one(&layer.b, "b")?;
            if a == b {
                return Err((p, "slots a and b must differ".into()));
            }
            Some([a, b])
        }
    };
    if slots.is_none()
        && let Some((_, p)) = field!(s, t, at, "traffic", start)
    {
        return Err((
            p,
            "start needs slots = { a = PORT, b = PORT }: the instance of each slot listens on its own port"
                .into(),
        ));
    }
    if !stop.is_empty()
        && start.is_empty()
        && let Some((_, p)) = field!(s, t, at, "traffic", stop)
    {
        return Err((p, "stop without start: give both, or neither".into()));
    }
    let address = match field!(s, t, at, "traffic", address) {
        None => "127.0.0.1".to_string(),
        Some((a, _)) if a == "{host}" => a.clone(),
        Some((a, p)) => {
            let ok = !a.is_empty()
                && !a.starts_with('-')
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
            if !ok {
                return Err((
                    p,
                    format!(
                        "`{}` is not an address (or \"{{host}}\" for the host's own)",
                        a.escape_debug()
                    ),
                ));
            }
            a.clone()
        }
    };
    let drain = duration(field!(s, t, at, "traffic", drain), Duration::from_secs(30))?;
    let command = |found: Option<(&String, KeyPath)>, default: &str| -> Result<String, Invalid> {
        match found {
            None => Ok(default.to_string()),
            Some((c, p)) if c.trim().is_empty() || c.contains('\0') => {
                Err((p, "the command is empty".into()))
            }
            Some((c, _)) => Ok(c.clone()),
        }
    };
    let test = command(field!(s, t, at, "traffic", test), "nginx -t")?;
    let reload = command(field!(s, t, at, "traffic", reload), "nginx -s reload")?;
    let access_log = match field!(s, t, at, "traffic", access_log) {
        None => format!("/var/log/nginx/slipway-{app}.log"),
        Some((v, p)) => absolute_path(v, "access log path", &p)?,
    };
    let pid = match field!(s, t, at, "traffic", pid) {
        None => "/run/nginx.pid".to_string(),
        Some((v, p)) => absolute_path(v, "pid file path", &p)?,
    };
    let salt = match field!(s, t, at, "traffic", salt) {
        None => None,
        Some((v, p)) => {
            if v.len() > 64 || !proxy_safe(v) {
                return Err((
                    p,
                    format!(
                        "`{}` is not a usable salt: 1-64 characters without spaces, quotes, `;`, `{{}}`, `$`, `#` or `\\`",
                        v.escape_debug()
                    ),
                ));
            }
            Some(v.clone())
        }
    };
    Ok(Some(Traffic {
        proxy,
        include,
        key,
        pin,
        slots,
        address,
        start,
        stop,
        drain,
        test,
        reload,
        access_log,
        pid,
        salt,
    }))
}

/// `[health] http` checks a slot on its port: a slot on a Unix socket has none.
pub(super) fn check_health(
    traffic: Option<&Traffic>,
    health: Option<&super::Health>,
    at: &KeyPath,
) -> Result<(), Invalid> {
    if let (Some(t), Some(h)) = (traffic, health)
        && matches!(h.check, super::Check::Http { .. })
        && t.slots
            .as_ref()
            .is_some_and(|s| s.iter().any(|e| matches!(e, Endpoint::Unix(_))))
    {
        return Err((
            at.key("health").key("http"),
            "a slot on a Unix socket has no port to check over http: use [health] command (e.g. curl --unix-socket)".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, ConfigError};

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        let text = format!(
            "app = \"shop\"\ndeploy_to = \"/srv/shop\"\n{extra}\n[stages.prod]\nhosts = [{{ address = \"a1\" }}]\n"
        );
        Config::parse(&text, Path::new("deploy.toml"), Path::new("."))
    }

    fn error(extra: &str) -> ConfigError {
        parse(extra).expect_err("should be refused")
    }

    #[test]
    fn defaults_follow_the_app_name() {
        let c = parse("[traffic]\nslots = { a = 8001, b = \"unix:/run/shop-b.sock\" }\n").unwrap();
        let t = c.stages["prod"].traffic.clone().unwrap();
        assert_eq!(t.include, "/etc/nginx/conf.d/slipway-shop.conf");
        assert_eq!(t.access_log, "/var/log/nginx/slipway-shop.log");
        assert_eq!(t.key, SplitKey::Addr);
        assert_eq!(
            t.slots,
            Some([
                Endpoint::Port(8001),
                Endpoint::Unix("/run/shop-b.sock".into())
            ])
        );
        assert_eq!(t.drain, Duration::from_secs(30));
        assert_eq!(t.test, "nginx -t");
        // No [traffic]: nothing changes.
        assert!(parse("").unwrap().stages["prod"].traffic.is_none());
    }

    #[test]
    fn mistakes_name_the_key_and_line() {
        let e = error("[traffic]\nkey = \"cookie:\"\n");
        assert_eq!(e.key, "traffic.key");
        assert_eq!(e.line, Some(4));
        let e = error("[traffic]\nkey = \"session\"\n");
        assert!(e.message.contains("cookie:NAME"), "{e}");
        let e = error("[traffic]\npin = \"addr\"\n");
        assert_eq!(e.key, "traffic.pin");
        let e = error("[traffic]\nslots = { a = 8001, b = 8001 }\n");
        assert!(e.message.contains("must differ"), "{e}");
        let e = error("[traffic]\nslots = { a = 8001, b = 70000 }\n");
        assert_eq!(e.key, "traffic.slots.b");
        let e = error("[traffic]\nslots = { a = 8001 }\n");
        assert!(e.message.contains("slot b has no port"), "{e}");
        let e = error("[traffic]\nstart = [\"x\"]\n");
        assert_eq!(e.key, "traffic.start");
        let e = error("[traffic]\ninclude = \"/etc/nginx/a b;.conf\"\n");
        assert_eq!(e.key, "traffic.include");
        let e = error("[traffic]\nproxy = \"haproxy\"\n");
        assert!(e.message.contains("only \"nginx\""), "{e}");
        let e = error("[rollout]\nstrategy = \"rolling\"\n[traffic]\n");
        assert!(e.message.contains("moves users"), "{e}");
        let e = error(
            "[health]\nhttp = { port = 80 }\n[traffic]\nslots = { a = 8001, b = \"unix:/run/b.sock\" }\n",
        );
        assert!(e.message.contains("Unix socket"), "{e}");
        let e = error("[traffic]\ndrain = \"soon\"\n");
        assert_eq!(e.key, "traffic.drain");
    }

    #[test]
    fn keys_parse() {
        assert_eq!(
            parse_key("header:X-Slipway-Slot", false),
            Ok(SplitKey::Header("X-Slipway-Slot".into()))
        );
        assert_eq!(
            parse_key("query:machine", true),
            Ok(SplitKey::Query("machine".into()))
        );
        assert!(parse_key("cookie:a-b", true).is_err());
        assert!(parse_key("query:x", false).is_err());
        assert!(parse_key("header:a$b", true).is_err());
    }
}
