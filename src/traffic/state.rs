//! A rollout's traffic, as recorded in `.slipway/rollout.json` (the `traffic` field of
//! `rollout::state::RolloutState`): which slot the new release runs in, which slot the
//! stable one, the share of users in force and the rollout's salt. Written at every
//! change, so a later `rollout resume|abort` (after the deployer was killed, too) knows
//! where traffic is meant to be; `rollout status` reads what the proxy really has.

use serde::{Deserialize, Serialize};

use super::split::{Slot, Split};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficState {
    /// The slot of the release being rolled out.
    pub canary: Slot,
    /// The slot of the stable release; `None`: nothing was live before (a first deploy).
    pub stable: Option<Slot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_release: Option<String>,
    /// Percent of users on the canary in force (as last applied to every host).
    pub percent: f64,
    pub salt: String,
    /// The canary is now the stable slot (`current` renamed), the old slot drained.
    #[serde(default)]
    pub promoted: bool,
}

impl TrafficState {
    /// The split with `percent` of users on the canary running `release`.
    pub fn split(&self, release: &str, percent: f64) -> Split {
        match self.stable {
            Some(stable) if !self.promoted => Split {
                stable,
                canary: Some(self.canary),
                percent,
                salt: self.salt.clone(),
                stable_release: self.stable_release.clone(),
                canary_release: Some(release.to_string()),
            },
            _ => Split::only(self.canary, Some(release.to_string()), &self.salt),
        }
    }

    /// Every user back on the stable release (`None`: there is none to go back to).
    pub fn back(&self) -> Option<Split> {
        self.stable
            .map(|s| Split::only(s, self.stable_release.clone(), &self.salt))
    }
}

/// The slot serving users on every host, and the release in it (when the include says).
pub type Serving = (Slot, Option<String>);

/// Where a new release goes, from what the hosts' includes say: the slot that is not
/// serving, with the serving one as stable. Hosts that disagree (a host added later, or
/// a half-applied change) are named in the error.
pub fn choose(found: &[(String, Option<Split>)]) -> Result<(Option<Serving>, Slot), String> {
    let mut serving: Option<Serving> = None;
    let mut fresh = Vec::new();
    for (host, split) in found {
        match split {
            None => fresh.push(host.as_str()),
            Some(s) if s.canary.is_some() && s.percent > 0.0 && s.percent < 100.0 => {
                return Err(format!(
                    "{host}: traffic is split ({}): finish or abort that rollout first (`slipway rollout status`)",
                    s.describe()
                ));
            }
            Some(s) => {
                let now = (
                    s.serving(),
                    if s.serving() == s.stable {
                        s.stable_release.clone()
                    } else {
                        s.canary_release.clone()
                    },
                );
                match &serving {
                    None => serving = Some(now),
                    Some(prev) if prev.0 == now.0 => {}
                    Some(prev) => {
                        return Err(format!(
                            "the hosts serve different slots ({host}: slot {}, others: slot {}): run `slipway rollback` to bring them together",
                            now.0, prev.0
                        ));
                    }
                }
            }
        }
    }
    match serving {
        Some(s) if !fresh.is_empty() => Err(format!(
            "{} {} no traffic include while the others serve slot {}: deploy with every host configured the same (remove the new host, deploy, add it with a first deploy of its own)",
            fresh.join(", "),
            if fresh.len() == 1 { "has" } else { "have" },
            s.0
        )),
        Some(s) => {
            let canary = s.0.other();
            Ok((Some(s), canary))
        }
        None => Ok((None, Slot::A)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_release_takes_the_slot_that_is_not_serving() {
        let none = vec![("h1".to_string(), None), ("h2".to_string(), None)];
        assert_eq!(choose(&none), Ok((None, Slot::A)));
        let on_a = Split::only(Slot::A, Some("R1".into()), "s:");
        let two = vec![
            ("h1".to_string(), Some(on_a.clone())),
            ("h2".to_string(), Some(on_a.clone())),
        ];
        assert_eq!(
            choose(&two),
            Ok((Some((Slot::A, Some("R1".into()))), Slot::B))
        );
        // A finished canary at 100 % that was not promoted serves from its slot.
        let mut full = on_a.clone();
        full.canary = Some(Slot::B);
        full.percent = 100.0;
        full.canary_release = Some("R2".into());
        assert_eq!(
            choose(&[("h1".into(), Some(full))]),
            Ok((Some((Slot::B, Some("R2".into()))), Slot::A))
        );
        let mut half = on_a.clone();
        half.canary = Some(Slot::B);
        half.percent = 50.0;
        assert!(
            choose(&[("h1".into(), Some(half))])
                .unwrap_err()
                .contains("split")
        );
        let mixed = vec![("h1".to_string(), Some(on_a)), ("h2".to_string(), None)];
        assert!(
            choose(&mixed)
                .unwrap_err()
                .contains("h2 has no traffic include")
        );
    }

    #[test]
    fn the_state_gives_the_split_of_each_moment() {
        let t = TrafficState {
            canary: Slot::B,
            stable: Some(Slot::A),
            stable_release: Some("R1".into()),
            percent: 0.0,
            salt: "s:".into(),
            promoted: false,
        };
        let s = t.split("R2", 10.0);
        assert_eq!(
            (s.stable, s.canary, s.percent),
            (Slot::A, Some(Slot::B), 10.0)
        );
        assert_eq!(t.back().map(|b| b.serving()), Some(Slot::A));
        let first = TrafficState { stable: None, ..t };
        assert_eq!(first.split("R2", 10.0).serving(), Slot::B);
        assert_eq!(first.back(), None);
    }
}
