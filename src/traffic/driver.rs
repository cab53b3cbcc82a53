//! The host side of `[traffic]`, on every host of a fleet at once: pointing a slot's
//! link at a release (the switch engine's rename), starting and stopping a slot's
//! instance, checking it is ready, applying a split (include → validate → rename →
//! reload), waiting for a slot to drain, reading the split in force. Each change of
//! the split is reported (`--json`: an `info` event) and appended to the audit log.

use std::time::{Duration, Instant};

use chrono::Utc;

use super::proxy::{self, Proxy};
use super::split::{Slot, Split};
use crate::audit::{self, Actor, Record};
use crate::config::{Check, Endpoint, Health, Traffic};
use crate::error::{Error, Result};
use crate::fleet::Fleet;
use crate::layout::{Link, ReleaseId, quote};
use crate::rollout::gate;
use crate::script;

/// What one host has: the split its include holds, and where its slot links point.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostTraffic {
    pub split: Option<Split>,
    pub a: Option<ReleaseId>,
    pub b: Option<ReleaseId>,
}

impl HostTraffic {
    pub fn release_in(&self, slot: Slot) -> Option<&ReleaseId> {
        match slot {
            Slot::A => self.a.as_ref(),
            Slot::B => self.b.as_ref(),
        }
    }

    /// Parses the output of `script::read_traffic`.
    pub fn parse(out: &str) -> HostTraffic {
        let mut h = HostTraffic::default();
        for line in out.lines() {
            let Some((k, v)) = line.split_once(": ").or_else(|| line.split_once(':')) else {
                continue;
            };
            let release = || {
                v.trim()
                    .trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .and_then(|id| ReleaseId::parse(id).ok())
            };
            match k {
                "include" => h.split = Split::parse_header(v),
                "a" => h.a = release(),
                "b" => h.b = release(),
                _ => {}
            }
        }
        h
    }
}

pub struct Driver<'a> {
    pub fleet: &'a Fleet,
    pub traffic: &'a Traffic,
    pub proxy: &'static dyn Proxy,
    /// Who is acting and the command line, for the audit records of traffic changes.
    pub actor: Actor,
    pub command: String,
}

