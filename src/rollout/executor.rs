//! Switching step by step: each step's hosts are switched and restarted (at most
//! `max_parallel` at a time), then every host switched so far is gated. A failed switch,
//! restart or gate stops the rollout and returns the hosts to roll back; the caller owns
//! the rollback (a deploy undoes its own migration, a later `rollout` command reads the
//! stable releases from the persisted state).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;

use super::gate;
use super::http;
use super::state::{self, GateRecord, RolloutState, Status};
use crate::config::{OnInconclusive, Pause};
use crate::fleet::Fleet;
use crate::interrupt::Interrupt;
use crate::layout::ReleaseId;
use crate::switch::restart as run_restart;

/// How a call to [`Executor::advance`] treats pauses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mode {
    /// A person said go on (`promote`, `resume`): the pause the rollout stopped at is over.
    pub resumed: bool,
    /// `promote --full`: no further pauses (the gates still run).
    pub full: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Done,
    Paused(String),
}

/// Why a rollout stopped, and which hosts (fleet indices) were switched by then.
#[derive(Debug, Clone)]
pub struct Failure {
    pub switched: Vec<usize>,
    pub reason: String,
}

pub struct Executor<'a> {
    pub fleet: &'a Fleet,
    pub release: ReleaseId,
    pub state: RolloutState,
    /// Record the state on the hosts (a single-step rollout without a gate does not).
    pub persist: bool,
    /// The switch script for host i (points `current` at the release, writes records).
    pub switch: &'a (dyn Fn(usize) -> String + Send + Sync),
    /// Ctrl-C or SIGTERM: a switch under way finishes; a pause or a gate stops, and the
    /// rollout is left paused (resume re-gates the step).
    pub interrupt: Interrupt,
    /// `[traffic]`: steps move users between the slots of every host instead of
    /// switching hosts (the state's `traffic` says which slots).
    pub traffic: Option<&'a crate::traffic::Driver<'a>>,
}

