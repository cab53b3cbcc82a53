//! The health gate: samples every switched host over the window, at the interval, and
//! asks [`super::health`] for a verdict per host. It stops early when one host has
//! already failed (too many consecutive failures, or the failure budget spent): there is
//! no point in watching the others while a bad release serves traffic.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::future::join_all;

use super::health::{self, Sample, Verdict};
use super::http::{self, HttpError};
use crate::config::{Check, Health};
use crate::fleet::Fleet;
use crate::layout::ReleaseId;
use crate::script;
use crate::transport::Reached;

/// Every host's verdict.
#[derive(Debug, Clone)]
pub struct GateOutcome {
    pub verdicts: Vec<(usize, Verdict)>,
}

impl GateOutcome {
    pub fn failures(&self) -> Vec<&str> {
        self.verdicts
            .iter()
            .filter_map(|(_, v)| match v {
                Verdict::Fail { reason } => Some(reason.as_str()),
                _ => None,
            })
            .collect()
    }

    pub fn inconclusive(&self) -> Vec<&str> {
        self.verdicts
            .iter()
            .filter_map(|(_, v)| match v {
                Verdict::Inconclusive { reason } => Some(reason.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// Runs the gate on hosts `which`, whose `current` is `release`.
pub async fn run(
    fleet: &Fleet,
    which: &[usize],
    health: &Health,
    release: &ReleaseId,
) -> GateOutcome {
    let stop = Arc::new(AtomicBool::new(false));
    let runs = which.iter().map(|&i| {
        let stop = stop.clone();
        async move { (i, watch(fleet, i, health, release, &stop).await) }
    });
    GateOutcome {
        verdicts: join_all(runs).await,
    }
}

async fn watch(
    fleet: &Fleet,
    i: usize,
    health: &Health,
    release: &ReleaseId,
    stop: &AtomicBool,
) -> Verdict {
    let name = fleet.name(i).to_string();
    let started = Instant::now();
    fleet.reporter.started(&name, "gate");
    let mut reached: Option<Reached> = None;
    let mut samples = Vec::new();
    loop {
        let tick = Instant::now();
        let sample = sample(fleet, i, health, release, &mut reached).await;
        samples.push(sample);
        if let Some(fail) = health::early_failure(&name, &samples, health) {
            stop.store(true, Ordering::SeqCst);
            if let Some(r) = &reached {
                fleet.hosts[i].unreach(r).await;
            }
            fleet
                .reporter
                .failed(&name, "gate", started.elapsed(), fail.text());
            return fail;
        }
        if stop.load(Ordering::SeqCst) || started.elapsed() + health.interval > health.window {
            break;
        }
        let next = tick + health.interval;
        while Instant::now() < next {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50).min(next - Instant::now())).await;
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
    }
    if let Some(r) = &reached {
        fleet.hosts[i].unreach(r).await;
    }
    let verdict = health::judge(&name, &samples, health);
    match &verdict {
        Verdict::Pass { summary } => {
            fleet
                .reporter
                .finished(&name, "gate", started.elapsed(), Some(summary))
        }
        v => fleet
            .reporter
            .failed(&name, "gate", started.elapsed(), v.text()),
    }
    verdict
}

async fn sample(
    fleet: &Fleet,
    i: usize,
    health: &Health,
    release: &ReleaseId,
    reached: &mut Option<Reached>,
) -> Sample {
    match &health.check {
        Check::Http {
            address,
            port,
            path,
            expect,
        } => {
            let target = match address.as_deref() {
                None => "127.0.0.1".to_string(),
                Some("{host}") => fleet.host_config(i).address.clone(),
                Some(a) => a.to_string(),
            };
            if reached.is_none() {
                match fleet.hosts[i].reach(&target, *port).await {
                    Ok(r) => *reached = Some(r),
                    Err(e) => {
                        return Sample::Unavailable(format!(
                            "cannot forward to {target}:{port}: {e}"
                        ));
                    }
                }
            }
            let Some(r) = reached.as_ref() else {
                return Sample::Unavailable("no forward".into());
            };
            let started = Instant::now();
            match http::get(&r.address, &target, path, health.timeout).await {
                Ok(code) if code == *expect => Sample::Healthy(started.elapsed()),
                Ok(code) => Sample::Unhealthy {
                    latency: started.elapsed(),
                    why: format!("status {code}, expected {expect}"),
                },
                // The local end of our own forward refused: the check could not be made.
                Err(HttpError::Connect(e)) if r.forward.is_some() => {
                    *reached = None;
                    Sample::Unavailable(format!("the forward to {target}:{port} failed: {e}"))
                }
                Err(HttpError::Timeout(t)) => Sample::Unhealthy {
                    latency: t,
                    why: HttpError::Timeout(t).to_string(),
                },
                Err(e) => Sample::Unhealthy {
                    latency: started.elapsed(),
                    why: e.to_string(),
                },
            }
        }
        Check::Command(command) => {
            let path = fleet.layout.release(release);
            let env = fleet.hook_env(i, release, &path);
            let text = script::hooks("health", &env, std::slice::from_ref(command), "");
            let started = Instant::now();
            match fleet.hosts[i].run(&text, None, health.timeout).await {
                Ok(out) if out.success() => Sample::Healthy(started.elapsed()),
                Ok(out) => Sample::Unhealthy {
                    latency: started.elapsed(),
                    why: out.message(),
                },
                Err(crate::transport::TransportError::Timeout(t)) => Sample::Unhealthy {
                    latency: t,
                    why: format!("no answer within {}", humantime::format_duration(t)),
                },
                Err(e) => Sample::Unavailable(e.to_string()),
            }
        }
    }
}