impl<'a> Driver<'a> {
    /// The driver of a stage with `[traffic]`; `None` without.
    pub fn new(fleet: &'a Fleet, actor: Actor, command: String) -> Option<Driver<'a>> {
        let traffic = fleet.stage.traffic.as_ref()?;
        Some(Driver {
            fleet,
            traffic,
            proxy: proxy::for_config(traffic),
            actor,
            command,
        })
    }

    fn address(&self, i: usize) -> String {
        self.traffic.address_on(&self.fleet.host_config(i).address)
    }

    fn endpoint(&self, slot: Slot) -> Option<&Endpoint> {
        self.traffic.slots.as_ref().map(|s| &s[slot.index()])
    }

    fn timeout(&self) -> Duration {
        self.fleet.stage.timeouts.command
    }

    /// Every host's split and slot links, in fleet order.
    pub async fn read(&self) -> Result<Vec<HostTraffic>> {
        let fleet = self.fleet;
        let text = script::read_traffic(&fleet.layout, &self.traffic.include);
        let results = fleet
            .step_on(
                &fleet.all(),
                "read-traffic",
                |_| text.clone(),
                None,
                self.timeout(),
            )
            .await;
        let mut out = vec![HostTraffic::default(); fleet.len()];
        for (i, r) in results {
            let o = r.map_err(|e| Error::Step {
                host: fleet.name(i).into(),
                step: "read-traffic".into(),
                message: e.to_string(),
            })?;
            out[i] = HostTraffic::parse(&o.stdout);
        }
        Ok(out)
    }

    /// Points `slot`'s link at `release` on every host (the switch engine's rename).
    pub async fn link(&self, slot: Slot, release: &ReleaseId) -> std::result::Result<(), String> {
        let fleet = self.fleet;
        let results = crate::switch::point_link(
            fleet,
            "slot-link",
            &fleet.all(),
            Link::Slot(slot.name()),
            release,
        )
        .await;
        first_error(fleet, "pointing slot link", &results)
    }

    /// Runs `[traffic] start` (`stop` with `stop = true`) for `slot`, which holds
    /// `release`, on every host. Without commands (static files) there is nothing to do.
    pub async fn run(
        &self,
        stop: bool,
        slot: Slot,
        release: &ReleaseId,
    ) -> std::result::Result<(), String> {
        let (kind, commands) = if stop {
            ("stop", &self.traffic.stop)
        } else {
            ("start", &self.traffic.start)
        };
        if commands.is_empty() {
            return Ok(());
        }
        let fleet = self.fleet;
        let path = fleet.layout.link(Link::Slot(slot.name()));
        let port = self
            .endpoint(slot)
            .map(|e| e.env_value())
            .unwrap_or_default();
        let results = fleet
            .step_on(
                &fleet.all(),
                &format!("slot-{kind}"),
                |i| {
                    let env = fleet.hook_env(i, release, &path);
                    script::slot_commands(
                        kind,
                        &fleet.layout,
                        &env,
                        slot.name(),
                        &port,
                        &self.address(i),
                        commands,
                    )
                },
                None,
                fleet.stage.timeouts.hook,
            )
            .await;
        first_error(fleet, &format!("{kind} of slot {slot}"), &results)
    }

    /// `[health]` as it applies to `slot`: an HTTP check goes to the slot's port at the
    /// slots' address; a command check runs with SLIPWAY_SLOT and SLIPWAY_PORT (and
    /// SLIPWAY_ADDRESS unless it is the host's own) exported.
    pub fn slot_health(&self, health: &Health, slot: Slot) -> Health {
        let mut h = health.clone();
        match &mut h.check {
            Check::Http { address, port, .. } => {
                if let Some(Endpoint::Port(p)) = self.endpoint(slot) {
                    *port = *p;
                    *address = Some(self.traffic.address.clone());
                }
            }
            Check::Command(command) => {
                let mut env = format!("export SLIPWAY_SLOT={}", quote(slot.name()));
                if let Some(e) = self.endpoint(slot) {
                    env.push_str(&format!(" SLIPWAY_PORT={}", quote(&e.env_value())));
                }
                if self.traffic.address != "{host}" {
                    env.push_str(&format!(
                        " SLIPWAY_ADDRESS={}",
                        quote(&self.traffic.address)
                    ));
                }
                *command = format!("{env}\n{command}");
            }
        }
        h
    }

    /// Waits until `slot` answers its health check once on every host (at most the
    /// gate's window), before any user is sent there. No `[health]`: its start is all.
    pub async fn ready(&self, slot: Slot, release: &ReleaseId) -> std::result::Result<(), String> {
        let Some(health) = &self.fleet.stage.health else {
            return Ok(());
        };
        let mut probe = self.slot_health(health, slot);
        // One sample per round, judged on its own.
        probe.window = Duration::ZERO;
        probe.min_samples = 1;
        probe.max_consecutive_failures = u32::MAX;
        probe.failure_budget = None;
        probe.max_error_rate = 0.0;
        probe.max_p95 = None;
        let deadline = Instant::now() + health.window.max(health.interval);
        let mut waiting: Vec<usize> = self.fleet.all();
        loop {
            let outcome = gate::run(self.fleet, &waiting, &probe, release).await;
            let mut last = Vec::new();
            waiting.retain(|i| {
                outcome
                    .verdicts
                    .iter()
                    .find(|(h, _)| h == i)
                    .map(|(_, v)| {
                        let pass = matches!(v, crate::rollout::health::Verdict::Pass { .. });
                        if !pass {
                            last.push(v.text().to_string());
                        }
                        !pass
                    })
                    .unwrap_or(true)
            });
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "slot {slot} ({release}) did not become healthy within {} before any traffic: {}",
                    humantime::format_duration(health.window),
                    last.join("; ")
                ));
            }
            tokio::time::sleep(health.interval).await;
        }
    }

    /// Applies `split` on every host: render, validate, rename, reload. The first host
    /// that refuses stops it (hosts done before keep the new split: the caller moves
    /// them back).
    pub async fn apply(&self, split: &Split) -> std::result::Result<(), String> {
        let fleet = self.fleet;
        let started = Instant::now();
        let results = fleet
            .step_on(
                &fleet.all(),
                "traffic",
                |i| {
                    let content =
                        self.proxy
                            .render(&fleet.stage.app, self.traffic, split, &self.address(i));
                    self.proxy.install(self.traffic, &content)
                },
                None,
                self.timeout(),
            )
            .await;
        let result = first_error(fleet, "applying the traffic split", &results);
        let what = split.describe();
        match &result {
            Ok(()) => fleet
                .reporter
                .info(&format!("traffic on {} host(s): {what}", fleet.len())),
            Err(m) => fleet
                .reporter
                .warning(None, &format!("traffic ({what}): {m}")),
        }
        let record = Record {
            time: Utc::now(),
            action: "traffic".into(),
            stage: fleet.stage.name.clone(),
            actor: self.actor.clone(),
            command: self.command.clone(),
            from: split.stable_release.clone(),
            to: split
                .canary_release
                .clone()
                .or_else(|| split.stable_release.clone()),
            reason: Some(what),
            result: if result.is_ok() { "ok" } else { "failed" }.into(),
            message: result.as_ref().err().cloned(),
            duration_ms: started.elapsed().as_millis() as u64,
            // The run's own record (written when its lock is released) carries its token.
            run: None,
            took_over: None,
        };
        audit::append(fleet, &record).await;
        result
    }

    /// Waits (at most `[traffic] drain`) until nothing is served from `slot` any more.
    /// Returns the hosts where it was still busy.
    pub async fn drain(&self, slot: Slot) -> Vec<String> {
        let fleet = self.fleet;
        let endpoint = self.endpoint(slot);
        let results = fleet
            .step_on(
                &fleet.all(),
                "drain",
                |i| self.proxy.drain(self.traffic, endpoint, &self.address(i)),
                None,
                self.traffic.drain + self.timeout(),
            )
            .await;
        let mut busy = Vec::new();
        for (i, r) in results {
            match r {
                Ok(o) if o.stdout.trim() == "drained" => {}
                Ok(o) => busy.push(format!("{}: {}", fleet.name(i), o.stdout.trim())),
                Err(e) => busy.push(format!("{}: {e}", fleet.name(i))),
            }
        }
        if !busy.is_empty() {
            fleet.reporter.warning(
                None,
                &format!(
                    "slot {slot} did not drain within {} ({}); stopping it anyway",
                    humantime::format_duration(self.traffic.drain),
                    busy.join("; ")
                ),
            );
        }
        busy
    }
}

