//! The proxy side of `[traffic]`, behind one trait so that HAProxy or Caddy can follow
//! nginx: what file the proxy includes (rendered purely), and the host scripts that put
//! it in place, wait for a slot to drain and check the proxy is there. Only nginx is
//! implemented.

use super::nginx;
use super::split::Split;
use crate::config::{Endpoint, ProxyKind, Traffic};
use crate::script;

pub trait Proxy: Send + Sync {
    /// "nginx".
    fn name(&self) -> &'static str;
    /// The include for `split`, for a host whose TCP slots listen on `address`.
    fn render(&self, app: &str, traffic: &Traffic, split: &Split, address: &str) -> String;
    /// The script that validates `content`, puts it in place and reloads gracefully.
    fn install(&self, traffic: &Traffic, content: &str) -> String;
    /// The script that waits (at most `[traffic] drain`) until nothing is served from a
    /// slot whose instance listens on `endpoint` at `address`.
    fn drain(&self, traffic: &Traffic, endpoint: Option<&Endpoint>, address: &str) -> String;
    /// The preflight of `slipway check`.
    fn check(&self, traffic: &Traffic) -> String;
}

pub struct Nginx;

impl Proxy for Nginx {
    fn name(&self) -> &'static str {
        "nginx"
    }

    fn render(&self, app: &str, traffic: &Traffic, split: &Split, address: &str) -> String {
        nginx::render(app, traffic, split, address)
    }

    fn install(&self, traffic: &Traffic, content: &str) -> String {
        script::install_include(
            &traffic.include,
            content,
            &traffic.test,
            &traffic.reload,
            &traffic.pid,
        )
    }

    fn drain(&self, traffic: &Traffic, endpoint: Option<&Endpoint>, address: &str) -> String {
        let tcp = match endpoint {
            Some(Endpoint::Port(p)) => Some((address, *p)),
            _ => None,
        };
        script::drain(&traffic.pid, tcp, traffic.drain.as_secs())
    }

    fn check(&self, traffic: &Traffic) -> String {
        // The validator's program is the proxy as this host runs it (`nginx`, or a path).
        let program = traffic.test.split_whitespace().next().unwrap_or("nginx");
        script::proxy_check(program, "nginx-light", &traffic.include, &traffic.test)
    }
}

/// The proxy a `[traffic]` table names.
pub fn for_config(traffic: &Traffic) -> &'static dyn Proxy {
    match traffic.proxy {
        ProxyKind::Nginx => &Nginx,
    }
}
