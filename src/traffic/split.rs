//! The split in force on a host, as plain data: which slot is stable, which (if any) is
//! the canary, what share of users the canary gets, and the salt of this rollout. The
//! proxy's include carries it in its first line, so that `rollout status` reads what
//! the proxy actually has, not what a deployer meant to give it.

use serde::{Deserialize, Serialize};

/// One of the two places a release can be live on a host: `<deploy_to>/slots/a` or `b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    pub fn parse(text: &str) -> Option<Slot> {
        match text {
            "a" => Some(Slot::A),
            "b" => Some(Slot::B),
            _ => None,
        }
    }

    /// Index into `[traffic] slots` (a = 0, b = 1).
    pub fn index(self) -> usize {
        match self {
            Slot::A => 0,
            Slot::B => 1,
        }
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the proxy does with requests on one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Split {
    pub stable: Slot,
    /// The slot being rolled out to; `None`: every request goes to `stable`.
    pub canary: Option<Slot>,
    /// Percent of keys on the canary (0-100, two decimals).
    pub percent: f64,
    /// Prefixed to every key before hashing: a new rollout picks new users first.
    pub salt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_release: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_release: Option<String>,
}

const HEADER: &str = "# slipway-traffic v1";

impl Split {
    /// Everything on `slot`.
    pub fn only(slot: Slot, release: Option<String>, salt: &str) -> Split {
        Split {
            stable: slot,
            canary: None,
            percent: 0.0,
            salt: salt.to_string(),
            stable_release: release,
            canary_release: None,
        }
    }

    /// The percent of users on each slot, for people: "a 90% (R1), b 10% (R2)".
    pub fn describe(&self) -> String {
        let release =
            |r: &Option<String>| r.as_ref().map(|r| format!(" ({r})")).unwrap_or_default();
        match self.canary {
            None => format!(
                "all users on slot {}{}",
                self.stable,
                release(&self.stable_release)
            ),
            Some(c) => format!(
                "slot {} (stable{}) {}%, slot {c} (canary{}) {}%",
                self.stable,
                release(&self.stable_release),
                trim(100.0 - self.percent),
                release(&self.canary_release),
                trim(self.percent),
            ),
        }
    }

    /// The slot that serves users now and then, other than through a pin: the canary at
    /// 100 %, else the stable one.
    pub fn serving(&self) -> Slot {
        match self.canary {
            Some(c) if self.percent >= 100.0 => c,
            _ => self.stable,
        }
    }

    /// The slot a request whose key is `key` lands on (no pin): the canary when
    /// `salt + key` hashes into its share (see `murmur`), else the stable slot.
    pub fn slot_for(&self, key: &str) -> Slot {
        match self.canary {
            Some(c) if super::murmur::lands_on_canary(&self.salt, key, self.percent) => c,
            _ => self.stable,
        }
    }

    /// The include's first line: the split, readable back by [`Split::parse_header`].
    pub fn header(&self) -> String {
        let mut s = format!(
            "{HEADER} stable={} canary={} percent={} salt={}",
            self.stable,
            self.canary.map(|c| c.name()).unwrap_or("-"),
            trim(self.percent),
            self.salt
        );
        if let Some(r) = &self.stable_release {
            s.push_str(&format!(" stable_release={r}"));
        }
        if let Some(r) = &self.canary_release {
            s.push_str(&format!(" canary_release={r}"));
        }
        s
    }

    /// The split a header line describes; `None` for any other text.
    pub fn parse_header(line: &str) -> Option<Split> {
        let rest = line.trim().strip_prefix(HEADER)?;
        let mut split = Split::only(Slot::A, None, "");
        let mut stable = None;
        for part in rest.split_whitespace() {
            let (k, v) = part.split_once('=')?;
            match k {
                "stable" => stable = Some(Slot::parse(v)?),
                "canary" if v == "-" => split.canary = None,
                "canary" => split.canary = Some(Slot::parse(v)?),
                "percent" => {
                    split.percent = v.parse().ok().filter(|p: &f64| (0.0..=100.0).contains(p))?
                }
                "salt" => split.salt = v.to_string(),
                "stable_release" => split.stable_release = Some(v.to_string()),
                "canary_release" => split.canary_release = Some(v.to_string()),
                _ => {}
            }
        }
        split.stable = stable?;
        if split.canary == Some(split.stable) {
            return None;
        }
        Some(split)
    }
}

/// 10 → "10", 12.5 → "12.5", 12.345 → "12.35" (nginx takes two decimals).
pub fn trim(percent: f64) -> String {
    let s = format!("{:.2}", (percent * 100.0).round() / 100.0);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A fresh salt for a rollout: 8 hex digits and a colon (never in a key's alphabet's way).
pub fn new_salt() -> String {
    format!("{:08x}:", rand::random::<u32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_round_trips() {
        let s = Split {
            stable: Slot::A,
            canary: Some(Slot::B),
            percent: 12.5,
            salt: "0badcafe:".into(),
            stable_release: Some("20261124T040512Z".into()),
            canary_release: Some("20261124T050000Z".into()),
        };
        assert_eq!(Split::parse_header(&s.header()), Some(s.clone()));
        let only = Split::only(Slot::B, None, "x:");
        assert_eq!(Split::parse_header(&only.header()), Some(only));
        assert_eq!(Split::parse_header("upstream x {}"), None);
        assert_eq!(
            Split::parse_header("# slipway-traffic v1 stable=a canary=a percent=1 salt=x"),
            None
        );
        assert_eq!(
            Split::parse_header("# slipway-traffic v1 stable=a canary=b percent=101 salt=x"),
            None
        );
        assert!(
            s.describe()
                .contains("slot b (canary (20261124T050000Z)) 12.5%")
        );
        assert_eq!(trim(100.0), "100");
        // Which slot a key lands on follows the model of nginx's split.
        let on_b = (0..1000)
            .filter(|i| s.slot_for(&format!("u{i}")) == Slot::B)
            .count();
        assert!((90..=160).contains(&on_b), "{on_b}");
        assert_eq!(Split::only(Slot::A, None, "x").slot_for("anyone"), Slot::A);
        assert_eq!(trim(0.0), "0");
    }
}
