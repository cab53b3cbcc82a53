//! The nginx include slipway owns on each host (http{} context), rendered by a pure
//! function. For app `shop` it defines:
//!
//! - `upstream slipway_shop_a` / `slipway_shop_b`: the slots' instances (none for a
//!   static site: nginx serves the files from `<deploy_to>/slots/$slipway_shop_slot`);
//! - `$slipway_shop_key`: the split key, the client address when the key is empty (so
//!   key-less requests spread like everyone else, not into one bucket);
//! - `split_clients "<salt>$slipway_shop_key"`: the canary's percentage first, then
//!   `*` for the stable slot. nginx gives ranges from 0 up in order, so raising the
//!   percentage only adds users (see `murmur`);
//! - `$slipway_shop_slot` (`a`|`b`): the split, overridden by the pin (`canary` or
//!   `stable` in the pin header or cookie), and `$slipway_shop_upstream` for
//!   `proxy_pass http://$slipway_shop_upstream;`;
//! - `log_format slipway_shop` (time, slot, status, request and upstream time) and the
//!   `access_log` that uses it.
//!
//! The first line is the split as data ([`Split::header`]), read back by `rollout status`.

use super::split::{Split, trim};
use crate::config::{Endpoint, SplitKey, Traffic};

/// nginx variable names take letters, digits and `_`: `my-app.v2` → `my_app_v2`.
pub fn ident(app: &str) -> String {
    app.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The nginx variable holding a key's value.
fn variable(key: &SplitKey) -> String {
    match key {
        SplitKey::Cookie(n) => format!("$cookie_{n}"),
        SplitKey::Header(n) => format!("$http_{}", n.to_ascii_lowercase().replace('-', "_")),
        SplitKey::Query(n) => format!("$arg_{n}"),
        SplitKey::Addr => "$remote_addr".into(),
    }
}

/// The include for `split` on a host whose slots listen on `address` (TCP slots).
pub fn render(app: &str, traffic: &Traffic, split: &Split, address: &str) -> String {
    let id = ident(app);
    let mut s = format!(
        "{header}\n# Written by slipway: do not edit (the next deploy replaces it).\n",
        header = split.header()
    );
    if let Some(slots) = &traffic.slots {
        for (slot, endpoint) in ["a", "b"].iter().zip(slots) {
            let server = match endpoint {
                Endpoint::Port(p) if address.contains(':') => format!("[{address}]:{p}"),
                Endpoint::Port(p) => format!("{address}:{p}"),
                Endpoint::Unix(path) => format!("unix:{path}"),
            };
            s.push_str(&format!(
                "upstream slipway_{id}_{slot} {{\n    server {server};\n}}\n"
            ));
        }
    }
    s.push_str(&format!(
        "map {var} $slipway_{id}_key {{\n    \"\" $remote_addr;\n    default {var};\n}}\n",
        var = variable(&traffic.key)
    ));
    let stable = split.stable.name();
    let serving_canary = split.canary.filter(|_| split.percent > 0.0);
    s.push_str(&format!(
        "split_clients \"{salt}$slipway_{id}_key\" $slipway_{id}_split {{\n",
        salt = split.salt
    ));
    match serving_canary {
        Some(c) if split.percent >= 100.0 => s.push_str(&format!("    * {c};\n")),
        Some(c) => s.push_str(&format!(
            "    {}% {c};\n    * {stable};\n",
            trim(split.percent)
        )),
        None => s.push_str(&format!("    * {stable};\n")),
    }
    s.push_str("}\n");
    match &traffic.pin {
        Some(pin) => s.push_str(&format!(
            "map {var} $slipway_{id}_slot {{\n    default $slipway_{id}_split;\n    canary {canary};\n    stable {stable};\n}}\n",
            var = variable(pin),
            canary = split.canary.unwrap_or(split.stable),
        )),
        None => s.push_str(&format!(
            "map $slipway_{id}_split $slipway_{id}_slot {{\n    default $slipway_{id}_split;\n}}\n"
        )),
    }
    if traffic.slots.is_some() {
        s.push_str(&format!(
            "map $slipway_{id}_slot $slipway_{id}_upstream {{\n    a slipway_{id}_a;\n    default slipway_{id}_b;\n}}\n"
        ));
    }
    s.push_str(&format!(
        "log_format slipway_{id} '$time_iso8601 slot=$slipway_{id}_slot status=$status request_time=$request_time upstream_time=$upstream_response_time method=$request_method uri=$uri';\naccess_log {log} slipway_{id};\n",
        log = traffic.access_log
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ProxyKind, Traffic};
    use crate::traffic::split::Slot;
    use std::time::Duration;

    fn traffic(slots: bool, pin: bool) -> Traffic {
        Traffic {
            proxy: ProxyKind::Nginx,
            include: "/etc/nginx/conf.d/slipway-shop.conf".into(),
            key: SplitKey::Cookie("uid".into()),
            pin: pin.then(|| SplitKey::Header("X-Slipway-Slot".into())),
            slots: slots.then(|| [Endpoint::Port(8001), Endpoint::Unix("/run/b.sock".into())]),
            address: "127.0.0.1".into(),
            start: vec![],
            stop: vec![],
            drain: Duration::from_secs(30),
            test: "nginx -t".into(),
            reload: "nginx -s reload".into(),
            access_log: "/var/log/nginx/slipway-shop.log".into(),
            pid: "/run/nginx.pid".into(),
            salt: None,
        }
    }

    fn split(percent: f64) -> Split {
        Split {
            stable: Slot::A,
            canary: Some(Slot::B),
            percent,
            salt: "0badcafe:".into(),
            stable_release: None,
            canary_release: None,
        }
    }

    #[test]
    fn the_include_splits_pins_and_logs() {
        let text = render("my-shop", &traffic(true, true), &split(10.0), "127.0.0.1");
        assert_eq!(
            Split::parse_header(text.lines().next().unwrap()),
            Some(split(10.0))
        );
        for needle in [
            "upstream slipway_my_shop_a {\n    server 127.0.0.1:8001;\n}",
            "upstream slipway_my_shop_b {\n    server unix:/run/b.sock;\n}",
            "map $cookie_uid $slipway_my_shop_key {\n    \"\" $remote_addr;\n    default $cookie_uid;\n}",
            "split_clients \"0badcafe:$slipway_my_shop_key\" $slipway_my_shop_split {\n    10% b;\n    * a;\n}",
            "map $http_x_slipway_slot $slipway_my_shop_slot {\n    default $slipway_my_shop_split;\n    canary b;\n    stable a;\n}",
            "map $slipway_my_shop_slot $slipway_my_shop_upstream {\n    a slipway_my_shop_a;\n    default slipway_my_shop_b;\n}",
            "access_log /var/log/nginx/slipway-shop.log slipway_my_shop;",
        ] {
            assert!(text.contains(needle), "missing {needle}\nin:\n{text}");
        }
    }

    #[test]
    fn no_canary_share_means_no_canary_entry() {
        // nginx refuses "0%": the canary entry is left out; 100% is `*` alone.
        let zero = render("shop", &traffic(true, false), &split(0.0), "127.0.0.1");
        assert!(zero.contains("{\n    * a;\n}"), "{zero}");
        assert!(!zero.contains("0%"), "{zero}");
        let all = render("shop", &traffic(true, false), &split(100.0), "127.0.0.1");
        assert!(all.contains("{\n    * b;\n}"), "{all}");
        // Static files: no upstreams, the slot variable alone.
        let static_site = render(
            "shop",
            &traffic(false, false),
            &Split::only(Slot::B, None, "s:"),
            "127.0.0.1",
        );
        assert!(!static_site.contains("upstream slipway"), "{static_site}");
        assert!(static_site.contains("$slipway_shop_slot"), "{static_site}");
        // An IPv6 slot address is bracketed.
        let v6 = render("shop", &traffic(true, false), &split(5.0), "::1");
        assert!(v6.contains("server [::1]:8001;"), "{v6}");
    }
}
