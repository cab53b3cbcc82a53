//! Named fault points, for tests that need the deployer to stop at a known moment.
//!
//! `SLIPWAY_FAULT=<point>:<action>` (comma-separated for several) where action is
//! `pause` (announce on stderr, then wait until the process is signalled), `exit` (exit
//! at once with status 99, as a crash would) or `fail` (the step fails). Points are the
//! step boundaries of the deploy and rollback flows, e.g. `deploy.after-upload`. Outside
//! tests the variable is unset and every point is a no-op.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pause,
    Exit,
    Fail,
}

/// The action configured for `point`, if any.
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
            _ => None,
        }
    })
}

/// Reaches `point`: returns `Err` with a message when the point is set to fail.
pub async fn point(point: &str) -> Result<(), String> {
    match configured(point) {
        None => Ok(()),
        Some(Action::Fail) => Err(format!("fault injected at {point}")),
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