fn first_error(
    fleet: &Fleet,
    what: &str,
    results: &[(usize, crate::fleet::StepResult)],
) -> std::result::Result<(), String> {
    match results.iter().find(|(_, r)| r.is_err()) {
        Some((i, Err(e))) => Err(format!("{}: {what} failed: {e}", fleet.name(*i))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_read_script_prints_parses() {
        let out = "include: # slipway-traffic v1 stable=a canary=b percent=10 salt=s: stable_release=20261124T040512Z canary_release=20261124T050000Z\na: ../releases/20261124T040512Z\nb: ../releases/20261124T050000Z\n";
        let h = HostTraffic::parse(out);
        let split = h.split.clone().expect("a split");
        assert_eq!(
            (split.stable, split.canary, split.percent),
            (Slot::A, Some(Slot::B), 10.0)
        );
        assert_eq!(
            h.release_in(Slot::B).map(|r| r.as_str()),
            Some("20261124T050000Z")
        );
        // Nothing in place: no split, no releases; a foreign first line is no split.
        let none = HostTraffic::parse("include:\na: \nb: \n");
        assert_eq!(none, HostTraffic::default());
        let foreign = HostTraffic::parse("include: upstream x {}\na: ../releases/not-an-id\n");
        assert_eq!(foreign, HostTraffic::default());
    }
}