impl<'a> Executor<'a> {
    fn index(&self) -> BTreeMap<&'a str, usize> {
        let fleet: &'a Fleet = self.fleet;
        fleet
            .all()
            .into_iter()
            .map(|i| (fleet.name(i), i))
            .collect()
    }

    /// Fleet indices of the hosts in the first `steps` steps of the frozen plan.
    pub fn switched_through(&self, steps: usize) -> Vec<usize> {
        let index = self.index();
        self.state
            .hosts_through(steps)
            .iter()
            .filter_map(|h| index.get(h.as_str()).copied())
            .collect()
    }

    pub async fn save(&mut self) {
        if self.persist {
            state::write(self.fleet, &mut self.state).await;
        }
    }

    /// Goes through the remaining steps. Pauses return `Paused` (the state says so on the
    /// hosts); failures return the hosts to roll back.
    pub async fn advance(&mut self, mode: Mode) -> Result<Progress, Failure> {
        let fleet = self.fleet;
        let stage = &fleet.stage;
        let rollout = &stage.rollout;
        let index = self.index();
        let missing: Vec<&String> = self
            .state
            .plan
            .steps
            .iter()
            .flat_map(|s| &s.hosts)
            .filter(|h| !index.contains_key(h.as_str()))
            .collect();
        if !missing.is_empty() {
            return Err(Failure {
                switched: self.switched_through(self.state.completed),
                reason: format!(
                    "the frozen rollout plan names host(s) no longer in stage {}: {} (put them back in the config, or abort the rollout)",
                    stage.name,
                    missing
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        let start = self.state.completed;
        if start == 0 && !mode.resumed {
            self.event("started", None).await;
            if let Err(why) = local_hooks(
                fleet,
                "pre_rollout",
                &rollout.pre_rollout,
                &self.env(0, None),
            )
            .await
            {
                return Err(Failure {
                    switched: vec![],
                    reason: why,
                });
            }
        }
        self.state.status = Status::Running;
        self.state.reason = None;
        self.save().await;
        let total = self.state.plan.steps.len();
        for k in start..total {
            if k > 0 {
                let skip = mode.full || (k == start && mode.resumed);
                if !skip {
                    match rollout.pause {
                        Pause::Manual => {
                            let why = match &self.state.traffic {
                                Some(t) => format!(
                                    "manual pause after step {k} of {total} ({}% of users on {})",
                                    crate::traffic::split::trim(t.percent),
                                    self.release
                                ),
                                None => format!(
                                    "manual pause after step {k} of {total} ({} of {} hosts on {})",
                                    self.state.plan.steps[k - 1].total,
                                    self.state.plan.host_count(),
                                    self.release
                                ),
                            };
                            return Ok(self.pause(why).await);
                        }
                        Pause::For(d) if !d.is_zero() => {
                            fleet.reporter.info(&format!(
                                "step {k} of {total} done; pausing {} before step {}",
                                humantime::format_duration(d),
                                k + 1
                            ));
                            tokio::select! {
                                _ = tokio::time::sleep(d) => {}
                                signal = self.interrupt.wait() => {
                                    let why = format!("{signal} received during the pause after step {k}");
                                    return Ok(self.pause(why).await);
                                }
                            }
                        }
                        Pause::For(_) => {}
                    }
                }
                if let Some(why) = self.pause_requested().await {
                    return Ok(self.pause(why).await);
                }
                if let Err(why) = local_hooks(
                    fleet,
                    "confirm_promotion",
                    &rollout.confirm_promotion,
                    &self.env(k + 1, None),
                )
                .await
                {
                    return Ok(self
                        .pause(format!("promotion to step {} not confirmed: {why}", k + 1))
                        .await);
                }
            }
            let step = self.state.plan.steps[k].clone();
            let switched = match self.traffic {
                Some(driver) => match self.move_users(driver, k, step.percent).await {
                    Ok(all) => all,
                    Err(reason) => return Err(self.fail(vec![], reason).await),
                },
                None => match self.switch_hosts(&step, k, &index).await {
                    Ok(switched) => switched,
                    Err(failure) => return Err(failure),
                },
            };
            self.event("switched", Some(k + 1)).await;
            // `[gate]` with `[traffic]`: the step's window of the access logs starts now,
            // while the health gate (if any) watches the new slot.
            // A first release with [traffic] has no stable slot to compare with or to send
            // users back to: its gate is the health check alone.
            // An A/B rollout judges once, by its test (step 1): promotion is not gated again.
            let ab_test = crate::traffic::ab::is_test_step(&self.state.plan, k);
            let log_gate = match (self.traffic, &stage.gate, &self.state.traffic) {
                _ if self.state.plan.strategy == "ab" && !ab_test => None,
                (Some(driver), Some(g), Some(t)) if t.stable.is_some() => {
                    Some(crate::traffic::log_gate::LogGate::begin(driver, g).await)
                }
                (Some(_), Some(_), _) => {
                    fleet.reporter.info(
                        "traffic gate skipped: the first release with [traffic] has no stable slot to compare with",
                    );
                    None
                }
                // A host canary: each host's own access log, the hosts switched so far
                // against the others.
                (None, Some(g), _) => match &g.hosts_log {
                    Some(log) => {
                        let new = self.switched_through(k + 1);
                        Some(
                            crate::traffic::log_gate::LogGate::begin_hosts(fleet, g, log, &new)
                                .await,
                        )
                    }
                    None => None,
                },
                _ => None,
            };
            if let Some(health) = &stage.health {
                fleet.reporter.info(&format!(
                    "step {} of {total}: health gate on {} host(s) for up to {}",
                    k + 1,
                    switched.len(),
                    humantime::format_duration(health.window)
                ));
                // With [traffic], the gate checks the new slot's instance.
                let gate_health = match (self.traffic, &self.state.traffic) {
                    (Some(driver), Some(t)) => driver.slot_health(health, t.canary),
                    _ => health.clone(),
                };
                let interrupt = self.interrupt.clone();
                let outcome = tokio::select! {
                    outcome = gate::run(fleet, &switched, &gate_health, &self.release) => outcome,
                    signal = interrupt.wait() => {
                        let why = format!(
                            "{signal} received during the gate of step {}: its hosts are switched but not judged (`rollout resume` gates them again)",
                            k + 1
                        );
                        return Ok(self.pause(why).await);
                    }
                };
                let failures: Vec<String> =
                    outcome.failures().iter().map(|s| s.to_string()).collect();
                let unsure: Vec<String> = outcome
                    .inconclusive()
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                let (verdict, details) = if !failures.is_empty() {
                    ("fail", failures.clone())
                } else if !unsure.is_empty() {
                    ("inconclusive", unsure.clone())
                } else {
                    (
                        "pass",
                        outcome
                            .verdicts
                            .iter()
                            .map(|(_, v)| v.text().to_string())
                            .collect(),
                    )
                };
                self.state.last_gate = Some(GateRecord {
                    step: k + 1,
                    verdict: verdict.into(),
                    details: details.clone(),
                    at: Utc::now(),
                });
                if !failures.is_empty() {
                    let reason = format!(
                        "health gate failed at step {}: {}",
                        k + 1,
                        failures.join("; ")
                    );
                    return Err(self.fail(switched, reason).await);
                }
                if !unsure.is_empty() {
                    let reason = format!(
                        "health gate inconclusive at step {}: {}",
                        k + 1,
                        unsure.join("; ")
                    );
                    if health.on_inconclusive == OnInconclusive::Fail {
                        return Err(self.fail(switched, reason).await);
                    }
                    // The step is switched; a human decides whether it counts.
                    self.state.completed = k + 1;
                    return Ok(self
                        .pause(format!("{reason} (promote to go on, abort to go back)"))
                        .await);
                }
                if log_gate.is_none() {
                    self.event("gate-passed", Some(k + 1)).await;
                }
            }
            if let (Some(watch), Some(g)) = (log_gate, &stage.gate) {
                if let (true, crate::config::Strategy::Ab(test), Some(driver)) =
                    (ab_test, &rollout.strategy, self.traffic)
                {
                    if let Some(progress) =
                        self.ab_test(watch, driver, g, test, k, switched).await?
                    {
                        return Ok(progress);
                    }
                } else {
                    if let Some(progress) =
                        self.judge_log(watch, self.traffic, g, k, switched).await?
                    {
                        return Ok(progress);
                    }
                    self.event("gate-passed", Some(k + 1)).await;
                }
            }
            self.state.completed = k + 1;
            // Someone may have asked for a pause from another invocation: the state on
            // the hosts says so, and must not be overwritten.
            if k + 1 < total
                && let Some(why) = self.pause_requested().await
            {
                return Ok(self.pause(why).await);
            }
            self.save().await;
        }
        if let (Some(driver), Some(mut t)) = (self.traffic, self.state.traffic.clone()) {
            // Everyone is on the new slot: it becomes the stable one and `current`
            // follows; recorded before the old slot is touched, so a deployer killed
            // from here on leaves a rollout that `resume` finishes (abort refuses it).
            if !t.promoted {
                let promoted =
                    crate::traffic::promote(driver, &mut t, &self.release, self.switch, fleet)
                        .await;
                self.state.traffic = Some(t.clone());
                if let Err(reason) = promoted {
                    let all = fleet.all();
                    return Err(self.fail(all, reason).await);
                }
                self.save().await;
                self.event("traffic", None).await;
            }
            // A test hook: promoted and recorded, the old slot not yet retired.
            let _ = crate::fault::point("traffic.after-promote").await;
            // Then the old slot drains and stops (again, harmlessly, on a resume).
            for w in crate::traffic::retire(driver, &t).await {
                fleet.reporter.warning(None, &w);
            }
            // After an A/B test: the release replaced says why (it stays the rollback
            // target). Only a result of this rollout's own slots and releases counts.
            if let Some(result) = &self.state.ab
                && result.new_release == self.release.as_str()
                && result.stable_release == t.stable_release
            {
                crate::traffic::ab::mark_replaced(fleet, result).await;
            }
        }
        if let Some(pool) = self.state.pool.clone() {
            // Blue-green: the idle pool passed its gate; move traffic to it. The other
            // pool stays on its release, ready for `slipway rollback`.
            let switched = self.switched_through(total);
            let mut env = self.env(total, None);
            env.push(("SLIPWAY_POOL".into(), pool.clone()));
            if let Err(why) = local_hooks(fleet, "traffic", &rollout.traffic, &env).await {
                let reason = format!("moving traffic to the {pool} pool failed: {why}");
                return Err(self.fail(switched, reason).await);
            }
            fleet
                .reporter
                .info(&format!("traffic moved to the {pool} pool"));
            self.state.previous_pool = self.state.live_pool.take();
            self.state.live_pool = Some(pool);
            self.event("traffic", None).await;
        }
        self.state.status = Status::Done;
        self.save().await;
        self.event("done", None).await;
        if let Err(why) = local_hooks(
            fleet,
            "post_rollout",
            &rollout.post_rollout,
            &self.env(total, None),
        )
        .await
        {
            fleet
                .reporter
                .warning(None, &format!("post_rollout: {why}"));
        }
        Ok(Progress::Done)
    }

    /// One host step: switch the step's hosts (in waves of `max_parallel`), then their
    /// restart hooks. Returns every host switched so far, or the failure to roll back.
    async fn switch_hosts(
        &mut self,
        step: &super::plan::Step,
        k: usize,
        index: &BTreeMap<&'a str, usize>,
    ) -> Result<Vec<usize>, Failure> {
        let fleet = self.fleet;
        let stage = &fleet.stage;
        let rollout = &stage.rollout;
        let total = self.state.plan.steps.len();
        let new: Vec<usize> = step
            .hosts
            .iter()
            .filter_map(|h| index.get(h.as_str()).copied())
            .collect();
        fleet.reporter.info(&format!(
            "step {} of {total}: switching {} host(s) to {} ({} of {} in total): {}",
            k + 1,
            new.len(),
            self.release,
            step.total,
            self.state.plan.host_count(),
            step.hosts.join(", ")
        ));
        let mut switched = self.switched_through(k);
        for wave in new.chunks(rollout.max_parallel.max(1)) {
            let results = fleet
                .step_on(wave, "switch", self.switch, None, stage.timeouts.command)
                .await;
            let mut failed = None;
            for (i, r) in &results {
                match r {
                    Ok(_) => switched.push(*i),
                    Err(m) => {
                        // A failed switch may have happened half-way: send it back too.
                        switched.push(*i);
                        failed.get_or_insert(format!("{}: switch failed: {m}", fleet.name(*i)));
                    }
                }
            }
            if let Some(reason) = failed {
                return Err(self.fail(switched, reason).await);
            }
        }
        // A test hook: the moment between a step's switch and its restart.
        if let Err(m) = crate::fault::point("deploy.after-switch").await {
            return Err(self.fail(switched, m).await);
        }
        if !stage.restart_hooks.is_empty() {
            for wave in new.chunks(rollout.max_parallel.max(1)) {
                let results = run_restart(fleet, wave, &self.release).await;
                if let Some((i, Err(m))) = results.iter().find(|(_, r)| r.is_err()) {
                    let reason = format!("{}: restart failed: {m}", fleet.name(*i));
                    return Err(self.fail(switched, reason).await);
                }
            }
        }
        Ok(switched)
    }

    /// One user step (`[traffic]`): before the first, the new slot is prepared (linked,
    /// started, healthy); then `percent` of users go to it on every host, and the state
    /// records the split in force. Returns every host (all of them serve the step).
    async fn move_users(
        &mut self,
        driver: &crate::traffic::Driver<'_>,
        k: usize,
        percent: Option<f64>,
    ) -> Result<Vec<usize>, String> {
        let fleet = self.fleet;
        let total = self.state.plan.steps.len();
        let Some(mut t) = self.state.traffic.clone() else {
            return Err(
                "the rollout state has no traffic record (was it started without [traffic]?)"
                    .into(),
            );
        };
        if k == 0 && !t.promoted {
            crate::traffic::prepare(driver, &t, &self.release).await?;
        }
        let percent = percent.unwrap_or(100.0);
        fleet.reporter.info(&format!(
            "step {} of {total}: {}% of users to slot {} ({}) on {} host(s)",
            k + 1,
            crate::traffic::split::trim(percent),
            t.canary,
            self.release,
            fleet.len()
        ));
        driver
            .apply(&t.split(self.release.as_str(), percent))
            .await?;
        t.percent = percent;
        self.state.traffic = Some(t);
        self.save().await;
        // A test hook: a step's traffic is in force, its gate not begun.
        crate::fault::point("traffic.after-step").await?;
        Ok(fleet.all())
    }

    /// The access-log gate of step `k` (`[gate]`): watches the rest of its window and
    /// records the verdict. `Ok(None)`: passed; `Ok(Some(paused))`: inconclusive (or
    /// interrupted) and paused; `Err`: failed, for the caller to roll back.
    async fn judge_log(
        &mut self,
        watch: crate::traffic::log_gate::LogGate<'_>,
        driver: Option<&crate::traffic::Driver<'_>>,
        gate: &crate::config::Gate,
        k: usize,
        switched: Vec<usize>,
    ) -> Result<Option<Progress>, Failure> {
        use super::health::Verdict;
        use crate::traffic::Slot;
        // With [traffic] the slots; for a host canary the new hosts stand for the
        // canary "slot" and the others (if any are left) for the stable one.
        let (canary, stable) = match (&self.state.traffic, driver) {
            (Some(t), Some(_)) => (t.canary, t.stable),
            (_, None) => {
                let all = self.fleet.len();
                let new = self.switched_through(k + 1).len();
                (Slot::B, (new < all).then_some(Slot::A))
            }
            (None, Some(_)) => return Ok(None),
        };
        let total = self.state.plan.steps.len();
        self.fleet.reporter.info(&format!(
            "step {} of {total}: traffic gate on {} for up to {}",
            k + 1,
            watch.describe(),
            humantime::format_duration(gate.window)
        ));
        let interrupt = self.interrupt.clone();
        let (judged, series) = tokio::select! {
            j = watch.judge(canary, stable) => j,
            signal = interrupt.wait() => {
                let why = format!(
                    "{signal} received during the traffic gate of step {}: its users are moved but not judged (`rollout resume` gates them again)",
                    k + 1
                );
                return Ok(Some(self.pause(why).await));
            }
        };
        let chart = match driver {
            Some(d) => {
                crate::traffic::log_gate::report(d, k + 1, self.release.as_str(), &judged, series)
                    .await
            }
            None => {
                crate::traffic::log_gate::report_hosts(
                    self.fleet,
                    k + 1,
                    self.release.as_str(),
                    &judged,
                    series,
                )
                .await
            }
        };
        let chart = chart
            .map(|p| format!(" (chart: {})", p.display()))
            .unwrap_or_default();
        let (verdict, text) = match &judged.verdict {
            Verdict::Pass { summary } => ("pass", summary.clone()),
            Verdict::Fail { reason } => ("fail", reason.clone()),
            Verdict::Inconclusive { reason } => ("inconclusive", reason.clone()),
        };
        self.state.last_gate = Some(GateRecord {
            step: k + 1,
            verdict: verdict.into(),
            details: vec![text.clone()],
            at: Utc::now(),
        });
        match verdict {
            "fail" => {
                let reason = format!("traffic gate failed at step {}: {text}{chart}", k + 1);
                Err(self.fail(switched, reason).await)
            }
            "inconclusive" => {
                let reason = format!("traffic gate inconclusive at step {}: {text}{chart}", k + 1);
                if gate.on_inconclusive == OnInconclusive::Fail {
                    return Err(self.fail(switched, reason).await);
                }
                self.state.completed = k + 1;
                Ok(Some(
                    self.pause(format!("{reason} (promote to go on, abort to go back)"))
                        .await,
                ))
            }
            _ => Ok(None),
        }
    }

    /// The A/B test of step `k` (`strategy = "ab"`): watches both cohorts for the
    /// test's duration and records the result. `Ok(None)`: the new release won under
    /// `winner = "auto"` (on to everyone); `Ok(Some(paused))`: `winner = "manual"` (or
    /// interrupted); `Err`: under `"auto"`, the new release did not win, for the caller
    /// to send everyone back to the stable one.
    async fn ab_test(
        &mut self,
        watch: crate::traffic::log_gate::LogGate<'_>,
        driver: &crate::traffic::Driver<'_>,
        gate: &crate::config::Gate,
        test: &crate::config::AbTest,
        k: usize,
        switched: Vec<usize>,
    ) -> Result<Option<Progress>, Failure> {
        use crate::traffic::ab::Winner;
        let Some(t) = self.state.traffic.clone() else {
            return Ok(None);
        };
        let interrupt = self.interrupt.clone();
        let result = tokio::select! {
            r = crate::traffic::ab::run(watch, driver, gate, test, &t, &self.release) => r,
            signal = interrupt.wait() => {
                let why = format!(
                    "{signal} received during the A/B test: its users are split but not compared (`rollout resume` runs the test again)"
                );
                return Ok(Some(self.pause(why).await));
            }
        };
        let Some(result) = result else {
            return Ok(None);
        };
        self.state.last_gate = Some(GateRecord {
            step: k + 1,
            verdict: match result.winner {
                Winner::New => "ab: new",
                Winner::Stable => "ab: stable",
                Winner::None => "ab: no winner",
            }
            .into(),
            details: vec![result.verdict()],
            at: Utc::now(),
        });
        let verdict = result.verdict();
        let winner = result.winner;
        let guarded = result.basis == crate::traffic::ab::Basis::Guard;
        self.state.ab = Some(result);
        self.event("ab-test", Some(k + 1)).await;
        if guarded {
            // Failing beyond [gate] max_error_rate: back at once, whatever the rule.
            let reason = format!("A/B test stopped, {verdict}");
            return Err(self.fail(switched, reason).await);
        }
        match (test.winner, winner) {
            (crate::config::WinnerRule::Manual, w) => {
                self.state.completed = k + 1;
                let next = match w {
                    Winner::New => "`slipway rollout promote` makes the new release stable",
                    Winner::Stable => {
                        "`slipway rollout promote` keeps the stable release (everyone back on it, the new one stopped)"
                    }
                    Winner::None => {
                        "`slipway rollout promote` makes the new release stable anyway, `slipway rollout abort` keeps the stable one"
                    }
                };
                Ok(Some(
                    self.pause(format!("A/B test done, {verdict}: {next}"))
                        .await,
                ))
            }
            (crate::config::WinnerRule::Auto, Winner::New) => {
                self.fleet.reporter.info(&format!(
                    "A/B test: the new release {} won; promoting it",
                    self.release
                ));
                Ok(None)
            }
            (crate::config::WinnerRule::Auto, _) => {
                let reason = format!("A/B test, {verdict}: the stable release stays");
                Err(self.fail(switched, reason).await)
            }
        }
    }

    /// The reason of a `rollout pause` recorded on the hosts since this run last wrote.
    async fn pause_requested(&self) -> Option<String> {
        if let Some(signal) = self.interrupt.received() {
            return Some(format!("{signal} received: stopped at a step boundary"));
        }
        if !self.persist {
            return None;
        }
        match state::read(self.fleet).await {
            Ok(Some(on_hosts))
                if on_hosts.desired == self.state.desired && on_hosts.status == Status::Paused =>
            {
                Some(
                    on_hosts
                        .reason
                        .unwrap_or_else(|| "paused by `slipway rollout pause`".into()),
                )
            }
            _ => None,
        }
    }

    async fn pause(&mut self, why: String) -> Progress {
        self.fleet
            .reporter
            .warning(None, &format!("rollout paused: {why}"));
        self.state.status = Status::Paused;
        self.state.reason = Some(why.clone());
        // A paused rollout must be on the hosts, or no later invocation could go on.
        state::write(self.fleet, &mut self.state).await;
        self.event("paused", None).await;
        Progress::Paused(why)
    }

    async fn fail(&mut self, switched: Vec<usize>, reason: String) -> Failure {
        self.state.status = Status::Failed;
        self.state.reason = Some(reason.clone());
        self.save().await;
        Failure { switched, reason }
    }

    /// After the caller rolled back: `on_rollback` hooks and the event.
    pub async fn rolled_back(&mut self, reason: &str) {
        let env = self.env(self.state.completed, Some(reason));
        if let Err(why) = local_hooks(
            self.fleet,
            "on_rollback",
            &self.fleet.stage.rollout.on_rollback,
            &env,
        )
        .await
        {
            self.fleet
                .reporter
                .warning(None, &format!("on_rollback: {why}"));
        }
        self.event("rolled-back", None).await;
    }

    fn env(&self, step: usize, reason: Option<&str>) -> Vec<(String, String)> {
        let stage = &self.fleet.stage;
        let mut env = vec![
            ("SLIPWAY_APP".to_string(), stage.app.clone()),
            ("SLIPWAY_STAGE".to_string(), stage.name.clone()),
            ("SLIPWAY_RELEASE_ID".to_string(), self.release.to_string()),
            (
                "SLIPWAY_ROLLOUT_STRATEGY".to_string(),
                self.state.plan.strategy.clone(),
            ),
            ("SLIPWAY_ROLLOUT_STEP".to_string(), step.to_string()),
            (
                "SLIPWAY_ROLLOUT_STEPS".to_string(),
                self.state.plan.steps.len().to_string(),
            ),
            (
                "SLIPWAY_ROLLOUT_HOSTS".to_string(),
                self.state.hosts_through(step).join(" "),
            ),
        ];
        if let Some(r) = reason {
            env.push(("SLIPWAY_ROLLOUT_REASON".to_string(), r.to_string()));
        }
        env
    }

    /// POSTs a transition to the `event` webhook; a webhook that fails is a warning.
    pub async fn event(&self, event: &str, step: Option<usize>) {
        send_event(self.fleet, &self.state, event, step).await
    }
}

/// POSTs a transition of `state` to the stage's `event` webhook, if it has one; a webhook
/// that fails is a warning, never a reason to stop.
pub async fn send_event(fleet: &Fleet, state: &RolloutState, event: &str, step: Option<usize>) {
    let Some(url) = &fleet.stage.rollout.event else {
        return;
    };
    let Ok(url) = url::Url::parse(url) else {
        return;
    };
    // The URL may carry a token (the config registered it with `redact`): warnings name
    // it by scheme, host and port only.
    let shown = crate::redact::url(&url);
    let body = json!({
        "event": event,
        "app": state.app,
        "stage": state.stage,
        "release": state.desired,
        "strategy": state.plan.strategy,
        "step": step,
        "steps": state.plan.steps.len(),
        "completed": state.completed,
        "status": state.status.as_str(),
        "reason": state.reason,
        "pool": state.pool,
        "time": Utc::now(),
    })
    .to_string();
    let ca = fleet.stage.rollout.event_ca.as_deref();
    match http::post_json(&url, &body, ca, Duration::from_secs(5)).await {
        Ok(code) if (200..300).contains(&code) => {}
        Ok(code) => fleet.reporter.warning(
            None,
            &format!("event webhook {shown} answered {code} to `{event}`"),
        ),
        Err(e @ http::HttpError::Tls(_)) => fleet.reporter.warning(
            None,
            &format!(
                "event webhook {shown} failed for `{event}`: {e} (if its certificate is signed by an internal CA, set [rollout] event_ca to that CA's PEM file)"
            ),
        ),
        Err(e) => fleet.reporter.warning(
            None,
            &format!("event webhook {shown} failed for `{event}`: {e}"),
        ),
    }
}

/// Runs lifecycle hook commands on the deployer, one after another, in the current
/// directory; the first failure stops and is returned with its output.
pub async fn local_hooks(
    fleet: &Fleet,
    kind: &str,
    commands: &[String],
    env: &[(String, String)],
) -> Result<(), String> {
    for command in commands {
        let started = std::time::Instant::now();
        fleet.reporter.started("deployer", kind);
        let run = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = match tokio::time::timeout(fleet.stage.timeouts.hook, run).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => return Err(format!("{kind} hook `{command}` could not start: {e}")),
            Err(_) => {
                return Err(format!(
                    "{kind} hook `{command}` did not finish within {}",
                    humantime::format_duration(fleet.stage.timeouts.hook)
                ));
            }
        };
        let stderr = String::from_utf8_lossy(&output.stderr);
        fleet
            .reporter
            .detail("deployer", &String::from_utf8_lossy(&output.stdout));
        fleet.reporter.detail("deployer", &stderr);
        if !output.status.success() {
            let tail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            let why = format!(
                "{kind} hook `{command}` exited with status {}{}",
                output.status.code().unwrap_or(-1),
                tail.last().map(|l| format!(": {l}")).unwrap_or_default()
            );
            fleet
                .reporter
                .failed("deployer", kind, started.elapsed(), &why);
            return Err(why);
        }
        fleet
            .reporter
            .finished("deployer", kind, started.elapsed(), None);
    }
    Ok(())
}
