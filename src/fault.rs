//! Named fault points, for tests that need the deployer to stop at a known moment.
//!
//! `SLIPWAY_FAULT=<point>:<action>` (comma-separated for several) where action is
//! `pause` (announce on stderr, then wait until the process is signalled), `exit` (exit
//! at once with status 99, as a crash would), `fail` (the step fails), `sleep=DURATION`
//! (wait that long, then go on: time for a test to stop a host between two steps) or
//! `fail-after=DURATION` (wait, then fail: time for a test to take a database away
//! before the failure's clean-up needs it). Points are the
//! step boundaries of the deploy and rollback flows, e.g. `deploy.after-upload`.
//!
//! Only builds with the `fault-injection` feature (the test suite's: `scripts/test`)
//! read the variable. In every other build each point is a no-op and the binary does
//! not even contain the variable's name: a product build cannot be made to stop, crash
//! or fail a step by its environment.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pause,
    Exit,
    Fail,
    Sleep(Duration),
    FailAfter(Duration),
}

/// The action configured for `point`, if any.
#[cfg(feature = "fault-injection")]
pub fn configured(point: &str) -> Option<Action> {
    let spec = std::env::var("SLIPWAY_FAULT").ok()?;
    spec.split(',').find_map(|item| {
        let (name, action) = item.trim().split_once(':')?;
        if name != point {
            return None;
        }
        match action {
            "pause" => Some(Action::Pause),
            "exit" => Some(Action::Exit),
            "fail" => Some(Action::Fail),
            other => {
                if let Some(d) = other.strip_prefix("fail-after=") {
                    return humantime::parse_duration(d).ok().map(Action::FailAfter);
                }
                other
                    .strip_prefix("sleep=")
                    .and_then(|d| humantime::parse_duration(d).ok())
                    .map(Action::Sleep)
            }
        }
    })
}

/// Reaches `point`: a no-op without the `fault-injection` feature.
#[cfg(not(feature = "fault-injection"))]
pub async fn point(_point: &str) -> Result<(), String> {
    Ok(())
}

/// Reaches `point`: returns `Err` with a message when the point is set to fail.
#[cfg(feature = "fault-injection")]
pub async fn point(point: &str) -> Result<(), String> {
    match configured(point) {
        None => Ok(()),
        Some(Action::Fail) => Err(format!("fault injected at {point}")),
        Some(Action::Sleep(duration)) => {
            eprintln!(
                "slipway: fault point {point}: sleeping {}",
                humantime::format_duration(duration)
            );
            tokio::time::sleep(duration).await;
            Ok(())
        }
        Some(Action::FailAfter(duration)) => {
            eprintln!(
                "slipway: fault point {point}: failing in {}",
                humantime::format_duration(duration)
            );
            tokio::time::sleep(duration).await;
            Err(format!("fault injected at {point}"))
        }
        Some(Action::Exit) => {
            eprintln!("slipway: fault point {point}: exiting");
            std::process::exit(99);
        }
        Some(Action::Pause) => {
            eprintln!("slipway: fault point {point}: paused");
            loop {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        }
    }
}
